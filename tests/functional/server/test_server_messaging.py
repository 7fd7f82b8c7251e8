"""Sending, idempotency, replay, privacy, receipts, history, multi-device and seq order."""

from __future__ import annotations

import asyncio
import itertools

from websockets.asyncio.client import ClientConnection

from tests.support.wire import (
    STEP,
    RunningServer,
    assert_silent,
    db_rows,
    login,
    recv_frame,
    recv_until,
    send_frame,
    send_message,
)
from tui_chat.protocol import (
    Ack,
    Error,
    ErrorCode,
    HistoryPage,
    HistoryRequest,
    Message,
    Read,
    Receipt,
    Send,
    ServerFrame,
)


async def acked(ws: ClientConnection, client_id: str, to: str, body: str = "hi") -> Ack:
    result = await send_message(ws, client_id, to, body)
    assert isinstance(result, Ack), result
    return result


async def recv_message(ws: ClientConnection) -> Message:
    msg, skipped = await recv_until(ws, Message)
    assert skipped == [], skipped
    return msg


async def exchange(srv: RunningServer, count: int, prefix: str = "m") -> tuple[str, list[Ack]]:
    """alice sends ``count`` messages to bob (nobody else online); return conv and acks."""
    ws, *_ = await login(srv.url, "alice", srv.tokens["alice"])
    try:
        acks = [await acked(ws, f"{prefix}{i}", "bob", f"body {i}") for i in range(count)]
    finally:
        await ws.close()
    assert len({a.conv for a in acks}) == 1
    return acks[0].conv, acks


async def test_send_ack_and_peer_receives(chat_server: RunningServer) -> None:
    alice, *_ = await login(chat_server.url, "alice", chat_server.tokens["alice"])
    bob, *_ = await login(chat_server.url, "bob", chat_server.tokens["bob"])
    try:
        await send_frame(alice, Send(client_id="hello-1", to="bob", body="hi bob"))
        ack = await recv_frame(alice)
        assert isinstance(ack, Ack)
        assert (ack.client_id, ack.seq, ack.duplicate) == ("hello-1", 1, False)
        assert ack.conv.startswith("c")
        # The sender's own message comes back in its stream too (for its other devices).
        echo = await recv_frame(alice)
        expected = Message(ack.conv, 1, "alice", "hello-1", "hi bob", ack.ts, to="bob")
        assert echo == expected
        assert await recv_message(bob) == expected
        # Ack means committed: the row is in the file.
        rows = db_rows(
            chat_server.db_path,
            "SELECT conv, seq, sender, recipient, client_id, body, ts FROM messages",
        )
        assert rows == [(ack.conv, 1, "alice", "bob", "hello-1", "hi bob", ack.ts)]
        # The reply lands in the same conversation with the next seq.
        reply = await acked(bob, "re-1", "alice", "hi alice")
        assert (reply.conv, reply.seq) == (ack.conv, 2)
        msg, _ = await recv_until(alice, Message)
        assert (msg.seq, msg.sender, msg.body) == (2, "bob", "hi alice")
    finally:
        await alice.close()
        await bob.close()


async def test_message_to_self_is_stored_once_and_delivered_once(
    chat_server: RunningServer,
) -> None:
    alice, *_ = await login(chat_server.url, "alice", chat_server.tokens["alice"])
    try:
        ack = await acked(alice, "note", "alice", "note to self")
        assert ack.seq == 1
        msg = await recv_message(alice)
        assert (msg.sender, msg.to, msg.seq) == ("alice", "alice", 1)
        await assert_silent(alice)
    finally:
        await alice.close()
    again, _, replayed, synced = await login(chat_server.url, "alice", chat_server.tokens["alice"])
    await again.close()
    assert [m.client_id for m in replayed] == ["note"]
    assert synced.cursors == {ack.conv: 1}


