"""The tui-chat Textual app: conversation list, message view, composer, status line.

The app is a router. Engine events arrive as one Textual message class each
(:mod:`tui_chat.ui.engine_events`) and each has one handler below; the widgets
own their state (the composer its text and edit, the status line its rendering,
the list the engine's order) and the app connects them to engine commands.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable
from functools import partial
from typing import TypeVar

from rich.style import Style
from rich.text import Text
from textual import events, on
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer, Label, Static

from tui_chat.core import models
from tui_chat.core.config import UiSection
from tui_chat.core.engine import Engine
from tui_chat.core.models import (
    ChatMessage,
    ConnState,
    ConversationSummary,
    ConvKind,
    Event,
    OutState,
)
from tui_chat.ui import commands
from tui_chat.ui import engine_events as ev
from tui_chat.ui.composer import Composer
from tui_chat.ui.group_screens import (
    AskLineScreen,
    CreateGroupScreen,
    check_user_name,
    parse_group,
    user_name,
)
from tui_chat.ui.groups_text import conversation_name, is_pending_group, name_colour
from tui_chat.ui.link_screen import LinkScreen
from tui_chat.ui.links import find_urls, open_url
from tui_chat.ui.message_view import MessageView
from tui_chat.ui.render import Hints
from tui_chat.ui.sanitize import clean
from tui_chat.ui.screens import HelpScreen, NewConversationScreen
from tui_chat.ui.search_screen import SearchScreen
from tui_chat.ui.terminal import TerminalSignals
from tui_chat.ui.widgets import ConversationList, StatusBar

PAGE = 200
# The member panel takes 24 columns: below this width it stays hidden (F3 still shows it)
# so that the messages keep their room.
MEMBERS_MIN_WIDTH = 100
# Below this width the conversation list leaves the screen: ctrl+l shows it in the chat's
# place, and opening a conversation puts the chat back.
NARROW_WIDTH = 60
SIDEBAR_WIDTH = 32
MEMBERS_WIDTH = 24
# The composer keeps at least this many columns: the member list is refused before that.
COMPOSER_MIN = 20
# Below this the app says how big it needs to be instead of a composer too small to see.
MIN_SIZE = (30, 8)
# The connection must be down this long before we interrupt the user with a toast.
OUTAGE_NOTICE_AFTER = 3.0
# In tmux and xterm alt+digit arrives as ESC+digit, which Textual reads as the
# character a Mac keyboard makes with option+digit: bind those key names as well.
ESC_DIGIT_KEYS = {
    1: "inverted_exclamation_mark",
    2: "trade_mark_sign",
    3: "pound_sign",
    4: "cent_sign",
    5: "infinity",
    6: "section_sign",
    7: "pilcrow_sign",
    8: "bullet",
    9: "ª",
}


def _jump_binding(n: int) -> Binding:
    # Priority: the terminal's alt+digit is a printable character the composer would
    # otherwise take as text.
    return Binding(
        f"alt+{n},{ESC_DIGIT_KEYS[n]}",
        f"jump({n})",
        f"Conversation {n}",
        show=False,
        priority=True,
        id=f"jump_{n}",
    )


M = TypeVar("M", bound=Message)


def while_shown(
    handler: Callable[[ChatApp, M], None],
) -> Callable[[ChatApp, M], None]:
    """Skip an engine event that arrives after the screen is gone (shutting down)."""

    @functools.wraps(handler)
    def run(app: ChatApp, message: M) -> None:
        # At shutdown the sidebar goes before the message view: both must still be there.
        if bool(app.query(MessageView)) and bool(app.query(ConversationList)):
            handler(app, message)

    return run


class ChatApp(App[int]):
    CSS_PATH = "app.tcss"
    TITLE = "tui-chat"
    # ctrl+p belongs to "previous conversation", as in weechat and irssi.
    COMMAND_PALETTE_BINDING = "ctrl+k"

    # Footer order: what a newcomer needs first. Long descriptions for the help
    # screen are in HELP_TEXT, keyed by binding id.
    BINDINGS = [
        Binding("f1,question_mark", "help", "Help", id="help"),
        Binding("ctrl+r", "retry_all", "Retry all", priority=True, id="retry_all"),
        Binding(
            "ctrl+n", "next_conversation(1)", "Next chat", priority=True, id="next_conversation"
        ),
        Binding(
            "ctrl+p",
            "next_conversation(-1)",
            "Previous chat",
            priority=True,
            show=False,
            id="previous_conversation",
        ),
        Binding("alt+a", "next_unread", "Next unread", priority=True, show=False, id="next_unread"),
        Binding("ctrl+o", "new_conversation", "New chat", priority=True, id="new_conversation"),
        Binding("ctrl+g", "new_group", "New group", priority=True, id="new_group"),
        Binding("ctrl+f", "search", "Search", priority=True, id="search"),
        Binding("ctrl+l", "toggle_list", "Chats", priority=True, id="toggle_list"),
        Binding("f3", "toggle_members", "Members", priority=True, id="toggle_members"),
        Binding("f4", "add_member", "Add member", priority=True, show=False, id="add_member"),
        Binding(
            "f7", "remove_member", "Remove member", priority=True, show=False, id="remove_member"
        ),
        Binding("f2", "rename_group", "Rename group", priority=True, show=False, id="rename_group"),
        Binding("f8", "leave_group", "Leave group", priority=True, show=False, id="leave_group"),
        Binding("f5", "reconnect", "Reconnect", priority=True, id="reconnect"),
        Binding("ctrl+q", "quit", "Quit", priority=True, id="quit"),
        *(_jump_binding(n) for n in range(1, 10)),
    ]
    HELP_TEXT = {
        "help": "this help",
        "toggle_list": "the conversation list: focus it (on a narrow terminal, show or hide it)",
        "open_link": "show the selected message's links, to open one (a click does too)",
        "copy_message": "copy the selected message (OSC 52: where the terminal allows it)",
        "who_read": "who has read the selected message (a group's receipts)",
        "search": "search every stored message, and open one where it was said",
        "retry_all": "retry every failed message (works while typing)",
        "next_conversation": "next conversation",
        "previous_conversation": "previous conversation",
        "next_unread": "next conversation with unread messages",
        "new_conversation": "start a conversation with a user by name",
        "new_group": "create a group: title, a colon, the members (Lunch: bob, carol)",
        "toggle_members": "show or hide the member list of the open group",
        "add_member": "add a member to the open group (its creator only)",
        "remove_member": "remove a member from the open group (its creator only)",
        "rename_group": "give the open group a new title",
        "leave_group": "leave the open group (its history stays readable here)",
        "reconnect": "reconnect now (skips the wait; retries a rejected token)",
        "quit": "quit (the draft is kept)",
    }
    # Shown first on the status line (the demo sets one).
    STATUS_BADGE: Text | None = None

    def __init__(
        self,
        engine: Engine,
        *,
        ui: UiSection | None = None,
        keymap: dict[str, str] | None = None,
        run_engine: bool = True,
    ) -> None:
        super().__init__()
        self.engine = engine
        self.ui = ui or UiSection()
        self.signals = TerminalSignals(self._write_terminal, self.ui.desktop_notifications)
        self._keymap = dict(keymap or {})
        self._run_engine = run_engine
        self.peer: str | None = None
        self.me = engine.config.account.user
        # Failures not yet told, by client_id: a message is counted once, however
        # many times its row changes while failed.
        self._failed_burst: dict[str, ChatMessage] = {}
        self._failed_now: set[str] = set()
        self._last_given_up: str | None = None
        self._offline_since: float | None = None
        self._outage_notified = False
        self._reorder_due = False
        # None: shown when the terminal is wide enough; F3 sets it for good.
        self._members_shown: bool | None = None
        self._width = 0  # the terminal's width as of the last resize (see _fit_screen)
        self._unsubscribe: Callable[[], None] | None = None

    # ------------------------------------------------------------ layout

    def compose(self) -> ComposeResult:
        with Horizontal(id="main"):
            with Vertical(id="sidebar"):
                yield Label("Conversations · alt+N opens N", id="sidebar-title")
                yield ConversationList(id="conversations", me=self.me)
            with Vertical(id="chat"):
                yield Static("", id="chat-title", markup=False)
                yield MessageView(id="messages", hints=self._hints())
                yield Static("", id="new-below", markup=False)
                composer = Composer(id="composer")
                keys = self._keymap.get("composer_newline", "ctrl+j,alt+enter")
                composer.newline_keys = frozenset(k.strip() for k in keys.split(","))
                yield composer
            yield Static("", id="members", markup=False)
        yield Static("", id="too-small", markup=False)
        status = StatusBar(self.engine, id="status")
        status.badge = self.STATUS_BADGE
        yield status
        yield Footer()

    def _hints(self) -> Hints:
        def key(binding_id: str, default: str) -> str:
            return self._keymap.get(binding_id, default).split(",")[0]

        return Hints(
            retry=key("retry", "r"),
            give_up=key("give_up", "d"),
            edit=key("edit", "e"),
            undo=key("undo_give_up", "u"),
        )

    def _jump_keys(self) -> frozenset[str]:
        """The keys that jump to a conversation, as the key map has them."""
        keys: set[str] = set()
        for n in range(1, 10):
            default = _jump_binding(n).key
            keys.update(self._keymap.get(f"jump_{n}", default).split(","))
        return frozenset(keys)

    def on_mount(self) -> None:
        self.theme = self.ui.theme if self.ui.theme in self.available_themes else "textual-dark"
        if self._keymap:
            self.set_keymap(self._keymap)
        self._unsubscribe = self.engine.subscribe(self._forward_engine_event)
        if self._run_engine:
            self.run_worker(self.engine.run(), name="engine", group="engine", exit_on_error=True)
        self.view.me = self.me
        engine = self.engine
        self.view.readers = lambda m: engine.readers(m.peer, m.seq or 0)
        self.composer.max_body = self.engine.max_body
        self.composer.not_text = self._jump_keys()
        summaries = self.engine.conversations()
        self.conv_list.show(summaries, None)
        if self.ui.terminal_title:
            self.signals.push_title()
            self._update_title()
        self.query_one("#new-below").display = False
        self._fit_screen()
        if summaries:
            self.open_conversation(summaries[0].peer)
        else:
            self._set_title()
        if (repair := self.engine.store_repair) is not None:  # a damaged store
            self.notify(
                repair.line(),
                title="Local store replaced",
                severity="warning",
                timeout=60,
                markup=False,
            )
        self.set_interval(1.0, self._tick)
        self.composer.focus()

    async def action_quit(self) -> None:
        # Before the widgets go: at unmount the composer may already be removed.
        self._save_draft()
        if self.ui.terminal_title:
            self.signals.pop_title()  # the terminal's own title again
        await super().action_quit()

    def _write_terminal(self, data: str) -> None:
        # As Textual's own bell() and copy_to_clipboard() write (no public API for it).
        if not self.is_headless and self._driver is not None:
            self._driver.write(data)

    # ------------------------------------------------------------ looking away

    def watch_app_focus(self, focused: bool) -> None:
        """The terminal came to the front (or went to the back): Textual's AppFocus/AppBlur."""
        # Only now has the user seen what came while away.
        online = self.engine.status.state is ConnState.ONLINE
        if focused and online and self.peer is not None and self.screen.is_active:
            self.engine.mark_read(self.peer)
        self._update_title()

    def _update_title(self) -> None:
        if not self.ui.terminal_title or not self.query(ConversationList):
            return
        base = f"tui-chat · {self.me}"
        unread = sum(s.unread for s in self.conv_list.summaries.values())
        # The engine's count: messages are unread until seen with the terminal in front.
        self.signals.set_title(f"({unread}) {base}" if unread and not self.app_focus else base)

    def _announce(self, msg: ChatMessage, summary: ConversationSummary) -> None:
        """A message from someone else arrived live: ring and notify as the user asked."""
        away = not self.app_focus
        direct = summary.kind is ConvKind.DIRECT
        if self.ui.bell and (not self._is_open(msg.peer) or msg.mentions_me or (away and direct)):
            self.bell()
        if away and (direct or msg.mentions_me):
            where = msg.sender if direct else f"{msg.sender} in {self._label(msg.peer)}"
            what = msg.body if msg.kind == "text" else "(a group event)"
            self.signals.desktop_alert(where, what)

    async def on_unmount(self) -> None:
        self._save_draft()
        if self._unsubscribe is not None:
            self._unsubscribe()
        await self.engine.stop()

    @property
    def conv_list(self) -> ConversationList:
        return self.query_one(ConversationList)

    @property
    def view(self) -> MessageView:
        return self.query_one(MessageView)

    @property
    def composer(self) -> Composer:
        return self.query_one(Composer)

    def _refresh_status(self) -> None:
        bars = self.query(StatusBar)
        if bars:  # shutting down: events can still arrive after the screen is gone
            bars.first().refresh_status()

    # ------------------------------------------------------------ conversations

    def _save_draft(self) -> None:
        composers = self.query(Composer)
        if self.peer is not None and composers:
            self.engine.save_draft(self.peer, composers.first().draft())

    def open_conversation(self, peer: str, at: ChatMessage | None = None) -> None:
        """Show ``peer``'s conversation at its newest message, or around ``at`` (a search
        result): then only that part of its history is loaded, and the rest as the reader
        scrolls to it."""
        composer = self.composer
        self._save_draft()
        composer.end_edit()
        self.peer = peer
        if at is not None and at.seq is not None:
            half = PAGE // 2
            older = self.engine.messages(peer, at.seq + 1, half)
            newer = self.engine.messages_after(peer, at.seq, half)
            page = older + newer
            confirmed = [m for m in page if m.seq is not None]
            complete = not confirmed or confirmed[0].seq == 1
            below = sum(m.seq is not None for m in newer) < half
            self.view.set_messages(page, complete, complete_below=below, select=at.key)
        else:
            page = self.engine.messages(peer, None, PAGE)
            confirmed = [m for m in page if m.seq is not None]
            complete = not confirmed or confirmed[0].seq == 1
            self.view.set_messages(page, complete)
        composer.peer = peer
        composer.set_text(self.engine.draft(peer))
        self.view.peer_read_seq = self._summary(peer).peer_read_seq
        # Read marks go to the server only while online; an offline open is marked
        # at Synced, once the catch-up is on screen. A window in the past is not the end.
        if self.engine.status.state is ConnState.ONLINE and self.view.complete_below:
            self.engine.mark_read(peer)
        if peer not in self.conv_list.summaries:
            # A new conversation (ctrl+o) the engine does not list yet: shown last.
            summaries = [self.conv_list.summaries[p] for p in self.conv_list.order]
            self.conv_list.show([*summaries, self.engine.conversation(peer)], peer)
        else:
            self.conv_list.highlighted = self.conv_list.order.index(peer)
        self._set_title()

    def _summary(self, key: str) -> ConversationSummary:
        listed = self.conv_list.summaries.get(key)
        return listed if listed is not None else self.engine.conversation(key)

    def _label(self, key: str) -> str:
        """How toasts name a conversation: the peer, or the group's title."""
        return conversation_name(self._summary(key))

    def _set_title(self) -> None:
        title = self.query_one("#chat-title", Static)
        if self.peer is None:
            title.update(
                Text("No conversation yet: ctrl+o starts one, ctrl+g a group", style="dim")
            )
            self._show_members(None)
            return
        summary = self._summary(self.peer)
        if summary.kind is not ConvKind.GROUP:
            title.update(Text(f"Conversation with {clean(self.peer, single_line=True)}"))
            self._show_members(None)
            return
        text = Text(f"Group {conversation_name(summary)}")
        if is_pending_group(self.peer):
            text.append(" · being created: waiting for the server", style="yellow")
        elif not summary.joined:
            text.append(" · you are no longer a member", style="dim")
        else:
            n = len(summary.members)
            text.append(f" · {n} member{'s' if n != 1 else ''} · F3 shows them", style="dim")
        title.update(text)
        self._show_members(summary)

    def _show_members(self, summary: ConversationSummary | None) -> None:
        panel = self.query_one("#members", Static)
        if summary is None or summary.kind is not ConvKind.GROUP:
            panel.set_class(False, "shown")
            return
        shown = self._members_shown
        if shown is None:
            shown = (self._width or self.size.width) >= MEMBERS_MIN_WIDTH
        # Never at the composer's expense (see COMPOSER_MIN).
        shown = shown and self._chat_width() - MEMBERS_WIDTH >= COMPOSER_MIN
        panel.set_class(shown, "shown")
        text = Text("Members\n", style="bold")
        for name in summary.members:
            text.append(clean(name, single_line=True), style=Style(color=name_colour(name)))
            if name == summary.creator:
                text.append(" (creator)", style="dim")
            if name == self.me and name != "you":  # the demo's user is called "you"
                text.append(" (you)", style="dim")
            text.append("\n")
        if not summary.joined:
            text.append("\nyou left or were removed", style="dim")
        panel.update(text)

    def _reorder_soon(self) -> None:
        """Show the engine's order again, once for a burst of changes."""
        if not self._reorder_due:
            self._reorder_due = True
            self.set_timer(0.05, self._reorder)

    def _reorder(self) -> None:
        self._reorder_due = False
        if not self.query(ConversationList):
            return  # shutting down: the timer can fire after the screen is gone
        summaries = self.engine.conversations()
        listed = {s.peer for s in summaries}
        # Conversations opened here that have no message yet stay, at the end.
        extra = [self.conv_list.summaries[p] for p in self.conv_list.order if p not in listed]
        self.conv_list.show([*summaries, *extra], self.peer)

    @on(ConversationList.Opened)
    def _opened(self, event: ConversationList.Opened) -> None:
        self.screen_stack[0].remove_class("-list-shown")  # narrow: the chat comes back
        self.open_conversation(event.peer)
        self.composer.focus()

    def action_next_conversation(self, step: int) -> None:
        order = self.conv_list.order
        if not order:
            return
        i = order.index(self.peer) if self.peer in order else -step
        self.open_conversation(order[(i + step) % len(order)])

    def action_jump(self, n: int) -> None:
        order = self.conv_list.order
        if 1 <= n <= len(order):
            self.open_conversation(order[n - 1])

    def action_next_unread(self) -> None:
        order = self.conv_list.order
        start = order.index(self.peer) + 1 if self.peer in order else 0
        for k in range(len(order)):
            peer = order[(start + k) % len(order)]
            if self.conv_list.summaries[peer].unread:
                self.open_conversation(peer)
                return
        self.notify("No unread messages", markup=False)

    def action_new_conversation(self) -> None:
        def done(peer: str | None) -> None:
            if peer:
                self.open_conversation(peer)
                self.composer.focus()

        screen = NewConversationScreen(self.engine.lookup_user, self.engine.valid_user)
        self.push_screen(screen, done)

    # ------------------------------------------------------------ groups

    def action_new_group(self) -> None:
        def done(answer: tuple[str, list[str]] | None) -> None:
            if answer is None:
                return
            self._create_group(*answer)

        self.push_screen(CreateGroupScreen(self.engine.valid_user), done)

    def _open_group(
        self, *, manage: bool = False, key: str | None = None
    ) -> ConversationSummary | None:
        """The open conversation (or ``key``) if it is a group we are in (else say why not)."""
        key = key or self.peer
        if key is None or self._summary(key).kind is not ConvKind.GROUP:
            self.notify("Open a group first (ctrl+g creates one)", markup=False)
            return None
        summary = self._summary(key)
        if is_pending_group(key):
            self.notify("The group is still being created", markup=False)
            return None
        if not summary.joined:
            self.notify("You are no longer a member of this group", markup=False)
            return None
        if manage and summary.creator != self.me:
            self.notify(
                "Only the group's creator may add or remove members", severity="warning",
                markup=False,
            )  # fmt: skip
            return None
        return summary

    def _group_command(self, command: Callable[[], ChatMessage]) -> bool:
        try:
            command()
        except ValueError as exc:
            self.notify(str(exc), severity="error", markup=False)
            return False
        return True

    def action_toggle_members(self) -> None:
        shown = self.query_one("#members", Static).has_class("shown")
        if not shown and self._chat_width() - MEMBERS_WIDTH < COMPOSER_MIN:
            need = self.size.width + COMPOSER_MIN - (self._chat_width() - MEMBERS_WIDTH)
            self.notify(f"Too narrow for the member list: it needs {need} columns", markup=False)
            return
        self._members_shown = not shown
        self._set_title()

    def _chat_width(self) -> int:
        width = self._width or self.size.width
        return width - (0 if width < NARROW_WIDTH else SIDEBAR_WIDTH)

    def on_resize(self, event: events.Resize) -> None:
        # event.size: the app's own size is updated a moment later (a timer in Textual).
        self._fit_screen(event.size.width, event.size.height)
        if self.peer is not None:
            self._set_title()

    def _fit_screen(self, width: int | None = None, height: int | None = None) -> None:
        """Narrow: the list leaves the screen. Too small: say how big it must be."""
        if width is None or height is None:
            width, height = self.size
        self._width = width
        screen = self.screen_stack[0]  # the main screen, also under a dialog
        narrow = width < NARROW_WIDTH
        screen.set_class(narrow, "-narrow")
        if not narrow:
            screen.remove_class("-list-shown")
        small = width < MIN_SIZE[0] or height < MIN_SIZE[1]
        screen.set_class(small, "-too-small")
        if small:
            need = f"{MIN_SIZE[0]}×{MIN_SIZE[1]}"
            self.query_one("#too-small", Static).update(
                Text(f"tui-chat needs at least {need}; this terminal is {width}×{height}.")
            )

    def action_toggle_list(self) -> None:
        screen = self.screen_stack[0]
        if not screen.has_class("-narrow"):
            self.conv_list.focus()
            return
        shown = not screen.has_class("-list-shown")
        screen.set_class(shown, "-list-shown")
        if shown:
            self.conv_list.focus()
        else:
            self.composer.focus()

    def _add_problem(self, summary: ConversationSummary, value: str) -> str | None:
        problem = check_user_name(value, self.engine.valid_user)
        if problem is None and user_name(value, self.engine.valid_user) in summary.members:
            return f"{value} is already a member"
        return problem

    def _remove_problem(self, summary: ConversationSummary, value: str) -> str | None:
        name = user_name(value, self.engine.valid_user) or value
        if name == self.me:
            return "To leave the group, use F8 (or /leave)"
        if name not in summary.members:
            return f"{value} is not a member"
        return None

    def action_add_member(self) -> None:
        summary = self._open_group(manage=True)
        if summary is None:
            return
        key = summary.peer

        def done(name: str | None) -> None:
            if name:
                user = user_name(name, self.engine.valid_user) or name
                self._group_command(lambda: self.engine.add_member(key, user))

        question = f"Add to {conversation_name(summary)} (user name):"
        check = partial(self._add_problem, summary)
        self.push_screen(AskLineScreen(question, placeholder="e.g. dave", check=check), done)

    def action_remove_member(self) -> None:
        summary = self._open_group(manage=True)
        if summary is None:
            return
        key = summary.peer

        def done(name: str | None) -> None:
            if name:
                user = user_name(name, self.engine.valid_user) or name
                self._group_command(lambda: self.engine.remove_member(key, user))

        others = ", ".join(clean(m, single_line=True) for m in summary.members if m != self.me)
        question = f"Remove from {conversation_name(summary)} ({others}):"
        check = partial(self._remove_problem, summary)
        self.push_screen(AskLineScreen(question, check=check), done)

    def action_rename_group(self) -> None:
        summary = self._open_group()
        if summary is None:
            return
        key = summary.peer

        def check(value: str) -> str | None:
            return None if value else "Give the group a title"

        def done(title: str | None) -> None:
            if title:
                self._group_command(lambda: self.engine.rename_group(key, title))

        question = f"New title for {conversation_name(summary)}:"
        self.push_screen(AskLineScreen(question, value=summary.title or "", check=check), done)

    def action_leave_group(self) -> None:
        summary = self._open_group()
        if summary is None:
            return
        key = summary.peer

        def check(value: str) -> str | None:
            return None if value.lower() in ("y", "yes") else "Type yes to leave, or Esc"

        def done(answer: str | None) -> None:
            if answer:
                self._group_command(lambda: self.engine.leave_group(key))

        question = (
            f"Leave {conversation_name(summary)}? You will receive nothing more from it;"
            " its history stays here. Type yes:"
        )
        self.push_screen(AskLineScreen(question, check=check), done)

    def _create_group(self, title: str, members: list[str]) -> bool:
        try:
            created = self.engine.create_group(title, members)
        except ValueError as exc:
            self.notify(str(exc), severity="error", markup=False)
            return False
        # The group is pending ("+…") until the server confirms it; the list says so.
        self.open_conversation(created.peer)
        self.composer.focus()
        return True

    # ------------------------------------------------------------ composing

    @on(Composer.Send)
    def _send(self, event: Composer.Send) -> None:
        summary = self._summary(event.peer)
        if summary.kind is ConvKind.GROUP and (is_pending_group(event.peer) or not summary.joined):
            self.composer.give_back(event.body)
            why = (
                "The group is still being created: wait for the server to confirm it"
                if is_pending_group(event.peer)
                else "You are no longer a member of this group: nothing can be sent there"
            )
            self.notify(why, severity="warning", markup=False)
            return
        if not self.view.complete_below and self._is_open(event.peer):
            self.open_conversation(event.peer)  # what is sent shows at the newest end
        try:
            self.engine.send(event.peer, event.body)
        except ValueError as exc:
            # Nothing typed is lost: the text goes back to the composer.
            self.composer.give_back(event.body)
            self.notify(str(exc), severity="error", markup=False)

    @on(Composer.Resend)
    def _resend(self, event: Composer.Resend) -> None:
        try:
            self.engine.edit_and_retry(event.client_id, event.body)
        except KeyError:
            self.composer.give_back(event.body)
            self.notify(
                "That message is no longer waiting to be sent; your edit is back in the composer",
                markup=False,
            )
        except ValueError as exc:
            self.composer.give_back(event.body)
            self.notify(str(exc), severity="error", markup=False)

    @on(Composer.Refused)
    def _refused(self, event: Composer.Refused) -> None:
        self.notify(event.reason, severity="warning", markup=False)

    @on(Composer.Command)
    async def _command(self, event: Composer.Command) -> None:
        if not await self.run_command(event.invocation, event.peer):
            # It could not run: the line comes back to be fixed, with the reason shown.
            self.composer.give_back(event.text)

    async def run_command(self, invocation: commands.Invocation, peer: str | None) -> bool:
        """Run a slash command typed while ``peer`` was open; False if it could not run."""
        name, arg = invocation.command.name, invocation.arg
        if name == "help":
            self.action_help()
        elif name == "quit":
            await self.action_quit()
        elif name == "me":
            if peer is None:
                self.notify("Start a conversation first (ctrl+o)", markup=False)
                return False
            self._send(Composer.Send(peer, f"* {self.me} {arg}"))
        elif name == "new":
            return await self._new_by_name(arg)
        elif name == "create":
            parsed = parse_group(arg, self.engine.valid_user)
            if isinstance(parsed, str):
                self.notify(parsed, severity="warning", markup=False)
                return False
            return self._create_group(*parsed)
        elif name == "search":
            self.action_search(arg)
        elif name == "leave":
            if self._open_group(key=peer) is None:
                return False
            self.action_leave_group()  # it asks first
        else:
            return self._group_line_command(name, arg, peer)
        return True

    def _group_line_command(self, name: str, arg: str, peer: str | None) -> bool:
        """/add, /remove and /rename: the dialog's checks, without the dialog."""
        summary = self._open_group(manage=name != "rename", key=peer)
        if summary is None:
            return False
        key = summary.peer
        if name == "rename":
            return self._group_command(lambda: self.engine.rename_group(key, arg))
        check = self._add_problem if name == "add" else self._remove_problem
        problem = check(summary, arg)
        if problem is not None:
            self.notify(problem, severity="warning", markup=False)
            return False
        user = user_name(arg, self.engine.valid_user) or arg
        if name == "add":
            return self._group_command(lambda: self.engine.add_member(key, user))
        return self._group_command(lambda: self.engine.remove_member(key, user))

    async def _new_by_name(self, typed: str) -> bool:
        found = user_name(typed, self.engine.valid_user)
        if found is None:
            problem = check_user_name(typed, self.engine.valid_user) or "Not a user name"
            self.notify(problem, markup=False)
            return False
        name = found
        if name not in self.conv_list.summaries:
            exists = await self.engine.lookup_user(name)
            if exists is False:
                self.notify(f"No such user: {name}. Check the name.", markup=False)
                return False
            if exists is None:
                self.notify(
                    f"Could not check that {name} exists (no answer from the server);"
                    " if the name is wrong, messages to it will fail",
                    severity="warning",
                    markup=False,
                )
        self.open_conversation(name)
        self.composer.focus()
        return True

    @on(Composer.ToMessages)
    def _to_messages(self) -> None:
        self.view.focus()
        if self.view.selected is None:
            self.view.select_last()

    @on(MessageView.Leave)
    def _leave_messages(self) -> None:
        self.composer.focus()

    @on(MessageView.TypeAhead)
    def _type_ahead(self, event: MessageView.TypeAhead) -> None:
        self.composer.focus()
        self.composer.insert(event.text)

    @on(MessageView.Action)
    def _message_action(self, event: MessageView.Action) -> None:
        msg = event.message
        try:
            if event.kind == "retry":
                if msg.state is not OutState.FAILED:
                    self.notify("This message is still being sent", markup=False)
                    return
                self.engine.retry(msg.client_id)
            elif event.kind == "give_up":
                self._give_up(msg.client_id)
            elif event.kind == "edit" and msg.kind != "text":
                self.notify(
                    "A group command cannot be edited: give it up and do it again", markup=False
                )
            elif event.kind == "edit":
                self.composer.start_edit(msg.client_id, msg.body)
        except KeyError:
            self.notify("That message is no longer waiting to be sent", markup=False)

    def _give_up(self, client_id: str) -> None:
        result = self.engine.give_up(client_id)
        self._last_given_up = client_id
        undo = self._hints().undo
        if result.state is OutState.GIVEN_UP:
            self.notify(f"Given up: it never left this machine · {undo} undoes", markup=False)
        else:
            self.notify(
                "Cancelling: the message may already have reached the server, so the"
                f" server is asked not to deliver it · {undo} undoes until it is told",
                markup=False,
            )

    @on(MessageView.UndoGiveUp)
    def _undo_give_up(self, event: MessageView.UndoGiveUp) -> None:
        cid = event.message.client_id if event.message is not None else self._last_given_up
        if cid is None:
            self.notify("No give-up to undo", markup=False)
            return
        try:
            self.engine.undo_give_up(cid)
        except KeyError:
            self.notify(
                "Too late to undo: the server has already been asked not to deliver it",
                severity="warning",
                markup=False,
            )
            return
        if cid == self._last_given_up:
            self._last_given_up = None
        self.notify(
            f"Give-up undone: the message waits as ✗ · {self._hints().retry} retries it",
            markup=False,
        )

    @on(MessageView.OpenLinks)
    def _open_links(self, event: MessageView.OpenLinks) -> None:
        urls = [url for _, _, url in find_urls(clean(event.message.body))]
        if not urls:
            self.notify("No link in this message", markup=False)
            return

        def done(url: str | None) -> None:
            if url is None:
                return
            problem = open_url(url)
            if problem is None:
                self.notify(f"Opening {url}", markup=False)
            else:
                self.copy_to_clipboard(url)
                self.notify(
                    f"Could not open it: {problem}. Copied instead (OSC 52).",
                    severity="warning",
                    markup=False,
                )

        self.push_screen(LinkScreen(urls), done)

    @on(MessageView.NeedNewer)
    def _need_newer(self, event: MessageView.NeedNewer) -> None:
        if self.peer is None:
            return
        page = self.engine.messages_after(self.peer, event.after, PAGE)
        reached = sum(m.seq is not None for m in page) < PAGE
        self.view.append(page, complete_below=reached)
        if reached and self.engine.status.state is ConnState.ONLINE and self.app_focus:
            self.engine.mark_read(self.peer)  # scrolled down to the newest

    def action_search(self, text: str = "") -> None:
        def done(hit: ChatMessage | None) -> None:
            if hit is not None:
                self.open_conversation(hit.peer, at=hit)
                self.view.focus()

        self.push_screen(SearchScreen(self.engine.search, self._label, text), done)

    @on(MessageView.NeedOlder)
    async def _need_older(self, event: MessageView.NeedOlder) -> None:
        if self.peer is None:
            return
        # The page arrives as a HistoryLoaded event: older pages have that one channel.
        await self.engine.load_older(self.peer, event.before, PAGE)

    @on(MessageView.UnseenChanged)
    def _unseen(self, event: MessageView.UnseenChanged) -> None:
        mark = self.query_one("#new-below", Static)
        mark.display = event.count > 0
        mark.update(Text(f"↓ {event.count} new message(s) below · End jumps there"))

    # ------------------------------------------------------------ commands

    def action_retry_all(self) -> None:
        n = self.engine.retry_all()
        self.notify(f"Retrying {n} failed message(s)" if n else "No failed messages", markup=False)

    def action_reconnect(self) -> None:
        self.engine.reconnect_now()
        self.notify("Reconnecting now", markup=False)

    def action_help(self) -> None:
        if isinstance(self.screen, HelpScreen):
            return
        self.push_screen(HelpScreen(self._help_rows(), self.help_note(), self._hints()))

    def help_note(self) -> str | None:
        """An extra paragraph for the help screen (the demo explains its F6)."""
        return None

    def _help_rows(self) -> list[tuple[str, str]]:
        h = self._hints()
        rows = [
            ("Enter", "send the message"),
            # tmux and xterm send alt+enter as ESC CR, which Textual reads as Enter.
            (
                "ctrl+j",
                "new line in the message (alt+enter too, where the terminal tells it apart)",
            ),
            ("↑ / Tab (empty composer)", "move into the messages; ↑/↓ select one"),
            (h.retry, "retry the selected failed message"),
            (h.give_up, "give up the selected message (cancelled on the server if it got there)"),
            (h.undo, "undo the last give-up, until the server has been told"),
            (h.edit, "put the selected message back in the composer"),
            ("other letters", "in the messages: typed into the composer"),
            ("Esc / Tab", "back to the composer"),
        ]
        for binding in self._bindings_in_order():
            if binding.id in self.HELP_TEXT:
                keys = self._keymap.get(binding.id, binding.key)
                shown = " / ".join(k.replace("question_mark", "?") for k in keys.split(","))
                rows.append((shown, self.HELP_TEXT[binding.id]))
        rows.append(("alt+1 … alt+9", "jump to the conversation with that number in the list"))
        rows.append(("ctrl+k", "command palette"))
        # The composer's slash commands (Tab completes a name; //text sends "/text").
        rows += [(c.usage, c.summary) for c in commands.COMMANDS]
        rows.append(("//text", "send text that starts with a slash"))
        return rows

    def _bindings_in_order(self) -> list[Binding]:
        found: list[Binding] = []
        for cls in reversed(type(self).__mro__):
            for binding in cls.__dict__.get("BINDINGS", []):
                if isinstance(binding, Binding):
                    found.append(binding)
        return found

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:  # type: ignore[type-arg]
        yield from super().get_system_commands(screen)
        yield SystemCommand(
            "New conversation", "Start a conversation", self.action_new_conversation
        )
        yield SystemCommand("Retry all failed", "Retry every failed message", self.action_retry_all)
        yield SystemCommand("Reconnect now", "Skip the wait and connect", self.action_reconnect)
        yield SystemCommand(
            "New group", "Create a group with a title and members", self.action_new_group
        )
        yield SystemCommand(
            "Group: show or hide members", "The member list", self.action_toggle_members
        )
        yield SystemCommand(
            "Group: add member", "Add a user to the open group", self.action_add_member
        )
        yield SystemCommand(
            "Group: remove member", "Remove a member of the open group", self.action_remove_member
        )
        yield SystemCommand(
            "Group: rename", "Give the open group a new title", self.action_rename_group
        )
        yield SystemCommand("Group: leave", "Leave the open group", self.action_leave_group)
        for peer in self.conv_list.order:
            # Textual parses command titles as markup (to show and to highlight matches),
            # and a hostile server can name a peer "[/" or "[@click=...]": offer only names
            # a real account can have, which hold no markup. Others stay in the list.
            if not self.engine.valid_user(peer):
                continue
            yield SystemCommand(
                f"Switch to {peer}",
                "Open this conversation",
                partial(self.open_conversation, peer),
            )

    # ------------------------------------------------------------ engine events

    def _forward_engine_event(self, event: Event) -> None:
        self.post_message(ev.wrap(event))

    def _is_open(self, peer: str) -> bool:
        return peer == self.peer

    @on(ev.MessageAdded)
    @while_shown
    def _message_added(self, message: ev.MessageAdded) -> None:
        event = message.event
        msg = event.message
        if self._is_open(msg.peer):
            if not self._below_window(event):
                self.view.upsert(msg)
            # During a catch-up the read mark is set once, at Synced, not per message; with
            # the terminal in the background, when it comes back (watch_app_focus).
            if not event.replay and not msg.own and self.screen.is_active and self.app_focus:
                self.engine.mark_read(msg.peer)
        if not msg.own and not event.replay:
            self._announce(msg, self._summary(msg.peer))
        self._refresh_status()

    @on(ev.MessageChanged)
    @while_shown
    def _message_changed(self, message: ev.MessageChanged) -> None:
        msg = message.event.message
        if self._is_open(msg.peer):
            self.view.upsert(msg)
        if msg.state is OutState.FAILED:
            if msg.client_id not in self._failed_now:
                self._failed_now.add(msg.client_id)
                self._failed(msg)
        else:
            self._failed_now.discard(msg.client_id)
        self._refresh_status()

    @on(ev.ConversationChanged)
    @while_shown
    def _conversation_changed(self, message: ev.ConversationChanged) -> None:
        summary = message.event.summary
        if self.conv_list.update_summary(summary):
            self._reorder_soon()
        self._update_title()
        if self.peer is None:
            self.open_conversation(summary.peer)
        elif summary.peer == self.peer:
            self._set_title()  # a group's title, members or membership may have changed
            if summary.peer_read_seq != self.view.peer_read_seq or summary.kind is ConvKind.GROUP:
                self.view.receipts_changed(summary.peer_read_seq)  # ✓✓, read by n

    @on(ev.ConversationReplaced)
    @while_shown
    def _conversation_replaced(self, message: ev.ConversationReplaced) -> None:
        old, new = message.event.old, message.event.new
        was_open = self.peer == old
        self.conv_list.forget(old)
        self._reorder_soon()
        if not was_open:
            return
        if new is not None:
            self.peer = None  # the old key is gone: do not save its draft again
            self.open_conversation(new)
            return
        self.peer = None
        self.notify("The group was not created (given up)", markup=False)
        summaries = self.engine.conversations()
        if summaries:
            self.open_conversation(summaries[0].peer)
        else:
            self.view.set_messages([], True)
            self._set_title()

    @on(ev.ConnectionChanged)
    @while_shown
    def _connection_changed(self, message: ev.ConnectionChanged) -> None:
        state = message.event.status.state
        if state is ConnState.ONLINE:
            # The server's limit is known from its welcome.
            for composer in self.query(Composer):
                composer.max_body = self.engine.max_body
            if self._outage_notified and self.ui.notify_connection:
                self.notify("Back online", markup=False)
            self._offline_since = None
            self._outage_notified = False
        elif state is ConnState.AUTH_FAILED:
            self.notify(
                f"The server rejected the token: {clean(message.event.status.reason or '')}",
                severity="error",
                markup=False,
                timeout=10,
            )
        elif self._offline_since is None:
            self._offline_since = time.monotonic()
        self._refresh_status()

    @on(ev.HistoryLoaded)
    @while_shown
    def _history_loaded(self, message: ev.HistoryLoaded) -> None:
        event = message.event
        if self._is_open(event.peer):
            self.view.prepend(event.messages, complete=event.complete)

    @on(ev.Synced)
    @while_shown
    def _synced(self, message: ev.Synced) -> None:
        if self.peer is not None and self.screen.is_active and self.app_focus:
            self.engine.mark_read(self.peer)

    @on(ev.ServerNotice)
    @while_shown
    def _server_notice(self, message: ev.ServerNotice) -> None:
        self.notify(
            f"Server: {clean(message.event.reason, single_line=True)}",
            severity="warning",
            markup=False,
        )

    @on(ev.EpochReset)
    @while_shown
    def _epoch_reset(self, message: ev.EpochReset) -> None:
        self.notify("The server's history was reset; resynchronising", markup=False)
        if self.peer is not None:
            self.open_conversation(self.peer)

    @on(ev.DeliveredAnyway)
    @while_shown
    def _delivered_anyway(self, message: ev.DeliveredAnyway) -> None:
        msg = message.event.message
        if self._is_open(msg.peer):
            self.view.upsert(msg)
        if self._last_given_up == msg.client_id:
            self._last_given_up = None
        self.notify(
            f"Too late to cancel: your message to {self._label(msg.peer)} had"
            " already been delivered. It is shown as sent (✓).",
            title="Already delivered",
            severity="warning",
            markup=False,
            timeout=10,
        )
        self._refresh_status()

    @on(ev.GapUnfillable)
    @while_shown
    def _gap_unfillable(self, message: ev.GapUnfillable) -> None:
        gap = message.event
        first, last = gap.after + 1, gap.before - 1
        which = f"message {first}" if first == last else f"messages {first} to {last}"
        self.notify(
            f"Conversation {self._label(gap.peer)}: the server did not send"
            f" {which}; they are missing here.",
            severity="error",
            markup=False,
            timeout=10,
        )

    def _below_window(self, event: models.MessageAdded) -> bool:
        """A gap filled far below the loaded messages: the store has it, and the view
        shows it when the user scrolls there (older pages come only as HistoryLoaded)."""
        low = self.view.lowest_seq()
        seq = event.message.seq
        return event.replay and seq is not None and low is not None and seq < low

    def _failed(self, msg: ChatMessage) -> None:
        # Coalesced: one toast for a burst of failures, not one per message.
        self._failed_burst[msg.client_id] = msg
        if len(self._failed_burst) == 1:
            self.set_timer(0.5, self._flush_failures)

    def _flush_failures(self) -> None:
        burst, self._failed_burst = self._failed_burst, {}
        # Only those still failed: one retried or given up meanwhile did not fail.
        failed = [m for cid, m in burst.items() if cid in self._failed_now]
        if not failed or not self.ui.notify_failures:
            return
        h = self._hints()
        if len(failed) == 1:
            m = failed[0]
            reason = m.error or "not delivered"
            text = f"Message to {self._label(m.peer)}: {clean(reason, single_line=True)}"
        else:
            text = f"{len(failed)} messages not delivered"
        if any(m.retryable for m in failed):
            text += f". Select it: {h.retry} retry · {h.give_up} give up · ctrl+r retries all"
        else:
            # The server would refuse these again: retry is not offered.
            text += f". Select it: {h.edit} edit · {h.give_up} give up"
        self.notify(text, title="Message failed", severity="error", markup=False, timeout=8)

    def _tick(self) -> None:
        if (
            self._offline_since is not None
            and not self._outage_notified
            and time.monotonic() - self._offline_since > OUTAGE_NOTICE_AFTER
        ):
            self._outage_notified = True
            if self.ui.notify_connection:
                self.notify(self._outage_text(), severity="warning", markup=False)

    def _outage_text(self) -> str:
        reason = clean(self.engine.status.reason or "no connection", single_line=True)
        text = f"Connection lost: {reason}."
        waiting = [m for m in self.engine.pending_rows() if m.state is OutState.PENDING]
        if waiting:
            # Only a fresh message is sent by itself; past the window it turns ✗
            # and waits for the user (a message sent hours late can do harm).
            window = self.engine.config.sync.freshness_window
            text += (
                f" {len(waiting)} waiting message(s) stay ◷ and are sent if it returns"
                f" within {window:.0f} s of their writing; later they turn ✗ and wait for"
                f" {self._hints().retry}."
            )
        return text
