"""``tui-chat headless``: the engine driven by JSON lines, for scripts, bots and tests.

Commands arrive one JSON object per line on stdin; every engine event leaves
as one JSON object per line on stdout. A bad line gets an ``error`` event and
the client keeps running: a script's mistake must not cost a queued message.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import stat
import sys
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, BinaryIO, Protocol, TypeVar

import msgspec

from tui_chat.core.engine import Engine
from tui_chat.core.models import (
    GROUP_PREFIX,
    PENDING_GROUP_PREFIX,
    ChatMessage,
    ConnState,
    Event,
    OutState,
    Synced,
    group_key,
)

T = TypeVar("T")


class _Cmd(msgspec.Struct, tag_field="cmd", forbid_unknown_fields=True):
    # An optional id the caller chooses, echoed in the reply to this command.
    id: str | int | None = None


class SendCmd(_Cmd, tag="send"):
    # A DM goes ``to`` a user; a group message goes to its ``conv`` (the server's id).
    to: str = ""
    conv: str = ""
    body: Annotated[str, msgspec.Meta(min_length=1)] = ""


class CreateCmd(_Cmd, tag="create"):
    title: str = ""
    members: list[str] = msgspec.field(default_factory=list)


class AddCmd(_Cmd, tag="add"):
    conv: str = ""
    user: str = ""


class RemoveCmd(_Cmd, tag="remove"):
    conv: str = ""
    user: str = ""


class LeaveCmd(_Cmd, tag="leave"):
    conv: str = ""


class RenameCmd(_Cmd, tag="rename"):
    conv: str = ""
    title: str = ""


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
    conv: str = ""  # a group's conv id, instead of ``peer``


class StatusCmd(_Cmd, tag="status"):
    pass


class QuitCmd(_Cmd, tag="quit"):
    pass


Command = (
    SendCmd
    | CreateCmd
    | AddCmd
    | RemoveCmd
    | LeaveCmd
    | RenameCmd
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


def event_to_json(event: Event) -> dict[str, Any]:
    """One output line for any engine event, derived from the event's own Struct.

    ``event`` is the Struct's tag (``message``, ``state``, ``connection``...). An event
    about one thing (a message, a connection status, a conversation summary) has that
    thing's fields at the top level, beside the event's own (``replay``): the documented
    lines, and a new event type or field in tui_chat/core/models.py appears here without
    an edit. A test checks that no event's fields collide when flattened.
    """
    data = msgspec.to_builtins(event)
    out: dict[str, Any] = {"event": data.pop("type")}
    for name, value in data.items():
        if isinstance(getattr(event, name), msgspec.Struct):
            out.update(value)
        else:
            out[name] = value
    return out


class Headless:
    def __init__(self, engine: Engine, out: Any = None) -> None:
        self.engine = engine
        self._out = out or sys.stdout
        # Whether a catch-up has completed since start: before it, a group this store
        # has not seen yet may well exist (a fresh store, a group joined while away).
        self.synced_once = False
        engine.subscribe(self._on_event)

    def _on_event(self, event: Event) -> None:
        if isinstance(event, Synced):
            self.synced_once = True
        self.emit(event_to_json(event))

    def waits_for_sync(self, line: str) -> bool:
        """A command naming a group the store does not know yet, before the first catch-up:
        answering "no such group" then would be wrong, so it waits for the catch-up."""
        if self.synced_once:
            return False
        try:
            cmd = _decoder.decode(line)
        except msgspec.DecodeError:
            return False
        conv = getattr(cmd, "conv", None)
        return bool(conv) and not self.engine.store.has_conversation(_group(str(conv)))

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
            if bool(cmd.to) == bool(cmd.conv):
                raise ValueError("send needs exactly one of to and conv")
            m = e.send(cmd.to or _group(cmd.conv), cmd.body)
            # What was asked, as asked: the chaos checker compares it with what got stored.
            where = {"to": cmd.to} if cmd.to else {"conv": cmd.conv}
            reply.update(cmd="send", client_id=m.client_id, **where, body=cmd.body)
        elif isinstance(cmd, CreateCmd):
            m = e.create_group(cmd.title, cmd.members)
            # ``peer`` is the pending key; a conversation_replaced event names the group.
            reply.update(_command_reply("create", m), members=cmd.members)
        elif isinstance(cmd, AddCmd):
            reply.update(_command_reply("add", e.add_member(_group(cmd.conv), cmd.user)))
        elif isinstance(cmd, RemoveCmd):
            reply.update(_command_reply("remove", e.remove_member(_group(cmd.conv), cmd.user)))
        elif isinstance(cmd, LeaveCmd):
            reply.update(_command_reply("leave", e.leave_group(_group(cmd.conv))))
        elif isinstance(cmd, RenameCmd):
            reply.update(_command_reply("rename", e.rename_group(_group(cmd.conv), cmd.title)))
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
            if bool(cmd.peer) == bool(cmd.conv):
                raise ValueError("read needs exactly one of peer and conv")
            e.mark_read(cmd.peer or _group(cmd.conv))
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


def _group(conv: str) -> str:
    """The engine's key for the group ``conv`` (the server's id, as scripts see it)."""
    if not conv:
        raise ValueError("conv is missing")
    if conv.startswith(PENDING_GROUP_PREFIX):
        return conv  # the ``peer`` of a create's reply: the engine says it is not ready
    return group_key(conv)


def _command_reply(cmd: str, m: ChatMessage) -> dict[str, Any]:
    """The ``ok`` reply's fields for a group command: its client_id, the conversation it
    went to (``peer``: "#" + conv, or "+" + client_id for a create), and what it asked."""
    fields: dict[str, Any] = {"cmd": cmd, "client_id": m.client_id, "peer": m.peer}
    if m.peer.startswith(GROUP_PREFIX):
        fields["conv"] = m.peer[len(GROUP_PREFIX) :]
    if m.user is not None:
        fields["user"] = m.user
    if m.title is not None:
        fields["title"] = m.title
    return fields


async def _until(engine: Engine, done: Callable[[], bool]) -> None:
    """Wait until ``done()``, checked after every engine event."""
    changed = asyncio.Event()
    unsubscribe = engine.subscribe(lambda _event: changed.set())
    try:
        while not done():
            changed.clear()
            await changed.wait()
    finally:
        unsubscribe()


def _refused(engine: Engine) -> bool:
    # Final until someone calls reconnect_now(), which needs a command on stdin.
    return engine.status.state is ConnState.AUTH_FAILED


async def _until_no_pending(engine: Engine) -> None:
    await _until(
        engine,
        lambda: (
            _refused(engine) or not any(r.state is OutState.PENDING for r in engine.pending_rows())
        ),
    )


EXIT_AUTH_FAILED = 3
MAX_LINE = 1 << 20


class _FileLines:
    """Lines of a regular file or ``/dev/null``, which an event loop cannot watch.

    ``connect_read_pipe`` accepts only pipes, sockets and character devices that epoll
    supports; ``tui-chat headless < commands.jsonl`` and ``< /dev/null`` (a bot that only
    listens) must work too. Reading such a file never blocks for long, so it is read
    here directly, one line per turn of the loop so the engine runs between lines.
    """

    def __init__(self, stream: BinaryIO, limit: int) -> None:
        self._stream = stream
        self._limit = limit

    async def readline(self) -> bytes:
        await asyncio.sleep(0)
        line = self._stream.readline(self._limit + 1)
        if len(line) > self._limit and not line.endswith(b"\n"):
            while (rest := self._stream.readline(self._limit)) and not rest.endswith(b"\n"):
                pass  # skip the rest of the over-long line, as StreamReader does
            raise ValueError("line too long")
        return line


class _LineSource(Protocol):
    async def readline(self) -> bytes: ...


async def _open_stdin(stdin: BinaryIO) -> _LineSource:
    mode = os.fstat(stdin.fileno()).st_mode
    if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or stdin.isatty()):
        # A regular file, /dev/null, or another device epoll refuses (EPERM, raised
        # later in a loop callback rather than here, so it must be decided up front).
        return _FileLines(stdin, MAX_LINE)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=MAX_LINE)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), stdin)
    return reader


async def run_headless(
    engine: Engine, *, follow: bool = False, stdin: BinaryIO | None = None
) -> int:
    """Serve JSON lines until ``quit``, the end of stdin, or SIGTERM/SIGINT.

    At the end of stdin it finishes what is queued and exits, or with ``follow`` keeps
    running for incoming messages until a signal. A signal exits cleanly: the engine
    stops, the outbox is already on disk, and the status is 0 (or 3 for a refused token).
    """
    headless = Headless(engine)
    if (repair := engine.store_repair) is not None:  # also one line on stderr (cli)
        headless.emit({"event": "store_repaired", **msgspec.structs.asdict(repair)})
    loop = asyncio.get_running_loop()
    lines = await _open_stdin(stdin if stdin is not None else sys.stdin.buffer)
    signalled = asyncio.Event()
    handled: list[signal.Signals] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, signalled.set)
            handled.append(sig)
    runner = asyncio.create_task(engine.run())
    try:
        await _serve(headless, lines, signalled, follow)
        # For scripts: 3 when the server refused the token (nothing could be sent).
        rejected = engine.status.state is ConnState.AUTH_FAILED
    finally:
        for sig in handled:
            loop.remove_signal_handler(sig)
        await engine.stop()
        with contextlib.suppress(asyncio.CancelledError):
            await runner
        engine.close()
    return EXIT_AUTH_FAILED if rejected else 0


async def _first(aw: Awaitable[T], stop: asyncio.Event) -> T | None:
    """``aw``'s result, or None if ``stop`` is set first (``aw`` is then cancelled)."""
    task = asyncio.ensure_future(aw)
    stopper = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
    if task.done():
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return None


