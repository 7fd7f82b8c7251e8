"""What is typed is what is sent: the composer, drafts, edits, stray keys, give-up undo,
alt+digit, multi-line bodies and the cancelling state, through Pilot with the real engine
and a real server on loopback.

The real-terminal half (a burst of keys and a bracketed paste through tmux) is in
``test_tmux.py``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from textual import events
from textual.pilot import Pilot

from harness.faultproxy import FaultProxy
from harness.serverproc import ServerProcess
from harness.waits import WAIT
from tests.support.ui import (
    FAILED,
    FRESHNESS,
    bubble_text,
    copies_on_server,
    fail_one,
    flat,
    last_own,
    online,
    open_with,
    own_state,
    peer_sends,
    running_app,
    screen_text,
    wait_until,
)
from tests.support.wire import RunningServer, db_rows
from tui_chat.core.models import ChatMessage, DeliveredAnyway, Event, OutState
from tui_chat.ui.app import ESC_DIGIT_KEYS, ChatApp
from tui_chat.ui.render import Hints, state_line
from tui_chat.ui.screens import NewConversationScreen


def server_bodies(db_path: Path, sender: str = "alice") -> list[str]:
    rows = db_rows(db_path, "SELECT body FROM messages WHERE sender=? ORDER BY seq", (sender,))
    return [str(r[0]) for r in rows]


def at_end_nothing_selected(app: ChatApp) -> bool:
    c = app.composer
    return c.cursor_location == c.document.end and c.selection.is_empty


@contextlib.asynccontextmanager
async def talking_to_bob(
    url: str, token: str, tmp_path: Path, **sync: Any
) -> AsyncIterator[tuple[ChatApp, Pilot[int]]]:
    """alice's app, online, with the conversation with bob open (through ctrl+o)."""
    async with running_app(url, token, tmp_path / "a", **sync) as (app, pilot):
        await online(app, pilot)
        await open_with(app, pilot, "bob")
        yield app, pilot


# ---------------------------------------------------------------- Enter sends the text before it


async def test_each_enter_sends_the_text_before_it_once(
    chat_server: RunningServer, tmp_path: Path
) -> None:
    async with talking_to_bob(chat_server.url, chat_server.tokens["alice"], tmp_path) as (
        app,
        pilot,
    ):
        keys: list[str] = []
        for i in range(5):
            keys += [*f"k{i}", "enter"]
        await pilot.press(*keys)
        await wait_until(
            pilot,
            lambda: server_bodies(chat_server.db_path) == [f"k{i}" for i in range(5)],
            "k0..k4 on the server, each once, in order",
        )
        assert app.composer.value == ""


async def test_newline_keys_and_a_paste_make_one_multi_line_message(
    chat_server: RunningServer, tmp_path: Path
) -> None:
    async with talking_to_bob(chat_server.url, chat_server.tokens["alice"], tmp_path) as (
        app,
        pilot,
    ):
        await pilot.press(*"line one", "ctrl+j", *"line two", "enter")
        # A bracketed paste, with the CR line ends a terminal sends: one message, all lines.
        app.post_message(events.Paste("pasted 1\rpasted 2\r\npasted 3"))
        await wait_until(pilot, lambda: app.composer.value != "", "the paste in the composer")
        assert app.composer.value == "pasted 1\npasted 2\npasted 3"
        await pilot.press("enter")
        expected = ["line one\nline two", "pasted 1\npasted 2\npasted 3"]
        await wait_until(
            pilot, lambda: server_bodies(chat_server.db_path) == expected, "two multi-line bodies"
        )
        # The view paints each line of the body on its own line.
        lines = [line.strip() for line in bubble_text(app, last_own(app).client_id).splitlines()]
        assert [line for line in lines if line.startswith("pasted")] == [
            "pasted 1",
            "pasted 2",
            "pasted 3",
        ]


async def test_a_body_over_the_limit_shows_a_counter_and_is_not_sent(
    chat_server: RunningServer, tmp_path: Path
) -> None:
    async with talking_to_bob(chat_server.url, chat_server.tokens["alice"], tmp_path) as (
        app,
        pilot,
    ):
        limit = app.engine.max_body
        too_long = "x" * (limit + 1)
        app.post_message(events.Paste(too_long))
        await wait_until(pilot, lambda: app.composer.value == too_long, "the long paste")
        await wait_until(
            pilot,
            lambda: f"{limit + 1}/{limit} too long to send" in screen_text(app),
            "the counter",
        )
        await pilot.press("enter")
        await wait_until(pilot, lambda: "Too long to send" in screen_text(app), "the refusal")
        assert app.composer.value == too_long  # nothing lost
        assert app.engine.outbox_count() == 0
        # One character less and it goes.
        await pilot.press("backspace")
        assert "too long" not in screen_text(app).split("Too long to send")[-1]
        await pilot.press("enter")
        await wait_until(
            pilot,
            lambda: server_bodies(chat_server.db_path) == ["x" * limit],
            "the body at the limit",
        )


