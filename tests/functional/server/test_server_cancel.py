"""``cancel``: a tombstone committed by the writer, and what a later ``send`` of that id gets.

Through the real server: in-process for the protocol rules, a real ``tui-chat-server``
process for the tombstone surviving SIGKILL. The rules (docs/protocol.md, ``cancel``):
never stored → ``cancelled`` and a later ``send`` is rejected ``cancelled`` (not retryable);
already stored → its original ``ack`` with ``duplicate: true``; repeated → the same answer;
a ``send`` and a ``cancel`` of one id in one batch → the first to reach the writer wins.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection

from harness.serverproc import ServerProcess
from tests.support.wire import (
    STEP,
    RunningServer,
    ServerFactory,
    assert_silent,
    db_rows,
    login,
    recv_frame,
    send_frame,
    send_message,
)
from tui_chat.protocol import (
    Ack,
    Cancel,
    Cancelled,
    ErrorCode,
    Message,
    Reject,
    Send,
    ServerFrame,
    encode,
)
from tui_chat.server.config import Durability, ServerConfig

Answer = Ack | Reject | Cancelled


async def answer_for(ws: ClientConnection, client_id: str, within: float = STEP) -> Answer:
    """The next ack, reject or cancelled for ``client_id`` (other frames are skipped)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        frame: ServerFrame = await recv_frame(ws, max(0.0, deadline - loop.time()))
        if isinstance(frame, Ack | Reject | Cancelled) and frame.client_id == client_id:
            return frame


async def cancel(ws: ClientConnection, client_id: str) -> Answer:
    await send_frame(ws, Cancel(client_id=client_id))
    return await answer_for(ws, client_id)


def tombstones(db_path: Path, client_id: str) -> list[tuple[Any, ...]]:
    """The ``sends`` registry rows of ``client_id``: (conv, seq), or (None, None) if cancelled."""
    return db_rows(db_path, "SELECT conv, seq FROM sends WHERE client_id=?", (client_id,))


async def test_cancel_before_send_then_the_send_is_rejected(chat_server: RunningServer) -> None:
    url, tokens = chat_server.url, chat_server.tokens
    alice, *_ = await login(url, "alice", tokens["alice"])
    bob, *_ = await login(url, "bob", tokens["bob"])
    try:
        assert await cancel(alice, "never-1") == Cancelled(client_id="never-1")
        # The tombstone is in the database (conv NULL), and no message.
        assert tombstones(chat_server.db_path, "never-1") == [(None, None)]
        reject = await send_message(alice, "never-1", "bob", "too late")
        assert isinstance(reject, Reject)
        assert (reject.code, reject.retryable) == (ErrorCode.CANCELLED, False)
        assert reject.retry_after is None
        assert db_rows(chat_server.db_path, "SELECT count(*) FROM messages") == [(0,)]
        # bob was told nothing: nothing was stored.
        await assert_silent(bob)
        # The connection goes on as usual.
        ack = await send_message(alice, "after-cancel", "bob")
        assert isinstance(ack, Ack) and ack.seq == 1
    finally:
        await alice.close()
        await bob.close()


async def test_cancel_of_a_stored_message_answers_its_original_ack(
    chat_server: RunningServer,
) -> None:
    url, tokens = chat_server.url, chat_server.tokens
    alice, *_ = await login(url, "alice", tokens["alice"])
    bob, *_ = await login(url, "bob", tokens["bob"])
    try:
        ack = await send_message(alice, "kept-1", "bob", "already delivered")
        assert isinstance(ack, Ack) and not ack.duplicate
        received = await recv_frame(bob)
        assert isinstance(received, Message) and received.client_id == "kept-1"
        answer = await cancel(alice, "kept-1")
        assert answer == Ack("kept-1", ack.conv, ack.seq, ack.ts, duplicate=True)
        # Still stored once, no tombstone, nothing new for bob.
        assert tombstones(chat_server.db_path, "kept-1") == [(ack.conv, ack.seq)]
        assert db_rows(chat_server.db_path, "SELECT count(*) FROM messages") == [(1,)]
        await assert_silent(bob)
    finally:
        await alice.close()
        await bob.close()


