"""Modal screens: help and starting a conversation."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

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

    def __init__(self, rows: list[tuple[str, str]], note: str | None, hints: Hints) -> None:
        super().__init__()
        self.rows = rows
        self.note = note
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
            f" {h.edit} edit) · ⊘ cancelling (the server is asked not to deliver it)"
            " · … held behind a failed message.\n",
        )
        if self.note:
            intro.append(f"\n{self.note}\n")
        # Scrolls: on a small terminal (80x24) the list is taller than the box.
        with VerticalScroll(id="help-box"):
            yield Label("tui-chat keys", id="help-title")
            yield Static(intro, markup=False)
            yield Static(table, markup=False)
            yield Label("esc closes", id="help-footer")


class NewConversationScreen(ModalScreen[str | None]):
    """Asks for a user name and, before opening, the server whether that user exists."""

    BINDINGS = [Binding("escape", "cancel", "Cancel", id="new_conversation_cancel")]

    def __init__(
        self,
        lookup: Callable[[str], Awaitable[bool | None]],
        valid: Callable[[str], bool] | None = None,
    ) -> None:
        super().__init__()
        # True: exists; False: no such user; None: could not be checked (offline).
        self.lookup = lookup
        # Which names this server spells: a tui-chat name, or a Matrix id (@name:server).
        self.valid = valid or (lambda name: USER_RE.match(name) is not None)
        self._checking = False

    def compose(self) -> ComposeResult:
        with Vertical(id="new-box"):
            yield Label("Start a conversation with (user name):")
            yield Input(placeholder="e.g. bob", id="new-peer")
            yield Static("", id="new-error", markup=False)

    def _say(self, text: str) -> None:
        self.query_one("#new-error", Static).update(Text(text))

    async def on_input_submitted(self, event: Input.Submitted) -> None:
        # Handled here: the app must not also take it for the composer's Enter.
        event.stop()
        name = event.value.strip()
        if not self.valid(name):
            matrix = " On Matrix: @name:server." if ":" in name or name.startswith("@") else ""
            self._say(f"User names are 1-32 characters of a-z, 0-9, '_', '.', '-'.{matrix}")
            return
        if self._checking:
            return
        self._checking = True
        self._say(f"Checking that {name} exists…")
        try:
            exists = await self.lookup(name)
        finally:
            self._checking = False
        if exists is False:
            # The dialog stays, with the name, so it can be corrected.
            self._say(f"No such user: {name}. Check the name.")
            return
        if exists is None:
            self.app.notify(
                f"Could not check that {name} exists (no answer from the server);"
                " if the name is wrong, messages to it will fail",
                severity="warning",
                markup=False,
            )
        self.dismiss(name)

    def action_cancel(self) -> None:
        self.dismiss(None)
