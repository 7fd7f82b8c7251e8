"""Words and colours for groups: sender colours, membership lines, conversation names.

Everything here is built from names and titles a peer or server wrote, so every string
goes through :func:`sanitize.clean` and comes back as plain text (never markup).
"""

from __future__ import annotations

import zlib
from typing import Final

from tui_chat.core.models import (
    PENDING_GROUP_PREFIX,
    ChatMessage,
    ConversationSummary,
    ConvKind,
    is_group_key,
)
from tui_chat.protocol import MessageKind
from tui_chat.ui.sanitize import clean

# Mid-lightness colours with enough contrast on both the dark and the light themes'
# backgrounds; a name always gets the same one (crc32 is stable across runs, unlike hash()).
NAME_PALETTE: Final = (
    "#e0701a",
    "#3d7fd9",
    "#14a37f",
    "#a656d6",
    "#d63d6f",
    "#5e9e12",
    "#1592b5",
    "#b8862a",
)
TITLE_MAX: Final = 60


def name_colour(name: str) -> str:
    return NAME_PALETTE[zlib.crc32(name.encode()) % len(NAME_PALETTE)]


def _name(name: str | None, me: str) -> str:
    if name is None:
        return "someone"
    return "you" if name == me else clean(name, single_line=True)


def _title(title: str | None) -> str:
    text = clean(title or "", single_line=True)
    if len(text) > TITLE_MAX:
        text = text[: TITLE_MAX - 1] + "…"
    return f"“{text}”"


def event_line(msg: ChatMessage, me: str) -> str:
    """One quiet line for a group event ("carol was removed by alice")."""
    who = _name(msg.sender, me)
    user = _name(msg.user, me)
    kind = msg.kind
    if kind == MessageKind.CREATED:
        return f"{who} created the group {_title(msg.title)}"
    if kind == MessageKind.ADDED:
        return f"{who} added {user}"
    if kind == MessageKind.REMOVED:
        return f"{user} {'were' if msg.user == me else 'was'} removed by {who}"
    if kind == MessageKind.LEFT:
        return f"{user} left"
    if kind == MessageKind.RENAMED:
        return f"{who} renamed the group to {_title(msg.title)}"
    return f"{who}: {clean(kind, single_line=True)}"


def conversation_name(s: ConversationSummary) -> str:
    """What the list and the title bar call a conversation: the peer, or the group title."""
    if s.kind is ConvKind.GROUP or is_group_key(s.peer):
        return _title(s.title) if s.title else "(untitled group)"
    return clean(s.peer, single_line=True)


def is_pending_group(key: str) -> bool:
    return key.startswith(PENDING_GROUP_PREFIX)
