"""``tui-chat headless`` fed from a file or ``/dev/null``, ``--follow`` for bots, signals, and
JSON lines that are the engine's own event types.

Every case runs the real ``tui-chat headless`` process against a real server on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import io
import json
import signal
import typing
from pathlib import Path

import msgspec

from harness.clientconf import client_config, write_client_toml
from tests.support.engines import server_messages
from tests.support.headless import HeadlessProc, is_event
from tests.support.wire import RunningServer, login, send_message
from tui_chat.core import config as client_config_module
from tui_chat.core.engine import Engine
from tui_chat.core.models import (
    ChatMessage,
    ConnectionChanged,
    ConnectionStatus,
    ConnState,
    Event,
    MessageAdded,
    OutState,
)
from tui_chat.headless import Headless, event_to_json


def alice_toml(server: RunningServer, tmp_path: Path) -> Path:
    cfg = client_config(tmp_path / "store", "alice", server.tokens["alice"], server.url)
    return write_client_toml(tmp_path / "alice.toml", cfg)


def assert_clean(proc: HeadlessProc) -> None:
    assert not any("Traceback" in line for line in proc.stderr), proc.describe()
    assert proc.matching(is_event("error")) == [], proc.describe()
    assert proc.matching(is_event("<not json>")) == [], proc.describe()


async def test_commands_from_a_regular_file_are_sent_and_echoed(
    chat_server: RunningServer, processes: list[HeadlessProc], tmp_path: Path
) -> None:
    bodies = ["from a file", "second line", "ünïcode and \u0085 C1"]
    commands = tmp_path / "commands.jsonl"
    commands.write_text(
        "".join(json.dumps({"cmd": "send", "to": "bob", "body": b, "id": i}) + "\n"
                for i, b in enumerate(bodies)),
        encoding="utf-8",
    )  # fmt: skip
    with commands.open("rb") as stdin:
        proc = await HeadlessProc.start(alice_toml(chat_server, tmp_path), stdin=stdin)
    processes.append(proc)
    assert await proc.wait_exit(30) == 0, proc.describe()
    assert_clean(proc)

    oks = proc.matching(is_event("ok", cmd="send"))
    # Each reply says what it was asked to send, with the id it got.
    assert [(o["id"], o["to"], o["body"]) for o in oks] == [
        (i, "bob", b) for i, b in enumerate(bodies)
    ]
    for ok in oks:
        assert proc.matching(is_event("state", client_id=ok["client_id"], state="sent"))
    stored = server_messages(chat_server.db_path, "alice")
    assert [row[3] for row in stored] == [o["client_id"] for o in oks]


async def test_an_over_long_line_in_a_file_is_an_error_and_the_next_line_still_runs(
    chat_server: RunningServer, processes: list[HeadlessProc], tmp_path: Path
) -> None:
    commands = tmp_path / "commands.jsonl"
    too_long = json.dumps({"cmd": "send", "to": "bob", "body": "x" * (2 << 20)})
    last = json.dumps({"cmd": "send", "to": "bob", "body": "after the long one"})
    commands.write_text(f"{too_long}\n{last}", encoding="utf-8")  # no final newline
    with commands.open("rb") as stdin:
        proc = await HeadlessProc.start(alice_toml(chat_server, tmp_path), stdin=stdin)
    processes.append(proc)
    assert await proc.wait_exit(30) == 0, proc.describe()
    errors = proc.matching(is_event("error"))
    assert [(e["code"], e["reason"]) for e in errors] == [("bad_command", "line too long")]
    (ok,) = proc.matching(is_event("ok", cmd="send"))
    assert ok["body"] == "after the long one"
    assert [row[3] for row in server_messages(chat_server.db_path, "alice")] == [ok["client_id"]]


async def test_dev_null_as_stdin_exits_cleanly(
    chat_server: RunningServer, processes: list[HeadlessProc], tmp_path: Path
) -> None:
    proc = await HeadlessProc.start(
        alice_toml(chat_server, tmp_path), stdin=asyncio.subprocess.DEVNULL
    )
    processes.append(proc)
    assert await proc.wait_exit(30) == 0, proc.describe()
    assert_clean(proc)
    assert proc.matching(is_event("connection", state="stopped")), proc.describe()


async def test_follow_keeps_running_after_stdin_ends_and_sigterm_exits_0(
    chat_server: RunningServer, processes: list[HeadlessProc], tmp_path: Path
) -> None:
    toml = alice_toml(chat_server, tmp_path)
    proc = await HeadlessProc.start(toml, "--follow", stdin=asyncio.subprocess.DEVNULL)
    processes.append(proc)
    await proc.wait_line(is_event("connection", state="online"), "online")
    await proc.wait_line(is_event("synced"), "synced")

    # stdin ended long ago; a message arriving now still reaches the bot.
    bob = await login(chat_server.url, "bob", chat_server.tokens["bob"])
    try:
        ack = await send_message(bob.ws, "bob-msg-1", "alice", "are you there, bot?")
    finally:
        await bob.ws.close()
    seen = await proc.wait_line(
        is_event("message", client_id="bob-msg-1"), "the message sent after stdin ended"
    )
    assert (seen["sender"], seen["body"], seen["own"]) == ("bob", "are you there, bot?", False)
    assert seen["seq"] == getattr(ack, "seq", seen["seq"])
    assert proc.proc.returncode is None

    proc.proc.send_signal(signal.SIGTERM)
    assert await proc.wait_exit(30) == 0, proc.describe()
    assert_clean(proc)
    assert proc.matching(is_event("connection", state="stopped")), proc.describe()


async def test_follow_with_a_refused_token_exits_3_instead_of_waiting_forever(
    chat_server: RunningServer, processes: list[HeadlessProc], tmp_path: Path
) -> None:
    cfg = client_config(tmp_path / "store", "alice", "not-alices-token", chat_server.url)
    toml = write_client_toml(tmp_path / "alice.toml", cfg)
    proc = await HeadlessProc.start(toml, "--follow", stdin=asyncio.subprocess.DEVNULL)
    processes.append(proc)
    assert await proc.wait_exit(30) == 3, proc.describe()
    assert proc.matching(is_event("connection", state="auth_failed")), proc.describe()


async def test_sigint_while_reading_a_pipe_exits_cleanly(
    chat_server: RunningServer, processes: list[HeadlessProc], tmp_path: Path
) -> None:
    proc = await HeadlessProc.start(alice_toml(chat_server, tmp_path))
    processes.append(proc)
    await proc.wait_line(is_event("connection", state="online"), "online")
    await proc.write({"cmd": "send", "to": "bob", "body": "before the signal"})
    ok = await proc.wait_line(is_event("ok", cmd="send"), "the send's ok")
    await proc.wait_line(is_event("state", client_id=ok["client_id"], state="sent"), "sent")
    proc.proc.send_signal(signal.SIGINT)  # stdin is still open: the signal alone ends it
    assert await proc.wait_exit(30) == 0, proc.describe()
    assert_clean(proc)


# ---------------------------------------------------------------- JSON from event types


def _event_types() -> list[type[msgspec.Struct]]:
    return list(typing.get_args(Event))


def test_every_event_flattens_without_collisions() -> None:
    """An event's subject (a message, a status...) is spread into the line: names must not clash."""
    for cls in _event_types():
        own = [f.name for f in msgspec.structs.fields(cls)]
        spread: list[str] = []
        for field in msgspec.structs.fields(cls):
            hint = typing.get_type_hints(cls)[field.name]
            if isinstance(hint, type) and issubclass(hint, msgspec.Struct):
                spread += [f.name for f in msgspec.structs.fields(hint)]
        names = ["event", *[n for n in own if n not in _subjects(cls)], *spread]
        assert len(names) == len(set(names)), (cls.__name__, names)


