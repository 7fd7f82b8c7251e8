"""What the engine tells its users: message views, conversation summaries, events.

These are the only types the UI (or a script) needs; none of them refer to
sockets or SQL.
"""

from __future__ import annotations

import enum
from typing import Final

import msgspec


class OutState(enum.StrEnum):
    """Life of a message the user wrote. Moves forward only, except retry."""

    PENDING = "pending"  # stored locally, not confirmed: "maybe sent"
    SENT = "sent"  # the server acked it, or its client_id came back in the stream
    FAILED = "failed"  # not delivered; waits for the user's retry or give-up
    # The user gave it up after it may have reached the server: the client waits for the
    # server to confirm a tombstone (then GIVEN_UP) or to say it already stored it (SENT).
    CANCELLING = "cancelling"
    GIVEN_UP = "given_up"  # never sent again, and the server confirmed it (or never saw it)


class ConvKind(enum.StrEnum):
    DIRECT = "direct"  # one peer; the key is the peer's name
    GROUP = "group"  # a group; the key is GROUP_PREFIX + its conv id


# A conversation's key (the ``peer`` field of the types below) is the peer's name for a
# direct conversation, "#" + conv id for a group, and "+" + the create's client_id for a
# group the server has not confirmed yet. Neither prefix is valid in a user name, so the
# three never collide; the kind comes from the events, never from a conv id's shape.
GROUP_PREFIX: Final = "#"
PENDING_GROUP_PREFIX: Final = "+"


def group_key(conv: str) -> str:
    return GROUP_PREFIX + conv


def is_group_key(key: str) -> bool:
    return key.startswith((GROUP_PREFIX, PENDING_GROUP_PREFIX))


class ChatMessage(msgspec.Struct, frozen=True):
    """One message (or group event) as a view shows it.

    ``peer`` is the conversation's key (see GROUP_PREFIX). ``state`` is None for
    messages someone else wrote. ``seq`` is None while an own message is not yet on
    the server. ``held`` marks a pending message that waits behind a failed one in
    the same conversation. ``kind`` is a :class:`tui_chat.protocol.MessageKind`: text,
    or a group event (``user`` is the member concerned, ``title`` the group's title);
    an own command (add, remove …) waiting in the outbox has the kind of the event it
    will become. ``mentions_me``: the text names the user (see core.mentions).
    """

    peer: str
    sender: str
    client_id: str
    body: str
    ts: int  # ms since the Unix epoch: the server's time, or compose time if unsent
    own: bool
    seq: int | None = None
    conv: str | None = None
    state: OutState | None = None
    error: str | None = None
    retryable: bool = True
    held: bool = False
    attempts: int = 0
    kind: str = "text"
    user: str | None = None
    title: str | None = None
    mentions_me: bool = False
    # When it was written on this device (the outbox row's time), kept once it is sent, so
    # the time a view shows does not jump to the server's; None if written elsewhere.
    written: int | None = None

    @property
    def key(self) -> tuple[str, str]:
        # client_id is unique per sender forever, so this names one message everywhere.
        return (self.sender, self.client_id)


class ConversationSummary(msgspec.Struct, frozen=True):
    """One entry of the conversation list.

    For a group: ``title``, the current ``members`` (from the membership events, in
    join order), its ``creator``, and ``joined`` False once the user was removed or
    left (the history stays readable; nothing can be sent). ``mentions`` counts unread
    messages that name the user.
    """

    peer: str
    conv: str | None
    unread: int
    last: ChatMessage | None
    failed: int
    pending: int
    read_seq: int = 0
    peer_read_seq: int = 0
    kind: ConvKind = ConvKind.DIRECT
    title: str | None = None
    members: tuple[str, ...] = ()
    creator: str | None = None
    joined: bool = True
    mentions: int = 0


class ConnState(enum.StrEnum):
    CONNECTING = "connecting"
    ONLINE = "online"
    OFFLINE = "offline"
    AUTH_FAILED = "auth_failed"
    STOPPED = "stopped"


class ConnectionStatus(msgspec.Struct, frozen=True):
    state: ConnState
    attempt: int = 0
    # Seconds from ``since`` until the next attempt, while offline.
    retry_in: float | None = None
    reason: str | None = None
    since: float = 0.0  # time.time() when this status began
    # While online: time.time() since when a ping or an ack has been overdue (the link
    # may be dead and the engine cannot tell yet); None while the server answers in time.
    silent_since: float | None = None


# ---------------------------------------------------------------- events


class MessageAdded(msgspec.Struct, frozen=True, tag="message"):
    message: ChatMessage
    # True while catching up after a (re)connect: a UI may coalesce redraws.
    replay: bool = False


class MessageChanged(msgspec.Struct, frozen=True, tag="state"):
    message: ChatMessage


class ConversationChanged(msgspec.Struct, frozen=True, tag="conversation"):
    summary: ConversationSummary


class ConnectionChanged(msgspec.Struct, frozen=True, tag="connection"):
    status: ConnectionStatus


class HistoryLoaded(msgspec.Struct, frozen=True, tag="history"):
    peer: str
    messages: list[ChatMessage]
    complete: bool


class Synced(msgspec.Struct, frozen=True, tag="synced"):
    """The catch-up after a (re)connect is applied; everything after is live."""

    applied: int


class ServerNotice(msgspec.Struct, frozen=True, tag="notice"):
    """An ``error`` frame from the server (a protocol problem, not a send failure)."""

    code: str
    reason: str


class EpochReset(msgspec.Struct, frozen=True, tag="epoch"):
    old: str
    new: str


class DeliveredAnyway(msgspec.Struct, frozen=True, tag="delivered_anyway"):
    """A give-up came too late: the server had already stored the message (now sent)."""

    message: ChatMessage


class GapUnfillable(msgspec.Struct, frozen=True, tag="gap_unfillable"):
    """The server did not return messages it says exist (``after`` < seq < ``before``).

    The engine stopped asking after a few tries; the conversation has a hole there.
    """

    peer: str
    conv: str
    after: int
    before: int


class ConversationReplaced(msgspec.Struct, frozen=True, tag="conversation_replaced"):
    """A pending group (key ``old``) was confirmed as ``new`` ("#" + conv id), or its
    create was given up before the server stored it (``new`` None): ``old`` is gone."""

    old: str
    new: str | None


Event = (
    MessageAdded
    | MessageChanged
    | ConversationChanged
    | ConnectionChanged
    | HistoryLoaded
    | Synced
    | ServerNotice
    | EpochReset
    | DeliveredAnyway
    | GapUnfillable
    | ConversationReplaced
)
