"""The conversation pane: a line-rendered scroll view, not a widget per message.

Textual's compositor asks for one line at a time (``render_line``); we map the
line to its message with a binary search over each message's first line, and
render messages to strips lazily, keeping a bounded cache. A new message costs
one render and an append to the offsets, whatever the number already loaded.
Both caches are keyed by the message's value (``ChatMessage`` is frozen and
hashable), so a message whose state changed can never be painted from a stale
rendering, and the line count of each message is remembered apart from its
strips: re-indexing (a page of older messages prepended) renders only the new
messages, not every loaded one that fell out of the strip cache.

Order: confirmed messages by seq, then the unsent ones (pending, failed) in
compose order. When an unsent message is confirmed it moves to its seq place,
which is nearly always the end of the confirmed block.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable

from rich.style import Style
from textual import events
from textual.binding import Binding
from textual.cache import LRUCache
from textual.geometry import Region, Size
from textual.message import Message
from textual.reactive import var
from textual.scroll_view import ScrollView
from textual.strip import Strip

from tui_chat.core.models import ChatMessage, OutState, is_group_key
from tui_chat.ui import dates
from tui_chat.ui.links import find_urls
from tui_chat.ui.render import Hints, Styles, day_separator, render_message
from tui_chat.ui.sanitize import clean

Key = tuple[str, str]
# Most messages wrapped again when the view's width changes (see _trim_for_relayout).
RELAYOUT_LIMIT = 2000


class MessageView(ScrollView, can_focus=True):
    """Messages of one conversation, with a selection for retry / give up / edit."""

    COMPONENT_CLASSES = {
        "message-view--meta",
        "message-view--own",
        "message-view--peer",
        "message-view--pending",
        "message-view--failed",
        "message-view--hint",
        "message-view--selected",
    }

    BINDINGS = [
        Binding("up", "select(-1)", "Previous", show=False, id="select_previous"),
        Binding("down", "select(1)", "Next", show=False, id="select_next"),
        Binding("pageup", "select(-10)", "Page up", show=False, id="select_page_up"),
        Binding("pagedown", "select(10)", "Page down", show=False, id="select_page_down"),
        Binding("r", "retry", "Retry", id="retry"),
        Binding("d", "give_up", "Give up", id="give_up"),
        Binding("e", "edit", "Edit", id="edit"),
        Binding("u", "undo_give_up", "Undo give-up", show=False, id="undo_give_up"),
        Binding("o", "open_link", "Open link", show=False, id="open_link"),
        Binding("y", "copy", "Copy", show=False, id="copy_message"),
        Binding("w", "who_read", "Who read it", show=False, id="who_read"),
        Binding("end", "to_end", "Newest", show=False, id="newest"),
        Binding("escape,tab,i", "leave", "Write", id="to_composer"),
    ]

    class Action(Message):
        """The user asked for something on the selected message."""

        def __init__(self, kind: str, message: ChatMessage) -> None:
            super().__init__()
            self.kind = kind  # "retry" | "give_up" | "edit"
            self.message = message

    class UndoGiveUp(Message):
        """``u``: undo the give-up of the selected message (if cancelling), else the last one."""

        def __init__(self, message: ChatMessage | None) -> None:
            super().__init__()
            self.message = message

    class TypeAhead(Message):
        """A printable key that is no binding here: it belongs to the composer."""

        def __init__(self, text: str) -> None:
            super().__init__()
            self.text = text

    class NeedOlder(Message):
        def __init__(self, before: int) -> None:
            super().__init__()
            self.before = before

    class NeedNewer(Message):
        """Scrolled to the end of a window opened in the past (a search result)."""

        def __init__(self, after: int) -> None:
            super().__init__()
            self.after = after

    class Leave(Message):
        pass

    class UnseenChanged(Message):
        def __init__(self, count: int) -> None:
            super().__init__()
            self.count = count

    selected: var[int | None] = var(None)

    def __init__(self, *, id: str | None = None, hints: Hints | None = None) -> None:
        super().__init__(id=id)
        self.items: list[ChatMessage] = []
        self._index: dict[Key, int] = {}
        self._offsets: list[int] = []  # first line of each item
        self._heights: list[int] = []
        self._total = 0
        self._width = 0
        # Strips of recently painted messages (many screens' worth). Kept small on purpose:
        # every Strip carries several small caches of its own, and 4096 messages' strips are
        # ~150k objects that every full GC pass scans (measured with 20,000 loaded: 171 ms
        # of CPU per pass with 4096, 56 ms with 512). Heights are kept apart (below).
        self._cache: LRUCache[
            tuple[ChatMessage, int, bool, str | None, bool, str | None], list[Strip]
        ] = LRUCache(512)
        # Receipts: in a direct conversation, how far the peer has read (✓✓ up to there);
        # in a group, who has read a message, asked for the selected one only.
        self.peer_read_seq = 0
        self.readers: Callable[[ChatMessage], list[str]] | None = None
        self._read_by: dict[Key, list[str]] = {}
        # Lines per message at the current width, and whether a day separator is above it
        # (selection and styles do not change it; the separator's words do not either).
        self._height_of: dict[tuple[ChatMessage, bool], int] = {}
        # Local day of each message's shown time (see dates.day_of), memoised: a re-index
        # of many loaded messages compares every neighbour.
        self._day: dict[ChatMessage, tuple[int, int]] = {}
        self._styles: Styles | None = None
        self.hints = hints or Hints()
        # The user's own name: group event lines say "you" for it.
        self.me = ""
        self.complete = True
        # False while the view holds a window in the past (opened at a search result):
        # the newer messages are loaded as the reader scrolls down to them.
        self.complete_below = True
        self._loading_newer = False
        self._loading_older = False
        self.unseen = 0
        # True while the view should stay at the newest message.
        self._follow = True

    # ------------------------------------------------------------ content

    def set_messages(
        self,
        messages: list[ChatMessage],
        complete: bool,
        *,
        complete_below: bool = True,
        select: Key | None = None,
    ) -> None:
        """Show a conversation afresh: its newest page plus unsent messages, or (with
        ``complete_below=False``) a window in the past with ``select`` selected."""
        self.items = list(messages)
        self._index = {}
        self._read_by.clear()
        self._height_of.clear()  # bounded by what is shown; the strip cache still helps
        self.complete = complete
        self.complete_below = complete_below
        self.selected = None
        self._loading_older = False
        self._loading_newer = False
        self._set_unseen(0)
        self._reindex(0)
        if select is not None and select in self._index:
            self._follow = False
            self.selected = self._index[select]
            self.call_after_refresh(self._show_selected)
            return
        self._follow = True
        self._stick_to_end()

    def _show_selected(self) -> None:
        if self.selected is not None and self.selected < len(self._offsets):
            top = self._offsets[self.selected]
            self.scroll_to(y=max(0, top - self.size.height // 3), animate=False, immediate=True)
        self._maybe_need_newer()  # a short window may not scroll at all

    def append(self, messages: list[ChatMessage], complete_below: bool) -> None:
        """Newer messages below a window in the past; once complete, the view is live."""
        self._loading_newer = False
        self.complete_below = complete_below
        new = [m for m in messages if m.key not in self._index]
        if new:
            start = len(self.items)
            self.items.extend(new)
            self._reindex(start)

    def _stick_to_end(self) -> None:
        """Scroll to the newest line now, and again once layout has caught up.

        Right after mount or a resize the view's size is not final yet, so an
        immediate scroll can stop short of the real end.
        """
        self.scroll_end(animate=False, immediate=True, x_axis=False)
        self.call_after_refresh(self._follow_end)

    def _follow_end(self) -> None:
        if self._follow:
            self.scroll_end(animate=False, immediate=True, x_axis=False)

    def prepend(self, messages: list[ChatMessage], complete: bool) -> None:
        """Older messages above; the lines on screen stay where they are."""
        self._loading_older = False
        self.complete = complete
        new = [m for m in messages if m.key not in self._index]
        if not new:
            return
        before = self._total
        self.items[:0] = new
        if self.selected is not None:
            self.selected += len(new)
        self._reindex(0)
        self.scroll_to(y=self.scroll_y + (self._total - before), animate=False, immediate=True)

    def upsert(self, msg: ChatMessage) -> None:
        """Add a message or change it in place (its state, its place once confirmed)."""
        at_end = self._follow
        key = msg.key
        old = self._index.get(key)
        if old is None and not self.complete_below:
            top = max((m.seq for m in self.items if m.seq is not None), default=0)
            if msg.seq is None or msg.seq > top:
                return  # below a window in the past: it comes with the newer pages
        if old is not None:
            self._invalidate(old)
        if msg.state is OutState.GIVEN_UP:
            if old is not None:
                self._remove(old)
            return
        if old is not None:
            current = self.items[old]
            if current.seq == msg.seq:
                self.items[old] = msg
                self._reindex(old)
                return
            self._remove(old)
        pos = self._position_for(msg)
        self.items.insert(pos, msg)
        if self.selected is not None and pos <= self.selected:
            self.selected += 1
        self._reindex(pos)
        if old is None:
            if at_end:
                self._stick_to_end()
            elif not msg.own:
                self._set_unseen(self.unseen + 1)

    def _position_for(self, msg: ChatMessage) -> int:
        if msg.seq is None:
            return len(self.items)
        # Confirmed messages come before every unsent one, in seq order.
        lo, hi = 0, len(self.items)
        while lo < hi:
            mid = (lo + hi) // 2
            other = self.items[mid]
            if other.seq is not None and other.seq < msg.seq:
                lo = mid + 1
            else:
                hi = mid
        return lo

    def _remove(self, index: int) -> None:
        removed = self.items.pop(index)
        # Dropped here, or _reindex would rebuild the whole index (O(n) per removal).
        self._index.pop(removed.key, None)
        if self.selected is not None:
            if self.selected == index:
                self.selected = min(index, len(self.items) - 1) if self.items else None
            elif self.selected > index:
                self.selected -= 1
        self._reindex(index)

    def lowest_seq(self) -> int | None:
        for m in self.items:
            if m.seq is not None:
                return m.seq
        return None

    # ------------------------------------------------------------ layout

    def _reindex(self, start: int) -> None:
        """Recompute line offsets from item ``start`` on."""
        items = self.items
        del self._offsets[start:]
        del self._heights[start:]
        line = self._offsets[-1] + self._heights[-1] if self._offsets else 0
        index, height_of = self._index, self._height_of
        offsets, heights = self._offsets, self._heights
        for i in range(start, len(items)):
            msg = items[i]
            index[msg.key] = i
            hkey = (msg, self._day_break(i))
            height = height_of.get(hkey)
            if height is None:
                height = height_of[hkey] = len(self._strips(i))
            offsets.append(line)
            heights.append(height)
            line += height
        if len(self._index) != len(items):
            self._index = {m.key: i for i, m in enumerate(items)}
        self._total = line
        self.virtual_size = Size(self._width, self._total)
        self.refresh()

    def _receipt(self, msg: ChatMessage, selected: bool) -> tuple[bool, str | None]:
        if msg.seq is None or msg.kind != "text":
            return False, None
        if not is_group_key(msg.peer):
            return msg.own and msg.seq <= self.peer_read_seq, None
        if not selected or self.readers is None:
            return False, None
        # Asked once per message until the receipts change (render_line comes per line and
        # per frame; see receipts_changed).
        others = self._read_by.get(msg.key)
        if others is None:
            others = self._read_by[msg.key] = [u for u in self.readers(msg) if u != msg.sender]
        if not others:
            return False, "read by nobody yet" if msg.own else None
        return False, f"read by {len(others)} · w: who"

    def receipts_changed(self, peer_read_seq: int) -> None:
        """New receipts for the open conversation: ✓✓ and "read by n" are drawn again."""
        self.peer_read_seq = peer_read_seq
        self._read_by.clear()
        self.refresh()

    def _day_of(self, msg: ChatMessage) -> tuple[int, int]:
        day = self._day.get(msg)
        if day is None:
            if len(self._day) > 4 * len(self.items) + 1000:
                self._day.clear()  # bounded by what is loaded
            day = self._day[msg] = dates.day_of(dates.shown_ts(msg))
        return day

    def _day_break(self, index: int) -> bool:
        """A day separator above item ``index``: the first item, or a new day."""
        items = self.items
        if index == 0:
            return True
        return self._day_of(items[index]) != self._day_of(items[index - 1])

    def _strips(self, index: int) -> list[Strip]:
        msg = self.items[index]
        selected = index == self.selected
        # The words are part of the key: at midnight "Today" becomes "Yesterday".
        label = dates.day_label(dates.shown_ts(msg)) if self._day_break(index) else None
        seen, read_by = self._receipt(msg, selected)
        cache_key = (msg, self._width, selected, label, seen, read_by)
        cached = self._cache.get(cache_key)
        if cached is not None:
            # Keyed by the message's value: a changed message is a different key.
            return cached
        console, styles = self.app.console, self._get_styles()
        strips = render_message(
            msg,
            self._width,
            console,
            styles,
            self.hints,
            selected=selected,
            me=self.me,
            seen=seen,
            read_by=read_by,
        )
        if label is not None:
            strips.insert(0, day_separator(label, self._width, console, styles))
        self._cache[cache_key] = strips
        return strips

    def _get_styles(self) -> Styles:
        if self._styles is None:
            c = self.get_component_rich_style
            self._styles = Styles(
                base=self.rich_style,
                meta=c("message-view--meta"),
                own=c("message-view--own"),
                peer=c("message-view--peer"),
                pending=c("message-view--pending"),
                failed=c("message-view--failed"),
                hint=c("message-view--hint"),
                selected=c("message-view--selected"),
            )
        return self._styles

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._styles = None
        self._cache.clear()

    def on_resize(self) -> None:
        self._fit_width()

    def watch_show_vertical_scrollbar(self) -> None:
        # The scrollbar comes and goes without a Resize event, but it takes (or
        # gives back) a column: lines rendered for the old width would leave it
        # unpainted and the own bubbles off the right edge.
        self._fit_width()

    def _fit_width(self) -> None:
        width = self.scrollable_content_region.width
        if width != self._width:
            self._width = width
            self._cache.clear()
            self._height_of.clear()
            anchor = None if self._follow else self._first_visible()
            self._trim_for_relayout()
            self._reindex(0)
            if self._follow:
                self._stick_to_end()
            elif anchor is not None and anchor in self._index:
                self.scroll_to(y=self._offsets[self._index[anchor]], animate=False, immediate=True)

    def _first_visible(self) -> Key | None:
        if not self.items or not self._offsets:
            return None
        i = bisect.bisect_right(self._offsets, int(self.scroll_y)) - 1
        return self.items[max(0, i)].key

    def _trim_for_relayout(self) -> None:
        """Keep the newest RELAYOUT_LIMIT messages when the width changes.

        Every loaded message must be wrapped again at a new width; with 100,000
        loaded that froze the screen for many seconds. Older ones are dropped from
        the view (not the store) and load again page by page when scrolled to.
        """
        drop = len(self.items) - RELAYOUT_LIMIT
        if drop <= 0:
            return
        del self.items[:drop]
        self._index = {}
        self._offsets.clear()
        self._heights.clear()
        self.complete = False
        if self.selected is not None:
            self.selected = self.selected - drop if self.selected >= drop else None

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        line = scroll_y + y
        width = self.scrollable_content_region.width
        if line >= self._total or not self.items:
            return Strip.blank(width, self.rich_style)
        i = bisect.bisect_right(self._offsets, line) - 1
        strips = self._strips(i)
        row = line - self._offsets[i]
        strip = strips[row] if row < len(strips) else Strip.blank(width, self.rich_style)
        return strip.crop_extend(scroll_x, scroll_x + width, Style())

    # ------------------------------------------------------------ invalidation

    def _invalidate(self, index: int) -> None:
        # Keys are values, so this is not needed for correctness: it frees the old
        # rendering of a message that is being replaced, and makes its height be measured again.
        msg = self.items[index]
        for brk in (True, False):
            self._height_of.pop((msg, brk), None)
        label = dates.day_label(dates.shown_ts(msg)) if self._day_break(index) else None
        for selected in (True, False):
            seen, read_by = self._receipt(msg, selected)
            self._cache.discard((msg, self._width, selected, label, seen, read_by))

    def watch_selected(self, old: int | None, new: int | None) -> None:
        if not self.items:
            return
        for i in (old, new):
            if i is not None and 0 <= i < len(self.items):
                self._invalidate(i)
        self.refresh()
        if new is not None and 0 <= new < len(self._offsets):
            region = Region(0, self._offsets[new], max(1, self._width), self._heights[new])
            self.scroll_to_region(region, animate=False, immediate=True)

    def watch_scroll_y(self, old: float, new: float) -> None:
        super().watch_scroll_y(old, new)
        # Follow new messages only while the reader is at the end.
        self._follow = self.is_vertical_scroll_end
        if new <= 0 and not self.complete and not self._loading_older:
            low = self.lowest_seq()
            if low is not None and low > 1:
                self._loading_older = True
                self.post_message(self.NeedOlder(low))
        if self.unseen and self.is_vertical_scroll_end:
            self._set_unseen(0)
        self._maybe_need_newer()

    def _maybe_need_newer(self) -> None:
        near_end = self.scroll_y >= self.max_scroll_y - self.size.height  # a screen from it
        if not self.complete_below and not self._loading_newer and near_end:
            top = max((m.seq for m in self.items if m.seq is not None), default=0)
            self._loading_newer = True
            self.post_message(self.NeedNewer(top))

    def _set_unseen(self, count: int) -> None:
        if count != self.unseen:
            self.unseen = count
            self.post_message(self.UnseenChanged(count))

    # ------------------------------------------------------------ actions

    def current(self) -> ChatMessage | None:
        if self.selected is None or not (0 <= self.selected < len(self.items)):
            return None
        return self.items[self.selected]

    def select_last(self) -> None:
        if self.items:
            self.selected = len(self.items) - 1

    def action_select(self, delta: int) -> None:
        if not self.items:
            return
        if self.selected is None:
            self.selected = len(self.items) - 1
            return
        target = self.selected + delta
        if target < 0 and not self.complete:
            self.scroll_home(animate=False)
        self.selected = max(0, min(len(self.items) - 1, target))

    def action_to_end(self) -> None:
        self.selected = None
        self._follow = True
        self._stick_to_end()
        self._set_unseen(0)

    def on_key(self, event: events.Key) -> None:
        # A stray key never acts on a message: only the bindings do. Any other
        # printable key is text the user meant for the composer.
        if not event.is_printable or event.character is None:
            return
        if event.key in self.screen.active_bindings:
            return
        event.stop()
        event.prevent_default()
        self.selected = None
        self.post_message(self.TypeAhead(event.character))

    class OpenLinks(Message):
        """Open a link of ``message`` (the app shows the URLs first)."""

        def __init__(self, message: ChatMessage) -> None:
            super().__init__()
            self.message = message

    def action_open_link(self) -> None:
        msg = self.current()
        if msg is None:
            self.notify("Select a message first (↑/↓)", severity="warning", markup=False)
            return
        self.post_message(self.OpenLinks(msg))

    def action_who_read(self) -> None:
        msg = self.current()
        if msg is None or msg.seq is None:
            self.notify("Select a sent message first (↑/↓)", severity="warning", markup=False)
            return
        names = [u for u in self.readers(msg) if u != msg.sender] if self.readers else []
        shown = ", ".join(clean(n, single_line=True) for n in names) or "nobody yet"
        # What the server has told us: a reader's device may be offline, or not say.
        self.notify(f"Read by: {shown} (as far as the server has told us)", markup=False)

    def action_copy(self) -> None:
        msg = self.current()
        if msg is None:
            self.notify("Select a message first (↑/↓)", severity="warning", markup=False)
            return
        # OSC 52: the terminal puts it on the clipboard (where it allows that).
        self.app.copy_to_clipboard(msg.body)
        self.notify(
            f"Copied {len(msg.body)} characters (if your terminal allows OSC 52)", markup=False
        )

    def on_click(self, event: events.Click) -> None:
        """A click selects the message under it; on a message with links it offers them."""
        line = int(self.scroll_y) + event.y
        i = bisect.bisect_right(self._offsets, line) - 1
        if not 0 <= i < len(self.items):
            return
        self.selected = i
        if find_urls(self.items[i].body):
            self.post_message(self.OpenLinks(self.items[i]))

    def _act(self, kind: str) -> None:
        msg = self.current()
        if msg is None:
            self.notify("Select a message first (↑/↓)", severity="warning", markup=False)
            return
        if not msg.own or msg.state not in (OutState.FAILED, OutState.PENDING):
            self.notify(
                "Only your unsent messages can be retried, given up or edited",
                severity="warning",
                markup=False,
            )
            return
        if kind == "retry" and not msg.retryable:
            self.notify(
                "The server refused this message and would refuse it again: edit it or give up",
                severity="warning",
                markup=False,
            )
            return
        self.post_message(self.Action(kind, msg))

    def action_retry(self) -> None:
        self._act("retry")

    def action_give_up(self) -> None:
        self._act("give_up")

    def action_edit(self) -> None:
        self._act("edit")

    def action_undo_give_up(self) -> None:
        msg = self.current()
        self.post_message(
            self.UndoGiveUp(msg if msg is not None and msg.state is OutState.CANCELLING else None)
        )

    def action_leave(self) -> None:
        self.selected = None
        self.post_message(self.Leave())
