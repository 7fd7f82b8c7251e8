"""Two or three nodes on one PostgreSQL and one Redis serve one set of users.

Each node is a real ``tui-chat-server serve --store … --bus …`` process; clients are raw
websocket clients speaking the protocol; the store is read straight with SQL at the end.
"""

from __future__ import annotations

import asyncio

import psycopg
import pytest
from websockets.asyncio.client import ClientConnection

from harness.pgredis import PgCluster, RedisServer
from harness.waits import stays, until
from tests.functional.nodes.conftest import NodeFactory
from tests.support.wire import (
    connect_ws,
    expect_closed,
    login,
    recv_messages,
    send_frame,
    send_message,
)
from tui_chat.protocol import Ack, CloseCode, ErrorCode, Hello, Message, Reject, Send

# Live delivery between nodes goes through Redis; healing through the periodic check (2 s).
LIVE = 10.0


def store_rows(url: str, sql: str) -> list[tuple[object, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        return [tuple(r) for r in conn.execute(sql)]


def seqs_are_contiguous(url: str) -> None:
    """Every conversation's seqs are 1..last_seq, whichever node stored them."""
    rows = store_rows(
        url,
        "SELECT c.id, c.last_seq, count(m.seq), coalesce(max(m.seq), 0) FROM conversations c"
        " LEFT JOIN messages m ON m.conv = c.id GROUP BY c.id, c.last_seq",
    )
    for conv, last, count, top in rows:
        assert (count, top) == (last, last), f"{conv}: {count} messages, max {top}, last {last}"


async def test_a_message_from_node_a_reaches_node_b_live(
    start_node: NodeFactory, pg_url: str
) -> None:
    a, b = await start_node(), await start_node()
    alice = await login(a.url, "alice", a.tokens["alice"])
    bob = await login(b.url, "bob", b.tokens["bob"])
    try:
        # The epoch lives in the store: every node reports the same one.
        assert alice.welcome.epoch == bob.welcome.epoch
        ack = await send_message(alice.ws, "a-1", "bob", "hello from A")
        assert isinstance(ack, Ack) and ack.seq == 1
        (got,) = await recv_messages(bob.ws, 1, within=LIVE)
        assert (got.client_id, got.seq, got.body, got.sender) == ("a-1", 1, "hello from A", "alice")
        ack = await send_message(bob.ws, "b-1", "alice", "hello from B")
        assert isinstance(ack, Ack) and ack.seq == 2
        mine, theirs = await recv_messages(alice.ws, 2, within=LIVE)
        assert (mine.seq, theirs.seq, theirs.client_id) == (1, 2, "b-1")
    finally:
        await alice.ws.close()
        await bob.ws.close()
    seqs_are_contiguous(pg_url)


class Collector:
    """Reads every frame of one connection in a task: acks by client_id, messages in order."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.acks: dict[str, Ack] = {}
        self.messages: list[Message] = []
        self.rejects: list[Reject] = []
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        from websockets.exceptions import ConnectionClosed

        from tui_chat.protocol import decode_server

        try:
            async for raw in self.ws:
                frame = decode_server(raw)
                if isinstance(frame, Ack):
                    self.acks[frame.client_id] = frame
                elif isinstance(frame, Message):
                    self.messages.append(frame)
                elif isinstance(frame, Reject):
                    self.rejects.append(frame)
        except ConnectionClosed:
            pass

    async def close(self) -> None:
        await self.ws.close()
        await self._task


async def test_concurrent_sends_on_two_nodes_give_each_connection_1_to_n(
    start_node: NodeFactory, pg_url: str
) -> None:
    """alice on A and bob on B write one conversation at once, and a second device of
    alice's watches from B: each connection sees seqs 1..n, no gap, no repeat."""
    a, b = await start_node(), await start_node()
    alice = await login(a.url, "alice", a.tokens["alice"])
    # The conversation exists before the race (its first seq comes from one node).
    await send_message(alice.ws, "first", "bob")
    clients = [
        Collector(alice.ws),
        Collector((await login(b.url, "bob", b.tokens["bob"])).ws),
        Collector((await login(b.url, "alice", b.tokens["alice"])).ws),
    ]
    n = 60
    try:
        for i in range(n):
            await send_frame(clients[0].ws, Send(client_id=f"a-{i}", to="bob", body=f"a {i}"))
            await send_frame(clients[1].ws, Send(client_id=f"b-{i}", to="alice", body=f"b {i}"))
        total = 2 * n + 1
        await until(
            lambda: all(len(c.messages) >= total - (c is not clients[0]) for c in clients),
            "every message on every connection",
            LIVE * 3,
        )
        seqs = sorted(a.seq for c in clients[:2] for a in c.acks.values())
        assert seqs == list(range(2, total + 1))
        # Its own echo of "first" came after the ack.
        assert [m.seq for m in clients[0].messages] == list(range(1, total + 1))
        for c in clients[1:]:
            # Logged in after "first": it came in the replay.
            assert [m.seq for m in c.messages] == list(range(2, total + 1))
        assert not any(c.rejects for c in clients)
    finally:
        for c in clients:
            await c.close()
    seqs_are_contiguous(pg_url)


async def test_one_client_id_sent_to_two_nodes_is_stored_once(
    start_node: NodeFactory, pg_url: str
) -> None:
    a, b = await start_node(), await start_node()
    on_a = await login(a.url, "alice", a.tokens["alice"])
    on_b = await login(b.url, "alice", b.tokens["alice"])
    try:
        await send_message(on_a.ws, "warm-up", "bob")
        for i in range(10):
            cid = f"same-{i}"
            first, second = await asyncio.gather(
                send_message(on_a.ws, cid, "bob", "once"), send_message(on_b.ws, cid, "bob", "once")
            )
            assert isinstance(first, Ack) and isinstance(second, Ack)
            assert (first.conv, first.seq) == (second.conv, second.seq)
            assert sorted([first.duplicate, second.duplicate]) == [False, True]
    finally:
        await on_a.ws.close()
        await on_b.ws.close()
    assert store_rows(pg_url, "SELECT count(*) FROM messages WHERE client_id LIKE 'same-%'") == [
        (10,)
    ]
    seqs_are_contiguous(pg_url)


async def test_groups_span_nodes(start_node: NodeFactory, pg_url: str) -> None:
    from tui_chat.protocol import Create

    a, b = await start_node(), await start_node()
    alice = Collector((await login(a.url, "alice", a.tokens["alice"])).ws)
    bob = Collector((await login(b.url, "bob", b.tokens["bob"])).ws)
    try:
        await send_frame(alice.ws, Create(client_id="g", title="team", members=["bob"]))
        await until(lambda: bob.messages, "bob's created event", LIVE)
        created = bob.messages[0]
        assert (created.kind, created.members, created.seq) == ("created", ["alice", "bob"], 1)
        await send_frame(bob.ws, Send(client_id="g-1", conv=created.conv, body="to the group"))
        await until(lambda: len(alice.messages) >= 2, "alice's copy of bob's message", LIVE)
        assert [(m.seq, m.kind) for m in alice.messages] == [(1, "created"), (2, "text")]
        assert [(m.seq, m.kind) for m in bob.messages] == [(1, "created"), (2, "text")]
    finally:
        await alice.close()
        await bob.close()


async def test_remove_user_through_the_store_closes_sessions_on_every_node(
    start_node: NodeFactory, pg_url: str
) -> None:
    import sys

    a, b = await start_node(), await start_node()
    on_a = await login(a.url, "bob", a.tokens["bob"])
    on_b = await login(b.url, "bob", b.tokens["bob"])
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tui_chat.server.cli", "remove-user", "bob", "--store", pg_url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(60):
        _out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    for login_ in (on_a, on_b):
        code, _frames = await expect_closed(login_.ws, within=LIVE)
        assert code == CloseCode.ACCOUNT_CLOSED


# ---------------------------------------------------------------- failures


async def test_without_notices_the_periodic_check_delivers_in_order_without_repeats(
    start_node: NodeFactory, pg_url: str
) -> None:
    """Node B listens on another Redis than node A: every notice of A's is lost for B.
    B's periodic check of last_seq still delivers A's commits to bob, in order, once, for a
    conversation that did not exist when bob connected and for one that did."""
    with RedisServer.start_new() as other:
        a, b = await start_node(), await start_node(bus=other.url)
        alice = await login(a.url, "alice", a.tokens["alice"])
        carol = await login(a.url, "carol", a.tokens["carol"])
        await send_message(carol.ws, "c-0", "bob")
        bob = Collector((await login(b.url, "bob", b.tokens["bob"])).ws)
        try:
            for i in range(5):
                assert isinstance(await send_message(alice.ws, f"a-{i}", "bob"), Ack)
                assert isinstance(await send_message(carol.ws, f"c-{i + 1}", "bob"), Ack)
            await until(lambda: len(bob.messages) >= 10, "A's messages on B", LIVE * 2)
            # Several more checks pass: nothing arrives twice.
            await stays(lambda: len(bob.messages) == 10, "no repeats", 5.0)
            by_conv: dict[str, list[int]] = {}
            for m in bob.messages:
                by_conv.setdefault(m.conv, []).append(m.seq)
            assert sorted(by_conv.values()) == [[1, 2, 3, 4, 5], [2, 3, 4, 5, 6]]
        finally:
            await bob.close()
            await alice.ws.close()
            await carol.ws.close()


async def test_a_node_killed_under_load_loses_nothing_acked(
    start_node: NodeFactory, pg_url: str
) -> None:
    """SIGKILL node A while alice streams sends through it; every acked send is stored;
    alice resends the unacked ones (same client_ids) to node B: each is stored once, and
    the conversation's seqs stay 1..n."""
    a, b = await start_node(), await start_node()
    alice = await login(a.url, "alice", a.tokens["alice"])
    total = 300
    acked: set[str] = set()

    async def reader() -> None:
        try:
            while True:
                frame = await alice.ws.recv()
                if isinstance(frame, str) and '"ack"' in frame:
                    ack = frame.split('"client_id":"', 1)[1].split('"', 1)[0]
                    acked.add(ack)
        except Exception:
            return

    task = asyncio.create_task(reader())
    for i in range(total):
        await send_frame(alice.ws, Send(client_id=f"k-{i}", to="bob", body=f"m {i}"))
        if i == total // 3:
            await until(lambda: len(acked) > 10, "some acks", LIVE)
            await a.akill()
            break
    await asyncio.wait_for(task, LIVE)
    stored = {r[0] for r in store_rows(pg_url, "SELECT client_id FROM messages")}
    assert acked <= stored, f"acked but not stored: {sorted(acked - stored)[:5]}"
    # The client resends everything it has no ack for, to another node.
    again = await login(b.url, "alice", b.tokens["alice"])
    try:
        for i in range(total):
            cid = f"k-{i}"
            if cid not in acked:
                ack = await send_message(again.ws, cid, "bob", f"m {i}")
                assert isinstance(ack, Ack), ack
    finally:
        await again.ws.close()
    counts = store_rows(pg_url, "SELECT client_id, count(*) FROM messages GROUP BY client_id")
    assert all(c == 1 for _cid, c in counts)
    assert len(counts) == total
    seqs_are_contiguous(pg_url)


async def test_delivery_resumes_after_redis_restarts(
    start_node: NodeFactory, redis_server: RedisServer, pg_url: str
) -> None:
    a, b = await start_node(), await start_node()
    alice = await login(a.url, "alice", a.tokens["alice"])
    bob = await login(b.url, "bob", b.tokens["bob"])
    try:
        await send_message(alice.ws, "before", "bob")
        assert [m.seq for m in await recv_messages(bob.ws, 1, within=LIVE)] == [1]
        await asyncio.to_thread(redis_server.restart)
        # Sent while the nodes may not have noticed yet: healed by the periodic check or
        # by subscribing again, whichever comes first.
        for i in range(5):
            ack = await send_message(alice.ws, f"after-{i}", "bob")
            assert isinstance(ack, Ack)
        got = await recv_messages(bob.ws, 5, within=LIVE)
        assert [m.seq for m in got] == [2, 3, 4, 5, 6]
        # And live again afterwards.
        await send_message(alice.ws, "later", "bob")
        assert [m.seq for m in await recv_messages(bob.ws, 1, within=LIVE)] == [7]
    finally:
        await alice.ws.close()
        await bob.ws.close()


async def test_sends_are_retryable_while_postgresql_is_away(
    start_node: NodeFactory, pg_cluster: PgCluster, pg_url: str
) -> None:
    a = await start_node()
    alice = await login(a.url, "alice", a.tokens["alice"])
    try:
        ack = await send_message(alice.ws, "p-0", "bob")
        assert isinstance(ack, Ack)
        await asyncio.to_thread(pg_cluster.stop)
        try:
            reject = await send_message(alice.ws, "p-1", "bob", within=LIVE * 2)
            assert isinstance(reject, Reject), reject
            assert (reject.code, reject.retryable) == (ErrorCode.UNAVAILABLE, True)
            # A login meanwhile is told to come back soon (1012), not an internal error.
            ws = await connect_ws(a.url)
            await send_frame(ws, Hello(v=1, user="bob", token=a.tokens["bob"]))
            code, _frames = await expect_closed(ws, within=LIVE * 2)
            assert code == CloseCode.SERVICE_RESTART
        finally:
            await asyncio.to_thread(pg_cluster.start)
        # The same client_id again, as the client does after a retryable reject.
        ack = await send_message(alice.ws, "p-1", "bob", within=LIVE * 2)
        assert isinstance(ack, Ack) and ack.seq == 2 and not ack.duplicate
    finally:
        await alice.ws.close()
    assert store_rows(pg_url, "SELECT client_id FROM messages ORDER BY seq") == [("p-0",), ("p-1",)]


# ---------------------------------------------------------------- command line


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--store", "mysql://x/y"], "--store mysql://x/y: expected a postgresql:// URL"),
        (["--store", "postgresql://postgres@127.0.0.1:1/x"], "--store postgresql://"),
        (["--bus", "redis://127.0.0.1:1/0"], "--bus joins nodes that share a --store"),
    ],
)
async def test_bad_options_are_one_line_without_a_traceback(args: list[str], expected: str) -> None:
    import sys

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tui_chat.server.cli", "serve", "--port", "0", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(60):
        _out, err = await proc.communicate()
    lines = err.decode().strip().splitlines()
    assert proc.returncode == 2
    assert len(lines) == 1 and expected in lines[0], lines
    assert "Traceback" not in err.decode()


async def test_an_unreachable_bus_is_one_line(pg_url: str) -> None:
    import sys

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tui_chat.server.cli", "serve", "--port", "0",
        "--store", pg_url, "--bus", "redis://127.0.0.1:1/0",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(60):
        _out, err = await proc.communicate()
    lines = err.decode().strip().splitlines()
    assert proc.returncode == 2
    assert len(lines) == 1 and "--bus redis://127.0.0.1:1/0: cannot reach Redis" in lines[0]
