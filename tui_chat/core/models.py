"""What the engine tells its users: message views, conversation summaries, events.

These are the only types the UI (or a script) needs; none of them refer to
sockets or SQL.
"""

from __future__ import annotations

import enum

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


class ChatMessage(msgspec.Struct, frozen=True):
    """One message as a view shows it.

    ``state`` is None for messages someone else wrote. ``seq`` is None while
    an own message is not yet on the server. ``held`` marks a pending message
    that waits behind a failed one to the same peer.
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

    @property
    def key(self) -> tuple[str, str]:
        # client_id is unique per sender forever, so this names one message everywhere.
        return (self.sender, self.client_id)


class ConversationSummary(msgspec.Struct, frozen=True):
    peer: str
    conv: str | None
    unread: int
    last: ChatMessage | None
    failed: int
    pending: int
    read_seq: int = 0
    peer_read_seq: int = 0


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
)
