"""The engine's outbox against a real server, real SQLite and the fault proxy.

Each test states one promise of the issue ("sent once", "never two copies", "stale needs
consent", ...) and checks it where it is kept: in the server's database (how many copies
exist), in the client's store, and in the events a UI would have drawn.
"""

from __future__ import annotations

import asyncio
import sqlite3

from harness.faultproxy import FaultProxy
from harness.waits import stays, until
from tests.support.engines import Engines, server_copies, server_messages
from tests.support.wire import RunningServer, ServerFactory
from tui_chat import protocol as p
from tui_chat.core.models import ConnState, DeliveredAnyway, OutState
from tui_chat.server.config import Limits, ServerConfig

PENDING, SENT, FAILED, GIVEN_UP = (
    OutState.PENDING,
    OutState.SENT,
    OutState.FAILED,
    OutState.GIVEN_UP,
)
CANCELLING = OutState.CANCELLING


def outbox_state_on_disk(store_path, client_id: str) -> str | None:
    """The outbox row as another process would see it: only committed data is visible."""
    conn = sqlite3.connect(f"file:{store_path}?mode=ro", uri=True, timeout=5)
    try:
        row = conn.execute("SELECT state FROM outbox WHERE client_id=?", (client_id,)).fetchone()
        return None if row is None else str(row[0])
    finally:
        conn.close()


def local_copies(client, client_id: str) -> int:
    return sum(1 for m in client.engine.store.all_messages() if m.client_id == client_id)


async def test_send_while_offline_stays_pending_then_is_sent_once(
    chat_server: RunningServer, proxy: FaultProxy, engines: Engines
) -> None:
    proxy.refuse()
    alice = await engines.start("alice", chat_server.tokens["alice"], proxy.url)
    await until(lambda: proxy.connections_total >= 2, "two refused connection attempts")
    assert alice.state in (ConnState.CONNECTING, ConnState.OFFLINE)

    view = alice.engine.send("bob", "written while offline")
    cid = view.client_id
    assert (view.state, view.seq, view.own) == (PENDING, None, True)
    # Committed before send() returned: a separate connection already sees the row.
    assert outbox_state_on_disk(alice.config.store_path(), cid) == "pending"
    assert alice.engine.outbox_count() == 1

    await stays(lambda: alice.state_of(cid) is PENDING, "the message to stay pending", 0.3)
    assert server_messages(chat_server.db_path) == []

    proxy.pass_through()
    await until(lambda: alice.state_of(cid) is SENT, "the message to be sent")
    rows = server_messages(chat_server.db_path)
    assert [(seq, sender, c) for _conv, seq, sender, c in rows] == [(1, "alice", cid)]
    sent = alice.engine.message(cid)
    assert sent is not None and (sent.conv, sent.seq) == (rows[0][0], 1)
    assert alice.engine.store.outbox_row(cid).attempts == 1
    assert alice.engine.outbox_count() == 0
    # One bubble, drawn once, changed once: pending → sent.
    assert len(alice.added(cid)) == 1
    assert [e.message.state for e in alice.changed(cid)] == [SENT]
    assert [(m.client_id, m.state) for m in alice.engine.messages("bob")] == [(cid, SENT)]
    assert local_copies(alice, cid) == 1


async def test_lost_ack_leaves_one_server_copy_and_the_message_sent(
    chat_server: RunningServer, proxy: FaultProxy, engines: Engines
) -> None:
    db = chat_server.db_path
    alice = await engines.start("alice", chat_server.tokens["alice"], proxy.url)
    await alice.online()
    # A first message so that the conversation (and a cursor for it) already exists.
    first = alice.engine.send("bob", "before the cut").client_id
    await until(lambda: alice.state_of(first) is SENT, "the first message to be sent")

    # Bytes still go up, nothing comes down: the server stores the message, its ack is lost.
    proxy.blackhole(direction="down")
    cid = alice.engine.send("bob", "the ack of this one is lost").client_id
    await until(lambda: server_copies(db, cid) == 1, "the server to store the message")
    assert alice.state_of(cid) is PENDING  # maybe sent: the client cannot know yet

    await until(lambda: alice.state is not ConnState.ONLINE, "the dead link to be noticed")
    assert alice.state_of(cid) is PENDING
    proxy.pass_through()
    await until(lambda: alice.state_of(cid) is SENT, "the catch-up to confirm the message")
    await alice.online()
    # Room for a blind resend to show up, if there were one.
    await stays(lambda: server_copies(db, cid) == 1, "one copy on the server", 0.3)
    assert [c for *_, c in server_messages(db)] == [first, cid]
    sent = alice.engine.message(cid)
    assert sent is not None and sent.seq == 2
    # Recognised in the catch-up, not sent a second time.
    assert alice.engine.store.outbox_row(cid).attempts == 1
    assert local_copies(alice, cid) == 1
    assert len(alice.added(cid)) == 1
    assert [e.message.state for e in alice.changed(cid)] == [SENT]
    assert alice.engine.store.watermarks() == {sent.conv: 2}


