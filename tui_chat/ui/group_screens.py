"""Modal screens for groups: create one, and ask one line (a title, a member's name)."""

from __future__ import annotations

import re
from collections.abc import Callable

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label, Static

from tui_chat.protocol import USER_RE

# A member list as people type it: names separated by commas and/or spaces.
_SEPARATORS = re.compile(r"[\s,]+")


def parse_members(text: str) -> tuple[list[str], list[str]]:
    """(valid names in order without repeats, invalid words) of a typed member list."""
    names: list[str] = []
    bad: list[str] = []
    for word in _SEPARATORS.split(text.strip()):
        word = word.removeprefix("@")
        if not word:
            continue
        if not USER_RE.match(word):
            bad.append(word)
        elif word not in names:
            names.append(word)
    return names, bad


def parse_group(text: str) -> tuple[str, list[str]] | str:
    """``"Lunch: bob, carol"`` -> (title, members), or what is wrong with it.

    One line, so that a fast typist's burst cannot land half in another field. The title
    is everything before the last colon (member names cannot hold one).
    """
    title, colon, names = text.rpartition(":")
    if not colon:
        return "Write the title, a colon, then the members: Lunch: bob, carol"
    title = title.strip()
    if not title:
        return "Give the group a title before the colon."
    members, bad = parse_members(names)
    if bad:
        shown = ", ".join(repr(b[:20]) for b in bad[:3])
        return f"Not a user name: {shown}. Names are 1-32 characters of a-z, 0-9, '_', '.', '-'."
    return title, members


class CreateGroupScreen(ModalScreen[tuple[str, list[str]] | None]):
    """One line: the title, a colon, the members to add (you are added)."""

    BINDINGS = [Binding("escape", "cancel", "Cancel", id="create_group_cancel")]

    def compose(self) -> ComposeResult:
        with Vertical(id="new-box"):
            yield Label("New group: title, a colon, then the members (you are added)")
            yield Input(placeholder="e.g. Lunch: bob, carol", id="group-line")
            yield Static("", id="new-error", markup=False)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        parsed = parse_group(event.value)
        if isinstance(parsed, str):
            self.query_one("#new-error", Static).update(Text(parsed))
            return
        self.dismiss(parsed)

    def action_cancel(self) -> None:
        self.dismiss(None)


class AskLineScreen(ModalScreen[str | None]):
    """One line of input, checked by ``check`` (an error text, or None when fine)."""

    BINDINGS = [Binding("escape", "cancel", "Cancel", id="ask_line_cancel")]

    def __init__(
        self,
        question: str,
        *,
        placeholder: str = "",
        value: str = "",
        check: Callable[[str], str | None] | None = None,
    ) -> None:
        super().__init__()
        self.question = question
        self.placeholder = placeholder
        self.value = value
        self.check = check

    def compose(self) -> ComposeResult:
        with Vertical(id="new-box"):
            # The question may quote a group title: a Label of Text, never markup.
            yield Label(Text(self.question), markup=False)
            yield Input(value=self.value, placeholder=self.placeholder, id="ask-line")
            yield Static("", id="new-error", markup=False)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        value = event.value.strip()
        problem = self.check(value) if self.check is not None else None
        if problem is not None:
            self.query_one("#new-error", Static).update(Text(problem))
            return
        self.dismiss(value)

    def action_cancel(self) -> None:
        self.dismiss(None)


def check_user_name(value: str) -> str | None:
    value = value.removeprefix("@")
    if USER_RE.match(value):
        return None
    return "User names are 1-32 characters of a-z, 0-9, '_', '.', '-'."
