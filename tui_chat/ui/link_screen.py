"""The links of a message, shown whole before any is opened (a peer chose them)."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.events import Key
from textual.screen import ModalScreen
from textual.widgets import Label, Static

MAX_SHOWN = 9


class LinkScreen(ModalScreen[str | None]):
    """Enter opens the first link, 1-9 the one with that number; y copies; Esc closes."""

    BINDINGS = [
        Binding("escape", "cancel", "Close", id="links_cancel"),
        Binding("enter", "choose(1)", "Open", id="links_open"),
        Binding("y", "copy", "Copy", id="links_copy"),
    ]

    def __init__(self, urls: list[str]) -> None:
        super().__init__()
        self.urls = urls[:MAX_SHOWN]

    def compose(self) -> ComposeResult:
        text = Text()
        for i, url in enumerate(self.urls, 1):
            text.append(f"{i}  ", style="bold")
            text.append(url, style="underline")
            text.append("\n")
        with Vertical(id="links-box"):
            yield Label("Open a link? Check where it leads: the sender wrote it.")
            yield Static(text, markup=False, id="links-list")
            yield Label("Enter opens 1 · a digit opens that one · y copies 1 · Esc closes")

    def on_key(self, event: Key) -> None:
        if event.character and event.character.isdigit():
            event.stop()
            self.action_choose(int(event.character))

    def action_choose(self, n: int) -> None:
        if 1 <= n <= len(self.urls):
            self.dismiss(self.urls[n - 1])

    def action_copy(self) -> None:
        self.app.copy_to_clipboard(self.urls[0])
        self.notify("Link copied (if your terminal allows OSC 52)", markup=False)
        self.dismiss(None)

    def action_cancel(self) -> None:
        self.dismiss(None)
