"""How the view writes times and days: local time, relative where that reads better.

A bubble shows the time its message was written (``ChatMessage.written`` for messages
written on this device, else the server's time), so confirming a message never changes
the time on it; the selected message shows the full date, and the server's time too when
it differs from the written one by a second or more.
"""

from __future__ import annotations

import time
from datetime import date, datetime, timedelta

from tui_chat.core.models import ChatMessage

# The server's time is shown beside the written one from this far apart.
SERVER_TIME_FROM_MS = 1000


def shown_ts(msg: ChatMessage) -> int:
    """The time a bubble shows: when it was written, if written here."""
    return msg.written if msg.written is not None else msg.ts


def day_of(ts: int) -> tuple[int, int]:
    """The local calendar day of ``ts`` (ms), as (year, day of the year): cheap to compare."""
    t = time.localtime(ts / 1000)
    return t.tm_year, t.tm_yday


def clock(ts: int) -> str:
    return datetime.fromtimestamp(ts / 1000).strftime("%H:%M")


def full(ts: int) -> str:
    """``Wed 2 Dec 2026 14:02:33``"""
    d = datetime.fromtimestamp(ts / 1000)
    return f"{d:%a} {d.day} {d:%b %Y %H:%M:%S}"


def day_label(ts: int, today: date | None = None) -> str:
    """The words of a day separator: Today, Yesterday, a weekday within the week, or a date."""
    today = today or date.today()
    day = datetime.fromtimestamp(ts / 1000).date()
    if day == today:
        return "Today"
    if day == today - timedelta(days=1):
        return "Yesterday"
    if today - timedelta(days=6) <= day < today:
        return f"{day:%A} {day.day} {day:%B}"
    if day.year == today.year:
        return f"{day:%a} {day.day} {day:%B}"
    return f"{day:%a} {day.day} {day:%B %Y}"


def selected_time(msg: ChatMessage) -> str:
    """The time on a selected message: the full date, and the server's time if it differs."""
    shown = shown_ts(msg)
    text = full(shown)
    written = msg.written
    if written is not None and msg.seq is not None and abs(msg.ts - written) >= SERVER_TIME_FROM_MS:
        # Stored after an outage may be another day: then the whole date.
        same_day = day_of(msg.ts) == day_of(shown)
        text += f" · on the server {full(msg.ts)[-8:] if same_day else full(msg.ts)}"
    return text
