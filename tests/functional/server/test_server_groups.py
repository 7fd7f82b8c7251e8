"""Groups on a real server: every group frame, its answers and rejects, fan-out, limits.

Everything speaks raw frames to an in-process server on 127.0.0.1 (see tests/support/wire.py).
Visibility attacks (non-members, removed members, hostile cursors) are in
tests/robustness/test_security_groups.py; restart and migration at the end of this file.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

import pytest
from websockets.asyncio.client import ClientConnection

from harness.serverproc import ServerProcess
from tests.support.wire import (
    STEP,
    RunningServer,
    ServerFactory,
    assert_silent,
    command,
    db_rows,
    login,
    recv_messages,
    recv_until,
    send_frame,
    send_message,
)
from tui_chat import protocol as p
from tui_chat.server import db
from tui_chat.server.app import ChatServer
from tui_chat.server.config import Limits, ServerConfig

K = p.MessageKind
E = p.ErrorCode
USERS4 = ("alice", "bob", "carol", "dave")


async def acked(ws: ClientConnection, frame: p._Frame) -> p.Ack:
    answer = await command(ws, frame)
    assert isinstance(answer, p.Ack), answer
    return answer


async def rejected(ws: ClientConnection, frame: p._Frame, code: str) -> p.Reject:
    answer = await command(ws, frame)
    assert isinstance(answer, p.Reject), answer
    assert (answer.code, answer.retryable) == (code, False), answer
    return answer


async def logins(srv: RunningServer, *names: str) -> dict[str, ClientConnection]:
    out: dict[str, ClientConnection] = {}
    for name in names:
        out[name] = (await login(srv.url, name, srv.tokens[name])).ws
    return out


async def close_all(conns: dict[str, ClientConnection]) -> None:
    for ws in conns.values():
        await ws.close()


async def test_create_is_acked_and_every_member_gets_the_created_event(
    chat_server: RunningServer,
) -> None:
    c = await logins(chat_server, "alice", "bob", "carol")
    try:
        # The sender and repeats in the list are dropped; the creator is first.
        frame = p.Create(client_id="g-1", title="Trip", members=["bob", "alice", "carol", "bob"])
        ack = await acked(c["alice"], frame)
        assert (ack.seq, ack.duplicate) == (1, False)
        assert ack.conv.startswith("g")
        expected = p.Message(
            conv=ack.conv,
            seq=1,
            sender="alice",
            client_id="g-1",
            body="",
            ts=ack.ts,
            kind=K.CREATED,
            title="Trip",
            members=["alice", "bob", "carol"],
        )
        for name in ("alice", "bob", "carol"):
            [msg] = await recv_messages(c[name], 1)
            assert msg == expected
        # A group event has no "to" on the wire.
        raw = json.loads(p.encode(expected))
        assert "to" not in raw and raw["kind"] == "created"
        assert db_rows(chat_server.db_path, "SELECT id, title, last_seq FROM groups") == [
            (ack.conv, "Trip", 1)
        ]
        assert db_rows(
            chat_server.db_path,
            "SELECT user, joined_seq, left_seq FROM members WHERE conv=? ORDER BY ord",
            (ack.conv,),
        ) == [("alice", 1, None), ("bob", 1, None), ("carol", 1, None)]
    finally:
        await close_all(c)


async def test_a_group_of_one_and_send_to_it(chat_server: RunningServer) -> None:
    alice, *_ = await login(chat_server.url, "alice", chat_server.tokens["alice"])
    try:
        ack = await acked(alice, p.Create(client_id="solo", title="notes"))
        [created] = await recv_messages(alice, 1)
        assert created.members == ["alice"]
        sent = await acked(alice, p.Send(client_id="s1", conv=ack.conv, body="hello me"))
        assert (sent.conv, sent.seq) == (ack.conv, 2)
        [msg] = await recv_messages(alice, 1)
        assert (msg.kind, msg.body, msg.to, msg.sender) == (K.TEXT, "hello me", "", "alice")
    finally:
        await alice.close()


async def test_messages_fan_out_to_every_connection_of_every_member(
    chat_server: RunningServer,
) -> None:
    c = await logins(chat_server, "alice", "bob", "carol")
    bob2 = (await login(chat_server.url, "bob", chat_server.tokens["bob"])).ws
    try:
        ack = await acked(c["alice"], p.Create(client_id="g", title="t", members=["bob"]))
        for ws in (c["alice"], c["bob"], bob2):
            await recv_messages(ws, 1)
        sent = await acked(c["bob"], p.Send(client_id="b1", conv=ack.conv, body="from bob"))
        assert sent.seq == 2
        for ws in (c["alice"], c["bob"], bob2):
            [msg] = await recv_messages(ws, 1)
            assert (msg.seq, msg.sender, msg.body) == (2, "bob", "from bob")
        # carol is not a member: she gets nothing of it.
        await assert_silent(c["carol"])
    finally:
        await close_all(c)
        await bob2.close()


async def test_duplicate_create_returns_the_same_group(chat_server: RunningServer) -> None:
    alice, *_ = await login(chat_server.url, "alice", chat_server.tokens["alice"])
    frame = p.Create(client_id="once", title="Once", members=["bob"])
    try:
        first = await acked(alice, frame)
        again = await acked(alice, frame)
        assert again == p.Ack("once", first.conv, 1, first.ts, duplicate=True)
        # Even with other fields the client_id is the same command: the original wins.
        changed = await acked(alice, p.Create(client_id="once", title="Other", members=[]))
        assert (changed.conv, changed.duplicate) == (first.conv, True)
    finally:
        await alice.close()
    # A new connection (as after a reconnect) gets the same answer.
    alice, *_ = await login(chat_server.url, "alice", chat_server.tokens["alice"])
    try:
        later = await acked(alice, frame)
        assert (later.conv, later.seq, later.duplicate) == (first.conv, 1, True)
    finally:
        await alice.close()
    assert db_rows(chat_server.db_path, "SELECT count(*) FROM groups") == [(1,)]
    assert db_rows(chat_server.db_path, "SELECT count(*) FROM messages") == [(1,)]


async def test_every_command_is_idempotent(chat_server_factory: ServerFactory) -> None:
    srv = await chat_server_factory(users=USERS4)
    alice, *_ = await login(srv.url, "alice", srv.tokens["alice"])
    try:
        conv = (await acked(alice, p.Create(client_id="c", title="t", members=["bob"]))).conv
        frames: list[p._Frame] = [
            p.Send(client_id="s", conv=conv, body="x"),
            p.Add(client_id="a", conv=conv, user="carol"),
            p.Remove(client_id="r", conv=conv, user="carol"),
            p.Rename(client_id="n", conv=conv, title="u"),
            p.Leave(client_id="l", conv=conv),
        ]
        for seq, frame in enumerate(frames, start=2):
            first = await acked(alice, frame)
            assert (first.conv, first.seq, first.duplicate) == (conv, seq, False)
            again = await acked(alice, frame)
            assert (again.seq, again.ts, again.duplicate) == (seq, first.ts, True)
    finally:
        await alice.close()
    assert db_rows(srv.db_path, "SELECT max(seq), count(*) FROM messages") == [(6, 6)]


async def test_add_by_the_creator_and_the_added_members_copy_carries_the_members(
    chat_server_factory: ServerFactory,
) -> None:
    srv = await chat_server_factory(users=USERS4)
    c = await logins(srv, "alice", "bob", "carol", "dave")
    try:
        conv = (await acked(c["alice"], p.Create(client_id="g", title="t", members=["bob"]))).conv
        await recv_messages(c["alice"], 1)
        await recv_messages(c["bob"], 1)
        ack = await acked(c["alice"], p.Add(client_id="add-c", conv=conv, user="carol"))
        assert (ack.conv, ack.seq) == (conv, 2)
        base = p.Message(
            conv=conv,
            seq=2,
            sender="alice",
            client_id="add-c",
            body="",
            ts=ack.ts,
            kind=K.ADDED,
            user="carol",
        )
        for name in ("alice", "bob"):
            assert await recv_messages(c[name], 1) == [base]
        [mine] = await recv_messages(c["carol"], 1)
        # ... and the title: a member added later learns it here, not at the next rename.
        assert mine == p.Message(
            **{**_fields(base), "members": ["alice", "bob", "carol"], "title": "t"}
        )
        # carol is a member now: she receives what follows.
        await acked(c["bob"], p.Send(client_id="b", conv=conv, body="welcome"))
        [msg] = await recv_messages(c["carol"], 1)
        assert (msg.seq, msg.body) == (3, "welcome")
        # Members may not add; only the creator.
        await rejected(c["bob"], p.Add(client_id="add-d", conv=conv, user="dave"), E.NOT_ALLOWED)
        await rejected(c["dave"], p.Add(client_id="x", conv=conv, user="dave"), E.NOT_MEMBER)
        await rejected(c["alice"], p.Add(client_id="y", conv=conv, user="zed"), E.UNKNOWN_PEER)
        await rejected(c["alice"], p.Add(client_id="z", conv=conv, user="bob"), E.ALREADY_MEMBER)
        await assert_silent(c["dave"])
        # A rejected client_id is not used up.
        ok = await acked(c["alice"], p.Add(client_id="z", conv=conv, user="dave"))
        assert ok.seq == 4
        [dave_first] = await recv_messages(c["dave"], 1)
        assert dave_first.members == ["alice", "bob", "carol", "dave"]
        assert dave_first.title == "t"
        # In a replay from empty cursors the copy is the same, title and members as then.
        await acked(c["alice"], p.Rename(client_id="r", conv=conv, title="renamed later"))
        again = await login(srv.url, "carol", srv.tokens["carol"])
        await again.ws.close()
        first = again.replayed[0]
        assert (first.kind, first.seq, first.title) == (K.ADDED, 2, "t")
        assert first.members == ["alice", "bob", "carol"]
        assert again.replayed[-1].title == "renamed later"
    finally:
        await close_all(c)


def _fields(msg: p.Message) -> dict[str, object]:
    return {f: getattr(msg, f) for f in msg.__struct_fields__}


async def test_remove_by_the_creator_ends_delivery_to_the_removed_member(
    chat_server: RunningServer,
) -> None:
    c = await logins(chat_server, "alice", "bob", "carol")
    try:
        create = p.Create(client_id="g", title="t", members=["bob", "carol"])
        conv = (await acked(c["alice"], create)).conv
        for ws in c.values():
            await recv_messages(ws, 1)
        await rejected(c["bob"], p.Remove(client_id="r0", conv=conv, user="carol"), E.NOT_ALLOWED)
        await rejected(c["alice"], p.Remove(client_id="r1", conv=conv, user="alice"), E.BAD_FRAME)
        await rejected(
            c["alice"], p.Remove(client_id="r2", conv=conv, user="dave"), E.NO_SUCH_MEMBER
        )
        ack = await acked(c["alice"], p.Remove(client_id="r3", conv=conv, user="carol"))
        assert ack.seq == 2
        # The removed member gets its removal: the last event it sees.
        for ws in c.values():
            [msg] = await recv_messages(ws, 1)
            assert (msg.seq, msg.kind, msg.user, msg.sender, msg.members) == (
                2,
                K.REMOVED,
                "carol",
                "alice",
                None,
            )
        await acked(c["bob"], p.Send(client_id="after", conv=conv, body="carol is gone"))
        await recv_messages(c["alice"], 1)
        await assert_silent(c["carol"])
        await rejected(
            c["alice"], p.Remove(client_id="r4", conv=conv, user="carol"), E.NO_SUCH_MEMBER
        )
    finally:
        await close_all(c)


async def test_leave_and_a_creator_who_left_leaves_nobody_to_add_or_remove(
    chat_server_factory: ServerFactory,
) -> None:
    srv = await chat_server_factory(users=USERS4)
    c = await logins(srv, "alice", "bob", "carol")
    try:
        create = p.Create(client_id="g", title="t", members=["bob", "carol"])
        conv = (await acked(c["alice"], create)).conv
        for ws in c.values():
            await recv_messages(ws, 1)
        ack = await acked(c["alice"], p.Leave(client_id="bye", conv=conv))
        for ws in c.values():
            [msg] = await recv_messages(ws, 1)
            assert (msg.seq, msg.kind, msg.sender, msg.user) == (ack.seq, K.LEFT, "alice", "alice")
        # The group goes on without its creator...
        await acked(c["bob"], p.Send(client_id="still", conv=conv, body="still here"))
        await recv_messages(c["carol"], 1)
        await assert_silent(c["alice"])
        # ...but nobody can add or remove any more.
        await rejected(c["bob"], p.Add(client_id="a", conv=conv, user="dave"), E.NOT_ALLOWED)
        await rejected(c["bob"], p.Remove(client_id="r", conv=conv, user="carol"), E.NOT_ALLOWED)
        await rejected(c["alice"], p.Add(client_id="a2", conv=conv, user="alice"), E.NOT_MEMBER)
        await rejected(c["alice"], p.Leave(client_id="bye2", conv=conv), E.NOT_MEMBER)
        await acked(c["carol"], p.Rename(client_id="n", conv=conv, title="No boss"))
    finally:
        await close_all(c)


async def test_rename_by_any_member_and_bad_titles(chat_server: RunningServer) -> None:
    c = await logins(chat_server, "alice", "bob", "carol")
    try:
        conv = (await acked(c["alice"], p.Create(client_id="g", title="t", members=["bob"]))).conv
        await recv_messages(c["bob"], 1)
        ack = await acked(c["bob"], p.Rename(client_id="n1", conv=conv, title="Renamed"))
        [msg] = await recv_messages(c["bob"], 1)
        assert (msg.seq, msg.kind, msg.title, msg.sender, msg.user) == (
            ack.seq,
            K.RENAMED,
            "Renamed",
            "bob",
            None,
        )
        assert db_rows(chat_server.db_path, "SELECT title FROM groups") == [("Renamed",)]
        for title in ("", "   ", "x" * 101):
            await rejected(c["bob"], p.Rename(client_id="n2", conv=conv, title=title), E.BAD_TITLE)
            await rejected(c["bob"], p.Create(client_id="c2", title=title), E.BAD_TITLE)
        await acked(c["bob"], p.Rename(client_id="n3", conv=conv, title="x" * 100))
        await rejected(c["carol"], p.Rename(client_id="n4", conv=conv, title="mine"), E.NOT_MEMBER)
    finally:
        await close_all(c)


async def test_send_needs_exactly_one_of_to_and_conv(chat_server: RunningServer) -> None:
    alice, *_ = await login(chat_server.url, "alice", chat_server.tokens["alice"])
    try:
        conv = (await acked(alice, p.Create(client_id="g", title="t"))).conv
        await rejected(alice, p.Send(client_id="both", to="bob", conv=conv, body="x"), E.BAD_FRAME)
        await rejected(alice, p.Send(client_id="neither", body="x"), E.BAD_FRAME)
        await rejected(
            alice, p.Send(client_id="nope", conv="g000000000000", body="x"), E.NOT_MEMBER
        )
        # A direct conversation's id is not a group.
        dm = await send_message(alice, "dm", "bob")
        assert isinstance(dm, p.Ack)
        await rejected(alice, p.Send(client_id="dmc", conv=dm.conv, body="x"), E.NOT_MEMBER)
        # Body checks apply to groups as to peers.
        await rejected(alice, p.Send(client_id="e", conv=conv, body="  "), E.EMPTY_BODY)
        await rejected(alice, p.Send(client_id="l", conv=conv, body="x" * 4001), E.TOO_LONG)
        # Direct messages work exactly as before.
        again = await send_message(alice, "dm2", "bob")
        assert isinstance(again, p.Ack) and (again.conv, again.seq) == (dm.conv, 2)
    finally:
        await alice.close()


async def test_limits_members_title_and_groups_per_user(chat_server_factory: ServerFactory) -> None:
    limits = Limits(max_group_members=3, max_title=5, max_groups_per_user=2)
    srv = await chat_server_factory(ServerConfig(limits=limits), users=USERS4)
    c = await logins(srv, "alice", "bob", "carol")
    try:
        a = c["alice"]
        four = p.Create(client_id="big", title="t", members=["bob", "carol", "dave"])
        await rejected(a, four, E.TOO_MANY_MEMBERS)
        await rejected(a, p.Create(client_id="u", title="t", members=["zed"]), E.UNKNOWN_PEER)
        await rejected(a, p.Create(client_id="long", title="x" * 6), E.BAD_TITLE)
        conv = (await acked(a, p.Create(client_id="g1", title="t", members=["bob", "carol"]))).conv
        await rejected(a, p.Add(client_id="add", conv=conv, user="dave"), E.TOO_MANY_MEMBERS)
        await acked(a, p.Create(client_id="g2", title="t", members=["bob"]))
        # alice is in two groups now: a third is refused to her...
        reject = await rejected(a, p.Create(client_id="g3", title="t"), E.TOO_MANY_GROUPS)
        assert "alice" in reject.reason
        # ...and bob, in two as well, cannot be added anywhere else or made a member.
        carols = (await acked(c["carol"], p.Create(client_id="c1", title="c"))).conv
        await rejected(
            c["carol"], p.Add(client_id="ab", conv=carols, user="bob"), E.TOO_MANY_GROUPS
        )
        await rejected(
            c["carol"], p.Create(client_id="c2", title="c", members=["bob"]), E.TOO_MANY_GROUPS
        )
        # Leaving frees a place.
        await acked(a, p.Leave(client_id="out", conv=conv))
        await acked(a, p.Create(client_id="g3", title="t"))
    finally:
        await close_all(c)


async def test_cancel_works_for_group_commands(chat_server: RunningServer) -> None:
    alice, *_ = await login(chat_server.url, "alice", chat_server.tokens["alice"])
    try:
        await send_frame(alice, p.Cancel(client_id="never"))
        cancelled, _ = await recv_until(alice, p.Cancelled)
        assert cancelled.client_id == "never"
        await rejected(alice, p.Create(client_id="never", title="t"), E.CANCELLED)
        ack = await acked(alice, p.Create(client_id="done", title="t"))
        await send_frame(alice, p.Cancel(client_id="done"))
        again, _ = await recv_until(alice, p.Ack)
        assert again == p.Ack("done", ack.conv, 1, ack.ts, duplicate=True)
        await rejected(alice, p.Rename(client_id="never", conv=ack.conv, title="u"), E.CANCELLED)
    finally:
        await alice.close()
    assert db_rows(chat_server.db_path, "SELECT count(*) FROM groups") == [(1,)]


async def test_group_commands_are_rate_limited_like_sends(
    chat_server_factory: ServerFactory,
) -> None:
    srv = await chat_server_factory(ServerConfig(limits=Limits(rate=0.5, burst=1)))
    alice, *_ = await login(srv.url, "alice", srv.tokens["alice"])
    try:
        await acked(alice, p.Create(client_id="g1", title="t"))
        answer = await command(alice, p.Create(client_id="g2", title="t"))
        assert isinstance(answer, p.Reject)
        assert (answer.code, answer.retryable) == (E.RATE_LIMITED, True)
        assert answer.retry_after is not None and answer.retry_after > 0
    finally:
        await alice.close()


async def test_receipts_in_a_group_go_to_current_members(chat_server: RunningServer) -> None:
    c = await logins(chat_server, "alice", "bob", "carol")
    try:
        create = p.Create(client_id="g", title="t", members=["bob", "carol"])
        conv = (await acked(c["alice"], create)).conv
        await acked(c["alice"], p.Send(client_id="m", conv=conv, body="read me"))
        await send_frame(c["bob"], p.Read(conv=conv, seq=99))
        for name in ("alice", "bob", "carol"):
            receipt, _ = await recv_until(c[name], p.Receipt)
            assert receipt == p.Receipt(conv, "bob", 2)
        await acked(c["alice"], p.Remove(client_id="r", conv=conv, user="carol"))
        await recv_until(c["carol"], p.Message)
        await send_frame(c["carol"], p.Read(conv=conv, seq=3))
        err, _ = await recv_until(c["carol"], p.Error)
        assert err.code == E.NOT_MEMBER
        await send_frame(c["alice"], p.Read(conv=conv, seq=3))
        receipt, _ = await recv_until(c["bob"], p.Receipt)
        assert receipt == p.Receipt(conv, "alice", 3)
        await assert_silent(c["carol"])
    finally:
        await close_all(c)
    # The replay carries the read positions of the current members only.
    bob = await login(chat_server.url, "bob", chat_server.tokens["bob"])
    carol = await login(chat_server.url, "carol", chat_server.tokens["carol"])
    await bob.ws.close()
    await carol.ws.close()
    assert sorted((r.user, r.read_seq) for r in bob.receipts) == [("alice", 3), ("bob", 2)]
    assert carol.receipts == []


async def test_history_of_a_group(chat_server: RunningServer) -> None:
    alice, *_ = await login(chat_server.url, "alice", chat_server.tokens["alice"])
    try:
        conv = (await acked(alice, p.Create(client_id="g", title="t", members=["bob"]))).conv
        for i in range(4):
            await acked(alice, p.Send(client_id=f"m{i}", conv=conv, body=f"msg {i}"))
        await send_frame(alice, p.HistoryRequest(conv=conv, before=4, limit=2))
        page, _ = await recv_until(alice, p.HistoryPage)
        assert [m.seq for m in page.messages] == [2, 3]
        assert page.complete is False
        await send_frame(alice, p.HistoryRequest(conv=conv, before=3))
        page, _ = await recv_until(alice, p.HistoryPage)
        assert [(m.seq, m.kind, m.members) for m in page.messages] == [
            (1, K.CREATED, ["alice", "bob"]),
            (2, K.TEXT, None),
        ]
        assert page.complete is True
        await send_frame(alice, p.HistoryRequest(conv=conv, after=3))
        page, _ = await recv_until(alice, p.HistoryPage)
        assert ([m.seq for m in page.messages], page.complete) == ([4, 5], True)
    finally:
        await alice.close()


# ---------------------------------------------------------------- the "done when"


async def test_outside_client_creates_talks_removes_and_the_removed_member_gets_nothing_more(
    chat_server: RunningServer,
) -> None:
    """Issue 10: an outside client speaking only the frames creates a group, exchanges
    messages with two members, removes one, and that member receives nothing more, live
    or in a replay from empty cursors; seqs have no gaps."""
    c = await logins(chat_server, "alice", "bob", "carol")
    seen: dict[str, list[p.Message]] = {name: [] for name in c}

    async def everyone_gets(count: int, names: tuple[str, ...]) -> None:
        for name in names:
            seen[name] += await recv_messages(c[name], count)

    try:
        create = p.Create(client_id="trip", title="Trip", members=["bob", "carol"])
        conv = (await acked(c["alice"], create)).conv
        await everyone_gets(1, ("alice", "bob", "carol"))
        # Sent without waiting for the acks (they are skipped while reading messages).
        for i, name in enumerate(("alice", "bob", "carol", "bob")):
            await send_frame(c[name], p.Send(client_id=f"{name}-{i}", conv=conv, body=f"hi {i}"))
        await everyone_gets(4, ("alice", "bob", "carol"))
        await send_frame(c["alice"], p.Remove(client_id="kick", conv=conv, user="carol"))
        await everyone_gets(1, ("alice", "bob", "carol"))
        removal = seen["alice"][-1]
        assert (removal.kind, removal.user, removal.client_id) == (K.REMOVED, "carol", "kick")
        for i, name in enumerate(("bob", "alice", "bob")):
            await send_frame(c[name], p.Send(client_id=f"after-{i}", conv=conv, body="secret"))
        await everyone_gets(3, ("alice", "bob"))
        await assert_silent(c["carol"])
    finally:
        await close_all(c)
    assert [m.seq for m in seen["alice"]] == list(range(1, 10))
    assert seen["bob"] == seen["alice"]
    assert seen["carol"] == seen["alice"][: removal.seq]
    assert seen["carol"][-1].kind == K.REMOVED and seen["carol"][-1].user == "carol"
    for name in ("alice", "bob", "carol"):
        again = await login(chat_server.url, name, chat_server.tokens[name])
        await again.ws.close()
        replayed = [m for m in again.replayed if m.conv == conv]
        assert replayed == seen[name], name
        assert again.synced.cursors[conv] == seen[name][-1].seq


# ---------------------------------------------------------------- durability and migration


async def test_groups_and_membership_survive_sigkill(tmp_path: Path) -> None:
    db_path = tmp_path / "proc.db"
    conn, _ = db.open_db(db_path)
    try:
        tokens = {name: db.add_user(conn, name) for name in USERS4}
    finally:
        conn.close()
    async with ServerProcess(db_path) as proc:
        alice = (await login(proc.url, "alice", tokens["alice"])).ws
        create = p.Create(client_id="g", title="Kept", members=["bob", "carol"])
        conv = (await acked(alice, create)).conv
        await acked(alice, p.Add(client_id="a", conv=conv, user="dave"))
        await acked(alice, p.Remove(client_id="r", conv=conv, user="carol"))
        await acked(alice, p.Send(client_id="s", conv=conv, body="after carol"))
        await alice.close()
        await proc.akill()
        await proc.arestart()
        alice = (await login(proc.url, "alice", tokens["alice"])).ws
        try:
            # The writer reloaded membership: the creator's rights and the members stand.
            await rejected(alice, p.Add(client_id="a2", conv=conv, user="bob"), E.ALREADY_MEMBER)
            await rejected(
                alice, p.Remove(client_id="r2", conv=conv, user="carol"), E.NO_SUCH_MEMBER
            )
            ack = await acked(alice, p.Send(client_id="s2", conv=conv, body="seq goes on"))
            assert ack.seq == 5
            # A duplicate across the restart returns the original ack.
            dup = await acked(alice, create)
            assert (dup.conv, dup.seq, dup.duplicate) == (conv, 1, True)
        finally:
            await alice.close()
        carol = await login(proc.url, "carol", tokens["carol"])
        dave = await login(proc.url, "dave", tokens["dave"])
        await carol.ws.close()
        await dave.ws.close()
        assert [m.seq for m in carol.replayed] == [1, 2, 3]
        assert [m.seq for m in dave.replayed] == [2, 3, 4, 5]
        assert dave.replayed[0].members == ["alice", "bob", "carol", "dave"]


# Version 2 as the previous server wrote it (from db.py before groups).
V2_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE users (
    id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL, token_hash BLOB NOT NULL,
    created_at INTEGER NOT NULL, removed_at INTEGER);
CREATE UNIQUE INDEX users_active_name ON users (name) WHERE removed_at IS NULL;
CREATE TABLE conversations (
    id TEXT PRIMARY KEY, user_a TEXT NOT NULL, user_b TEXT NOT NULL,
    last_seq INTEGER NOT NULL DEFAULT 0, a_id INTEGER NOT NULL REFERENCES users (id),
    b_id INTEGER NOT NULL REFERENCES users (id), UNIQUE (a_id, b_id));
CREATE INDEX conversations_b ON conversations (b_id);
CREATE TABLE messages (
    conv TEXT NOT NULL, seq INTEGER NOT NULL, sender TEXT NOT NULL, recipient TEXT NOT NULL,
    client_id TEXT NOT NULL, body TEXT NOT NULL, ts INTEGER NOT NULL,
    PRIMARY KEY (conv, seq)) WITHOUT ROWID;
CREATE TABLE sends (
    sender_id INTEGER NOT NULL, client_id TEXT NOT NULL, conv TEXT, seq INTEGER,
    ts INTEGER NOT NULL, PRIMARY KEY (sender_id, client_id)) WITHOUT ROWID;
CREATE TABLE reads (
    conv TEXT NOT NULL, user TEXT NOT NULL, read_seq INTEGER NOT NULL,
    PRIMARY KEY (conv, user)) WITHOUT ROWID;
"""


