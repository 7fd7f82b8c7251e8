"""Modal screens: help and starting a conversation."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Input, Label, Static

from tui_chat.protocol import USER_RE
from tui_chat.ui.render import Hints


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,question_mark,f1", "dismiss", "Close", id="help_close")]

    def __init__(self, rows: list[tuple[str, str]], demo: bool, hints: Hints) -> None:
        super().__init__()
        self.rows = rows
        self.demo = demo
        self.hints = hints

    def compose(self) -> ComposeResult:
        table = Table(box=None, show_header=False, padding=(0, 2))
        table.add_column(style="bold cyan", no_wrap=True)
        table.add_column()
        for keys, what in self.rows:
            table.add_row(Text(keys), Text(what))
        h = self.hints
        intro = Text(
            "Message marks: ◷ maybe sent (waiting for the server) · ✓ sent (the server has it)"
            f" · ✗ not delivered (select it: {h.retry} retry, {h.give_up} give up,"
            f" {h.edit} edit) · … held behind a failed message.\n",
        )
        if self.demo:
            intro.append("\nDemo: F6 cuts and restores the network to the local server.\n")
        # Scrolls: on a small terminal (80x24) the list is taller than the box.
        with VerticalScroll(id="help-box"):
            yield Label("tui-chat keys", id="help-title")
            yield Static(intro, markup=False)
            yield Static(table, markup=False)
            yield Label("esc closes", id="help-footer")


class NewConversationScreen(ModalScreen[str | None]):
    BINDINGS = [Binding("escape", "cancel", "Cancel", id="new_conversation_cancel")]

    def compose(self) -> ComposeResult:
        with Vertical(id="new-box"):
            yield Label("Start a conversation with (user name):")
            yield Input(placeholder="e.g. bob", id="new-peer")
            yield Static("", id="new-error", markup=False)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        # Handled here: the app must not also take it for the composer's Enter.
        event.stop()
        name = event.value.strip()
        if not USER_RE.match(name):
            self.query_one("#new-error", Static).update(
                Text("User names are 1-32 characters of a-z, 0-9, '_', '.', '-'.")
            )
            return
        self.dismiss(name)

    def action_cancel(self) -> None:
        self.dismiss(None)