async def test_repeated_cancel_is_idempotent_on_any_connection(chat_server: RunningServer) -> None:
    url, tokens = chat_server.url, chat_server.tokens
    first, *_ = await login(url, "alice", tokens["alice"])
    second, *_ = await login(url, "alice", tokens["alice"])
    try:
        assert await cancel(first, "twice") == Cancelled(client_id="twice")
        assert await cancel(first, "twice") == Cancelled(client_id="twice")
        assert await cancel(second, "twice") == Cancelled(client_id="twice")
        assert tombstones(chat_server.db_path, "twice") == [(None, None)]
        reject = await send_message(second, "twice", "bob")
        assert isinstance(reject, Reject) and reject.code == ErrorCode.CANCELLED
    finally:
        await first.close()
        await second.close()


async def test_a_tombstone_belongs_to_its_sender_only(chat_server: RunningServer) -> None:
    """bob may use the client_id alice cancelled: idempotency is per sender."""
    url, tokens = chat_server.url, chat_server.tokens
    alice, *_ = await login(url, "alice", tokens["alice"])
    bob, *_ = await login(url, "bob", tokens["bob"])
    try:
        assert await cancel(alice, "shared-id") == Cancelled(client_id="shared-id")
        ack = await send_message(bob, "shared-id", "alice", "mine")
        assert isinstance(ack, Ack) and not ack.duplicate
    finally:
        await alice.close()
        await bob.close()


async def test_send_and_cancel_in_one_batch_the_first_wins(
    chat_server_factory: ServerFactory,
) -> None:
    """Pipelined in one write with a long group-commit linger, so one batch holds both: the
    writer decides in arrival order, and every answer comes after that one commit."""
    srv = await chat_server_factory(ServerConfig(durability=Durability(group_commit_ms=100)))
    alice, *_ = await login(srv.url, "alice", srv.tokens["alice"])
    try:
        send_first = Send(client_id="race-send", to="bob", body="wins")
        cancel_first = Cancel(client_id="race-cancel")
        burst = [
            send_first,
            Cancel(client_id="race-send"),
            cancel_first,
            Send(client_id="race-cancel", to="bob", body="loses"),
        ]
        batches_before = srv.server._writer.batches if srv.server._writer else 0
        # One websocket message per frame, written back to back without awaiting answers.
        for frame in burst:
            await alice.send(encode(frame).decode(), text=True)
        answers: dict[str, list[Answer]] = {"race-send": [], "race-cancel": []}
        while sum(len(v) for v in answers.values()) < 4:
            frame = await recv_frame(alice)
            if isinstance(frame, Ack | Reject | Cancelled):
                answers[frame.client_id].append(frame)
        stored, late_cancel = answers["race-send"]
        assert isinstance(stored, Ack) and not stored.duplicate
        assert late_cancel == Ack("race-send", stored.conv, stored.seq, stored.ts, duplicate=True)
        tombstone, late_send = answers["race-cancel"]
        assert tombstone == Cancelled(client_id="race-cancel")
        assert isinstance(late_send, Reject) and late_send.code == ErrorCode.CANCELLED
        assert db_rows(srv.db_path, "SELECT client_id FROM messages") == [("race-send",)]
        assert srv.server._writer is not None
        # The linger held all four in one commit (the point of the test).
        assert srv.server._writer.batches - batches_before == 1
    finally:
        await alice.close()


async def test_the_tombstone_survives_sigkill(server_process: ServerProcess) -> None:
    proc = server_process
    alice, *_ = await login(proc.url, "alice", proc.tokens["alice"])
    try:
        assert await cancel(alice, "durable-1") == Cancelled(client_id="durable-1")
        ack = await send_message(alice, "durable-2", "bob", "stored before the crash")
        assert isinstance(ack, Ack)
    finally:
        await alice.close()
    # The answer went out after the commit, so SIGKILL right away cannot undo it.
    assert await proc.akill() == -9
    await proc.arestart()
    alice, *_ = await login(proc.url, "alice", proc.tokens["alice"])
    try:
        reject = await send_message(alice, "durable-1", "bob", "after the restart")
        assert isinstance(reject, Reject)
        assert (reject.code, reject.retryable) == (ErrorCode.CANCELLED, False)
        assert await cancel(alice, "durable-1") == Cancelled(client_id="durable-1")
        assert await cancel(alice, "durable-2") == Ack(
            "durable-2", ack.conv, ack.seq, ack.ts, duplicate=True
        )
    finally:
        await alice.close()
    assert db_rows(proc.db_path, "SELECT client_id FROM messages") == [("durable-2",)]
