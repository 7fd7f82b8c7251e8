"""The words the view uses for days and times (tui_chat.ui.dates), on fixed dates."""

from __future__ import annotations

from datetime import date, datetime

from tui_chat.core.models import ChatMessage, OutState
from tui_chat.ui import dates

TODAY = date(2026, 12, 2)  # a Wednesday


def at(y: int, mo: int, d: int, h: int = 12, mi: int = 0, s: int = 0) -> int:
    return int(datetime(y, mo, d, h, mi, s).timestamp() * 1000)


def test_day_labels_are_relative_near_today_and_dated_further_away() -> None:
    assert dates.day_label(at(2026, 12, 2, 0, 0), TODAY) == "Today"
    assert dates.day_label(at(2026, 12, 1, 23, 59), TODAY) == "Yesterday"
    assert dates.day_label(at(2026, 11, 30), TODAY) == "Monday 30 November"
    assert dates.day_label(at(2026, 11, 26), TODAY) == "Thursday 26 November"
    assert dates.day_label(at(2026, 11, 25), TODAY) == "Wed 25 November"
    assert dates.day_label(at(2025, 11, 30), TODAY) == "Sun 30 November 2025"


def test_the_selected_time_names_the_server_only_when_it_differs() -> None:
    written = at(2026, 12, 1, 23, 59, 58)
    same = ChatMessage("bob", "alice", "c", "hi", written + 400, True, seq=1, written=written)
    assert dates.selected_time(same) == "Tue 1 Dec 2026 23:59:58"
    late = ChatMessage("bob", "alice", "c", "hi", written + 3000, True, seq=1, written=written)
    # Stored after midnight: the server's whole date.
    assert dates.selected_time(late) == (
        "Tue 1 Dec 2026 23:59:58 · on the server Wed 2 Dec 2026 00:00:01"
    )
    unsent = ChatMessage(
        "bob", "alice", "c", "hi", written, True, state=OutState.PENDING, written=written
    )
    assert dates.selected_time(unsent) == "Tue 1 Dec 2026 23:59:58"
    theirs = ChatMessage("bob", "bob", "c", "hi", written, False, seq=2)
    assert dates.shown_ts(theirs) == written
