"""Links and copying, in the real app on the real server: a link is shown underlined,
its URL is shown whole before it opens (o, or a click), and y copies a message (OSC 52)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.ui import flat, online, open_with, running_app, screen_text, wait_until
from tests.support.wire import RunningServer, login, send_message


async def test_a_link_is_shown_before_it_opens_and_a_message_copies(
    chat_server: RunningServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No desktop here: opening says so and copies the link instead (deterministic in CI).
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    bob, *_ = await login(chat_server.url, "bob", chat_server.tokens["bob"])
    try:
        async with running_app(chat_server.url, chat_server.tokens["alice"], tmp_path) as (
            app,
            pilot,
        ):
            await online(app, pilot)
            await open_with(app, pilot, "bob")
            body = "docs at https://example.org/guide?x=1. and more"
            await send_message(bob, "b1", "alice", body)
            await wait_until(pilot, lambda: "https://example.org/guide" in screen_text(app), "in")
            # Underlined (and an OSC 8 link) in the rendered line.
            strips = app.view._strips(len(app.view.items) - 1)
            styles = [seg.style for strip in strips for seg in strip if "example.org" in seg.text]
            assert styles and all(s is not None and s.underline for s in styles)
            assert all(s is not None and s.link == "https://example.org/guide?x=1" for s in styles)

            await pilot.press("up")  # into the messages: the newest selected
            await pilot.press("y")
            assert app.clipboard == body
            await pilot.press("o")
            await wait_until(pilot, lambda: type(app.screen).__name__ == "LinkScreen", "links")
            assert "1 https://example.org/guide?x=1" in flat(screen_text(app))
            await pilot.press("enter")
            await wait_until(
                pilot, lambda: "Could not open it: no desktop browser" in screen_text(app), "why"
            )
            assert app.clipboard == "https://example.org/guide?x=1"
            # A click on the message offers its links too.
            y = app.view._offsets[len(app.view.items) - 1] - int(app.view.scroll_y) + 1
            await pilot.click(app.view, offset=(5, y))
            await wait_until(pilot, lambda: type(app.screen).__name__ == "LinkScreen", "again")
            await pilot.press("escape")
            await wait_until(pilot, lambda: type(app.screen).__name__ != "LinkScreen", "closed")
    finally:
        await bob.close()