async def test_same_client_id_twice_is_stored_once(chat_server: RunningServer) -> None:
    url, tokens = chat_server.url, chat_server.tokens
    alice, *_ = await login(url, "alice", tokens["alice"])
    bob, *_ = await login(url, "bob", tokens["bob"])
    try:
        first = await acked(alice, "dup-1", "bob", "only once")
        assert first.duplicate is False
        again = await acked(alice, "dup-1", "bob", "only once")
        assert again == Ack("dup-1", first.conv, first.seq, first.ts, duplicate=True)
        # A retry with a different body is still the same message: the original wins.
        changed = await acked(alice, "dup-1", "bob", "edited?")
        assert (changed.seq, changed.duplicate) == (first.seq, True)
    finally:
        await alice.close()
    # A new connection (as after a reconnect) retries the same send.
    alice2, _, replayed, _ = await login(url, "alice", tokens["alice"])
    try:
        assert [m.client_id for m in replayed] == ["dup-1"]
        third = await acked(alice2, "dup-1", "bob", "only once")
        assert third == Ack("dup-1", first.conv, first.seq, first.ts, duplicate=True)
        # Only one message was ever stored.
        rows = db_rows(
            chat_server.db_path,
            "SELECT seq, body FROM messages WHERE sender='alice' AND client_id='dup-1'",
        )
        assert rows == [(first.seq, "only once")]
        assert db_rows(chat_server.db_path, "SELECT count(*) FROM messages") == [(1,)]
        # The peer saw it exactly once.
        msg = await recv_message(bob)
        assert (msg.client_id, msg.seq) == ("dup-1", first.seq)
        await assert_silent(bob)
        # And the next new message gets the next seq: the duplicates used none.
        nxt = await acked(alice2, "dup-2", "bob")
        assert nxt.seq == first.seq + 1
    finally:
        await alice2.close()
        await bob.close()


async def test_duplicate_within_one_commit_batch(chat_server: RunningServer) -> None:
    """Two sends of one client_id back to back usually land in the same group commit."""
    alice, *_ = await login(chat_server.url, "alice", chat_server.tokens["alice"])
    try:
        frame = Send(client_id="twin", to="bob", body="x")
        await asyncio.gather(send_frame(alice, frame), send_frame(alice, frame))
        frames = [await recv_frame(alice) for _ in range(3)]
        await assert_silent(alice)
        acks = [f for f in frames if isinstance(f, Ack)]
        assert [a.duplicate for a in acks] == [False, True]
        assert acks[0].seq == acks[1].seq == 1
        assert acks[0].ts == acks[1].ts
        # One echo only.
        echoes = [f for f in frames if isinstance(f, Message)]
        assert [m.seq for m in echoes] == [1]
    finally:
        await alice.close()
    assert db_rows(chat_server.db_path, "SELECT count(*) FROM messages") == [(1,)]


async def test_client_id_is_unique_per_sender_not_globally(chat_server: RunningServer) -> None:
    alice, *_ = await login(chat_server.url, "alice", chat_server.tokens["alice"])
    bob, *_ = await login(chat_server.url, "bob", chat_server.tokens["bob"])
    try:
        a = await acked(alice, "same-id", "bob", "from alice")
        b = await acked(bob, "same-id", "alice", "from bob")
        assert (a.seq, a.duplicate, b.seq, b.duplicate) == (1, False, 2, False)
    finally:
        await alice.close()
        await bob.close()
    rows = db_rows(
        chat_server.db_path, "SELECT sender, body FROM messages WHERE client_id='same-id'"
    )
    assert sorted(rows) == [("alice", "from alice"), ("bob", "from bob")]


