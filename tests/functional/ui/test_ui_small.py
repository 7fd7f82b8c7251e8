"""Small terminals: the list leaves under 60 columns and ctrl+l shows it in the chat's
place; the member list never squeezes the composer; under 30×8 the app says how big it
must be and Enter sends nothing. The real app on the real server."""

from __future__ import annotations

from pathlib import Path

from tests.support.ui import flat, online, running_app, screen_text, wait_until
from tests.support.wire import RunningServer, db_rows


def sent(server: RunningServer) -> int:
    return int(db_rows(server.db_path, "SELECT COUNT(*) FROM messages")[0][0])


async def test_narrow_and_too_small(chat_server: RunningServer, tmp_path: Path) -> None:
    async with running_app(chat_server.url, chat_server.tokens["alice"], tmp_path) as (
        app,
        pilot,
    ):
        await online(app, pilot)
        await pilot.resize_terminal(50, 16)
        main = app.screen_stack[0]
        await wait_until(pilot, lambda: main.has_class("-narrow"), "narrow")
        assert "Conversations" not in screen_text(app)
        # ctrl+l: the list in the chat's place; opening one brings the chat back.
        await pilot.press("ctrl+o")
        await wait_until(pilot, lambda: type(app.screen).__name__ != "ChatScreen", "dialog")
        await pilot.press(*"bob", "enter")
        await wait_until(pilot, lambda: app.peer == "bob", "bob open")
        await pilot.press("ctrl+l")
        await wait_until(pilot, lambda: "Conversations" in screen_text(app), "the list")
        assert "Conversation with bob" not in screen_text(app)
        await pilot.press("enter")
        await wait_until(pilot, lambda: "Conversation with bob" in screen_text(app), "chat")
        assert app.composer.size.width >= 20

        # Too small: the app says so, and Enter sends nothing.
        app.composer.set_text("not seen, not sent")
        await pilot.resize_terminal(25, 6)
        await wait_until(
            pilot, lambda: "needs at least 30×8" in flat(screen_text(app)), "the size asked for"
        )
        app.composer._submit()  # what Enter does, whether or not the composer has focus
        await pilot.pause(0.2)
        assert sent(chat_server) == 0
        assert app.composer.text == "not seen, not sent"  # kept
        await pilot.resize_terminal(80, 24)
        await wait_until(pilot, lambda: "Conversation with bob" in screen_text(app), "back")