def make_v2_database(path: Path) -> dict[str, str]:
    """alice and bob talked (two messages, one read position, one tombstone)."""
    tokens = {"alice": "alice-token", "bob": "bob-token", "carol": "carol-token"}
    conn = sqlite3.connect(path)
    with conn:
        conn.executescript(V2_SCHEMA)
        conn.executemany(
            "INSERT INTO meta VALUES (?, ?)",
            [("epoch", "0123456789abcdef"), ("schema_version", "2")],
        )
        for i, (name, token) in enumerate(tokens.items(), start=1):
            conn.execute(
                "INSERT INTO users(id, name, token_hash, created_at) VALUES (?, ?, ?, ?)",
                (i, name, db.hash_token(token), i),
            )
        conn.execute("INSERT INTO conversations VALUES ('c00000000000a', 'alice', 'bob', 2, 1, 2)")
        conn.executemany(
            "INSERT INTO messages VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                ("c00000000000a", 1, "alice", "bob", "v2-a1", "one", 1000),
                ("c00000000000a", 2, "bob", "alice", "v2-b1", "two", 2000),
            ],
        )
        conn.executemany(
            "INSERT INTO sends VALUES (?, ?, ?, ?, ?)",
            [
                (1, "v2-a1", "c00000000000a", 1, 1000),
                (2, "v2-b1", "c00000000000a", 2, 2000),
                (1, "v2-gone", None, None, 1500),
            ],
        )
        conn.execute("INSERT INTO reads VALUES ('c00000000000a', 'bob', 1)")
    conn.close()
    return tokens