async def test_unacked_message_is_not_resent_before_the_catch_up_is_applied(
    chat_server: RunningServer, proxy: FaultProxy, engines: Engines
) -> None:
    """Resending before ``synced`` would be a blind resend of what the replay may hold.

    The ack is lost, then the link is cut and comes back slow (every server frame 0.3 s
    late), which holds the engine between login and ``synced`` long enough to poke its
    sender with another message. Every ``send`` frame the engine writes is recorded with
    whether the engine was online (caught up) at that moment.
    """
    db = chat_server.db_path
    # Keepalive patient enough for the slow link.
    alice = await engines.start(
        "alice", chat_server.tokens["alice"], proxy.url, ping_interval=0.5, ping_timeout=1.0
    )
    await alice.online()
    engine = alice.engine
    written: list[tuple[str, bool]] = []
    logins: list[p.Hello] = []

    def recording(direction: str, frame: object) -> None:
        if direction == "out" and isinstance(frame, p.Send):
            written.append((frame.client_id, engine.status.state is ConnState.ONLINE))
        elif isinstance(frame, p.Hello):
            logins.append(frame)

    engine.observe_frames(recording)

    proxy.blackhole(direction="down")
    cid = engine.send("bob", "ack lost").client_id
    await until(lambda: server_copies(db, cid) == 1, "the server to store the message")
    proxy.delay(0.3, direction="down")
    proxy.close_all()
    await until(lambda: alice.state is not ConnState.ONLINE, "the cut to be noticed")
    await until(
        lambda: len(logins) == 1 and alice.state is not ConnState.ONLINE,
        "a login that is not caught up",
    )
    nudge = engine.send("carol", "wakes the sender mid catch-up").client_id
    await until(lambda: alice.state_of(nudge) is SENT, "the nudge to be sent", within=5)

    assert alice.state_of(cid) is SENT
    assert engine.store.outbox_row(cid).attempts == 1
    assert written == [(cid, True), (nudge, True)]
    assert server_copies(db, cid) == 1


async def test_given_up_message_the_server_has_shows_as_sent_once(
    chat_server: RunningServer, proxy: FaultProxy, engines: Engines
) -> None:
    db = chat_server.db_path
    alice = await engines.start("alice", chat_server.tokens["alice"], proxy.url)
    await alice.online()
    proxy.blackhole(direction="down")
    cid = alice.engine.send("bob", "given up, but it got there").client_id
    await until(lambda: server_copies(db, cid) == 1, "the server to store the message")

    # It may have reached the server (it did): the engine cannot promise it will not be
    # delivered, so it is cancelling until the server answers.
    gone = alice.engine.give_up(cid)
    assert gone.state is CANCELLING
    assert not alice.engine.can_undo_give_up(cid) or alice.state_of(cid) is CANCELLING
    assert alice.engine.outbox_count() == 1

    # The link is dead (as a lost ack means in real life); once that is noticed, restore it.
    await until(lambda: alice.state is not ConnState.ONLINE, "the dead link to be noticed")
    assert alice.state_of(cid) is CANCELLING
    proxy.pass_through()
    await until(lambda: alice.state_of(cid) is SENT, "the given-up message to show as sent")
    await alice.online()
    await stays(lambda: server_copies(db, cid) == 1, "one copy on the server", 0.3)
    assert local_copies(alice, cid) == 1
    assert len(alice.added(cid)) == 1
    assert [e.message.state for e in alice.changed(cid)] == [CANCELLING, SENT]
    [anyway] = alice.of(DeliveredAnyway)
    assert anyway.message.client_id == cid and anyway.message.state is SENT
    assert [(m.client_id, m.state) for m in alice.engine.messages("bob")] == [(cid, SENT)]


