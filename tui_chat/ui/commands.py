"""Slash commands in the composer: what a line starting with ``/`` means.

A line is a command when its first word is ``/`` and a name made of letters; a known name
runs the command, an unknown one is an error shown where it was typed and never sent
(``/hepl`` is a typo, not a message). Anything else that starts with a slash is text:
``/usr/bin is full`` and ``/ shrug`` are messages, and ``//help`` sends ``/help``.

Pure: no Textual here, so the rules are unit-tested on their own; the app runs the
commands (see ``ChatApp.run_command``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True, slots=True)
class CommandSpec:
    name: str
    usage: str  # as the help shows it
    summary: str
    # "none": takes nothing; "required": needs an argument; "optional".
    arg: str = "none"


COMMANDS: Final = (
    CommandSpec("help", "/help", "show the keys and the commands"),
    CommandSpec("search", "/search words", "search every stored message (ctrl+f)", "optional"),
    CommandSpec("me", "/me waves", "send an action: “* you waves”", "required"),
    CommandSpec("new", "/new bob", "open (or start) the conversation with bob", "required"),
    CommandSpec(
        "create", "/create Lunch: bob, carol", "create a group: title, colon, members", "required"
    ),
    CommandSpec("add", "/add dave", "add a member to the open group (its creator)", "required"),
    CommandSpec(
        "remove", "/remove dave", "remove a member from the open group (its creator)", "required"
    ),
    CommandSpec("rename", "/rename New title", "rename the open group", "required"),
    CommandSpec("leave", "/leave", "leave the open group (asks first)"),
    CommandSpec("quit", "/quit", "quit tui-chat (what is not sent stays queued)"),
)
BY_NAME: Final = {c.name: c for c in COMMANDS}

# "/name" then the end or whitespace: the shape of a command.
_COMMAND = re.compile(r"/([A-Za-z]+)(?:\s+(.*))?\Z", re.DOTALL)


@dataclass(frozen=True, slots=True)
class Invocation:
    command: CommandSpec
    arg: str  # stripped; "" when none was given


@dataclass(frozen=True, slots=True)
class Problem:
    """A line that looks like a command but cannot run: shown, never sent."""

    reason: str


@dataclass(frozen=True, slots=True)
class Literal:
    """Text to send as it is (``//x`` sends ``/x``)."""

    body: str


Parsed = Invocation | Problem | Literal


def parse(text: str) -> Parsed:
    """What Enter on ``text`` means. Text that is no command is a :class:`Literal`."""
    if text.startswith("//"):
        return Literal(text[1:])
    m = _COMMAND.match(text.strip()) if text.startswith("/") else None
    if m is None:
        return Literal(text)
    name = m.group(1).lower()
    arg = (m.group(2) or "").strip()
    spec = BY_NAME.get(name)
    if spec is None:
        near = [c.usage for c in COMMANDS if c.name.startswith(name[:2])]
        hint = f" (did you mean {', '.join(near)}?)" if near else ""
        return Problem(
            f"Unknown command /{name}{hint}: /help lists them; //{name} sends it as text"
        )
    if spec.arg == "required" and not arg:
        return Problem(f"/{spec.name} needs more: {spec.usage}")
    if spec.arg == "none" and arg:
        return Problem(f"/{spec.name} takes nothing after it: {spec.usage}")
    return Invocation(spec, arg)


def complete(text: str) -> tuple[str, list[str]]:
    """Tab on a half-typed command name: (the new text, the candidates).

    One candidate completes it (with a space when it takes an argument); several extend the
    text to what they share and are returned for the app to show. Text that is not a command
    name being typed comes back unchanged with no candidates.
    """
    m = re.fullmatch(r"/([A-Za-z]*)", text)
    if m is None:
        return text, []
    prefix = m.group(1).lower()
    names = [c.name for c in COMMANDS if c.name.startswith(prefix)]
    if not names:
        return text, []
    if len(names) == 1:
        spec = BY_NAME[names[0]]
        return "/" + spec.name + (" " if spec.arg != "none" else ""), names
    shared = names[0]
    for n in names[1:]:
        while not n.startswith(shared):
            shared = shared[:-1]
    return "/" + shared, names
