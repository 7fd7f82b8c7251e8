"""The message view with long histories: older pages on scroll-up, the "new below" mark.

The history is written into a real local store first (as a finished catch-up would have
left it), then the app opens it; incoming messages come from a real peer through a real
server.
"""

from __future__ import annotations

from pathlib import Path

from tests.support.ui import peer_sends, running_app, screen_text, wait_until
from tests.support.wire import RunningServer, db_rows, login, send_message
from tui_chat.core.store import LocalStore
from tui_chat.ui.app import PAGE
from tui_chat.ui.message_view import RELAYOUT_LIMIT, MessageView

HISTORY = 1000


def fill_history(store_dir: Path, url: str, count: int) -> None:
    """``count`` messages from bob to alice in one conversation, as the engine stores them."""
    host = url.split("://", 1)[1].replace(":", "_")
    store = LocalStore(store_dir / f"alice@{host}.sqlite3", "alice")
    store.ensure_conversation("bob", "c-history")
    for seq in range(1, count + 1):
        store.insert_message("c-history", seq, "bob", "alice", f"h{seq}", f"old {seq}", seq)
    store.advance_watermark("c-history")
    store.close()


async def test_scrolling_up_loads_older_pages_and_keeps_the_view_still(tmp_path: Path) -> None:
    url = "ws://127.0.0.1:9"  # never contacted: the engine does not run
    fill_history(tmp_path, url, HISTORY)
    async with running_app(url, "token", tmp_path, run_engine=False) as (app, pilot):
        view = app.query_one(MessageView)
        await wait_until(pilot, lambda: len(view.items) == PAGE, "the newest page")
        assert [m.seq for m in view.items] == list(range(HISTORY - PAGE + 1, HISTORY + 1))
        # The view scrolls to the end again once layout has caught up: wait for that.
        await wait_until(pilot, lambda: view.is_vertical_scroll_end, "at the newest line")

        view.scroll_home(animate=False, immediate=True)
        await wait_until(pilot, lambda: len(view.items) == 2 * PAGE, "an older page")
        assert view.items[0].seq == HISTORY - 2 * PAGE + 1

        # The message that was at the top is still on screen: the view did not jump.
        def top_still_visible() -> bool:
            top_line = view._offsets[PAGE]  # first line of the previously oldest message
            return view.scroll_y <= top_line < view.scroll_y + view.size.height

        await wait_until(pilot, top_still_visible, "the previous top line still on screen")
        await wait_until(
            pilot, lambda: f"old {HISTORY - PAGE + 1}" in screen_text(app), "its text painted"
        )


async def test_new_messages_below_mark_while_reading_older_ones(
    chat_server: RunningServer, tmp_path: Path
) -> None:
    tokens = chat_server.tokens
    async with running_app(chat_server.url, tokens["alice"], tmp_path / "alice") as (app, pilot):
        # Bob sends over his own websocket, each message acked: no second app, no engine
        # timers (a freshness window, an ack timeout) for a loaded machine to trip.
        await peer_sends(chat_server, "bob", "alice", *(f"filler {i}" for i in range(40)))
        view = app.query_one(MessageView)
        await wait_until(pilot, lambda: len(view.items) == 40, "40 messages from bob")
        await wait_until(pilot, lambda: view.is_vertical_scroll_end, "following the end")

        view.scroll_home(animate=False, immediate=True)
        await pilot.pause()
        await peer_sends(chat_server, "bob", "alice", "while you read")
        mark = app.query_one("#new-below")
        await wait_until(pilot, lambda: "1 new message" in screen_text(app), "the new-below mark")
        assert mark.display
        assert view.scroll_y == 0  # stayed put while reading

        view.focus()
        await pilot.press("end")
        await wait_until(pilot, lambda: not mark.display, "mark gone at the end")
        await wait_until(pilot, lambda: view.is_vertical_scroll_end, "at the newest line")


async def test_a_width_change_rewraps_at_most_the_relayout_limit(tmp_path: Path) -> None:
    url = "ws://127.0.0.1:9"
    fill_history(tmp_path, url, 3000)
    async with running_app(url, "token", tmp_path, run_engine=False) as (app, pilot):
        view = app.query_one(MessageView)
        await wait_until(pilot, lambda: len(view.items) == PAGE, "the newest page")
        older = app.engine.messages("bob", view.lowest_seq(), 3000 - PAGE)
        view.prepend(older, complete=True)
        assert len(view.items) == 3000
        view.scroll_end(animate=False, immediate=True)
        await pilot.pause()

        await pilot.resize_terminal(100, 30)
        await wait_until(pilot, lambda: len(view.items) == RELAYOUT_LIMIT, "trimmed on resize")
        assert view.items[-1].seq == 3000
        assert not view.complete  # the dropped ones load again when scrolled to
        await wait_until(pilot, lambda: view.is_vertical_scroll_end, "still at the newest line")
        assert "old 3000" in screen_text(app)


async def test_a_conversation_caught_up_on_screen_is_marked_read(
    chat_server: RunningServer, tmp_path: Path
) -> None:
    tokens = chat_server.tokens
    bob, *_ = await login(chat_server.url, "bob", tokens["bob"])
    for i in range(1, 31):
        await send_message(bob, f"m{i}", "alice", f"while you were away {i}")
    await bob.close()

    async with running_app(chat_server.url, tokens["alice"], tmp_path / "alice") as (app, pilot):
        view = app.query_one(MessageView)
        await wait_until(pilot, lambda: len(view.items) == 30, "the caught-up messages")
        await wait_until(
            pilot,
            lambda: (
                db_rows(chat_server.db_path, "SELECT user, read_seq FROM reads") == [("alice", 30)]
            ),
            "alice's read position on the server",
        )
        await wait_until(pilot, lambda: app.conv_list.summaries["bob"].unread == 0, "unread 0")
