"""The tui-chat Textual app: conversation list, message view, composer, status line."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Iterable
from functools import partial
from typing import Protocol

from rich.text import Text
from textual import on
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer, Label, Static

from tui_chat.core.config import UiSection
from tui_chat.core.engine import Engine
from tui_chat.core.models import (
    ConnectionChanged,
    ConnState,
    ConversationChanged,
    EpochReset,
    Event,
    HistoryLoaded,
    MessageAdded,
    MessageChanged,
    OutState,
    ServerNotice,
    Synced,
)
from tui_chat.protocol import USER_RE
from tui_chat.ui.message_view import MessageView
from tui_chat.ui.render import Hints
from tui_chat.ui.sanitize import clean
from tui_chat.ui.screens import HelpScreen, NewConversationScreen
from tui_chat.ui.widgets import Composer, ConversationList, StatusBar, status_text

PAGE = 200
# The connection must be down this long before we interrupt the user with a toast.
OUTAGE_NOTICE_AFTER = 3.0


class DemoControl(Protocol):
    outage: bool

    def toggle_outage(self) -> bool: ...


class EngineEvent(Message):
    """An engine event, delivered on the app's message queue."""

    def __init__(self, event: Event) -> None:
        super().__init__()
        self.event = event


class ChatApp(App[int]):
    CSS_PATH = "app.tcss"
    TITLE = "tui-chat"
    # ctrl+p belongs to "previous conversation", as in weechat and irssi.
    COMMAND_PALETTE_BINDING = "ctrl+k"

    # Footer order: what a newcomer needs first. Long descriptions for the help
    # screen are in HELP_TEXT, keyed by binding id.
    BINDINGS = [
        Binding("f1,question_mark", "help", "Help", id="help"),
        Binding("f6", "toggle_outage", "Cut/restore net", priority=True, id="demo_outage"),
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
        Binding("f5", "reconnect", "Reconnect", priority=True, id="reconnect"),
        Binding("ctrl+q", "quit", "Quit", priority=True, id="quit"),
        *(
            Binding(f"alt+{n}", f"jump({n})", f"Conversation {n}", show=False, id=f"jump_{n}")
            for n in range(1, 10)
        ),
    ]
    HELP_TEXT = {
        "help": "this help",
        "demo_outage": "demo only: cut / restore the network to the local server",
        "retry_all": "retry every failed message (works while typing)",
        "next_conversation": "next conversation",
        "previous_conversation": "previous conversation",
        "next_unread": "next conversation with unread messages",
        "new_conversation": "start a conversation with a user by name",
        "reconnect": "reconnect now (skips the wait; retries a rejected token)",
        "quit": "quit",
    }

    def __init__(
        self,
        engine: Engine,
        *,
        ui: UiSection | None = None,
        keymap: dict[str, str] | None = None,
        demo: DemoControl | None = None,
        run_engine: bool = True,
    ) -> None:
        super().__init__()
        self.engine = engine
        self.ui = ui or UiSection()
        self._keymap = dict(keymap or {})
        self.demo = demo
        self._run_engine = run_engine
        self.peer: str | None = None
        self._drafts: dict[str, str] = {}
        # client_id of the failed message being edited in the composer, if any.
        self._editing: str | None = None
        self._edit_backup = ""
        self._failed_burst: list[str] = []
        self._offline_since: float | None = None
        self._outage_notified = False
        self._unsubscribe: Callable[[], None] | None = None
        self._last_status: Text | None = None

    # ------------------------------------------------------------ layout

    def compose(self) -> ComposeResult:
        with Horizontal(id="main"):
            with Vertical(id="sidebar"):
                yield Label("Conversations", id="sidebar-title")
                yield ConversationList(id="conversations")
            with Vertical(id="chat"):
                yield Static("", id="chat-title", markup=False)
                yield MessageView(id="messages", hints=self._hints())
                yield Static("", id="new-below", markup=False)
                yield Composer(placeholder="Write a message, Enter sends", id="composer")
        yield StatusBar(id="status")
        yield Footer()

    def _hints(self) -> Hints:
        def key(binding_id: str, default: str) -> str:
            return self._keymap.get(binding_id, default).split(",")[0]

        return Hints(retry=key("retry", "r"), give_up=key("give_up", "d"), edit=key("edit", "e"))

    def on_mount(self) -> None:
        self.theme = self.ui.theme if self.ui.theme in self.available_themes else "textual-dark"
        if self._keymap:
            self.set_keymap(self._keymap)
        self._unsubscribe = self.engine.subscribe(self._forward_engine_event)
        if self._run_engine:
            self.run_worker(self.engine.run(), name="engine", group="engine", exit_on_error=True)
        summaries = self.engine.conversations()
        self.conv_list.show(summaries, None)
        self.query_one("#new-below").display = False
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
        self.refresh_status()
        self.set_interval(1.0, self._tick)
        self.composer.focus()
        # Everything built so far lives as long as the app: keep it out of the
        # garbage collector's full passes, which otherwise stall message delivery
        # for tens of milliseconds (measured in benchmarks/ui_bench.py).
        gc.freeze()
        # Full passes come every 10 middle-generation passes by default; with a
        # screen that allocates on every frame that is several a second, each one a
        # visible stall. Every 1,000 keeps cycles collected without the stalls.
        gen0, gen1, _ = gc.get_threshold()
        gc.set_threshold(gen0, gen1, 1000)

    async def on_unmount(self) -> None:
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

    # ------------------------------------------------------------ conversations

    def open_conversation(self, peer: str) -> None:
        if self._editing is not None:
            self._end_edit(restore=True)
        if self.peer is not None:
            self._drafts[self.peer] = self.composer.value
        self.peer = peer
        page = self.engine.messages(peer, None, PAGE)
        confirmed = [m for m in page if m.seq is not None]
        complete = not confirmed or confirmed[0].seq == 1
        self.view.set_messages(page, complete)
        self.composer.value = self._drafts.pop(peer, "")
        self.engine.mark_read(peer)
        if peer in self.conv_list.summaries:
            self.conv_list.highlighted = self.conv_list.order.index(peer)
        else:
            self.conv_list.update_summary(self.engine.conversation(peer), peer)
        self._set_title()

    def _set_title(self) -> None:
        title = self.query_one("#chat-title", Static)
        if self.peer is None:
            title.update(Text("No conversation yet: ctrl+o starts one", style="dim"))
        else:
            title.update(Text(f"Conversation with {clean(self.peer, single_line=True)}"))

    @on(ConversationList.OptionSelected)
    def _picked(self, event: ConversationList.OptionSelected) -> None:
        if event.option.id:
            self.open_conversation(event.option.id)
            self.composer.focus()

    @on(ConversationList.Opened)
    def _opened(self, event: ConversationList.Opened) -> None:
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

        self.push_screen(NewConversationScreen(), done)

    # ------------------------------------------------------------ composing

    # Only the composer: Input.Submitted from a dialog (ctrl+o) bubbles up here too,
    # and must not be sent as a message.
    @on(Composer.Submitted, "#composer")
    def _submit(self, event: Composer.Submitted) -> None:
        body = event.value
        if not body.strip():
            return
        if self.peer is None:
            self.notify("Start a conversation first (ctrl+o)", severity="warning", markup=False)
            return
        try:
            if self._editing is not None:
                self.engine.edit_and_retry(self._editing, body)
                self._end_edit(restore=True)
                return
            self.engine.send(self.peer, body)
        except KeyError:
            self.notify("That message is no longer waiting to be sent", markup=False)
            self._end_edit(restore=False)
            return
        except ValueError as exc:
            # The text stays in the composer: nothing typed is lost.
            self.notify(str(exc), severity="error", markup=False)
            return
        self.composer.value = ""

    def _start_edit(self, client_id: str, body: str) -> None:
        if self._editing is None:
            self._edit_backup = self.composer.value
        self._editing = client_id
        self.composer.value = body
        self.composer.placeholder = "Editing: Enter resends in its place, Esc cancels"
        self.composer.add_class("editing")
        self.composer.focus()

    def _end_edit(self, *, restore: bool) -> None:
        self._editing = None
        self.composer.value = self._edit_backup if restore else self.composer.value
        self._edit_backup = ""
        self.composer.placeholder = "Write a message, Enter sends"
        self.composer.remove_class("editing")

    @on(Composer.CancelEdit)
    def _cancel_edit(self) -> None:
        if self._editing is not None:
            self._end_edit(restore=True)

    @on(Composer.ToMessages)
    def _to_messages(self) -> None:
        self.view.focus()
        if self.view.selected is None:
            self.view.select_last()

    @on(MessageView.Leave)
    def _leave_messages(self) -> None:
        self.composer.focus()

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
                self.engine.give_up(msg.client_id)
                self.notify("Message given up: it will not be sent", markup=False)
            elif event.kind == "edit":
                self._start_edit(msg.client_id, msg.body)
        except KeyError:
            self.notify("That message is no longer waiting to be sent", markup=False)

    @on(MessageView.NeedOlder)
    async def _need_older(self, event: MessageView.NeedOlder) -> None:
        if self.peer is None:
            return
        # The page arrives as a HistoryLoaded event.
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
        self.push_screen(HelpScreen(self._help_rows(), self.demo is not None, self._hints()))

    def _help_rows(self) -> list[tuple[str, str]]:
        rows = [
            ("Enter", "send the message"),
            ("↑ / Tab (empty composer)", "move into the messages; ↑/↓ select one"),
            (self._hints().retry, "retry the selected failed message"),
            (self._hints().give_up, "give up the selected message (never sent)"),
            (self._hints().edit, "put the selected message back in the composer"),
            ("Esc / Tab", "back to the composer"),
        ]
        for binding in self.BINDINGS:
            assert isinstance(binding, Binding)
            if binding.id in self.HELP_TEXT:
                if binding.id == "demo_outage" and self.demo is None:
                    continue
                keys = self._keymap.get(binding.id, binding.key)
                shown = " / ".join(k.replace("question_mark", "?") for k in keys.split(","))
                rows.append((shown, self.HELP_TEXT[binding.id]))
        rows.append(("alt+1 … alt+9", "jump to conversation 1 … 9"))
        rows.append(("ctrl+k", "command palette"))
        return rows

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # F6 exists only in the demo: hidden from the footer and inert elsewhere.
        return not (action == "toggle_outage" and self.demo is None)

    def action_toggle_outage(self) -> None:
        if self.demo is None:
            return
        down = self.demo.toggle_outage()
        self.notify(
            "Network cut (demo): messages stay ◷ until they fail or the link returns"
            if down
            else "Network restored (demo)",
            markup=False,
        )
        self.refresh_status()

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:  # type: ignore[type-arg]
        yield from super().get_system_commands(screen)
        yield SystemCommand(
            "New conversation", "Start a conversation", self.action_new_conversation
        )
        yield SystemCommand("Retry all failed", "Retry every failed message", self.action_retry_all)
        yield SystemCommand("Reconnect now", "Skip the wait and connect", self.action_reconnect)
        for peer in self.conv_list.order:
            # Textual parses command titles as markup (to show and to highlight matches),
            # and a hostile server can name a peer "[/" or "[@click=...]": offer only names
            # a real account can have, which hold no markup. Others stay in the list.
            if not USER_RE.match(peer):
                continue
            yield SystemCommand(
                f"Switch to {peer}",
                "Open this conversation",
                partial(self.open_conversation, peer),
            )

    # ------------------------------------------------------------ engine events

    def _forward_engine_event(self, event: Event) -> None:
        self.post_message(EngineEvent(event))

    @on(EngineEvent)
    def _engine_event(self, message: EngineEvent) -> None:
        event = message.event
        if isinstance(event, MessageAdded | MessageChanged):
            msg = event.message
            if msg.peer == self.peer:
                if not self._comes_by_prepend(event):
                    self.view.upsert(msg)
                # During a catch-up the read mark is set once, at Synced, not per message.
                live = isinstance(event, MessageAdded) and not event.replay
                if live and not msg.own and self.screen.is_active:
                    self.engine.mark_read(msg.peer)
            elif (
                isinstance(event, MessageAdded)
                and not msg.own
                and not event.replay
                and self.ui.bell
            ):
                self.bell()
            if isinstance(event, MessageChanged) and msg.state is OutState.FAILED:
                self._failed(msg.peer, msg.error or "not delivered")
            self.refresh_status()
        elif isinstance(event, ConversationChanged):
            self.conv_list.update_summary(event.summary, self.peer)
            if self.peer is None:
                self.open_conversation(event.summary.peer)
        elif isinstance(event, ConnectionChanged):
            self._connection(event)
        elif isinstance(event, EpochReset):
            self.notify("The server's history was reset; resynchronising", markup=False)
            if self.peer is not None:
                self.open_conversation(self.peer)
        elif isinstance(event, ServerNotice):
            self.notify(
                f"Server: {clean(event.reason, single_line=True)}",
                severity="warning",
                markup=False,
            )
        elif isinstance(event, Synced):
            if self.peer is not None and self.screen.is_active:
                self.engine.mark_read(self.peer)
        elif isinstance(event, HistoryLoaded) and event.peer == self.peer:
            older = event.messages
            self.view.prepend(older, complete=event.complete)

    def _comes_by_prepend(self, event: MessageAdded | MessageChanged) -> bool:
        """An older page fetched from the server: the view gets it with prepend()."""
        low = self.view.lowest_seq()
        seq = event.message.seq
        return (
            isinstance(event, MessageAdded)
            and event.replay
            and seq is not None
            and low is not None
            and seq < low
        )

    def _failed(self, peer: str, reason: str) -> None:
        # Coalesced: one toast for a burst of failures, not one per message.
        self._failed_burst.append(f"{peer}: {reason}")
        if len(self._failed_burst) == 1:
            self.set_timer(0.5, self._flush_failures)

    def _flush_failures(self) -> None:
        burst, self._failed_burst = self._failed_burst, []
        if not burst or not self.ui.notify_failures:
            return
        h = self._hints()
        if len(burst) == 1:
            text = f"Message to {clean(burst[0], single_line=True)}"
        else:
            text = f"{len(burst)} messages not delivered"
        text += f". Select it: {h.retry} retry · {h.give_up} give up · ctrl+r retries all"
        self.notify(text, title="Message failed", severity="error", markup=False, timeout=8)

    def _connection(self, event: ConnectionChanged) -> None:
        state = event.status.state
        if state is ConnState.ONLINE:
            if self._outage_notified and self.ui.notify_connection:
                self.notify("Back online", markup=False)
            self._offline_since = None
            self._outage_notified = False
        elif state is ConnState.AUTH_FAILED:
            self.notify(
                f"The server rejected the token: {clean(event.status.reason or '')}",
                severity="error",
                markup=False,
                timeout=10,
            )
        elif self._offline_since is None:
            self._offline_since = time.monotonic()
        self.refresh_status()

    def _tick(self) -> None:
        if (
            self._offline_since is not None
            and not self._outage_notified
            and time.monotonic() - self._offline_since > OUTAGE_NOTICE_AFTER
        ):
            self._outage_notified = True
            if self.ui.notify_connection:
                reason = self.engine.status.reason or "no connection"
                self.notify(
                    f"Connection lost: {clean(reason, single_line=True)}. "
                    "Messages stay ◷ and are sent when it returns.",
                    severity="warning",
                    markup=False,
                )
        self.refresh_status()

    def refresh_status(self) -> None:
        status = self.engine.status
        lag = self.engine.latency_ms
        pending = self.engine.pending_rows()
        failed = sum(1 for m in pending if m.state is OutState.FAILED)
        bars = self.query(StatusBar)
        if not bars:
            return  # shutting down: the timer can fire after the screen is gone
        text = status_text(status, len(pending), failed, self.demo is not None, lag)
        # Called for every message event and every second: repaint only on change.
        if text != self._last_status:
            self._last_status = text
            bars.first().update(text)