def _subjects(cls: type[msgspec.Struct]) -> set[str]:
    hints = typing.get_type_hints(cls)
    return {n for n, h in hints.items() if isinstance(h, type) and issubclass(h, msgspec.Struct)}


def test_documented_fields_of_message_and_connection_lines() -> None:
    msg = ChatMessage(
        peer="bob", sender="alice", client_id="c1", body="hi", ts=5, own=True,
        state=OutState.PENDING,
    )  # fmt: skip
    line = event_to_json(MessageAdded(msg, replay=True))
    documented = {
        "event": "message", "replay": True, "peer": "bob", "sender": "alice",
        "client_id": "c1", "body": "hi", "ts": 5, "own": True, "conv": None, "seq": None,
        "state": "pending", "error": None, "retryable": True, "held": False,
    }  # fmt: skip
    assert documented.items() <= line.items(), line
    status = ConnectionStatus(ConnState.OFFLINE, attempt=2, retry_in=1.5, reason="lost")
    line = event_to_json(ConnectionChanged(status))
    assert {"event": "connection", "state": "offline", "attempt": 2, "retry_in": 1.5,
            "reason": "lost"}.items() <= line.items()  # fmt: skip


def test_edit_reply_carries_what_it_was_asked_to_send(tmp_path: Path) -> None:
    cfg = client_config_module.ClientConfig(
        account=client_config_module.AccountSection(user="alice", token="t"),
        server=client_config_module.ServerSection(url="ws://127.0.0.1:9"),
        storage=client_config_module.StorageSection(dir=str(tmp_path)),
    )
    engine = Engine(cfg, "t")
    try:
        out = io.StringIO()
        handler = Headless(engine, out)
        handler.handle_line(json.dumps({"cmd": "send", "to": "bob", "body": "frist"}))
        first = [json.loads(x) for x in out.getvalue().split("\n") if x]
        cid = next(x["client_id"] for x in first if x["event"] == "ok")
        out.seek(0)
        out.truncate()
        handler.handle_line(json.dumps({"cmd": "edit", "client_id": cid, "body": "first"}))
        lines = [json.loads(x) for x in out.getvalue().split("\n") if x]
        (ok,) = [x for x in lines if x["event"] in ("ok", "error")]
        assert (ok["event"], ok["replaces"], ok["to"], ok["body"]) == ("ok", cid, "bob", "first")
    finally:
        engine.close()
