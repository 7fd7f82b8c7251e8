"""The Textual app driven by Pilot, with the real engine and a real server on loopback.

Each test follows one message (or one conversation) the way a user would see it: what the
screen shows right after a key, what the engine's state is, and, where a promise is about
the server ("exactly one copy"), what the server's database holds.

The helpers are in :mod:`tests.support.ui`. Every wait is bounded: :func:`wait_until` fails
the test with a description instead of hanging.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.faultproxy import FaultProxy
from harness.serverproc import ServerProcess
from harness.waits import WAIT
from tests.support.ui import (
    FAILED,
    GIVEN_UP,
    PENDING,
    SENT,
    bubble_text,
    copies_on_server,
    fail_one,
    flat,
    holds,
    item,
    last_own,
    online,
    open_with,
    own_state,
    peer_sends,
    running_app,
    screen_text,
    status_line,
    type_and_send,
    wait_until,
)
from tests.support.wire import RunningServer, db_rows
from tui_chat.core.models import ConnState

# ---------------------------------------------------------------- fixtures


@pytest.fixture
def proc(server_process: ServerProcess) -> ServerProcess:
    return server_process


# ---------------------------------------------------------------- send: ◷ then ✓


async def test_send_shows_pending_then_sent(chat_server: RunningServer, tmp_path: Path) -> None:
    # The acks come back half a second late, so "right after Enter" is well defined.
    async with (
        FaultProxy("127.0.0.1", chat_server.port) as proxy,
        running_app(
            proxy.url,
            chat_server.tokens["alice"],
            tmp_path / "alice",
            ping_interval=5.0,
            ping_timeout=5.0,
            ack_timeout=5.0,
        ) as (app, pilot),
    ):
        await online(app, pilot)
        await open_with(app, pilot, "bob")
        proxy.delay(0.5, direction="down")

        await type_and_send(pilot, "hello bob")
        msg = last_own(app)
        cid = msg.client_id
        assert (msg.body, msg.state, msg.seq) == ("hello bob", PENDING, None)
        assert app.composer.value == ""
        assert own_state(app, cid) is PENDING
        assert "◷" in bubble_text(app, cid)
        await pilot.pause()
        assert "◷" in screen_text(app)
        assert "hello bob" in screen_text(app)
        assert "outbox 1" in status_line(app)

        await wait_until(pilot, lambda: own_state(app, cid) is SENT, "sent", WAIT)
        await wait_until(pilot, lambda: "✓" in bubble_text(app, cid), "✓ painted")
        text = bubble_text(app, cid)
        assert "◷" not in text
        assert item(app, cid).seq == 1  # type: ignore[union-attr]
        await pilot.pause()
        assert "✓" in screen_text(app)
        await wait_until(pilot, lambda: "outbox empty" in status_line(app), "outbox empty")
        assert copies_on_server(chat_server.db_path, cid) == 1


async def test_new_conversation_dialog_does_not_send_the_name(
    chat_server: RunningServer, tmp_path: Path
) -> None:
    """Enter in the ctrl+o dialog opens the conversation; it must not also send a message."""
    async with running_app(chat_server.url, chat_server.tokens["alice"], tmp_path / "a") as (
        app,
        pilot,
    ):
        await online(app, pilot)
        await open_with(app, pilot, "bob")
        await pilot.pause(0.3)
        assert app.view.items == []
        assert app.engine.outbox_count() == 0
        assert db_rows(chat_server.db_path, "SELECT COUNT(*) FROM messages")[0][0] == 0
        assert "Conversation with bob" in screen_text(app)


async def test_new_conversation_dialog_rejects_bad_names(
    chat_server: RunningServer, tmp_path: Path
) -> None:
    async with running_app(chat_server.url, chat_server.tokens["alice"], tmp_path / "a") as (
        app,
        pilot,
    ):
        await pilot.press("ctrl+o")
        await wait_until(pilot, lambda: type(app.screen).__name__ == "NewConversationScreen", "")
        await pilot.press(*"Bad Name!", "enter")
        await pilot.pause()
        assert type(app.screen).__name__ == "NewConversationScreen"
        assert "User names are 1-32 characters" in screen_text(app)
        await pilot.press("escape")
        await wait_until(pilot, lambda: app.screen is app.screen_stack[0], "dialog closed")
        assert app.peer is None


# ---------------------------------------------------------------- outage: ✗, r, d, e


async def test_outage_fails_after_window_then_r_sends_exactly_once(
    proc: ServerProcess, tmp_path: Path
) -> None:
    async with running_app(proc.url, proc.tokens["alice"], tmp_path / "alice") as (app, pilot):  # type: ignore[attr-defined]
        await online(app, pilot)
        await open_with(app, pilot, "bob")

        cid = await fail_one(app, pilot, proc, "are you there?")
        text = bubble_text(app, cid)
        assert "r retry · d give up" in flat(text), text
        assert "✗" in text and "are you there?" in text
        await pilot.pause()
        screen = screen_text(app)
        assert "r retry · d give up" in flat(screen)
        assert "1 failed" in status_line(app)
        assert app.conv_list.summaries["bob"].failed == 1

        await proc.arestart()
        await online(app, pilot)
        # Stale messages need consent: back online, it stays failed until the user says so.
        await holds(pilot, lambda: own_state(app, cid) is FAILED, "the message failed", 0.5)
        assert copies_on_server(proc.db_path, cid) == 0

        assert app.composer.value == ""
        await pilot.press("up")
        assert app.focused is app.view
        assert app.view.current() is not None and app.view.current().client_id == cid  # type: ignore[union-attr]
        await pilot.press("r")
        await wait_until(pilot, lambda: own_state(app, cid) is SENT, "sent after r")
        await wait_until(pilot, lambda: "✓" in bubble_text(app, cid), "✓ painted")
        assert "retry" not in bubble_text(app, cid)
        assert copies_on_server(proc.db_path, cid) == 1
        await wait_until(pilot, lambda: "failed" not in status_line(app), "no failed in status")
        # The selected message has no more actions; another r changes nothing.
        await pilot.press("r")
        await holds(pilot, lambda: copies_on_server(proc.db_path, cid) == 1, "one copy", 0.3)


async def test_d_gives_up_a_failed_message(proc: ServerProcess, tmp_path: Path) -> None:
    async with running_app(proc.url, proc.tokens["alice"], tmp_path / "alice") as (app, pilot):  # type: ignore[attr-defined]
        await online(app, pilot)
        await open_with(app, pilot, "bob")
        cid = await fail_one(app, pilot, proc, "never mind")

        await pilot.press("up")
        assert app.view.current().client_id == cid  # type: ignore[union-attr]
        await pilot.press("d")
        await wait_until(pilot, lambda: item(app, cid) is None, "the message gone from the view")
        assert own_state(app, cid) is GIVEN_UP
        assert "never mind" not in screen_text(app)
        assert app.engine.outbox_count() == 0
        await wait_until(pilot, lambda: "outbox empty" in status_line(app), "outbox empty")

        await proc.arestart()
        await online(app, pilot)
        await holds(
            pilot,
            lambda: own_state(app, cid) is GIVEN_UP and copies_on_server(proc.db_path, cid) == 0,
            "the given-up message kept off the server",
            0.5,
        )


async def test_e_edits_a_failed_message_and_sends_the_new_text(
    proc: ServerProcess, tmp_path: Path
) -> None:
    async with running_app(proc.url, proc.tokens["alice"], tmp_path / "alice") as (app, pilot):  # type: ignore[attr-defined]
        await online(app, pilot)
        await open_with(app, pilot, "bob")
        old = await fail_one(app, pilot, proc, "meet at 5")
        await proc.arestart()
        await online(app, pilot)

        await pilot.press("up", "e")
        assert app.focused is app.composer
        assert app.composer.value == "meet at 5"
        assert app.composer.has_class("editing")
        await pilot.press("end", "backspace", "6")
        assert app.composer.value == "meet at 6"
        await pilot.press("enter")

        assert app.composer.value == ""
        assert not app.composer.has_class("editing")
        assert own_state(app, old) is GIVEN_UP
        new = last_own(app)
        assert new.client_id != old and new.body == "meet at 6"
        await wait_until(pilot, lambda: own_state(app, new.client_id) is SENT, "edit sent")
        assert item(app, old) is None
        assert [m.body for m in app.view.items if m.own] == ["meet at 6"]
        assert copies_on_server(proc.db_path, new.client_id) == 1
        assert copies_on_server(proc.db_path, old) == 0


async def test_escape_cancels_an_edit_and_restores_the_draft(
    proc: ServerProcess, tmp_path: Path
) -> None:
    async with running_app(proc.url, proc.tokens["alice"], tmp_path / "alice") as (app, pilot):  # type: ignore[attr-defined]
        await online(app, pilot)
        await open_with(app, pilot, "bob")
        cid = await fail_one(app, pilot, proc, "first try")

        await pilot.press("up", "e")
        assert app.composer.value == "first try"
        await pilot.press("escape")
        assert app.composer.value == ""
        assert not app.composer.has_class("editing")
        assert own_state(app, cid) is FAILED

        # A half-typed draft survives an edit that is cancelled.
        await pilot.press(*"draft")
        app.view.focus()
        await pilot.pause()
        app.view.select_last()
        await pilot.press("e")
        assert app.composer.value == "first try"
        await pilot.press("escape")
        assert app.composer.value == "draft"
        assert own_state(app, cid) is FAILED


async def test_composer_keeps_typed_text_through_an_outage(
    proc: ServerProcess, tmp_path: Path
) -> None:
    async with running_app(proc.url, proc.tokens["alice"], tmp_path / "alice") as (app, pilot):  # type: ignore[attr-defined]
        await online(app, pilot)
        await open_with(app, pilot, "bob")
        await pilot.press(*"half a thought")
        await proc.akill()
        await wait_until(pilot, lambda: app.engine.status.state is not ConnState.ONLINE, "down")
        await proc.arestart()
        await online(app, pilot)
        assert app.composer.value == "half a thought"


# ---------------------------------------------------------------- unread and switching


async def test_unread_counts_and_switching(chat_server: RunningServer, tmp_path: Path) -> None:
    async with running_app(chat_server.url, chat_server.tokens["alice"], tmp_path / "a") as (
        app,
        pilot,
    ):
        await online(app, pilot)
        await peer_sends(chat_server, "carol", "alice", "hi from carol")
        await wait_until(pilot, lambda: app.peer == "carol", "carol's conversation opened")
        await wait_until(pilot, lambda: len(app.view.items) == 1, "carol's message shown")

        await peer_sends(chat_server, "bob", "alice", "one", "two", "three")
        await wait_until(
            pilot,
            lambda: "bob" in app.conv_list.summaries and app.conv_list.summaries["bob"].unread == 3,
            "bob's conversation with 3 unread",
        )
        assert app.peer == "carol"
        assert [m.body for m in app.view.items] == ["hi from carol"]
        await pilot.pause()
        sidebar = screen_text(app)
        assert "bob  3" in sidebar, sidebar
        assert "three" in sidebar  # the preview

        await pilot.press("ctrl+n")
        assert app.peer == "bob"
        assert [m.body for m in app.view.items] == ["one", "two", "three"]
        await wait_until(pilot, lambda: app.conv_list.summaries["bob"].unread == 0, "bob read")
        await pilot.pause()
        assert "bob  3" not in screen_text(app)

        await pilot.press("ctrl+p")
        assert app.peer == "carol"
        await pilot.press(f"alt+{app.conv_list.order.index('bob') + 1}")
        assert app.peer == "bob"
        await pilot.press(f"alt+{app.conv_list.order.index('carol') + 1}")
        assert app.peer == "carol"

        # alt+a goes to the next conversation with unread messages.
        await peer_sends(chat_server, "bob", "alice", "four")
        await wait_until(pilot, lambda: app.conv_list.summaries["bob"].unread == 1, "1 unread")
        await pilot.press("alt+a")
        assert app.peer == "bob"
        assert app.view.items[-1].body == "four"
        await wait_until(pilot, lambda: app.conv_list.summaries["bob"].unread == 0, "read")
        # Reading is reported to the server: bob's conversation is read up to seq 4.
        await wait_until(
            pilot,
            lambda: (
                (4,)
                in db_rows(
                    chat_server.db_path, "SELECT read_seq FROM reads WHERE user=?", ("alice",)
                )
            ),
            "alice's read position stored on the server",
        )


async def test_message_in_the_open_conversation_is_not_unread(
    chat_server: RunningServer, tmp_path: Path
) -> None:
    async with running_app(chat_server.url, chat_server.tokens["alice"], tmp_path / "a") as (
        app,
        pilot,
    ):
        await online(app, pilot)
        await open_with(app, pilot, "bob")
        await peer_sends(chat_server, "bob", "alice", "live one", "live two")
        await wait_until(pilot, lambda: len(app.view.items) == 2, "both messages shown")
        await holds(pilot, lambda: app.conv_list.summaries["bob"].unread == 0, "unread 0", 0.2)
        assert "live two" in screen_text(app)


# ---------------------------------------------------------------- status line


async def test_status_line_through_connect_outage_and_recovery(
    proc: ServerProcess, tmp_path: Path
) -> None:
    async with running_app(proc.url, proc.tokens["alice"], tmp_path / "alice") as (app, pilot):  # type: ignore[attr-defined]
        await wait_until(pilot, lambda: "online" in status_line(app), "online in the status line")
        assert "outbox empty" in status_line(app)
        await open_with(app, pilot, "bob")

        await proc.akill()
        await wait_until(
            pilot,
            lambda: (
                ("offline" in status_line(app) or "connecting" in status_line(app))
                and "online" not in status_line(app)
            ),
            "offline or connecting in the status line",
        )

        def says_why() -> bool:
            line = status_line(app)
            # While offline the reason is the line's last part, after the counts.
            last_part = line.rstrip().split(" · ")[-1]
            return "last: " in line or ("offline" in line and not last_part.startswith("outbox"))

        await wait_until(pilot, says_why, "a reason in the status line")
        # The first reason is the dropped link; the next attempts are refused, and say so.
        await wait_until(
            pilot, lambda: "unreachable" in status_line(app), "'server unreachable' as the reason"
        )
        assert "online" not in status_line(app)

        await type_and_send(pilot, "queued")
        await wait_until(pilot, lambda: "outbox 1" in status_line(app), "outbox 1")

        await proc.arestart()
        await wait_until(pilot, lambda: "● online" in status_line(app), "online again")
        await wait_until(pilot, lambda: "outbox empty" in status_line(app), "queued one sent")
        await pilot.pause()
        assert "● online" in screen_text(app)


async def test_status_line_shows_a_rejected_token(
    chat_server: RunningServer, tmp_path: Path
) -> None:
    async with running_app(chat_server.url, "not-the-token", tmp_path / "a") as (app, pilot):
        await wait_until(pilot, lambda: "token rejected" in status_line(app), "token rejected")
        assert "F5" in status_line(app)
        assert app.is_running