async def test_given_up_message_is_never_sent(
    chat_server: RunningServer, proxy: FaultProxy, engines: Engines
) -> None:
    proxy.refuse()
    alice = await engines.start("alice", chat_server.tokens["alice"], proxy.url)
    cid = alice.engine.send("bob", "never mind").client_id
    alice.engine.give_up(cid)
    proxy.pass_through()
    await alice.online()
    after = alice.engine.send("bob", "this one goes").client_id
    await until(lambda: alice.state_of(after) is SENT, "the later message to be sent")
    await stays(
        lambda: [c for *_, c in server_messages(chat_server.db_path)] == [after],
        "only the later message on the server",
        0.2,
    )
    assert alice.state_of(cid) is GIVEN_UP


async def test_stale_pending_message_fails_at_restart_and_waits_for_retry(
    chat_server: RunningServer, proxy: FaultProxy, engines: Engines
) -> None:
    db = chat_server.db_path
    token = chat_server.tokens["alice"]
    cfg = engines.config("alice", token, proxy.url, freshness_window=1.0)
    proxy.refuse()
    first_run = await engines.run(cfg, token)
    cid = first_run.engine.send("bob", "written an hour ago, so to speak").client_id
    assert first_run.state_of(cid) is PENDING
    await engines.stop(first_run)  # the app closes with the message unsent

    await asyncio.sleep(1.3)  # longer than the freshness window
    proxy.pass_through()
    second_run = await engines.run(cfg, token)
    stale = second_run.engine.message(cid)
    assert stale is not None and stale.state is FAILED
    assert stale.retryable is True
    assert stale.error is not None and "older than 1 s" in stale.error
    await second_run.online()
    await stays(lambda: second_run.state_of(cid) is FAILED, "the stale message to wait", 0.5)
    assert server_messages(db) == []

    second_run.engine.retry(cid)
    assert second_run.state_of(cid) in (PENDING, SENT)
    await until(lambda: second_run.state_of(cid) is SENT, "the retried message to be sent")
    assert server_copies(db, cid) == 1
    assert second_run.engine.store.outbox_row(cid).attempts == 1


async def test_non_retryable_reject_fails_at_once_and_holds_later_messages(
    chat_server_factory: ServerFactory, engines: Engines
) -> None:
    srv = await chat_server_factory(config=ServerConfig(limits=Limits(max_body=10)))
    alice = await engines.start("alice", srv.tokens["alice"], srv.url, on_failure="hold")
    await alice.online()

    too_long = alice.engine.send("bob", "x" * 11).client_id
    later = alice.engine.send("bob", "short").client_id
    await until(lambda: alice.state_of(too_long) is FAILED, "the reject", within=3)
    failed = alice.engine.message(too_long)
    assert failed is not None
    assert failed.error == "message is 11 characters; the limit is 10"
    assert failed.retryable is False

    held = alice.engine.message(later)
    assert held is not None and (held.state, held.held) == (PENDING, True)
    # Another peer is not held up by bob's failure.
    other = alice.engine.send("carol", "not held").client_id
    await until(lambda: alice.state_of(other) is SENT, "the message to carol to be sent")
    await stays(
        lambda: alice.engine.message(later).held and alice.state_of(later) is PENDING,
        "the later message to bob to be held",
        0.3,
    )
    assert [c for *_, c in server_messages(srv.db_path)] == [other]
    assert alice.engine.conversation("bob").failed == 1

    alice.engine.give_up(too_long)
    await until(lambda: alice.state_of(later) is SENT, "the held message to go")
    assert not alice.engine.message(later).held
    assert any(not e.message.held for e in alice.changed(later))
    assert server_copies(srv.db_path, later) == 1
    assert server_copies(srv.db_path, too_long) == 0