async def test_replay_from_cursors_returns_exactly_the_missed(chat_server: RunningServer) -> None:
    conv, acks = await exchange(chat_server, 5)
    assert [a.seq for a in acks] == [1, 2, 3, 4, 5]
    url, token = chat_server.url, chat_server.tokens["bob"]

    # From scratch: everything, in seq order, then synced with the new cursor.
    ws, _, replayed, synced = await login(url, "bob", token)
    await ws.close()
    assert [(m.seq, m.client_id, m.body) for m in replayed] == [
        (i + 1, f"m{i}", f"body {i}") for i in range(5)
    ]
    assert all(m.conv == conv and m.sender == "alice" and m.to == "bob" for m in replayed)
    assert synced.cursors == {conv: 5}

    # From cursor 2: exactly 3, 4, 5.
    ws, _, replayed, synced = await login(url, "bob", token, {conv: 2})
    await ws.close()
    assert [m.seq for m in replayed] == [3, 4, 5]
    assert synced.cursors == {conv: 5}

    # Up to date: nothing.
    ws, _, replayed, synced = await login(url, "bob", token, {conv: 5})
    await ws.close()
    assert replayed == []
    assert synced.cursors == {conv: 5}

    # A cursor from the future (e.g. another server) is clamped, not trusted.
    ws, _, replayed, synced = await login(url, "bob", token, {conv: 99})
    await ws.close()
    assert replayed == []
    assert synced.cursors == {conv: 5}


async def test_live_messages_after_synced_continue_the_sequence(
    chat_server: RunningServer,
) -> None:
    conv, _ = await exchange(chat_server, 3)
    bob, _, replayed, _ = await login(chat_server.url, "bob", chat_server.tokens["bob"], {conv: 1})
    alice, *_ = await login(chat_server.url, "alice", chat_server.tokens["alice"])
    try:
        assert [m.seq for m in replayed] == [2, 3]
        for i in range(3):
            await acked(alice, f"live{i}", "bob")
        live = [await recv_message(bob) for _ in range(3)]
        assert [m.seq for m in live] == [4, 5, 6]
        await assert_silent(bob)
    finally:
        await alice.close()
        await bob.close()


async def test_replay_during_concurrent_sends_has_no_gap_or_duplicate(
    chat_server: RunningServer,
) -> None:
    """Messages committed while a client logs in are either replayed or live, once each."""
    conv, _ = await exchange(chat_server, 20, prefix="old")
    alice, *_ = await login(chat_server.url, "alice", chat_server.tokens["alice"])
    try:

        async def keep_sending() -> None:
            for i in range(40):
                await acked(alice, f"new{i}", "bob")

        sender = asyncio.create_task(keep_sending())
        await asyncio.sleep(0.01)
        bob, _, replayed, synced = await login(chat_server.url, "bob", chat_server.tokens["bob"])
        try:
            await asyncio.wait_for(sender, 10)
            seqs = [m.seq for m in replayed]
            last_replayed = synced.cursors[conv]
            assert seqs == list(range(1, last_replayed + 1))
            live = [await recv_message(bob) for _ in range(60 - last_replayed)]
            assert [m.seq for m in live] == list(range(last_replayed + 1, 61))
            await assert_silent(bob)
        finally:
            await bob.close()
    finally:
        await alice.close()


async def test_third_user_cannot_see_the_pair(chat_server: RunningServer) -> None:
    url, tokens = chat_server.url, chat_server.tokens
    conv, _ = await exchange(chat_server, 2)
    # Carol knows (or guesses) the conversation id and asks for it every way she can.
    carol, _, replayed, synced = await login(url, "carol", tokens["carol"], {conv: 0})
    alice, *_ = await login(url, "alice", tokens["alice"])
    try:
        assert replayed == []
        assert synced.cursors == {}

        await send_frame(carol, HistoryRequest(conv=conv))
        err = await recv_frame(carol)
        assert isinstance(err, Error) and err.code == ErrorCode.NOT_MEMBER

        await send_frame(carol, Read(conv=conv, seq=2))
        err = await recv_frame(carol)
        assert isinstance(err, Error) and err.code == ErrorCode.NOT_MEMBER
        assert db_rows(chat_server.db_path, "SELECT count(*) FROM reads") == [(0,)]

        # New messages between alice and bob never reach her.
        await acked(alice, "secret", "bob", "for bob only")
        await assert_silent(carol)

        # Writing to alice opens a different conversation; the pair's is untouched.
        own = await acked(carol, "c1", "alice", "hi alice")
        assert own.conv != conv and own.seq == 1
        assert db_rows(
            chat_server.db_path, "SELECT max(seq) FROM messages WHERE conv=?", (conv,)
        ) == [(3,)]
        msg = await recv_message(carol)
        assert (msg.conv, msg.sender) == (own.conv, "carol")
        await assert_silent(carol)
    finally:
        await carol.close()
        await alice.close()
    # A fresh login still replays only her own conversation.
    carol, _, replayed, synced = await login(url, "carol", tokens["carol"])
    await carol.close()
    assert {m.conv for m in replayed} == {own.conv}
    assert synced.cursors == {own.conv: 1}


