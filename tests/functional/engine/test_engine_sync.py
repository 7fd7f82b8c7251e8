"""The engine's connection and catch-up: keepalive, server crash, epoch change, gap rule.

The server crash is a real ``tui-chat-server`` process killed with SIGKILL and started
again on the same port; the rest use the in-process server, with the fault proxy where the
network has to misbehave.
"""

from __future__ import annotations

import asyncio
import time

from harness.clientconf import FAST_SYNC
from harness.faultproxy import FaultProxy
from harness.serverproc import ServerProcess, clone_users
from harness.waits import stays, until
from tests.support.engines import Client, Engines, server_copies, server_messages
from tests.support.wire import RunningServer, ServerFactory
from tui_chat import protocol as p
from tui_chat.core.models import (
    ConnectionChanged,
    ConnState,
    EpochReset,
    MessageAdded,
    OutState,
)
from tui_chat.core.transport import FrameSink, SessionEnd
from tui_chat.core.ws_transport import WebSocketTransport
from tui_chat.server.app import ChatServer

SENT = OutState.SENT
# Scheduling slack on a loaded machine, on top of what the keepalive settings promise.
MARGIN = 0.6


def store_triples(client: Client) -> set[tuple[str, int, str]]:
    return {(m.conv or "", m.seq or 0, m.client_id) for m in client.engine.store.all_messages()}


async def test_blackholed_link_is_noticed_within_the_keepalive_then_recovers(
    chat_server: RunningServer, proxy: FaultProxy, engines: Engines
) -> None:
    alice = await engines.start("alice", chat_server.tokens["alice"], proxy.url)
    await alice.online()
    # A few keepalive rounds on a healthy link first.
    await stays(lambda: alice.state is ConnState.ONLINE, "online", 0.3)

    seen = len(alice.events)
    started = time.monotonic()
    proxy.blackhole(direction="both")
    await until(lambda: alice.state is not ConnState.ONLINE, "the dead link to be noticed", 5)
    noticed = time.monotonic() - started
    # Declared dead within ping_interval + ping_timeout + 0.5 s: the engine drops the
    # socket without waiting for a close handshake (MARGIN: scheduling on a loaded box).
    bound = FAST_SYNC["ping_interval"] + FAST_SYNC["ping_timeout"] + 0.5 + MARGIN
    assert noticed <= bound, f"noticed after {noticed:.2f} s, expected at most {bound:.2f} s"

    statuses = [e.status for e in alice.events[seen:] if isinstance(e, ConnectionChanged)]
    # Before the verdict the status line already said "no answer" (the ping was late).
    assert statuses[0].state is ConnState.ONLINE and statuses[0].silent_since is not None
    changes = [s for s in statuses if s.state is not ConnState.ONLINE]
    assert changes[0].state is ConnState.OFFLINE
    assert changes[0].reason == "keepalive timeout: no answer from the server for 0.2 s"
    assert changes[0].retry_in is not None and changes[0].retry_in <= FAST_SYNC["backoff_cap"]

    proxy.pass_through()
    # A reconnect attempt begun during the blackhole may hang until connect_timeout.
    await alice.online(within=FAST_SYNC["connect_timeout"] + 3)
    cid = alice.engine.send("bob", "the link works again").client_id
    await until(lambda: alice.state_of(cid) is SENT, "a message over the restored link")
    assert server_copies(chat_server.db_path, cid) == 1


async def test_server_killed_mid_stream_catch_up_has_no_gap_and_no_duplicate(
    server_process: ServerProcess, engines: Engines
) -> None:
    db = server_process.db_path
    tokens = server_process.tokens  # type: ignore[attr-defined]
    alice = await engines.start("alice", tokens["alice"], server_process.url)
    bob = await engines.start("bob", tokens["bob"], server_process.url)
    await alice.online()
    await bob.online()

    total = 300
    cids = [bob.engine.send("alice", f"message {i}").client_id for i in range(total)]
    await until(lambda: len(server_messages(db)) >= 40, "the stream to be under way")
    assert await server_process.akill() == -9
    stored_at_kill = len(server_messages(db))
    assert stored_at_kill < total, "the stream ended before the kill; make it longer"
    await until(
        lambda: alice.state is not ConnState.ONLINE and bob.state is not ConnState.ONLINE,
        "both clients to notice the crash",
    )
    await server_process.arestart()

    await until(
        lambda: all(bob.state_of(c) is SENT for c in cids), "bob's whole stream to be sent", 30
    )
    rows = server_messages(db)
    [conv] = {r[0] for r in rows}
    assert [r[1] for r in rows] == list(range(1, total + 1))
    assert sorted(r[3] for r in rows) == sorted(cids)  # every message once, none twice
    await until(lambda: alice.engine.store.watermarks() == {conv: total}, "alice to catch up", 15)
    server_set = {(r[0], r[1], r[3]) for r in rows}
    assert store_triples(alice) == server_set
    assert store_triples(bob) == server_set
    assert bob.engine.store.watermarks() == {conv: total}
    assert bob.engine.outbox_count() == 0

    # Alice was shown every message exactly once, in seq order.
    shown = [e.message.seq for e in alice.of(MessageAdded)]
    assert shown == list(range(1, total + 1))
    assert alice.engine.conversation("bob").unread == total


