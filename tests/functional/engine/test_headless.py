"""``tui-chat headless`` as a real process: crash safety of the outbox and bad input lines."""

from __future__ import annotations

from typing import Any

from harness.clientconf import client_config, write_client_toml
from harness.faultproxy import FaultProxy
from tests.support.engines import server_copies, server_messages
from tests.support.headless import HeadlessProc, is_event
from tests.support.wire import RunningServer


async def test_killed_right_after_the_send_was_committed_sends_it_exactly_once(
    chat_server: RunningServer, proxy: FaultProxy, processes: list[HeadlessProc], tmp_path
) -> None:
    db = chat_server.db_path
    cfg = client_config(tmp_path / "store", "alice", chat_server.tokens["alice"], proxy.url)
    toml = write_client_toml(tmp_path / "alice.toml", cfg)
    proxy.refuse()  # the client cannot reach the server before it dies

    first = await HeadlessProc.start(toml)
    processes.append(first)
    await first.write({"cmd": "send", "to": "bob", "body": "typed, Enter, crash"})
    ok = await first.wait_line(is_event("ok", cmd="send"), "the send's ok")
    cid = ok["client_id"]
    shown = await first.wait_line(is_event("message", client_id=cid), "the pending message")
    assert (shown["state"], shown["seq"], shown["own"]) == ("pending", None, True)
    await first.kill()
    assert first.proc.returncode == -9
    assert server_messages(db) == []
    assert proxy.connections_total >= 1  # it did try, and was refused

    proxy.pass_through()
    second = await HeadlessProc.start(toml)
    processes.append(second)
    await second.close_stdin()  # end of input: finish what is queued, then exit
    assert await second.wait_exit(15) == 0, second.describe()
    sent = await second.wait_line(is_event("state", client_id=cid, state="sent"), "sent")
    assert sent["seq"] == 1
    assert server_copies(db, cid) == 1
    assert [(sender, c) for _conv, _seq, sender, c in server_messages(db)] == [("alice", cid)]
    # The restarted client resumed the queued message; it did not invent another.
    assert second.matching(is_event("ok")) == []
    assert second.matching(is_event("message", own=True)) == []


async def test_bad_input_lines_get_error_events_and_the_client_keeps_running(
    chat_server: RunningServer, processes: list[HeadlessProc], tmp_path
) -> None:
    cfg = client_config(tmp_path / "store", "alice", chat_server.tokens["alice"], chat_server.url)
    proc = await HeadlessProc.start(write_client_toml(tmp_path / "alice.toml", cfg))
    processes.append(proc)
    await proc.wait_line(is_event("connection", state="online"), "online")

    bad_lines: list[str | dict[str, Any]] = [
        "this is not json",
        '{"cmd": "fly"}',
        '{"cmd": "send", "to": "bob"}',  # no body: the engine refuses an empty message
        {"cmd": "send", "to": "Not A User!", "body": "x"},
        {"cmd": "retry", "client_id": "no-such-message"},
        '{"cmd": "send", "to": "bob", "body": "hi", "extra": 1}',
    ]
    for i, line in enumerate(bad_lines, 1):
        await proc.write(line)
        await proc.wait_line(
            lambda _line, n=i: len(proc.matching(is_event("error"))) >= n, f"error event {i}"
        )
    assert proc.proc.stdin is not None
    proc.proc.stdin.write(b"\xff\xfe not utf-8\n")
    await proc.wait_line(
        lambda _line: len(proc.matching(is_event("error"))) == len(bad_lines) + 1,
        "an error for the non-UTF-8 line",
    )
    errors = proc.matching(is_event("error"))
    codes = ["bad_command", "bad_command", "rejected", "rejected", "rejected", "bad_command"]
    assert [e["code"] for e in errors] == [*codes, "bad_command"]
    assert all(isinstance(e["reason"], str) and e["reason"] for e in errors)
    assert proc.proc.returncode is None

    # Still alive and working: a good line after all that is sent.
    await proc.write({"cmd": "send", "to": "bob", "body": "still here", "id": 7})
    ok = await proc.wait_line(is_event("ok", cmd="send", id=7), "the send's ok")
    await proc.wait_line(is_event("state", client_id=ok["client_id"], state="sent"), "sent")
    assert server_copies(chat_server.db_path, ok["client_id"]) == 1
    assert len(server_messages(chat_server.db_path)) == 1
    assert len(proc.matching(is_event("error"))) == len(bad_lines) + 1

    await proc.write({"cmd": "quit"})
    assert await proc.wait_exit() == 0


async def test_a_second_client_of_the_same_account_is_refused_with_a_message(
    chat_server: RunningServer, processes: list[HeadlessProc], tmp_path
) -> None:
    cfg = client_config(tmp_path / "store", "alice", chat_server.tokens["alice"], chat_server.url)
    config_path = write_client_toml(tmp_path / "alice.toml", cfg)
    first = await HeadlessProc.start(config_path)
    processes.append(first)
    await first.wait_line(is_event("connection", state="online"), "online")

    second = await HeadlessProc.start(config_path)
    processes.append(second)
    assert await second.wait_exit() == 2
    assert any("in use by another tui-chat" in line for line in second.stderr), second.describe()
    assert not any("Traceback" in line for line in second.stderr)
    assert first.proc.returncode is None  # the first one is untouched


async def test_a_rejected_token_exits_with_status_3(
    chat_server: RunningServer, processes: list[HeadlessProc], tmp_path
) -> None:
    cfg = client_config(tmp_path / "store", "alice", "not-alices-token", chat_server.url)
    proc = await HeadlessProc.start(write_client_toml(tmp_path / "alice.toml", cfg))
    processes.append(proc)
    await proc.wait_line(is_event("connection", state="auth_failed"), "auth_failed")
    await proc.write({"cmd": "quit"})
    assert await proc.wait_exit() == 3
