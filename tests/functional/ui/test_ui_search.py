"""Search (ctrl+f or /search): results by conversation and date from the local store, and a
result far back opened in context without loading the history between it and the newest.

The real app and server; bob is a raw websocket client that sends the history.
"""

from __future__ import annotations

from pathlib import Path

from tests.support.ui import (
    flat,
    online,
    running_app,
    screen_text,
    type_and_send,
    wait_until,
)
from tests.support.wire import ServerFactory, login, send_message
from tui_chat.server.config import Limits, ServerConfig

BEFORE, AFTER = 250, 450


async def test_search_finds_and_opens_a_message_far_back(
    chat_server_factory: ServerFactory, tmp_path: Path
) -> None:
    # bob sends the whole history at once: above the default rate limit.
    chat_server = await chat_server_factory(ServerConfig(limits=Limits(rate=10_000, burst=10_000)))
    bob, *_ = await login(chat_server.url, "bob", chat_server.tokens["bob"])
    try:
        bodies = [f"filler {i}" for i in range(BEFORE)]
        bodies += ["Lunch on Fríday? [bold]not markup[/bold]"]
        bodies += [f"later {i}" for i in range(AFTER)]
        for i, body in enumerate(bodies):
            ack = await send_message(bob, f"s{i}", "alice", body)
            assert type(ack).__name__ == "Ack"
    finally:
        await bob.close()
    total = len(bodies)
    async with running_app(chat_server.url, chat_server.tokens["alice"], tmp_path) as (
        app,
        pilot,
    ):
        await online(app, pilot)
        await wait_until(
            pilot, lambda: app.conv_list.summaries.get("bob") is not None, "bob listed"
        )
        await wait_until(pilot, lambda: f"later {AFTER - 1}" in screen_text(app), "caught up")
        # Every word, or the start of one, accents folded: "lunch fri" finds "Fríday".
        await pilot.press("ctrl+f")
        await wait_until(pilot, lambda: type(app.screen).__name__ == "SearchScreen", "search")
        await pilot.press(*"lunch fri")
        await wait_until(pilot, lambda: "1 found" in screen_text(app), "one result")
        shown = flat(screen_text(app))
        assert "bob ·" in shown and "[bold]not markup[/bold]" in shown  # as typed, no markup
        await pilot.press("enter")
        await wait_until(pilot, lambda: type(app.screen).__name__ != "SearchScreen", "closed")
        # Opened in context: the result selected, the messages around it, not all of them.
        current = app.view.current()
        assert current is not None and current.body.startswith("Lunch on Fríday")
        assert current.seq == BEFORE + 1
        assert len(app.view.items) < total
        assert not app.view.complete_below
        await wait_until(pilot, lambda: "Lunch on Fríday" in screen_text(app), "on screen")
        # Scrolling down to the end loads the rest, up to the newest: then the view is live.
        for _ in range(40):
            if app.view.complete_below:
                break
            app.view.scroll_end(animate=False, immediate=True)
            await pilot.pause(0.05)
        await wait_until(pilot, lambda: app.view.complete_below, "the newest reached")
        seqs = [m.seq for m in app.view.items if m.seq is not None]
        assert seqs == list(range(seqs[0], total + 1))  # no gap, no repeat

        # /search with FTS5 syntax in it is words, not a query language; nothing breaks.
        app.composer.focus()
        await type_and_send(pilot, '/search "NEAR( * AND')
        await wait_until(pilot, lambda: type(app.screen).__name__ == "SearchScreen", "search")
        await wait_until(
            pilot, lambda: "Nothing stored here matches" in screen_text(app), "no match"
        )
        await pilot.press("escape")
