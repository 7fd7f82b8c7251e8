"""The composer: the message being written, and the edit of a failed message.

What is typed is what is sent. Enter takes the text and clears the composer in the
same step, inside the key handler, so keys that arrive in one burst (type-ahead, a
lagged link, a paste without bracketed paste) can never be added to a text that is
already on its way: each Enter sends the text before it, once. A bracketed paste is
inserted whole, every line kept; ctrl+j (or alt+enter, where the terminal reports it)
inserts a newline.

The composer checks what it can before it lets go of the text (the server's body
limit, a conversation to send to), so a refused message stays where it was typed.
A line that is a slash command (see :mod:`tui_chat.ui.commands`) is handed to the app as
a :class:`Composer.Command` instead, and a mistyped one stays, with the reason.
"""

from __future__ import annotations

import re

from rich.text import Text
from textual import events
from textual.binding import Binding
from textual.message import Message
from textual.widgets import TextArea

from tui_chat.ui import commands

PLACEHOLDER = "Write a message · Enter sends · ctrl+j new line · /help"
EDIT_PLACEHOLDER = "Editing: Enter resends in its place, Esc cancels"
# The counter appears once a message is this close to the limit.
COUNTER_FROM = 0.9


# Every character that Textual's document (like str.splitlines) takes for a line end.
_LINE_ENDS = re.compile("\r\n|[\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")


def normalise_newlines(text: str) -> str:
    """The composer holds lines: every line end becomes "\\n".

    Terminals paste line ends as CR (tmux turns LF into CR unless told otherwise), and
    the text area would otherwise adopt the first CRLF it saw for every line it joins.
    """
    return _LINE_ENDS.sub("\n", text)