async def _serve(
    headless: Headless, lines: _LineSource, signalled: asyncio.Event, follow: bool
) -> None:
    engine = headless.engine
    while not signalled.is_set():
        try:
            line = await _first(lines.readline(), signalled)
        except ValueError:
            headless.emit({"event": "error", "code": "bad_command", "reason": "line too long"})
            continue
        if line is None:
            return  # a signal
        if not line:
            if follow:
                # A bot: stdin was only for start-up commands (or /dev/null); stay for
                # incoming messages until told to stop, or until the token is refused
                # (nothing could arrive, and no command can ask for a reconnect).
                await _first(_until(engine, lambda: _refused(engine)), signalled)
            else:
                # stdin closed (e.g. a piped script ended): finish what was
                # queued first; pending messages end as sent or failed.
                await _first(_until_no_pending(engine), signalled)
            return
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            headless.emit({"event": "error", "code": "bad_command", "reason": "not UTF-8"})
            continue
        if headless.waits_for_sync(text):
            # Bounded by the first attempt: offline, the command is answered as it stands.
            await _first(
                _until(
                    engine,
                    lambda: (
                        headless.synced_once
                        or engine.status.state in (ConnState.OFFLINE, ConnState.AUTH_FAILED)
                    ),
                ),
                signalled,
            )
        if not headless.handle_line(text):
            return
