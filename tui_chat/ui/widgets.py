"""Small widgets of the main screen: conversation list and status line."""

from __future__ import annotations

import time

from rich.text import Text
from textual import events
from textual.binding import Binding
from textual.content import Content
from textual.geometry import Region, Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip
from textual.style import Style
from textual.visual import Visual
from textual.widgets import Static

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
# Lines per entry in the list: name and marks, then the preview.
ENTRY_HEIGHT = 2
# What an entry's strips were rendered from: summary, number, width, style.
_EntryKey = tuple[ConversationSummary, int | None, int, Style]


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


class ConversationList(ScrollView, can_focus=True):
    """Peers in the engine's order (first contact first), numbered for alt+1 … alt+9.

    The list never sorts: the engine's order is the one shown, and the numbers are the
    places in it. Line-rendered: every entry is two lines (its name and marks, then a
    preview), so the virtual height is twice the number of entries and only the lines on
    screen are rendered; each entry's strips are cached until its summary, number, width
    or style changes. Mounting 1,000 conversations costs what mounting one does.
    """

    COMPONENT_CLASSES = {
        "conversation-list--option",
        "conversation-list--option-highlighted",
        "conversation-list--option-hover",
    }

    BINDINGS = [
        Binding("down", "cursor_down", "Down", show=False),
        Binding("end", "last", "Last", show=False),
        Binding("enter", "open", "Open", show=False),
        Binding("home", "first", "First", show=False),
        Binding("pagedown", "page_down", "Page Down", show=False),
        Binding("pageup", "page_up", "Page Up", show=False),
        Binding("up", "cursor_up", "Up", show=False),
        Binding("right,tab", "open", "Open", show=False, id="conversation_open"),
    ]

    class Opened(Message):
        def __init__(self, peer: str) -> None:
            super().__init__()
            self.peer = peer

    # The entry with the cursor (an index in ``order``), or None.
    highlighted: reactive[int | None] = reactive(None)
    # The entry under the mouse, or None.
    hovered: reactive[int | None] = reactive(None)

    def __init__(self, *, id: str | None = None, me: str = "") -> None:
        super().__init__(id=id)
        self.summaries: dict[str, ConversationSummary] = {}
        self.order: list[str] = []
        self.me = me
        # Per peer: what its strips were rendered from, and the strips.
        self._rendered: dict[str, tuple[_EntryKey, list[Strip]]] = {}

    # ------------------------------------------------------------ content

    def show(self, summaries: list[ConversationSummary], current: str | None) -> None:
        self.summaries = {s.peer: s for s in summaries}
        self.order = [s.peer for s in summaries]
        for peer in [p for p in self._rendered if p not in self.summaries]:
            del self._rendered[peer]
        self.highlighted = None
        self._update_virtual_size()
        self.scroll_y = 0
        self.refresh()
        if current is not None and current in self.summaries:
            self.highlighted = self.order.index(current)

    def update_summary(self, summary: ConversationSummary) -> bool:
        """Show a changed summary in place; True if the engine's order may have changed
        (a new conversation, or a new last message), so the caller asks for it again."""
        old = self.summaries.get(summary.peer)
        self.summaries[summary.peer] = summary
        self._rendered.pop(summary.peer, None)
        self.refresh()
        if old is None:
            # Last until the engine's order is shown again.
            self.order.append(summary.peer)
            self._update_virtual_size()
            return True
        return False  # the engine's order is stable: only a new peer changes it

    def forget(self, key: str) -> None:
        """A pending group that became another key (or was given up) leaves the list."""
        if key in self.summaries:
            del self.summaries[key]
            self.order.remove(key)
            self._rendered.pop(key, None)
            self.hovered = None
            self._update_virtual_size()
            self.highlighted = self.highlighted  # validated again: still in range
            self.refresh()

    # ------------------------------------------------------------ layout and rendering

    def _update_virtual_size(self) -> None:
        size = Size(self.scrollable_content_region.width, ENTRY_HEIGHT * len(self.order))
        if size != self.virtual_size:
            self.virtual_size = size

    def on_resize(self) -> None:
        self._update_virtual_size()

    def watch_show_vertical_scrollbar(self) -> None:
        # The scrollbar takes (or gives back) columns without a resize of the list.
        self._update_virtual_size()

    def render_line(self, y: int) -> Strip:
        index, row = divmod(self.scroll_offset.y + y, ENTRY_HEIGHT)
        if index >= len(self.order):
            return Strip.blank(
                self.scrollable_content_region.width,
                self.get_visual_style("conversation-list--option").rich_style,
            )
        return self._entry(index)[row]

    def _entry(self, index: int) -> list[Strip]:
        """The two lines of entry ``index``, rendered once per summary, place and style."""
        peer = self.order[index]
        summary = self.summaries[peer]
        number = index + 1 if index < NUMBERED else None
        if index == self.highlighted:
            style = self.get_visual_style(
                "conversation-list--option", "conversation-list--option-highlighted"
            )
        elif index == self.hovered:
            style = self.get_visual_style(
                "conversation-list--option", "conversation-list--option-hover"
            )
        else:
            style = self.get_visual_style("conversation-list--option")
        width = self.scrollable_content_region.width
        key = (summary, number, width, style)
        cached = self._rendered.get(peer)
        if cached is not None and cached[0] == key:
            return cached[1]
        # Text, never markup: the name and preview are what a peer or server wrote.
        content = Content.from_rich_text(
            conversation_prompt(summary, number, me=self.me), console=self.app.console
        )
        # One line each: the list's styles say nowrap, and "…" where a line is cut.
        strips = Visual.to_strips(self, content, width, ENTRY_HEIGHT, style)
        blank = Strip.blank(width, style.rich_style)
        strips = [s.extend_cell_length(width, style.rich_style) for s in strips]
        strips += [blank] * (ENTRY_HEIGHT - len(strips))
        self._rendered[peer] = (key, strips)
        return strips

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self.refresh()

    # ------------------------------------------------------------ cursor

    def validate_highlighted(self, highlighted: int | None) -> int | None:
        if highlighted is None or not self.order:
            return None
        return max(0, min(len(self.order) - 1, highlighted))

    def watch_highlighted(self, highlighted: int | None) -> None:
        if highlighted is not None:
            self.scroll_to_highlight()

    def on_show(self) -> None:
        self.scroll_to_highlight()

    def scroll_to_highlight(self, top: bool = False) -> None:
        highlighted = self.highlighted
        if highlighted is None or not self.is_mounted or not self.scrollable_content_region:
            return  # not laid out yet: on_show scrolls it into view
        self._update_virtual_size()
        self.scroll_to_region(
            Region(
                0,
                ENTRY_HEIGHT * highlighted,
                self.scrollable_content_region.width,
                ENTRY_HEIGHT,
            ),
            force=True,
            animate=False,
            top=top,
            immediate=True,
        )

    def action_cursor_up(self) -> None:
        """The previous entry; from the first, the last."""
        if self.order:
            h = self.highlighted
            self.highlighted = len(self.order) - 1 if h is None else (h - 1) % len(self.order)

    def action_cursor_down(self) -> None:
        """The next entry; from the last, the first."""
        if self.order:
            h = self.highlighted
            self.highlighted = 0 if h is None else (h + 1) % len(self.order)

    def action_first(self) -> None:
        self.highlighted = 0 if self.order else None

    def action_last(self) -> None:
        self.highlighted = len(self.order) - 1 if self.order else None

    def _move_page(self, direction: int) -> None:
        """About a screen of lines up or down, stopping at the ends."""
        if not self.order:
            return
        height = self.scrollable_content_region.height
        line = ENTRY_HEIGHT * (self.highlighted or 0) + direction * height
        line = max(0, min(ENTRY_HEIGHT * len(self.order) - 1, line))
        self.highlighted = line // ENTRY_HEIGHT

    def action_page_up(self) -> None:
        if self.highlighted is None:
            self.action_first()
        else:
            self._move_page(-1)

    def action_page_down(self) -> None:
        if self.highlighted is None:
            self.action_last()
        else:
            self._move_page(1)

    def action_open(self) -> None:
        if self.highlighted is not None:
            self.post_message(self.Opened(self.order[self.highlighted]))

    # ------------------------------------------------------------ mouse

    def _entry_at(self, event: events.MouseEvent) -> int | None:
        offset = event.get_content_offset(self)
        if offset is None or offset.x >= self.scrollable_content_region.width:
            return None
        index = (self.scroll_offset.y + offset.y) // ENTRY_HEIGHT
        return index if 0 <= index < len(self.order) else None

    async def _on_click(self, event: events.Click) -> None:
        """A click on an entry moves the cursor there and opens it."""
        index = self._entry_at(event)
        if index is not None:
            self.highlighted = index
            self.action_open()

    def _on_mouse_move(self, event: events.MouseMove) -> None:
        self.hovered = self._entry_at(event)

    def _on_leave(self, _: events.Leave) -> None:
        self.hovered = None


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
