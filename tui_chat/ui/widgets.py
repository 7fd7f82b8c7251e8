"""Small widgets of the main screen: conversation list and status line."""

from __future__ import annotations

import time

from rich.text import Text
from textual.binding import Binding
from textual.message import Message
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option

from tui_chat.core.engine import Engine
from tui_chat.core.models import (
    ConnectionStatus,
    ConnState,
    ConversationSummary,
    ConvKind,
    OutState,
)
from tui_chat.protocol import MessageKind
from tui_chat.ui.groups_text import conversation_name, event_line, is_pending_group
from tui_chat.ui.sanitize import clean

# alt+1 … alt+9 reach the first nine entries; their numbers are shown in the list.
NUMBERED = 9


def conversation_prompt(
    s: ConversationSummary, number: int | None = None, width: int = 28, me: str = ""
) -> Text:
    """Number, name, unread count, mentions, failure mark and a one-line preview; never
    markup. A group shows its title (with "#"); one being created says so."""
    text = Text(no_wrap=True, overflow="ellipsis")
    text.append(f"{number} " if number is not None else "  ", style="dim")
    group = s.kind is ConvKind.GROUP
    if group:
        text.append("# ", style="dim")
    text.append(conversation_name(s), style="bold" if s.unread else "")
    if s.unread:
        text.append(" ")
        text.append(f" {s.unread} ", style="bold reverse")
    if s.mentions:
        text.append(f" @{s.mentions}", style="bold yellow")
    if group and is_pending_group(s.peer):
        text.append(" ◷ creating…", style="yellow")
    elif group and not s.joined:
        text.append(" (left)", style="dim")
    if s.failed:
        text.append(f" ✗{s.failed}", style="bold red")
    elif s.pending:
        text.append(f" ◷{s.pending}", style="yellow")
    preview = ""
    if s.last is not None and s.last.kind != MessageKind.TEXT:
        preview = event_line(s.last, me)
    elif s.last is not None:
        if s.last.own:
            who = "you: "
        elif group:
            who = clean(s.last.sender, single_line=True) + ": "
        else:
            who = ""
        preview = who + clean(s.last.body, single_line=True)
    # One line of preview, so every entry has the same height.
    width -= 2
    if len(preview) > width - 2:
        preview = preview[: width - 3] + "…"
    text.append("\n  ")
    text.append(preview or "(no messages yet)", style="dim")
    return text


class ConversationList(OptionList):
    """Peers in the engine's order (first contact first), numbered for alt+1 … alt+9.

    Option ids are peer names. The list never sorts: the engine's order is the one
    shown, and the numbers are the places in it.
    """

    BINDINGS = [
        Binding("right,tab", "open", "Open", show=False, id="conversation_open"),
    ]

    class Opened(Message):
        def __init__(self, peer: str) -> None:
            super().__init__()
            self.peer = peer

    def __init__(self, *, id: str | None = None, me: str = "") -> None:
        super().__init__(markup=False, id=id)
        self.summaries: dict[str, ConversationSummary] = {}
        self.order: list[str] = []
        self.me = me

    def _prompt(self, summary: ConversationSummary) -> Text:
        place = self.order.index(summary.peer) + 1
        return conversation_prompt(summary, place if place <= NUMBERED else None, me=self.me)

    def forget(self, key: str) -> None:
        """A pending group that became another key (or was given up) leaves the list."""
        if key in self.summaries:
            del self.summaries[key]
            self.order.remove(key)
            self.remove_option(key)

    def show(self, summaries: list[ConversationSummary], current: str | None) -> None:
        self.summaries = {s.peer: s for s in summaries}
        self.order = [s.peer for s in summaries]
        self.clear_options()
        self.add_options(Option(self._prompt(s), id=s.peer) for s in summaries)
        if current is not None and current in self.summaries:
            self.highlighted = self.order.index(current)

    def update_summary(self, summary: ConversationSummary) -> bool:
        """Show a changed summary in place; True if the engine's order may have changed
        (a new conversation, or a new last message), so the caller asks for it again."""
        old = self.summaries.get(summary.peer)
        self.summaries[summary.peer] = summary
        if old is None:
            # Last until the engine's order is shown again.
            self.order.append(summary.peer)
            self.add_option(Option(self._prompt(summary), id=summary.peer))
            return True
        self.replace_option_prompt(summary.peer, self._prompt(summary))
        return False  # the engine's order is stable: only a new peer changes it

    def action_open(self) -> None:
        if self.highlighted is not None:
            option = self.get_option_at_index(self.highlighted)
            if option.id:
                self.post_message(self.Opened(option.id))


def status_text(
    status: ConnectionStatus,
    outbox: int,
    failed: int,
    badge: Text | None = None,
    latency_ms: float | None = None,
) -> Text:
    """The status line: state and counts first, details last, so a narrow
    terminal clips the details rather than the state."""
    text = Text(no_wrap=True, overflow="ellipsis", end="")
    if badge is not None:
        text.append_text(badge)
        text.append(" ")
    state = status.state
    detail: str | None = None
    if state is ConnState.ONLINE:
        if status.silent_since is not None:
            silent = max(0.0, time.time() - status.silent_since)
            text.append(f"◌ no answer for {silent:.0f} s", style="bold yellow")
        else:
            text.append("● online", style="bold green")
            if latency_ms is not None:
                text.append(f" · lag {latency_ms:.0f} ms", style="dim")
    elif state is ConnState.CONNECTING:
        text.append(f"◌ connecting (attempt {status.attempt})", style="bold yellow")
        detail = f"last: {status.reason}" if status.reason else None
    elif state is ConnState.OFFLINE:
        text.append("○ offline", style="bold red")
        if status.retry_in is not None:
            left = max(0.0, status.since + status.retry_in - time.time())
            text.append(f" · retry {status.attempt + 1} in {left:.0f} s", style="dim")
        detail = status.reason
    elif state is ConnState.AUTH_FAILED:
        text.append("✗ token rejected", style="bold red")
        text.append(" · fix the token, then F5", style="dim")
        detail = status.reason
    else:
        text.append("○ stopped", style="dim")
    text.append(" · ")
    if outbox:
        text.append(f"outbox {outbox}", style="yellow")
    else:
        text.append("outbox empty", style="dim")
    if failed:
        text.append(f" · {failed} failed (ctrl+r retries all)", style="bold red")
    if detail:
        text.append(f" · {clean(detail, single_line=True)}")
    return text


class StatusBar(Static):
    """The connection state, latency and outbox counts, read from the engine.

    It repaints itself every second (the "no answer for N s" and "retry in N s"
    counters) and when told something changed; only a changed line is repainted.
    """

    def __init__(self, engine: Engine, *, id: str | None = None) -> None:
        super().__init__("", markup=False, id=id)
        self.engine = engine
        # Shown first on the line (the demo's label); never text a peer wrote.
        self.badge: Text | None = None
        self._last: Text | None = None

    def on_mount(self) -> None:
        self.refresh_status()
        self.set_interval(1.0, self.refresh_status)

    def refresh_status(self) -> None:
        engine = self.engine
        pending = engine.pending_rows()
        failed = sum(1 for m in pending if m.state is OutState.FAILED)
        text = status_text(engine.status, len(pending), failed, self.badge, engine.latency_ms)
        # Called for every message event and every second: repaint only on change.
        if text != self._last:
            self._last = text
            self.update(text)