# ---------------------------------------------------------------- drafts and edits


async def test_drafts_survive_a_restart_per_conversation(
    chat_server: RunningServer, tmp_path: Path
) -> None:
    token = chat_server.tokens["alice"]
    async with running_app(chat_server.url, token, tmp_path / "a") as (app, pilot):
        await online(app, pilot)
        await open_with(app, pilot, "bob")
        await pilot.press(*"for bob, half")
        await open_with(app, pilot, "carol")
        await pilot.press(*"for carol", "ctrl+j", *"two lines")
        await pilot.press("ctrl+q")
        await wait_until(pilot, lambda: not app.is_running, "the app to quit")

    async with running_app(chat_server.url, token, tmp_path / "a") as (app, pilot):
        await online(app, pilot)
        app.open_conversation("carol")
        assert app.composer.value == "for carol\ntwo lines"
        assert at_end_nothing_selected(app)
        app.open_conversation("bob")
        assert app.composer.value == "for bob, half"
        assert at_end_nothing_selected(app)
        await pilot.press(*" more")
        assert app.composer.value == "for bob, half more"
    assert server_bodies(chat_server.db_path) == []  # a draft is never sent


async def test_edit_puts_the_text_in_the_composer_cursor_at_the_end(
    server_process: ServerProcess, tmp_path: Path
) -> None:
    async with talking_to_bob(server_process.url, server_process.tokens["alice"], tmp_path) as (
        app,
        pilot,
    ):
        cid = await fail_one(app, pilot, server_process, "meet at 5")
        await pilot.press("up")
        assert app.view.current().client_id == cid  # type: ignore[union-attr]
        await pilot.press("e")
        await wait_until(pilot, lambda: app.focused is app.composer, "the composer focused")
        assert app.composer.value == "meet at 5"
        assert app.composer.editing == cid
        assert at_end_nothing_selected(app)
        # Typing goes at the end, replacing nothing.
        await pilot.press(*"!")
        assert app.composer.value == "meet at 5!"
        # Esc leaves the edit; the (empty) draft comes back.
        await pilot.press("escape")
        assert app.composer.value == ""
        assert app.composer.editing is None


# ---------------------------------------------------------------- stray keys


async def test_a_stray_key_in_the_messages_goes_to_the_composer(
    server_process: ServerProcess, tmp_path: Path
) -> None:
    async with talking_to_bob(server_process.url, server_process.tokens["alice"], tmp_path) as (
        app,
        pilot,
    ):
        cid = await fail_one(app, pilot, server_process, "keep me")
        await pilot.press("up")
        assert app.focused is app.view
        # "h", "x", "D" are no bindings of the message pane: text, not actions.
        await pilot.press("h", "x", "D")
        await wait_until(pilot, lambda: app.composer.value == "hxD", "typed into the composer")
        assert app.focused is app.composer
        assert own_state(app, cid) is FAILED
        assert "✗" in bubble_text(app, cid)


async def test_undo_give_up_brings_the_message_back(
    server_process: ServerProcess, tmp_path: Path
) -> None:
    async with talking_to_bob(server_process.url, server_process.tokens["alice"], tmp_path) as (
        app,
        pilot,
    ):
        cid = await fail_one(app, pilot, server_process, "undo me")
        await pilot.press("up", "d")
        # Given up (or cancelling, until the server is told): either way undoable now,
        # as the server is down and has not been told.
        await wait_until(
            pilot,
            lambda: own_state(app, cid) in (OutState.GIVEN_UP, OutState.CANCELLING),
            "given up",
        )
        assert app.engine.can_undo_give_up(cid)
        await pilot.press("u")
        await wait_until(pilot, lambda: own_state(app, cid) is FAILED, "back to failed")
        await wait_until(pilot, lambda: "✗" in bubble_text(app, cid), "✗ painted again")
        assert "Give-up undone" in screen_text(app)
        # And it can be retried, once the server is back.
        await server_process.astart()
        await online(app, pilot)
        await pilot.press("up")
        assert app.view.current().client_id == cid  # type: ignore[union-attr]
        await pilot.press("r")
        await wait_until(
            pilot, lambda: own_state(app, cid) is OutState.SENT, "sent", FRESHNESS + WAIT
        )


def test_cancelling_never_says_it_will_not_be_sent() -> None:
    msg = ChatMessage(
        "bob", "alice", "c1", "hi", 0, own=True, state=OutState.CANCELLING, attempts=1
    )
    line = state_line(msg, Hints())
    assert line is not None
    assert "cancelling…" in line
    assert "may already have reached the server" in line
    assert "u undo" in line
    assert "will not be sent" not in line
    failed = msg.__class__(
        "bob", "alice", "c2", "hi", 0, own=True, state=OutState.FAILED, retryable=False
    )
    assert "retry" not in (state_line(failed, Hints()) or "")