async def test_two_connections_of_one_user_both_receive(chat_server: RunningServer) -> None:
    url, tokens = chat_server.url, chat_server.tokens
    bob1, *_ = await login(url, "bob", tokens["bob"])
    bob2, *_ = await login(url, "bob", tokens["bob"])
    alice1, *_ = await login(url, "alice", tokens["alice"])
    alice2, *_ = await login(url, "alice", tokens["alice"])
    try:
        assert chat_server.server.connection_count() == 4
        ack = await acked(alice1, "multi", "bob", "to every device")
        for ws in (bob1, bob2, alice2):
            msg = await recv_message(ws)
            assert (msg.client_id, msg.seq, msg.conv) == ("multi", ack.seq, ack.conv)
        # The other alice device gets the message but no ack (acks go to the sender only).
        await assert_silent(alice2)
        await bob2.close()
        ack2 = await acked(alice1, "multi2", "bob")
        msg = await recv_message(bob1)
        assert msg.seq == ack2.seq == 2
    finally:
        for ws in (bob1, bob2, alice1, alice2):
            await ws.close()


async def test_read_receipts_reach_both_members(chat_server: RunningServer) -> None:
    url, tokens = chat_server.url, chat_server.tokens
    conv, _ = await exchange(chat_server, 3)
    alice, *_ = await login(url, "alice", tokens["alice"])
    bob, *_ = await login(url, "bob", tokens["bob"])
    carol, *_ = await login(url, "carol", tokens["carol"])
    try:
        await send_frame(bob, Read(conv=conv, seq=2))
        expected = Receipt(conv=conv, user="bob", read_seq=2)
        assert await recv_frame(bob) == expected
        assert await recv_frame(alice) == expected
        # Read positions never go backwards, and never past the last message.
        await send_frame(bob, Read(conv=conv, seq=1))
        assert await recv_frame(alice) == expected
        await send_frame(bob, Read(conv=conv, seq=99))
        assert await recv_frame(alice) == Receipt(conv=conv, user="bob", read_seq=3)
        await assert_silent(carol)
        assert db_rows(chat_server.db_path, "SELECT conv, user, read_seq FROM reads") == [
            (conv, "bob", 3)
        ]
    finally:
        for ws in (alice, bob, carol):
            await ws.close()
    # Read positions are part of the replay, so a device that was away learns them too.
    again = await login(url, "alice", tokens["alice"], {conv: 3})
    await again.ws.close()
    assert again.receipts == [Receipt(conv=conv, user="bob", read_seq=3)]
    outsider = await login(url, "carol", tokens["carol"], {conv: 3})
    await outsider.ws.close()
    assert outsider.receipts == []


async def test_history_pages_back_in_seq_order(chat_server: RunningServer) -> None:
    conv, _ = await exchange(chat_server, 5)
    bob, *_ = await login(chat_server.url, "bob", chat_server.tokens["bob"], {conv: 5})
    try:

        async def page(**kw: int) -> HistoryPage:
            await send_frame(bob, HistoryRequest(conv=conv, **kw))
            reply = await recv_frame(bob)
            assert isinstance(reply, HistoryPage), reply
            assert reply.conv == conv
            return reply

        newest = await page(limit=2)
        assert ([m.seq for m in newest.messages], newest.complete) == ([4, 5], False)
        older = await page(before=4, limit=10)
        assert ([m.seq for m in older.messages], older.complete) == ([1, 2, 3], True)
        assert older.messages[0].body == "body 0" and older.messages[0].sender == "alice"
        gap = await page(after=2, before=5)
        assert ([m.seq for m in gap.messages], gap.complete) == ([3, 4], True)
        empty = await page(before=1)
        assert (empty.messages, empty.complete) == ([], True)
    finally:
        await bob.close()