class Composer(TextArea):
    """Owns the text being written and which failed message (if any) it edits."""

    BINDINGS = [
        Binding("up", "up", "Messages", show=False, id="composer_to_messages"),
        Binding("tab", "to_messages", "Messages", show=False, id="composer_tab"),
        Binding("escape", "cancel_edit", "Cancel edit", show=False, id="composer_cancel_edit"),
        Binding("ctrl+j,alt+enter", "newline", "New line", show=False, id="composer_newline"),
    ]

    class Send(Message):
        """Enter on a new message to ``peer``: ``body`` has already left the composer."""

        def __init__(self, peer: str, body: str) -> None:
            super().__init__()
            # The peer at the time of Enter: a later key may switch conversations
            # before the app handles this.
            self.peer = peer
            self.body = body

    class Resend(Message):
        """Enter while editing the failed message ``client_id``."""

        def __init__(self, client_id: str, body: str) -> None:
            super().__init__()
            self.client_id = client_id
            self.body = body

    class Refused(Message):
        """Enter did not send; ``reason`` says why (the text stays)."""

        def __init__(self, reason: str) -> None:
            super().__init__()
            self.reason = reason

    class ToMessages(Message):
        pass

    class Command(Message):
        """Enter on a slash command: it has already left the composer."""

        def __init__(self, invocation: commands.Invocation, peer: str | None, text: str) -> None:
            super().__init__()
            self.invocation = invocation
            self.peer = peer  # the open conversation at the time of Enter
            self.text = text  # as typed: given back if the command cannot run

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(
            id=id, soft_wrap=True, tab_behavior="focus", placeholder=PLACEHOLDER, compact=False
        )
        self.max_body = 4000
        # Who Enter sends to; None until a conversation is open.
        self.peer: str | None = None
        # client_id of the failed message being edited, and the draft it displaced.
        self.editing: str | None = None
        self._backup = ""
        # Keys that are app bindings even though they carry a printable character (the
        # ESC+digit characters of alt+1…9): the composer must not claim them as text.
        self.not_text: frozenset[str] = frozenset()
        # The keys of composer_newline as the key map has them (see _on_key).
        self.newline_keys: frozenset[str] = frozenset({"ctrl+j", "alt+enter"})

    def check_consume_key(self, key: str, character: str | None = None) -> bool:
        return key not in self.not_text and super().check_consume_key(key, character)

    # ------------------------------------------------------------ text

    @property
    def value(self) -> str:
        return self.text

    @value.setter
    def value(self, text: str) -> None:
        self.set_text(text)

    def set_text(self, text: str) -> None:
        """Replace the text, cursor at the end, nothing selected."""
        self.load_text(normalise_newlines(text))
        self.move_cursor(self.document.end)
        self._show_counter()

    def give_back(self, body: str) -> None:
        """A message the app could not queue comes back, before anything typed since."""
        rest = self.text
        self.set_text(body + ("\n" + rest if rest else ""))

    def draft(self) -> str:
        """What should survive a switch or a restart: never the text of an edit."""
        return self._backup if self.editing is not None else self.text

    # ------------------------------------------------------------ keys

    async def _on_key(self, event: events.Key) -> None:
        if event.key == "enter":
            # Handled here, before TextArea inserts a newline for it.
            event.stop()
            event.prevent_default()
            self._submit()
        elif event.key == "ctrl+j" and "ctrl+j" in self.newline_keys:
            # A real terminal sends ctrl+j as a bare LF (character "\n"), and Textual 8
            # then does not reach the binding (Pilot's ctrl+j does): measured in tmux.
            event.stop()
            event.prevent_default()
            self.action_newline()

    async def _on_paste(self, event: events.Paste) -> None:
        event.stop()
        event.prevent_default()
        if self.read_only or not event.text:
            return
        result = self.replace(normalise_newlines(event.text), *self.selection)
        self.move_cursor(result.end_location)

    def _on_text_area_changed(self, event: TextArea.Changed) -> None:
        self._show_counter()

    def _submit(self) -> None:
        body = self.text
        if not body.strip():
            return
        if self.screen.has_class("-too-small"):
            # Nothing leaves that the user cannot see: the app shows how big it must be.
            self.post_message(self.Refused("The terminal is too small to show the composer"))
            return
        if len(body) > self.max_body:
            self.post_message(
                self.Refused(
                    f"Too long to send: {len(body)} characters, the server takes "
                    f"{self.max_body}. Shorten it (nothing was sent)."
                )
            )
            return
        if self.editing is not None:
            self.post_message(self.Resend(self.editing, body))
            self.end_edit()
            return
        parsed = commands.parse(body)
        if isinstance(parsed, commands.Problem):
            self.post_message(self.Refused(parsed.reason))
            return
        if isinstance(parsed, commands.Invocation):
            self.load_text("")
            self.post_message(self.Command(parsed, self.peer, body))
            return
        if self.peer is None:
            self.post_message(self.Refused("Start a conversation first (ctrl+o)"))
            return
        # Taken and cleared in the same step: the next key lands in an empty composer.
        self.load_text("")
        self.post_message(self.Send(self.peer, parsed.body))

    def _show_counter(self) -> None:
        n = len(self.text)
        if n >= self.max_body * COUNTER_FROM:
            over = n > self.max_body
            counter = f"{n}/{self.max_body}" + (" too long to send" if over else "")
            self.border_subtitle = Text(counter)
            self.set_class(over, "too-long")
        else:
            self.border_subtitle = None
            self.remove_class("too-long")

    def action_newline(self) -> None:
        start, end = self.selection
        result = self.replace("\n", start, end)
        self.move_cursor(result.end_location)

    def action_up(self) -> None:
        if not self.text:
            self.post_message(self.ToMessages())
        elif self.cursor_location[0] > 0:
            self.action_cursor_up()
        # On the first line of a text, up stays put: the text keeps the keys.

    def action_to_messages(self) -> None:
        if not self.text:
            self.post_message(self.ToMessages())
            return
        # Tab on a half-typed /command completes it.
        text, names = commands.complete(self.text)
        if text != self.text:
            self.set_text(text)
        if len(names) > 1:
            self.notify("  ".join("/" + n for n in names), title="Commands", markup=False)

    # ------------------------------------------------------------ editing

    def start_edit(self, client_id: str, body: str) -> None:
        if self.editing is None:
            self._backup = self.text
        self.editing = client_id
        self.set_text(body)
        self.placeholder = EDIT_PLACEHOLDER
        self.add_class("editing")
        self.focus()

    def end_edit(self) -> None:
        """Leave edit mode; the draft the edit displaced comes back."""
        if self.editing is None:
            return
        self.editing = None
        self.set_text(self._backup)
        self._backup = ""
        self.placeholder = PLACEHOLDER
        self.remove_class("editing")

    def action_cancel_edit(self) -> None:
        self.end_edit()