async def test_a_version_2_database_is_migrated_and_direct_messages_work_as_before(
    tmp_path: Path,
) -> None:
    path = tmp_path / "v2.db"
    tokens = make_v2_database(path)
    server = ChatServer(path)
    await asyncio.wait_for(server.start("127.0.0.1", 0), 10)
    try:
        assert server.epoch == "0123456789abcdef"
        assert db_rows(path, "SELECT value FROM meta WHERE key='schema_version'") == [("3",)]
        assert db_rows(path, "SELECT DISTINCT kind, user, title, members FROM messages") == [
            ("text", None, None, None)
        ]
        alice = await login(server.url, "alice", tokens["alice"])
        try:
            assert alice.synced.cursors == {"c00000000000a": 2}
            assert [(m.seq, m.sender, m.to, m.body, m.ts, m.kind) for m in alice.replayed] == [
                (1, "alice", "bob", "one", 1000, K.TEXT),
                (2, "bob", "alice", "two", 2000, K.TEXT),
            ]
            assert [(r.user, r.read_seq) for r in alice.receipts] == [("bob", 1)]
            # The registry carried over: a duplicate, a tombstone, and seqs go on.
            dup = await send_message(alice.ws, "v2-a1", "bob", "again")
            assert isinstance(dup, p.Ack) and (dup.seq, dup.duplicate) == (1, True)
            await rejected(alice.ws, p.Send(client_id="v2-gone", to="bob", body="x"), E.CANCELLED)
            ack = await send_message(alice.ws, "v3-a2", "bob", "three")
            assert isinstance(ack, p.Ack) and (ack.conv, ack.seq) == ("c00000000000a", 3)
            # And groups work on the migrated file.
            group = await acked(alice.ws, p.Create(client_id="v3-g", title="t", members=["bob"]))
            assert group.seq == 1
        finally:
            await alice.ws.close()
    finally:
        await asyncio.wait_for(server.stop(), 15)