async def test_seqs_have_no_gaps_under_concurrent_sends(chat_server: RunningServer) -> None:
    """5 connections x 50 pipelined sends into one conversation: seqs are exactly 1..250."""
    url, tokens = chat_server.url, chat_server.tokens
    senders = [
        (await login(url, user, tokens[user])).ws
        for user in ("alice", "alice", "alice", "bob", "bob")
    ]
    peer = {"alice": "bob", "bob": "alice"}
    users = ["alice", "alice", "alice", "bob", "bob"]
    observer, *_ = await login(url, "bob", tokens["bob"])
    writer = chat_server.server._writer
    assert writer is not None
    batches_before = writer.batches
    per_client = 50
    total = per_client * len(senders)
    try:

        async def run(index: int, ws: ClientConnection) -> list[Ack]:
            for i in range(per_client):
                await send_frame(
                    ws, Send(client_id=f"k{index}-{i}", to=peer[users[index]], body=f"{i}")
                )
            acks: list[Ack] = []
            while len(acks) < per_client:
                frame: ServerFrame = await recv_frame(ws, 10)
                if isinstance(frame, Ack):
                    acks.append(frame)
            return acks

        results = await asyncio.wait_for(
            asyncio.gather(*(run(i, ws) for i, ws in enumerate(senders))), 30
        )
        acks = list(itertools.chain.from_iterable(results))
        assert all(not a.duplicate for a in acks)
        assert len({a.conv for a in acks}) == 1
        conv = acks[0].conv
        assert sorted(a.seq for a in acks) == list(range(1, total + 1))
        # Each connection's acks come in the order it sent (one writer, commit order).
        for i, client_acks in enumerate(results):
            assert [a.client_id for a in client_acks] == [f"k{i}-{n}" for n in range(per_client)]
            assert [a.seq for a in client_acks] == sorted(a.seq for a in client_acks)
        # Every ack matches what is in the file.
        rows = db_rows(
            chat_server.db_path,
            "SELECT client_id, seq, sender, ts FROM messages WHERE conv=? ORDER BY seq",
            (conv,),
        )
        assert [r[1] for r in rows] == list(range(1, total + 1))
        by_id = {r[0]: (r[1], r[3]) for r in rows}
        assert {a.client_id: (a.seq, a.ts) for a in acks} == by_id
        assert db_rows(chat_server.db_path, "SELECT last_seq FROM conversations") == [(total,)]
        # A reader of the conversation sees every seq once, in order.
        seen = [(await recv_frame(observer, 10)) for _ in range(total)]
        assert [m.seq for m in seen if isinstance(m, Message)] == list(range(1, total + 1))
        # Group commit batched them: far fewer commits than messages.
        batches = writer.batches - batches_before
        assert 1 <= batches < total, batches
    finally:
        for ws in (*senders, observer):
            await ws.close()


async def test_group_commit_batches_across_connections(chat_server: RunningServer) -> None:
    """Sends from several connections arriving together share commits."""
    url, tokens = chat_server.url, chat_server.tokens
    clients = [(await login(url, u, tokens[u])).ws for u in ("alice", "bob", "carol")]
    writer = chat_server.server._writer
    assert writer is not None
    before_batches, before_committed = writer.batches, writer.committed
    try:

        async def burst(index: int, ws: ClientConnection) -> None:
            target = ("bob", "carol", "alice")[index]
            for i in range(30):
                await send_frame(ws, Send(client_id=f"g{index}-{i}", to=target, body="x"))
            got = 0
            while got < 30:
                if isinstance(await recv_frame(ws, STEP), Ack):
                    got += 1

        await asyncio.wait_for(asyncio.gather(*(burst(i, ws) for i, ws in enumerate(clients))), 20)
        assert writer.committed - before_committed == 90
        assert writer.batches - before_batches < 90 / 2, writer.batches - before_batches
    finally:
        for ws in clients:
            await ws.close()
