"""``tui-chat headless``: the engine driven by JSON lines, for scripts, bots and tests.

Commands arrive one JSON object per line on stdin; every engine event leaves
as one JSON object per line on stdout. A bad line gets an ``error`` event and
the client keeps running: a script's mistake must not cost a queued message.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from typing import Annotated, Any

import msgspec

from tui_chat.core.engine import Engine
from tui_chat.core.models import (
    ChatMessage,
    ConnectionChanged,
    ConnState,
    ConversationChanged,
    EpochReset,
    Event,
    HistoryLoaded,
    MessageAdded,
    MessageChanged,
    OutState,
    ServerNotice,
    Synced,
)


class _Cmd(msgspec.Struct, tag_field="cmd", forbid_unknown_fields=True):
    # An optional id the caller chooses, echoed in the reply to this command.
    id: str | int | None = None


class SendCmd(_Cmd, tag="send"):
    to: str = ""
    body: Annotated[str, msgspec.Meta(min_length=1)] = ""


class RetryCmd(_Cmd, tag="retry"):
    client_id: str = ""


class RetryAllCmd(_Cmd, tag="retry_all"):
    pass


class GiveUpCmd(_Cmd, tag="give_up"):
    client_id: str = ""


class EditCmd(_Cmd, tag="edit"):
    client_id: str = ""
    body: str = ""


class ReconnectCmd(_Cmd, tag="reconnect"):
    pass


class ReadCmd(_Cmd, tag="read"):
    peer: str = ""


class StatusCmd(_Cmd, tag="status"):
    pass


class QuitCmd(_Cmd, tag="quit"):
    pass


Command = (
    SendCmd
    | RetryCmd
    | RetryAllCmd
    | GiveUpCmd
    | EditCmd
    | ReconnectCmd
    | ReadCmd
    | StatusCmd
    | QuitCmd
)
_decoder = msgspec.json.Decoder(Command)
_encoder = msgspec.json.Encoder()
# JSON escapes C0 controls but leaves C1 controls (U+0080-U+009F; U+009B is CSI to many
# terminals) and bidi overrides raw. Server and peer text goes to stdout, often a terminal:
# escape those too. A JSON reader gets the same strings.
_ESCAPE_MORE = {
    c: f"\\u{c:04x}"
    for c in [
        *range(0x80, 0xA0),
        0x061C,
        0x200E,
        0x200F,
        *range(0x202A, 0x202F),
        *range(0x2066, 0x206A),
    ]
}


def _message_fields(m: ChatMessage) -> dict[str, Any]:
    return {
        "peer": m.peer,
        "sender": m.sender,
        "client_id": m.client_id,
        "body": m.body,
        "ts": m.ts,
        "own": m.own,
        "conv": m.conv,
        "seq": m.seq,
        "state": None if m.state is None else m.state.value,
        "error": m.error,
        "retryable": m.retryable,
        "held": m.held,
    }


def event_to_json(event: Event) -> dict[str, Any]:
    if isinstance(event, MessageAdded):
        return {"event": "message", "replay": event.replay, **_message_fields(event.message)}
    if isinstance(event, MessageChanged):
        return {"event": "state", **_message_fields(event.message)}
    if isinstance(event, ConnectionChanged):
        s = event.status
        return {
            "event": "connection",
            "state": s.state.value,
            "attempt": s.attempt,
            "retry_in": s.retry_in,
            "reason": s.reason,
        }
    if isinstance(event, ConversationChanged):
        c = event.summary
        return {
            "event": "conversation",
            "peer": c.peer,
            "conv": c.conv,
            "unread": c.unread,
            "failed": c.failed,
            "pending": c.pending,
        }
    if isinstance(event, Synced):
        return {"event": "synced", "applied": event.applied}
    if isinstance(event, HistoryLoaded):
        return {"event": "history", "peer": event.peer, "count": len(event.messages)}
    if isinstance(event, ServerNotice):
        return {"event": "notice", "code": event.code, "reason": event.reason}
    assert isinstance(event, EpochReset)
    return {"event": "epoch", "old": event.old, "new": event.new}


class Headless:
    def __init__(self, engine: Engine, out: Any = None) -> None:
        self.engine = engine
        self._out = out or sys.stdout
        engine.subscribe(lambda e: self.emit(event_to_json(e)))

    def emit(self, obj: dict[str, Any]) -> None:
        self._out.write(_encoder.encode(obj).decode().translate(_ESCAPE_MORE) + "\n")
        self._out.flush()

    def handle_line(self, line: str) -> bool:
        """Apply one input line; return False to quit."""
        if not line.strip():
            return True
        try:
            cmd = _decoder.decode(line)
        except msgspec.DecodeError as exc:
            self.emit({"event": "error", "code": "bad_command", "reason": str(exc)})
            return True
        try:
            return self._apply(cmd)
        except (KeyError, ValueError) as exc:
            reason = exc.args[0] if exc.args else str(exc)
            self.emit({"event": "error", "id": cmd.id, "code": "rejected", "reason": reason})
            return True

    def _apply(self, cmd: Command) -> bool:
        e = self.engine
        reply: dict[str, Any] = {"event": "ok", "id": cmd.id, "cmd": type(cmd).__name__}
        if isinstance(cmd, SendCmd):
            m = e.send(cmd.to, cmd.body)
            # What was asked, as asked: the chaos checker compares it with what got stored.
            reply.update(cmd="send", client_id=m.client_id, to=cmd.to, body=cmd.body)
        elif isinstance(cmd, RetryCmd):
            e.retry(cmd.client_id)
            reply.update(cmd="retry", client_id=cmd.client_id)
        elif isinstance(cmd, RetryAllCmd):
            reply.update(cmd="retry_all", count=e.retry_all())
        elif isinstance(cmd, GiveUpCmd):
            e.give_up(cmd.client_id)
            reply.update(cmd="give_up", client_id=cmd.client_id)
        elif isinstance(cmd, EditCmd):
            m = e.edit_and_retry(cmd.client_id, cmd.body)
            reply.update(
                cmd="edit", client_id=m.client_id, replaces=cmd.client_id, to=m.peer, body=cmd.body
            )
        elif isinstance(cmd, ReconnectCmd):
            e.reconnect_now()
            reply.update(cmd="reconnect")
        elif isinstance(cmd, ReadCmd):
            e.mark_read(cmd.peer)
            reply.update(cmd="read")
        elif isinstance(cmd, StatusCmd):
            s = e.status
            reply.update(
                cmd="status", state=s.state.value, outbox=e.outbox_count(), reason=s.reason
            )
        elif isinstance(cmd, QuitCmd):
            reply.update(cmd="quit")
            self.emit(reply)
            return False
        self.emit(reply)
        return True


async def _until_no_pending(engine: Engine) -> None:
    changed = asyncio.Event()
    unsubscribe = engine.subscribe(lambda _event: changed.set())
    try:
        while engine.status.state is not ConnState.AUTH_FAILED and any(
            r.state is OutState.PENDING for r in engine.pending_rows()
        ):
            changed.clear()
            await changed.wait()
    finally:
        unsubscribe()


EXIT_AUTH_FAILED = 3


async def run_headless(engine: Engine) -> int:
    headless = Headless(engine)
    if (repair := engine.store.repair_report) is not None:  # also one line on stderr (cli)
        headless.emit({"event": "store_repaired", **msgspec.structs.asdict(repair)})
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    runner = asyncio.create_task(engine.run())
    try:
        while True:
            try:
                line = await reader.readline()
            except ValueError:
                headless.emit({"event": "error", "code": "bad_command", "reason": "line too long"})
                continue
            if not line:
                # stdin closed (e.g. a piped script ended): finish what was
                # queued first; pending messages end as sent or failed.
                await _until_no_pending(engine)
                break
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError:
                headless.emit({"event": "error", "code": "bad_command", "reason": "not UTF-8"})
                continue
            if not headless.handle_line(text):
                break
        # For scripts: 3 when the server refused the token (nothing could be sent).
        rejected = engine.status.state is ConnState.AUTH_FAILED
    finally:
        await engine.stop()
        with contextlib.suppress(asyncio.CancelledError):
            await runner
        engine.close()
    return EXIT_AUTH_FAILED if rejected else 0
