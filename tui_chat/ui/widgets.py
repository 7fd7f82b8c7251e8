"""Small widgets of the main screen: conversation list, status line, composer."""

from __future__ import annotations

import time

from rich.text import Text
from textual.binding import Binding
from textual.message import Message
from textual.widgets import Input, OptionList, Static
from textual.widgets.option_list import Option

from tui_chat.core.models import ConnectionStatus, ConnState, ConversationSummary
from tui_chat.ui.sanitize import clean


def conversation_prompt(s: ConversationSummary, width: int = 28) -> Text:
    """Name, unread count, failure mark and a one-line preview; never markup."""
    text = Text(no_wrap=True, overflow="ellipsis")
    text.append(clean(s.peer, single_line=True), style="bold" if s.unread else "")
    if s.unread:
        text.append(" ")
        text.append(f" {s.unread} ", style="bold reverse")
    if s.failed:
        text.append(f" ✗{s.failed}", style="bold red")
    elif s.pending:
        text.append(f" ◷{s.pending}", style="yellow")
    preview = ""
    if s.last is not None:
        who = "you: " if s.last.own else ""
        preview = who + clean(s.last.body, single_line=True)
    # One line of preview, so every entry has the same height.
    if len(preview) > width - 2:
        preview = preview[: width - 3] + "…"
    text.append("\n")
    text.append(preview or "(no messages yet)", style="dim")
    return text


def _recency(s: ConversationSummary) -> int:
    return s.last.ts if s.last is not None else 0


class ConversationList(OptionList):
    """Peers, most recent first. Option ids are peer names."""

    BINDINGS = [
        Binding("right,tab", "open", "Open", show=False, id="conversation_open"),
    ]

    class Opened(Message):
        def __init__(self, peer: str) -> None:
            super().__init__()
            self.peer = peer

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(markup=False, id=id)
        self.summaries: dict[str, ConversationSummary] = {}
        self.order: list[str] = []

    def show(self, summaries: list[ConversationSummary], current: str | None) -> None:
        self.summaries = {s.peer: s for s in summaries}
        self.order = [s.peer for s in summaries]
        self.clear_options()
        self.add_options(Option(conversation_prompt(s), id=s.peer) for s in summaries)
        if current is not None and current in self.summaries:
            self.highlighted = self.order.index(current)

    def update_summary(self, summary: ConversationSummary, current: str | None) -> None:
        known = summary.peer in self.summaries
        self.summaries[summary.peer] = summary
        order = sorted(self.summaries.values(), key=_recency, reverse=True)
        if known and [s.peer for s in order] == self.order:
            self.replace_option_prompt(summary.peer, conversation_prompt(summary))
        else:
            # Most recent first, as the engine lists them.
            self.show(order, current)

    def action_open(self) -> None:
        if self.highlighted is not None:
            option = self.get_option_at_index(self.highlighted)
            if option.id:
                self.post_message(self.Opened(option.id))


def status_text(
    status: ConnectionStatus,
    outbox: int,
    failed: int,
    demo: bool,
    latency_ms: float | None = None,
) -> Text:
    """The status line: state and counts first, details last, so a narrow
    terminal clips the details rather than the state."""
    text = Text(no_wrap=True, overflow="ellipsis", end="")
    if demo:
        text.append(" DEMO: local server ", style="bold black on yellow")
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
    def __init__(self, *, id: str | None = None) -> None:
        super().__init__("", markup=False, id=id)


class Composer(Input):
    """The message being written. Its text is only cleared once the engine took it."""

    BINDINGS = [
        Binding("up", "to_messages", "Messages", show=False, id="composer_to_messages"),
        Binding("tab", "to_messages", "Messages", show=False, id="composer_tab"),
        Binding("escape", "cancel_edit", "Cancel edit", show=False, id="composer_cancel_edit"),
    ]

    class ToMessages(Message):
        pass

    class CancelEdit(Message):
        pass

    def action_cancel_edit(self) -> None:
        self.post_message(self.CancelEdit())

    def action_to_messages(self) -> None:
        if self.value:
            return
        self.post_message(self.ToMessages())