async def test_unknown_peer_fails_at_once_with_the_server_reason(
    chat_server: RunningServer, engines: Engines
) -> None:
    alice = await engines.start("alice", chat_server.tokens["alice"], chat_server.url)
    await alice.online()
    cid = alice.engine.send("nobody", "hello?").client_id
    await until(lambda: alice.state_of(cid) is FAILED, "the reject", within=3)
    m = alice.engine.message(cid)
    assert m is not None
    assert (m.error, m.retryable) == ("there is no user 'nobody'", False)
    assert server_messages(chat_server.db_path) == []
    # Failed, not resent: it stays failed with exactly one attempt.
    await stays(lambda: alice.state_of(cid) is FAILED, "the message to stay failed", 0.3)
    assert alice.engine.store.outbox_row(cid).attempts == 1


async def test_edit_and_retry_takes_the_failed_message_place_in_order(
    chat_server_factory: ServerFactory, engines: Engines
) -> None:
    srv = await chat_server_factory(config=ServerConfig(limits=Limits(max_body=10)))
    alice = await engines.start("alice", srv.tokens["alice"], srv.url, on_failure="hold")
    await alice.online()
    too_long = alice.engine.send("bob", "far too long").client_id
    later = alice.engine.send("bob", "second").client_id
    await until(lambda: alice.state_of(too_long) is FAILED, "the reject", within=3)

    edited = alice.engine.edit_and_retry(too_long, "first").client_id
    assert edited != too_long
    await until(lambda: alice.state_of(later) is SENT, "both messages to be sent")
    assert alice.state_of(edited) is SENT
    assert alice.state_of(too_long) is GIVEN_UP
    rows = server_messages(srv.db_path)
    # The edit went first: compose order is kept.
    assert [(seq, c) for _conv, seq, _s, c in rows] == [(1, edited), (2, later)]


async def test_bad_token_stops_without_a_reconnect_storm(
    chat_server: RunningServer, proxy: FaultProxy, engines: Engines
) -> None:
    alice = await engines.start("alice", "not-the-right-token", proxy.url)
    await until(lambda: alice.state is ConnState.AUTH_FAILED, "auth_failed", within=5)
    assert alice.engine.status.reason == "unknown user or wrong token"
    await stays(lambda: proxy.connections_total == 1, "no reconnect after auth failed", 1.0)
    assert alice.state is ConnState.AUTH_FAILED

    # The user's explicit reconnect tries exactly once more.
    alice.engine.reconnect_now()
    await until(lambda: proxy.connections_total == 2, "the user's reconnect")
    await until(lambda: alice.state is ConnState.AUTH_FAILED, "auth_failed again", within=5)
    await stays(lambda: proxy.connections_total == 2, "no reconnect after auth failed", 0.5)


async def test_two_devices_of_one_user_see_each_others_messages(
    chat_server: RunningServer, engines: Engines
) -> None:
    token = chat_server.tokens["alice"]
    laptop = await engines.start("alice", token, chat_server.url, name="laptop")
    phone = await engines.start("alice", token, chat_server.url, name="phone")
    await laptop.online()
    await phone.online()

    from_laptop = laptop.engine.send("bob", "from the laptop").client_id
    await until(lambda: laptop.state_of(from_laptop) is SENT, "the laptop's message sent")
    await until(lambda: phone.added(from_laptop), "the phone to get the laptop's message")
    from_phone = phone.engine.send("bob", "from the phone").client_id
    await until(lambda: phone.state_of(from_phone) is SENT, "the phone's message sent")
    await until(lambda: laptop.added(from_phone), "the laptop to get the phone's message")

    for device, own_cid, other_cid in (
        (laptop, from_laptop, from_phone),
        (phone, from_phone, from_laptop),
    ):
        [seen] = device.added(other_cid)
        assert seen.message.own is True and seen.message.state is SENT
        assert seen.message.sender == "alice" and seen.message.peer == "bob"
        assert len(device.added(own_cid)) == 1
        shown = [(m.seq, m.client_id, m.state) for m in device.engine.messages("bob")]
        assert shown == [(1, from_laptop, SENT), (2, from_phone, SENT)]
    assert len(server_messages(chat_server.db_path)) == 2
