"""Search: type words, see the messages that hold them by conversation and date, open one.

The search runs over the local replica (the engine's FTS5 index), so it answers offline
too, and as you type. Enter (or a click) opens the result in its conversation, with the
messages around it; only that part of the history is loaded.
"""

from __future__ import annotations

from collections.abc import Callable

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label, OptionList, Static
from textual.widgets.option_list import Option

from tui_chat.core.models import ChatMessage
from tui_chat.ui import dates
from tui_chat.ui.sanitize import clean

RESULTS = 100
# Characters of body shown around the first match.
CONTEXT = 60


def highlight(body: str, words: list[str], width: int = CONTEXT * 2) -> Text:
    """One line of ``body`` around its first match, the matched words in bold."""
    line = clean(body, single_line=True)
    low = line.lower()
    starts = [low.find(w.lower()) for w in words]
    hits = [i for i in starts if i >= 0]
    first = min(hits) if hits else 0
    start = max(0, first - CONTEXT // 2)
    shown = line[start : start + width]
    text = Text(("…" if start else "") + shown + ("…" if start + width < len(line) else ""))
    offset = 1 if start else 0
    for w in words:
        if not w:
            continue
        at = shown.lower().find(w.lower())
        while at >= 0:
            text.stylize("bold reverse", offset + at, offset + at + len(w))
            at = shown.lower().find(w.lower(), at + len(w))
    return text


class SearchScreen(ModalScreen[ChatMessage | None]):
    BINDINGS = [
        Binding("escape", "cancel", "Close", id="search_cancel"),
        Binding("down", "to_results", "Results", show=False, id="search_to_results"),
    ]

    def __init__(
        self,
        search: Callable[[str, int], list[ChatMessage]],
        name_of: Callable[[str], str],
        text: str = "",
    ) -> None:
        super().__init__()
        self._search = search
        self._name_of = name_of
        self._text = text
        self._hits: list[ChatMessage] = []

    def compose(self) -> ComposeResult:
        with Vertical(id="search-box"):
            yield Label("Search messages (every word, or the start of one):")
            yield Input(value=self._text, placeholder="e.g. lunch fri", id="search-input")
            yield Static("", id="search-count", markup=False)
            yield OptionList(id="search-results", markup=False)

    def on_mount(self) -> None:
        self.query_one(Input).focus()
        if self._text:
            self._run(self._text)

    def on_input_changed(self, event: Input.Changed) -> None:
        event.stop()
        self._run(event.value)

    def _run(self, text: str) -> None:
        words = text.split()
        self._hits = self._search(text, RESULTS) if words else []
        results = self.query_one(OptionList)
        results.clear_options()
        for i, hit in enumerate(self._hits):
            results.add_option(Option(self._prompt(hit, words), id=str(i)))
        count = self.query_one("#search-count", Static)
        if not words:
            count.update(Text(""))
        elif not self._hits:
            count.update(Text("Nothing stored here matches."))
        else:
            more = " (the newest; add a word to narrow)" if len(self._hits) == RESULTS else ""
            count.update(Text(f"{len(self._hits)} found{more} · ↓ then Enter opens one"))

    def _prompt(self, hit: ChatMessage, words: list[str]) -> Text:
        """Where, when, who, and the words found: a Text, never markup."""
        where = clean(self._name_of(hit.peer), single_line=True)
        when = dates.full(dates.shown_ts(hit))[:-3]  # to the minute
        who = "you" if hit.own else clean(hit.sender, single_line=True)
        head = Text(f"{where} · {when} · {who}", style="dim")
        head.append("\n")
        head.append_text(highlight(hit.body, words))
        return head

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if self._hits:
            self.dismiss(self._hits[0])

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        if event.option.id is not None:
            self.dismiss(self._hits[int(event.option.id)])

    def action_to_results(self) -> None:
        results = self.query_one(OptionList)
        if self._hits and not results.has_focus:
            results.focus()
            results.highlighted = 0

    def action_cancel(self) -> None:
        self.dismiss(None)