def test_a_failed_migration_leaves_the_version_2_file_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "v2.db"
    make_v2_database(path)
    # A v2 file that already has a table called groups (nothing of ours): the migration
    # must fail as a whole, not leave half a v3 schema behind.
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE members (x)")
    conn.commit()
    conn.close()
    before = db_rows(path, "SELECT sql FROM sqlite_master ORDER BY name")
    try:
        db.open_db(path)
    except sqlite3.Error:
        pass
    else:
        raise AssertionError("the migration should have failed")
    assert db_rows(path, "SELECT sql FROM sqlite_master ORDER BY name") == before
    assert db_rows(path, "SELECT value FROM meta WHERE key='schema_version'") == [("2",)]


async def test_a_client_that_never_uses_groups_sees_nothing_new(
    chat_server: RunningServer,
) -> None:
    alice, *_ = await login(chat_server.url, "alice", chat_server.tokens["alice"])
    try:
        ack = await send_message(alice, "plain", "bob", "plain dm")
        assert isinstance(ack, p.Ack)
        raw = await asyncio.wait_for(alice.recv(), STEP)
        # A direct message on the wire: exactly the fields it always had.
        assert list(json.loads(raw)) == [
            "type",
            "conv",
            "seq",
            "sender",
            "client_id",
            "body",
            "ts",
            "to",
        ]
        await assert_silent(alice)
    finally:
        await alice.close()


