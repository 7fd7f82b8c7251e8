"""What the app tells the terminal around the screen: its title, a desktop notification.

Written as escape sequences through Textual's driver, as Textual's own ``bell()`` and
``copy_to_clipboard()`` are. Text a peer wrote never reaches the terminal raw: an escape
or a BEL in a title or a notification would end the sequence early and let the rest be
read as commands by the terminal, so :func:`safe` keeps printable characters only.

OSC 777 (``notify;title;body``: urxvt, foot, kitty, WezTerm, Windows Terminal…) and OSC 9
(iTerm2, ConEmu, kitty, WezTerm…) are both in use and no terminal answers which one it
understands, so the user picks (``ui.desktop_notifications``), off by default.
"""

from __future__ import annotations

import collections
import unicodedata
from typing import Final, Literal, Protocol

from tui_chat.ui.sanitize import clean

NotifyStyle = Literal["off", "osc777", "osc9"]
TITLE_LIMIT: Final = 80
BODY_LIMIT: Final = 200


class _Writer(Protocol):
    def __call__(self, data: str) -> None: ...


def safe(text: str, limit: int) -> str:
    """One line of printable text, at most ``limit`` characters: nothing a terminal obeys."""
    line = clean(text, single_line=True)
    kept = "".join(
        c for c in line if not unicodedata.category(c).startswith("C") or c == " "
    ).strip()
    return kept if len(kept) <= limit else kept[: limit - 1] + "…"


class TerminalSignals:
    """The terminal's title and notifications. ``sent`` keeps the last sequences written,
    so tests (and the curious) can see exactly what the terminal was told."""

    def __init__(self, write: _Writer | None, notify_style: NotifyStyle = "off") -> None:
        self._write = write
        self.notify_style: NotifyStyle = notify_style
        self.title: str | None = None
        self.sent: collections.deque[str] = collections.deque(maxlen=50)

    def _out(self, data: str) -> None:
        self.sent.append(data)
        if self._write is not None:
            self._write(data)

    def push_title(self) -> None:
        """Save the terminal's own title (xterm's title stack; ignored where unknown)."""
        self._out("\x1b[22;2t")

    def pop_title(self) -> None:
        self._out("\x1b[23;2t")

    def set_title(self, title: str) -> None:
        title = safe(title, TITLE_LIMIT)
        if title != self.title:
            self.title = title
            self._out(f"\x1b]2;{title}\x07")

    def desktop_alert(self, title: str, body: str) -> bool:
        """A desktop notification, if the user asked for them; True if one was written."""
        if self.notify_style == "off":
            return False
        head, text = safe(title, TITLE_LIMIT), safe(body, BODY_LIMIT)
        if self.notify_style == "osc777":
            # Fields are separated by ';': one in the text would start another field.
            head, text = head.replace(";", ","), text.replace(";", ",")
            self._out(f"\x1b]777;notify;{head};{text}\x07")
        else:
            self._out(f"\x1b]9;{head}: {text}\x07")
        return True
