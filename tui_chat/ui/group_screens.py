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


Valid = Callable[[str], bool]
NAMES_RULE = "Names are 1-32 characters of a-z, 0-9, '_', '.', '-'."
MATRIX_RULE = "Matrix users are written @name:server."


def tui_chat_user(name: str) -> bool:
    return USER_RE.match(name) is not None


def user_name(word: str, valid: Valid) -> str | None:
    """The user a typed word names: as typed, or without a leading "@" (bob or @bob on
    tui-chat; on Matrix the "@" is part of the id), or None if it names nobody."""
    if valid(word):
        return word
    bare = word.removeprefix("@")
    return bare if bare != word and valid(bare) else None


def parse_members(text: str, valid: Valid = tui_chat_user) -> tuple[list[str], list[str]]:
    """(valid names in order without repeats, invalid words) of a typed member list."""
    names: list[str] = []
    bad: list[str] = []
    for word in _SEPARATORS.split(text.strip()):
        if not word:
            continue
        name = user_name(word, valid)
        if name is None:
            bad.append(word)
        elif name not in names:
            names.append(name)
    return names, bad


def parse_group(text: str, valid: Valid = tui_chat_user) -> tuple[str, list[str]] | str:
    """``"Lunch: bob, carol"`` -> (title, members), or what is wrong with it.

    One line, so that a fast typist's burst cannot land half in another field. The title
    is everything before the colon after which only user names follow: the last colon for
    tui-chat names, an earlier one when the names are Matrix ids (@bob:server).
    """
    colons = [i for i, c in enumerate(text) if c == ":"]
    if not colons:
        return "Write the title, a colon, then the members: Lunch: bob, carol"
    cut = colons[-1]
    for i in reversed(colons):
        if not parse_members(text[i + 1 :], valid)[1]:
            cut = i
            break
    title, names = text[:cut].strip(), text[cut + 1 :]
    if not title:
        return "Give the group a title before the colon."
    members, bad = parse_members(names, valid)
    if bad:
        shown = ", ".join(repr(b[:20]) for b in bad[:3])
        rule = NAMES_RULE if valid is tui_chat_user else f"{NAMES_RULE} {MATRIX_RULE}"
        return f"Not a user name: {shown}. {rule}"
    return title, members


class CreateGroupScreen(ModalScreen[tuple[str, list[str]] | None]):
    """One line: the title, a colon, the members to add (you are added)."""

    BINDINGS = [Binding("escape", "cancel", "Cancel", id="create_group_cancel")]

    def __init__(self, valid: Valid = tui_chat_user) -> None:
        super().__init__()
        self.valid = valid

    def compose(self) -> ComposeResult:
        with Vertical(id="new-box"):
            yield Label("New group: title, a colon, then the members (you are added)")
            yield Input(placeholder="e.g. Lunch: bob, carol", id="group-line")
            yield Static("", id="new-error", markup=False)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        parsed = parse_group(event.value, self.valid)
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


def check_user_name(value: str, valid: Valid = tui_chat_user) -> str | None:
    if user_name(value, valid) is not None:
        return None
    return "User names are 1-32 characters of a-z, 0-9, '_', '.', '-'." + (
        "" if valid is tui_chat_user else f" {MATRIX_RULE}"
    )