async def test_epoch_change_drops_cursors_resyncs_and_keeps_the_outbox(
    chat_server_factory: ServerFactory, engines: Engines, tmp_path
) -> None:
    old_srv = await chat_server_factory(name="old")
    port = old_srv.port
    alice = await engines.start("alice", old_srv.tokens["alice"], old_srv.url)
    bob = await engines.start("bob", old_srv.tokens["bob"], old_srv.url)
    await alice.online()
    await bob.online()
    old_cid = bob.engine.send("alice", "from the old history").client_id
    await until(lambda: alice.added(old_cid), "alice to get bob's message")
    old_epoch = alice.engine.store.epoch
    assert old_epoch == old_srv.server.epoch
    [old_conv] = alice.engine.store.watermarks()

    await old_srv.server.stop()
    await until(lambda: alice.state is not ConnState.ONLINE, "alice to see the server go")
    pending = alice.engine.send("bob", "written between the two servers").client_id

    # The "same" server comes back with a new database: same accounts, a new epoch.
    new_db = tmp_path / "new.db"
    new_epoch = clone_users(old_srv.db_path, new_db)
    assert new_epoch != old_epoch
    new_srv = ChatServer(new_db)
    async with asyncio.timeout(10):
        await new_srv.start("127.0.0.1", port)
    try:
        await until(lambda: alice.state_of(pending) is SENT, "the kept message to be sent")
        await alice.online()
        assert [(e.old, e.new) for e in alice.of(EpochReset)] == [(old_epoch, new_epoch)]
        assert alice.engine.store.epoch == new_epoch
        rows = server_messages(new_db)
        assert [(seq, sender, c) for _conv, seq, sender, c in rows] == [(1, "alice", pending)]
        new_conv = rows[0][0]
        assert new_conv != old_conv
        assert alice.engine.store.watermarks() == {new_conv: 1}
        assert store_triples(alice) == {(new_conv, 1, pending)}
        assert server_copies(new_db, old_cid) == 0
        # Bob resyncs too and sees alice's message in the new history.
        await until(lambda: bob.added(pending), "bob to get alice's message")
        assert bob.engine.store.watermarks() == {new_conv: 1}
    finally:
        await engines.aclose()
        async with asyncio.timeout(10):
            await new_srv.stop()


async def test_gap_in_the_stream_is_filled_from_history(
    chat_server: RunningServer, engines: Engines
) -> None:
    """A live message whose seq skips ahead makes the engine fetch the missing range.

    TCP does not lose frames inside one connection, so the loss is staged in the client:
    the engine's frame dispatcher drops the live ``message`` frames for seqs 2 and 3, as a
    buggy relay would. Seq 4 then arrives with a gap below it; the engine must ask the
    real server for 2..3 (a ``history`` request with ``after``) and end with no hole.
    """
    dropped: list[int] = []

    class LossySink:
        """Passes every frame on to the sync core but the live messages for seq 2 and 3."""

        def __init__(self, sink: FrameSink) -> None:
            self.sink = sink

        def on_welcome(self, welcome: p.Welcome) -> SessionEnd | None:
            return self.sink.on_welcome(welcome)

        def on_frame(self, frame: p.ServerFrame) -> SessionEnd | None:
            if isinstance(frame, p.Message) and frame.seq in (2, 3):
                dropped.append(frame.seq)
                return None
            return self.sink.on_frame(frame)

        def on_undecodable(self, code: str, reason: str) -> None:
            self.sink.on_undecodable(code, reason)

        def on_silence(self, since: float | None) -> None:
            self.sink.on_silence(since)

    class LossyTransport(WebSocketTransport):
        async def session(self, hello: p.Hello, sink: FrameSink) -> SessionEnd:
            return await super().session(hello, LossySink(sink))

    cfg = engines.config("alice", chat_server.tokens["alice"], chat_server.url)
    lossy = LossyTransport(cfg.server.url, cfg.sync)
    alice = await engines.run(cfg, chat_server.tokens["alice"], lossy)
    bob = await engines.start("bob", chat_server.tokens["bob"], chat_server.url)
    await alice.online()
    await bob.online()

    cids = []
    for i in range(1, 4):
        cids.append(bob.engine.send("alice", f"message {i}").client_id)
        await until(lambda: bob.state_of(cids[-1]) is SENT, f"bob's message {i} to be sent")
    await until(lambda: dropped == [2, 3], "the live frames for seq 2 and 3 to be dropped")
    [conv] = alice.engine.store.watermarks()
    assert alice.engine.store.watermarks() == {conv: 1}

    cids.append(bob.engine.send("alice", "message 4").client_id)
    await until(
        lambda: alice.engine.store.watermarks() == {conv: 4}, "the gap below seq 4 to be filled"
    )
    server_set = {(r[0], r[1], r[3]) for r in server_messages(chat_server.db_path)}
    assert store_triples(alice) == server_set == {(conv, i + 1, c) for i, c in enumerate(cids)}
    for cid in cids:
        assert len(alice.added(cid)) == 1
    assert sorted(e.message.seq for e in alice.of(MessageAdded)) == [1, 2, 3, 4]
    assert [m.seq for m in alice.engine.messages("bob")] == [1, 2, 3, 4]
    # Filled by the history request on the same connection, not by a reconnect's replay.
    onlines = [e for e in alice.of(ConnectionChanged) if e.status.state is ConnState.ONLINE]
    assert len(onlines) == 1


async def test_stop_during_the_handshake_returns_promptly(
    chat_server: RunningServer, proxy: FaultProxy, engines: Engines
) -> None:
    # Slow keepalive so that only stop() can end this connection soon.
    proxy.delay(0.5, direction="down")
    alice = await engines.start(
        "alice", chat_server.tokens["alice"], proxy.url, ping_interval=20, ping_timeout=20
    )
    await until(lambda: proxy.connections_total == 1, "the handshake to begin")
    assert alice.state is ConnState.CONNECTING
    started = time.monotonic()
    await engines.stop(alice, within=3)
    assert time.monotonic() - started < 3
    assert alice.state is ConnState.STOPPED
