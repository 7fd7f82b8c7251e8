"""Which key names a terminal can actually send, for checking the ``[keys]`` table.

A binding to a key no terminal sends is silently dead: Textual accepts any string as
a key name. Textual turns what the terminal sends into names in two ways, and this
module mirrors both (from Textual's own tables, so a Textual upgrade updates it):

* legacy escape sequences (xterm, tmux, screen, the Linux console): the names in
  Textual's ANSI sequence table, printable characters, and ESC+character as ``alt+…``;
* the kitty keyboard protocol (kitty, foot, WezTerm, Ghostty; not tmux or xterm):
  any sorted set of modifiers before a key, so ``ctrl+shift+up`` exists only there.
"""

from __future__ import annotations

import unicodedata
from enum import Enum
from functools import cache
from typing import Final

from textual._ansi_sequences import ANSI_SEQUENCES_KEYS
from textual._keyboard_protocol import FUNCTIONAL_KEYS
from textual.keys import KEY_ALIASES, _character_to_key, key_to_character

# The modifiers Textual writes in a kitty key name, in the (sorted) order it writes them.
KITTY_MODIFIERS: Final = ("alt", "ctrl", "hyper", "meta", "shift", "super")


class KeySupport(Enum):
    EVERYWHERE = "everywhere"
    KITTY_ONLY = "kitty_only"  # only terminals that speak the kitty keyboard protocol
    NEVER = "never"


def _printable_char(name: str) -> str | None:
    """The character a key name stands for, if it is one printable character."""
    char = name if len(name) == 1 else key_to_character(name)
    if char is not None and len(char) == 1 and char.isprintable() and not char.isspace():
        return char
    return None


@cache
def legacy_names() -> frozenset[str]:
    """Named keys a terminal without the kitty protocol sends (characters excluded)."""
    names: set[str] = set()
    for keys in ANSI_SEQUENCES_KEYS.values():
        if isinstance(keys, tuple):
            names.update(k.value for k in keys)
        elif isinstance(keys, str) and len(keys) == 1:
            names.add(_character_to_key(keys))
    names.add("space")
    for name in list(names):
        names.update(KEY_ALIASES.get(name, []))
    return frozenset(names)


@cache
def _kitty_bases() -> frozenset[str]:
    return frozenset(FUNCTIONAL_KEYS.values()) | {"space"}


def support(key: str) -> KeySupport:
    """Whether a terminal can send ``key`` (one key name, as in a Binding)."""
    if key in legacy_names():
        return KeySupport.EVERYWHERE
    if "+" not in key or key == "+":
        # A bare character, typed as itself or by its name ("a", "question_mark", "é").
        return KeySupport.EVERYWHERE if _printable_char(key) else KeySupport.NEVER
    *mods, base = key.split("+")
    if not base or len(set(mods)) != len(mods):
        return KeySupport.NEVER
    char = _printable_char(base)
    if mods == ["alt"] and char is not None and char.isalnum() and not char.isupper():
        return KeySupport.EVERYWHERE  # ESC then the character
    if mods == ["alt", "shift"] and char is not None and char.isalpha() and char.islower():
        return KeySupport.EVERYWHERE  # ESC then the capital letter
    if any(m not in KITTY_MODIFIERS for m in mods) or mods != sorted(mods):
        return KeySupport.NEVER
    if char is None:
        return KeySupport.KITTY_ONLY if base in _kitty_bases() else KeySupport.NEVER
    if char != char.lower() or set(mods) <= {"alt", "shift"}:
        # Textual names a capital "shift+x"; shift alone (or with alt) changes the
        # character the terminal sends rather than adding a modifier.
        return KeySupport.NEVER
    return KeySupport.KITTY_ONLY


def examples() -> str:
    """A short list of valid forms, for an error message."""
    named = sorted(
        n
        for n in legacy_names()
        if "+" not in n and not n.startswith("<") and _printable_char(n) is None
    )
    fkeys = [n for n in named if n.startswith("f") and n[1:].isdigit()]
    others = [n for n in named if n not in fkeys]
    return (
        "a character (a, 5, é) or its name (question_mark, space), ctrl+a … ctrl+z, alt+a,"
        f" alt+shift+a, alt+1, f1 … f{max(int(n[1:]) for n in fkeys)}, shift+tab,"
        " ctrl+up and similar arrows, or one of: " + ", ".join(others)
    )


def describe_char(key: str) -> str:
    char = _printable_char(key)
    return f"{key} ({unicodedata.name(char, char)})" if char else key
