"""Keys of the Textual app: focus moves, message actions, remapping, help, quit.

A message to a user the server does not know is rejected at once and for good ("there is
no user 'nobody'"): that gives a failed message in a fraction of a second, without an
outage, for the tests that only need something to retry or give up.
"""

from __future__ import annotations

from pathlib import Path

from textual.pilot import Pilot

from harness.serverproc import ServerProcess
from harness.waits import WAIT
from tests.support.ui import (
    FAILED,
    FRESHNESS,
    GIVEN_UP,
    PENDING,
    SENT,
    bubble_text,
    fail_one,
    flat,
    holds,
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
from tests.support.wire import RunningServer
from tui_chat.core.models import Event, MessageChanged
from tui_chat.ui.app import ChatApp
from tui_chat.ui.screens import HelpScreen


def pending_again(events: list[Event], client_id: str) -> int:
    """How many times the message went back to pending (each retry does it once)."""
    return sum(
        1
        for e in events
        if isinstance(e, MessageChanged)
        and e.message.client_id == client_id
        and e.message.state is PENDING
    )


async def rejected_one(app: ChatApp, pilot: Pilot[int], body: str = "hello?") -> str:
    """Send ``body`` to the unknown user 'nobody' and wait until it shows ✗.

    The ctrl+o dialog refuses an unknown name (see test_ui_compose.py), so the
    conversation is opened directly, as for a listed peer whose account was removed.
    """
    if app.peer != "nobody":
        app.open_conversation("nobody")
        app.composer.focus()
        await wait_until(pilot, lambda: app.focused is app.composer, "the composer focused")
    await type_and_send(pilot, body)
    cid = last_own(app).client_id
    await wait_until(pilot, lambda: own_state(app, cid) is FAILED, "rejected: failed")
    await wait_until(pilot, lambda: "✗" in bubble_text(app, cid), "✗ painted")
    return cid


# ---------------------------------------------------------------- focus


async def test_up_and_tab_from_an_empty_composer_select_the_last_message(
    chat_server: RunningServer, tmp_path: Path
) -> None:
    async with running_app(chat_server.url, chat_server.tokens["alice"], tmp_path / "a") as (
        app,
        pilot,
    ):
        await online(app, pilot)
        await open_with(app, pilot, "bob")
        for body in ("one", "two", "three"):
            await type_and_send(pilot, body)
        await wait_until(pilot, lambda: len(app.view.items) == 3, "three messages")

        # Not while there is text: the keys belong to the text then.
        await pilot.press(*"draft", "up")
        assert app.focused is app.composer
        await pilot.press("tab")
        assert app.focused is app.composer
        assert app.composer.value == "draft"
        await pilot.press(*["backspace"] * 5)
        assert app.composer.value == ""

        await pilot.press("up")
        assert app.focused is app.view
        assert app.view.selected == 2
        await pilot.press("up", "up")
        assert app.view.current().body == "one"  # type: ignore[union-attr]
        await pilot.press("up")
        assert app.view.selected == 0
        await pilot.press("down")
        assert app.view.current().body == "two"  # type: ignore[union-attr]

        await pilot.press("escape")
        assert app.focused is app.composer
        assert app.view.selected is None

        await pilot.press("tab")
        assert app.focused is app.view
        assert app.view.selected == 2
        await pilot.press("tab")
        assert app.focused is app.composer


# ---------------------------------------------------------------- message actions


async def test_actions_refuse_messages_that_are_not_unsent(
    chat_server: RunningServer, tmp_path: Path
) -> None:
    async with running_app(chat_server.url, chat_server.tokens["alice"], tmp_path / "a") as (
        app,
        pilot,
    ):
        await online(app, pilot)
        await peer_sends(chat_server, "bob", "alice", "from bob")
        await wait_until(pilot, lambda: app.peer == "bob" and app.view.items, "bob's message")
        await pilot.press("up")
        for key in ("r", "d", "e"):
            await pilot.press(key)
        await pilot.pause()
        assert [m.body for m in app.view.items] == ["from bob"]
        assert app.composer.value == ""
        assert "Only your unsent messages" in screen_text(app)


async def test_held_message_waits_behind_a_failed_one(
    chat_server: RunningServer, tmp_path: Path
) -> None:
    async with running_app(chat_server.url, chat_server.tokens["alice"], tmp_path / "a") as (
        app,
        pilot,
    ):
        await online(app, pilot)
        first = await rejected_one(app, pilot, "first")
        assert "there is no user 'nobody'" in bubble_text(app, first)
        # The server would refuse it again: no retry is offered, only give up or edit.
        assert "· d give up · e edit" in flat(bubble_text(app, first))
        assert "r retry" not in flat(bubble_text(app, first))
        await type_and_send(pilot, "second")
        second = last_own(app).client_id
        await wait_until(pilot, lambda: "… held" in bubble_text(app, second), "held mark")
        assert own_state(app, second) is PENDING
        await pilot.pause()
        sidebar = screen_text(app)
        assert "✗1" in sidebar  # the conversation list marks failed messages

        # Giving up the failed one releases the held one (which then fails on its own).
        await pilot.press("up", "up")
        assert app.view.current().client_id == first  # type: ignore[union-attr]
        await pilot.press("d")
        await wait_until(pilot, lambda: own_state(app, first) is GIVEN_UP, "given up")
        await wait_until(pilot, lambda: own_state(app, second) is FAILED, "second tried")


async def test_failure_toasts_are_coalesced(tmp_path: Path) -> None:
    """Failures that come in a burst make one toast, not one each.

    The burst must not depend on the machine's speed: three messages are composed at once
    while no server answers, so they reach the end of the freshness window together (three
    rejects would be three round trips, which a loaded machine can spread past the toast's
    0.5 s coalescing window).
    """
    unreachable = "ws://127.0.0.1:9"  # nothing listens: every connect is refused
    async with running_app(unreachable, "token", tmp_path / "a", on_failure="continue") as (
        app,
        pilot,
    ):
        await open_with(app, pilot, "bob")
        for body in ("a", "b", "c"):
            app.engine.send("bob", body)
        await wait_until(
            pilot,
            lambda: len(app.view.items) == 3 and all(m.state is FAILED for m in app.view.items),
            "three failed",
            FRESHNESS + WAIT,
        )
        await wait_until(
            pilot, lambda: "3 messages not delivered" in screen_text(app), "the coalesced toast"
        )
        await holds(pilot, lambda: screen_text(app).count("Message failed") == 1, "one toast", 0.3)
        assert "3 failed (ctrl+r retries all)" in status_line(app)


async def test_ctrl_r_retries_all_while_typing(
    server_process: ServerProcess, tmp_path: Path
) -> None:
    events: list[Event] = []
    async with running_app(
        server_process.url, server_process.tokens["alice"], tmp_path / "a", events=events
    ) as (app, pilot):
        await online(app, pilot)
        await open_with(app, pilot, "bob")
        # A retryable failure (the server is gone): ctrl+r leaves what the server refused.
        cid = await fail_one(app, pilot, server_process, "hello?")
        await server_process.arestart()
        await pilot.press(*"still typing")
        assert pending_again(events, cid) == 0
        await pilot.press("ctrl+r")
        await wait_until(pilot, lambda: pending_again(events, cid) == 1, "retried")
        assert app.composer.value == "still typing"
        assert app.focused is app.composer
        await wait_until(pilot, lambda: "Retrying 1 failed message(s)" in screen_text(app), "toast")
        await wait_until(pilot, lambda: own_state(app, cid) is SENT, "sent once the server is back")


async def test_keymap_remaps_retry(server_process: ServerProcess, tmp_path: Path) -> None:
    events: list[Event] = []
    async with running_app(
        server_process.url,
        server_process.tokens["alice"],
        tmp_path / "a",
        keymap={"retry": "x", "retry_all": "ctrl+t"},
        events=events,
    ) as (app, pilot):
        await online(app, pilot)
        await open_with(app, pilot, "bob")
        # A retryable failure (the server is gone), so retry is offered: a reject the
        # server would repeat offers none.
        cid = await fail_one(app, pilot, server_process, "hello?")
        # The hint under the message follows the key map.
        hint = flat(bubble_text(app, cid))
        assert "x retry · d give up · e edit" in hint, hint
        assert "r retry" not in hint

        await pilot.press("up")
        assert app.view.current().client_id == cid  # type: ignore[union-attr]
        # r is no binding any more: like any stray letter it goes to the composer.
        await pilot.press("r")
        await wait_until(pilot, lambda: app.composer.value == "r", "r typed into the composer")
        assert app.focused is app.composer
        await holds(pilot, lambda: pending_again(events, cid) == 0, "r not retrying", 0.3)
        assert own_state(app, cid) is FAILED

        await pilot.press("backspace", "up")
        assert app.view.current().client_id == cid  # type: ignore[union-attr]
        await pilot.press("x")
        await wait_until(pilot, lambda: pending_again(events, cid) == 1, "x retried it")
        await wait_until(
            pilot, lambda: own_state(app, cid) is FAILED, "failed again", FRESHNESS + WAIT
        )

        await pilot.press("escape")
        await pilot.press("ctrl+r")
        await holds(pilot, lambda: pending_again(events, cid) == 1, "ctrl+r not retrying", 0.3)
        await pilot.press("ctrl+t")
        await wait_until(pilot, lambda: pending_again(events, cid) == 2, "ctrl+t retried all")

        await pilot.press("f1")
        await wait_until(pilot, lambda: isinstance(app.screen, HelpScreen), "help")
        # Pushed is not yet painted: wait for the row before reading the screen.
        await wait_until(pilot, lambda: "retry the selected" in screen_text(app), "help painted")
        help_text = screen_text(app)
        assert "ctrl+t" in help_text
        row = next(line for line in help_text.splitlines() if "retry the selected" in line)
        assert flat(row).split("retry the selected")[0].endswith(" x "), row


# ---------------------------------------------------------------- help, reconnect, quit


async def test_help_opens_and_closes(chat_server: RunningServer, tmp_path: Path) -> None:
    async with running_app(chat_server.url, chat_server.tokens["alice"], tmp_path / "a") as (
        app,
        pilot,
    ):
        await pilot.press("f1")
        await wait_until(pilot, lambda: isinstance(app.screen, HelpScreen), "help open")
        # Pushed is not yet painted: wait for the words rather than read the first frame.
        for words in ("tui-chat keys", "retry the selected failed message", "◷ maybe sent"):
            await wait_until(pilot, lambda w=words: w in screen_text(app), f"{words!r} shown")
        await pilot.press("escape")
        await wait_until(pilot, lambda: not isinstance(app.screen, HelpScreen), "help closed")

        # '?' is text while typing, and help from the message list.
        await pilot.press("question_mark")
        assert app.composer.value == "?"
        assert not isinstance(app.screen, HelpScreen)
        await pilot.press("backspace")
        await pilot.press("tab", "question_mark")
        await wait_until(pilot, lambda: isinstance(app.screen, HelpScreen), "help from the list")
        await pilot.press("question_mark")
        await wait_until(pilot, lambda: not isinstance(app.screen, HelpScreen), "closed by '?'")


async def test_f5_reconnects_now(chat_server: RunningServer, tmp_path: Path) -> None:
    async with running_app(chat_server.url, chat_server.tokens["alice"], tmp_path / "a") as (
        app,
        pilot,
    ):
        await online(app, pilot)
        await pilot.press("f5")
        await wait_until(pilot, lambda: "Reconnecting now" in screen_text(app), "toast")
        assert "● online" in status_line(app)


async def test_ctrl_q_quits(chat_server: RunningServer, tmp_path: Path) -> None:
    async with running_app(chat_server.url, chat_server.tokens["alice"], tmp_path / "a") as (
        app,
        pilot,
    ):
        await online(app, pilot)
        await pilot.press(*"typing")
        await pilot.press("ctrl+q")
        await wait_until(pilot, lambda: not app.is_running, "the app to exit", 5)