@pytest.mark.sqlite_only
async def test_a_failed_commit_leaves_no_trace_in_the_writers_membership(
    chat_server_factory: ServerFactory,
) -> None:
    """A commit that fails (a real SQLite error, from a trigger) rejects the command as
    unavailable, and the writer reloads groups from the database: the member it was about
    to add is not one, and the seq it was about to use is used next, with no gap."""
    srv = await chat_server_factory(users=USERS4)
    alice = (await login(srv.url, "alice", srv.tokens["alice"])).ws
    dave = (await login(srv.url, "dave", srv.tokens["dave"])).ws
    try:
        conv = (await acked(alice, p.Create(client_id="g", title="t", members=["bob"]))).conv
        conn = sqlite3.connect(srv.db_path)
        conn.execute(
            "CREATE TRIGGER no_dave BEFORE INSERT ON members WHEN NEW.user = 'dave' "
            "BEGIN SELECT RAISE(ABORT, 'disk on fire'); END"
        )
        conn.commit()
        answer = await command(alice, p.Add(client_id="add", conv=conv, user="dave"))
        assert isinstance(answer, p.Reject)
        assert (answer.code, answer.retryable) == (E.UNAVAILABLE, True)
        conn.execute("DROP TRIGGER no_dave")
        conn.commit()
        conn.close()
        await rejected(dave, p.Send(client_id="d", conv=conv, body="am I in?"), E.NOT_MEMBER)
        sent = await acked(alice, p.Send(client_id="s", conv=conv, body="next"))
        assert sent.seq == 2
        # The rejected client_id was not used up: the same add now succeeds.
        added = await acked(alice, p.Add(client_id="add", conv=conv, user="dave"))
        assert (added.seq, added.duplicate) == (3, False)
    finally:
        await alice.close()
        await dave.close()
    assert db_rows(
        srv.db_path, "SELECT seq, kind FROM messages WHERE conv=? ORDER BY seq", (conv,)
    ) == [
        (1, "created"),
        (2, "text"),
        (3, "added"),
    ]
