"""When the terminal is in the background: the title counts unread messages, a desktop
notification goes out through the terminal's escape (safely), the bell rings for a direct
message in the open conversation, and nothing is marked read until the user is back.

The real app and server; the peer is a raw websocket client. Focus comes and goes as
Textual's AppBlur / AppFocus events, which the terminal's focus reports become.
"""

from __future__ import annotations

from pathlib import Path

from textual import events

from tests.support.ui import online, open_with, running_app, wait_until
from tests.support.wire import RunningServer, db_rows, login, send_message
from tui_chat.core.config import UiSection


def read_seq(server: RunningServer, user: str) -> int:
    rows = db_rows(server.db_path, "SELECT read_seq FROM reads WHERE user=?", (user,))
    return int(rows[0][0]) if rows else 0


async def test_away_the_title_counts_and_a_notification_says_it_safely(
    chat_server: RunningServer, tmp_path: Path
) -> None:
    ui = UiSection(bell=True, desktop_notifications="osc777")
    bob, *_ = await login(chat_server.url, "bob", chat_server.tokens["bob"])
    try:
        async with running_app(chat_server.url, chat_server.tokens["alice"], tmp_path, ui=ui) as (
            app,
            pilot,
        ):
            rings: list[int] = []
            app.bell = lambda: rings.append(1)  # type: ignore[method-assign]
            await online(app, pilot)
            await open_with(app, pilot, "bob")
            assert app.signals.title == "tui-chat · alice"
            app.post_message(events.AppBlur())
            await wait_until(pilot, lambda: not app.app_focus, "in the background")

            hostile = "hi; there \x1b]2;pwned\x07 \x1b[31mred"
            ack = await send_message(bob, "b1", "alice", hostile)
            assert type(ack).__name__ == "Ack"
            await wait_until(pilot, lambda: app.signals.title == "(1) tui-chat · alice", "title")
            # The notification: one OSC 777 sequence, nothing the peer wrote can end it early.
            notes = [s for s in app.signals.sent if s.startswith("\x1b]777;")]
            assert len(notes) == 1
            body = notes[0][len("\x1b]777;notify;") : -1]
            assert notes[0].endswith("\x07") and "\x1b" not in body and "\x07" not in body
            # The view's sanitising: control characters show as symbols, as on screen.
            assert body.split(";") == ["bob", "hi, there ␛]2,pwned␇ ␛[31mred"]
            # A direct message in the open conversation rings while away.
            assert rings == [1]
            # Not read while away: neither the server nor the count is told otherwise.
            assert read_seq(chat_server, "alice") == 0
            assert app.conv_list.summaries["bob"].unread == 1

            app.post_message(events.AppFocus())
            await wait_until(pilot, lambda: read_seq(chat_server, "alice") == 1, "marked read")
            await wait_until(pilot, lambda: app.signals.title == "tui-chat · alice", "title back")
            # In front, a message in the open conversation neither rings nor notifies.
            await send_message(bob, "b2", "alice", "again")
            await wait_until(pilot, lambda: read_seq(chat_server, "alice") == 2, "read at once")
            assert rings == [1]
            assert len([s for s in app.signals.sent if s.startswith("\x1b]777;")]) == 1
    finally:
        await bob.close()