async def test_cancelling_on_screen_then_delivered_anyway(
    chat_server: RunningServer, tmp_path: Path
) -> None:
    """The server stored the message but its ack was lost: a give-up cannot promise
    anything, so the bubble says "cancelling…" (never "will not be sent") until the
    server answers, which here is "already delivered": shown as sent, with a toast."""
    seen: list[Event] = []
    async with (
        FaultProxy("127.0.0.1", chat_server.port) as proxy,
        # Slow pings: the link must carry the send before it is found silent.
        running_app(
            proxy.url,
            chat_server.tokens["alice"],
            tmp_path / "a",
            ping_interval=5.0,
            ping_timeout=5.0,
            events=seen,
        ) as (app, pilot),
    ):
        await online(app, pilot)
        await open_with(app, pilot, "bob")
        proxy.blackhole(direction="down")  # the server gets it; the ack is lost
        await pilot.press(*"lost ack", "enter")
        cid = last_own(app).client_id
        await wait_until(pilot, lambda: copies_on_server(chat_server.db_path, cid) == 1, "stored")
        await wait_until(pilot, lambda: own_state(app, cid) is FAILED, "failed", FRESHNESS + WAIT)
        await pilot.press("up")
        assert app.view.current().client_id == cid  # type: ignore[union-attr]
        await pilot.press("d")
        await wait_until(pilot, lambda: own_state(app, cid) is OutState.CANCELLING, "cancelling")
        await wait_until(pilot, lambda: "cancelling…" in flat(bubble_text(app, cid)), "painted")
        assert "will not be sent" not in screen_text(app)
        assert "u undo" in flat(bubble_text(app, cid))

        proxy.pass_through()
        await wait_until(
            pilot, lambda: own_state(app, cid) is OutState.SENT, "sent after all", WAIT * 2
        )
        await wait_until(pilot, lambda: "✓" in bubble_text(app, cid), "✓ painted")
        await wait_until(
            pilot, lambda: "Too late to cancel: your message" in screen_text(app), "the toast"
        )
        assert any(isinstance(e, DeliveredAnyway) for e in seen)
        assert copies_on_server(chat_server.db_path, cid) == 1


# ---------------------------------------------------------------- conversations


async def test_alt_digits_as_tmux_and_xterm_send_them(
    chat_server: RunningServer, tmp_path: Path
) -> None:
    await peer_sends(chat_server, "bob", "alice", "from bob")
    await peer_sends(chat_server, "carol", "alice", "from carol")
    async with running_app(chat_server.url, chat_server.tokens["alice"], tmp_path / "a") as (
        app,
        pilot,
    ):
        await online(app, pilot)
        await wait_until(
            pilot,
            lambda: (
                app.conv_list.order == [s.peer for s in app.engine.conversations()]
                and sorted(app.conv_list.order) == ["bob", "carol"]
            ),
            "the engine's order shown (first contact first)",
        )
        await wait_until(pilot, lambda: app.focused is app.composer, "the composer focused")
        first, second = app.conv_list.order
        app.open_conversation(first)
        # The numbers are on screen, beside the names.
        text = screen_text(app)
        assert f"1 {first}" in text and f"2 {second}" in text, text
        await pilot.press(*"typing")
        # ESC 2 reaches Textual as "™" (trade_mark_sign): a jump, not text.
        await pilot.press(ESC_DIGIT_KEYS[2])
        await wait_until(pilot, lambda: app.peer == second, "alt+2 opened the second")
        await pilot.press(ESC_DIGIT_KEYS[1])
        await wait_until(pilot, lambda: app.peer == first, "alt+1 opened the first")
        assert app.composer.value == "typing"  # the draft of the first came back
        await pilot.press("alt+2")  # terminals that report alt+digit as such
        await wait_until(pilot, lambda: app.peer == second, "alt+2 again")
        assert "™" not in app.composer.value


async def test_ctrl_o_says_when_a_user_does_not_exist(
    chat_server: RunningServer, tmp_path: Path
) -> None:
    async with running_app(chat_server.url, chat_server.tokens["alice"], tmp_path / "a") as (
        app,
        pilot,
    ):
        await online(app, pilot)
        await pilot.press("ctrl+o")
        await wait_until(pilot, lambda: isinstance(app.screen, NewConversationScreen), "dialog")
        await pilot.press(*"nobody", "enter")
        await wait_until(pilot, lambda: "No such user: nobody" in screen_text(app), "refused")
        assert isinstance(app.screen, NewConversationScreen)  # the name can be corrected
        assert app.peer is None
        await pilot.press(*["backspace"] * 6, *"bob", "enter")
        await wait_until(pilot, lambda: app.peer == "bob", "bob exists")
