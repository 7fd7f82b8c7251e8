"""Wire protocol v1, shared by the server and the client engine.

Every frame is a JSON text frame holding one object whose ``"type"`` field names
the frame. Client and server frames are two separate tagged unions: ``history``
is both a client request and a server reply, with different fields.

Unknown fields are ignored on decode so that either side may add optional
fields without breaking older peers; unknown ``type`` values are errors.
See ``docs/protocol.md`` for examples of every frame and every code.
"""

from __future__ import annotations

import re
from typing import Annotated, Final

import msgspec

PROTOCOL_VERSION: Final = 1

# Bounded so a hostile peer cannot make us hold huge integers or strings.
MAX_SEQ: Final = 2**53 - 1
CLIENT_ID_RE: Final = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
USER_RE: Final = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,31}$")

ClientId = Annotated[str, msgspec.Meta(pattern=CLIENT_ID_RE.pattern)]
UserName = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
ConvId = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
Seq = Annotated[int, msgspec.Meta(ge=0, le=MAX_SEQ)]
PositiveSeq = Annotated[int, msgspec.Meta(ge=1, le=MAX_SEQ)]
Limit = Annotated[int, msgspec.Meta(ge=1, le=500)]
# Milliseconds since the Unix epoch, UTC. Bounded like every integer on the wire: a client
# stores what the server sends, and SQLite cannot hold an integer beyond 2**63 - 1.
Millis = Annotated[int, msgspec.Meta(ge=0, le=MAX_SEQ)]


class _Frame(msgspec.Struct, tag_field="type"):
    pass


# ---------------------------------------------------------------- client → server


class Hello(_Frame, tag="hello", omit_defaults=True):
    v: int
    user: UserName
    token: Annotated[str, msgspec.Meta(max_length=256)]
    cursors: dict[ConvId, Seq] = {}
    # True: the replay comes as ``history`` pages (``after`` = the cursor) instead of one
    # ``message`` frame per message. Per-frame costs (websocket framing, one decode and
    # one await per message on both sides) were most of a catch-up's time.
    replay_pages: bool = False


class Send(_Frame, tag="send", omit_defaults=True):
    """A message to a peer (``to``) or to a group (``conv``): exactly one of the two.

    A frame with both or neither is rejected with ``bad_frame``.
    """

    client_id: ClientId
    body: str
    to: UserName | None = None
    conv: ConvId | None = None


# Bounded on the wire so decoding stays cheap; the server's own limits are lower
# (members per group, title length) and answered with clear rejects.
Title = Annotated[str, msgspec.Meta(max_length=1000)]
MemberList = Annotated[list[UserName], msgspec.Meta(max_length=10_000)]


class Create(_Frame, tag="create"):
    """A group of the sender plus ``members``, idempotent per (sender, client_id) forever.

    Answered by ``ack`` whose ``conv`` is the new group and ``seq`` its ``created`` event.
    """

    client_id: ClientId
    title: Title
    members: MemberList = []


class Add(_Frame, tag="add"):
    """Add ``user`` to a group (only its creator may); acked like a send."""

    client_id: ClientId
    conv: ConvId
    user: UserName


class Remove(_Frame, tag="remove"):
    """Remove ``user`` from a group (only its creator may); acked like a send."""

    client_id: ClientId
    conv: ConvId
    user: UserName


class Leave(_Frame, tag="leave"):
    """Leave a group; acked like a send. The ``left`` event is the last one we receive."""

    client_id: ClientId
    conv: ConvId


class Rename(_Frame, tag="rename"):
    """Give a group a new title (any member may); acked like a send."""

    client_id: ClientId
    conv: ConvId
    title: Title


class HistoryRequest(_Frame, tag="history"):
    conv: ConvId
    # Messages with seq < before, newest first up to ``limit``; None = from the newest.
    before: PositiveSeq | None = None
    limit: Limit = 100
    # Optional lower bound (exclusive) so a client can fetch exactly a gap.
    after: Seq | None = None


class Read(_Frame, tag="read"):
    conv: ConvId
    seq: Seq


class Cancel(_Frame, tag="cancel"):
    """Give up a message that may have reached the server.

    The server commits a tombstone for ``(sender, client_id)`` in the same writer as
    sends and answers ``cancelled``; a later ``send`` with that id is rejected with
    ``cancelled``. If the message is already stored, the answer is its ``ack`` (with
    ``duplicate: true``) instead: it was delivered and cannot be taken back.
    """

    client_id: ClientId


class Lookup(_Frame, tag="lookup"):
    """Does this user exist? Answered by ``user_info``."""

    user: UserName


ClientFrame = (
    Hello | Send | HistoryRequest | Read | Cancel | Lookup | Create | Add | Remove | Leave | Rename
)

# ---------------------------------------------------------------- server → client


class Welcome(_Frame, tag="welcome"):
    v: int
    user: str
    epoch: str
    server_time: Millis
    # Limits the client should know about; optional for forward compatibility.
    max_body: int = 4000


class MessageKind:
    """What a ``message`` event is: text, or a change to a group's membership or title."""

    TEXT: Final = "text"
    CREATED: Final = "created"  # title and members (everyone, the creator included)
    ADDED: Final = "added"  # user joined, added by sender
    REMOVED: Final = "removed"  # user removed by sender
    LEFT: Final = "left"  # sender left (user is the sender too)
    RENAMED: Final = "renamed"  # title is the new title

    MEMBERSHIP: Final = frozenset({CREATED, ADDED, REMOVED, LEFT})
    ALL: Final = frozenset({TEXT, CREATED, ADDED, REMOVED, LEFT, RENAMED})


class Message(_Frame, tag="message", omit_defaults=True):
    """One event of a conversation's seq stream.

    ``to`` is the recipient in a direct conversation and absent ("") in a group.
    ``members`` is the member list after the event: on ``created``, and on ``added``
    when sent to the member who was added (where that member's view of the group begins).
    """

    conv: str
    seq: PositiveSeq
    sender: str
    client_id: str
    body: str
    ts: Millis
    to: str = ""
    kind: str = MessageKind.TEXT
    user: str | None = None
    title: str | None = None
    members: list[str] | None = None


class Synced(_Frame, tag="synced"):
    cursors: dict[str, Seq]


class Ack(_Frame, tag="ack"):
    client_id: str
    conv: str
    seq: PositiveSeq
    ts: Millis
    duplicate: bool = False


class Reject(_Frame, tag="reject"):
    client_id: str
    code: str
    reason: str
    retryable: bool
    # Seconds the client should wait before retrying (for retryable rejects).
    retry_after: float | None = None


# A stored message inside a ``history`` reply is the same struct as a live ``message``
# (each item carries ``"type": "message"``; a decoder accepts items without it).
HistoryMessage = Message


class HistoryPage(_Frame, tag="history"):
    conv: str
    # Ascending seq order.
    messages: list[HistoryMessage]
    # True when no older message exists below the oldest one returned.
    complete: bool
    before: PositiveSeq | None = None
    after: Seq | None = None


class Receipt(_Frame, tag="receipt"):
    conv: str
    user: str
    read_seq: Seq


class Cancelled(_Frame, tag="cancelled"):
    """The tombstone for ``client_id`` is committed: that message will never be stored."""

    client_id: str


class UserInfo(_Frame, tag="user_info"):
    """The answer to ``lookup``: whether an account with this name exists now."""

    user: str
    exists: bool


class Error(_Frame, tag="error"):
    code: str
    reason: str


ServerFrame = (
    Welcome | Message | Synced | Ack | Reject | HistoryPage | Receipt | Cancelled | UserInfo | Error
)


class ErrorCode:
    """Codes used in ``error`` frames and in ``reject`` frames."""

    # error
    BAD_JSON: Final = "bad_json"
    BAD_FRAME: Final = "bad_frame"
    UNKNOWN_TYPE: Final = "unknown_type"
    NOT_AUTHENTICATED: Final = "not_authenticated"
    ALREADY_AUTHENTICATED: Final = "already_authenticated"
    NOT_MEMBER: Final = "not_member"  # also a reject: not a member of that group
    RATE_LIMITED: Final = "rate_limited"
    UNSUPPORTED_VERSION: Final = "unsupported_version"
    AUTH_FAILED: Final = "auth_failed"
    AUTH_THROTTLED: Final = "auth_throttled"
    # reject
    UNKNOWN_PEER: Final = "unknown_peer"
    TOO_LONG: Final = "too_long"
    EMPTY_BODY: Final = "empty_body"
    UNAVAILABLE: Final = "unavailable"
    CANCELLED: Final = "cancelled"  # the sender gave this client_id up (a tombstone)
    # groups (rejects of send {conv}, create, add, remove, leave, rename)
    NOT_ALLOWED: Final = "not_allowed"  # only the group's creator may add or remove
    ALREADY_MEMBER: Final = "already_member"  # add of a user who is a member
    NO_SUCH_MEMBER: Final = "no_such_member"  # remove of a user who is not a member
    TOO_MANY_MEMBERS: Final = "too_many_members"
    TOO_MANY_GROUPS: Final = "too_many_groups"
    BAD_TITLE: Final = "bad_title"  # empty or longer than the server's limit


class CloseCode:
    """WebSocket close codes the server uses, and whether a client may reconnect."""

    NORMAL: Final = 1000
    GOING_AWAY: Final = 1001
    MESSAGE_TOO_BIG: Final = 1009
    SERVICE_RESTART: Final = 1012
    BAD_HELLO: Final = 4400  # first frame not a valid hello, or wrong version: fatal
    AUTH_FAILED: Final = 4401  # bad user or token: fatal, do not retry
    ACCOUNT_CLOSED: Final = 4403  # account removed or token revoked: fatal for this token
    HELLO_TIMEOUT: Final = 4408  # no hello in time: reconnect
    TOO_SLOW: Final = 4409  # outgoing queue overflowed: reconnect and resume from cursors
    AUTH_THROTTLED: Final = 4429  # too many failed logins: wait, then retry

    FATAL: Final = frozenset({BAD_HELLO, AUTH_FAILED, ACCOUNT_CLOSED})


# Encoders/decoders are module singletons: building them is the expensive part.
_encoder = msgspec.json.Encoder()
client_decoder: Final[msgspec.json.Decoder[ClientFrame]] = msgspec.json.Decoder(ClientFrame)
server_decoder: Final[msgspec.json.Decoder[ServerFrame]] = msgspec.json.Decoder(ServerFrame)


def encode(frame: _Frame) -> bytes:
    return _encoder.encode(frame)


class FrameError(Exception):
    """A frame that could not be decoded; ``code`` is an :class:`ErrorCode`."""

    def __init__(self, code: str, reason: str) -> None:
        # msgspec quotes the offending value, which may hold control characters: the
        # reason goes into error frames, logs and the status line, so escape them.
        if not reason.isprintable():
            reason = "".join(c if c.isprintable() else repr(c)[1:-1] for c in reason)
        super().__init__(reason)
        self.code = code
        self.reason = reason


_KNOWN_CLIENT_TYPES: Final = frozenset(
    {
        "hello",
        "send",
        "history",
        "read",
        "cancel",
        "lookup",
        "create",
        "add",
        "remove",
        "leave",
        "rename",
    }
)
_KNOWN_SERVER_TYPES: Final = frozenset(
    {
        "welcome",
        "message",
        "synced",
        "ack",
        "reject",
        "history",
        "receipt",
        "cancelled",
        "user_info",
        "error",
    }
)


def _classify(data: bytes | str, exc: msgspec.DecodeError, known: frozenset[str]) -> FrameError:
    """Turn msgspec's error into a protocol code: bad JSON vs. unknown type vs. bad fields."""
    if not isinstance(exc, msgspec.ValidationError):
        return FrameError(ErrorCode.BAD_JSON, f"malformed JSON: {exc}")
    try:
        raw = msgspec.json.decode(data)
    except msgspec.DecodeError as err:
        # The typed decoder stopped at a wrong tag before it reached the broken part.
        return FrameError(ErrorCode.BAD_JSON, f"malformed JSON: {err}")
    except (UnicodeDecodeError, RecursionError) as err:
        # The typed decoder stopped at a wrong field before reaching the unreadable part.
        return _unparsable(err)
    if isinstance(raw, dict):
        kind = raw.get("type")
        if isinstance(kind, str) and kind not in known:
            return FrameError(ErrorCode.UNKNOWN_TYPE, f"unknown frame type {kind[:40]!r}")
    return FrameError(ErrorCode.BAD_FRAME, str(exc))


def _unparsable(exc: UnicodeDecodeError | RecursionError) -> FrameError:
    """msgspec's own exceptions for JSON it cannot read, which are not DecodeErrors.

    Invalid UTF-8 inside a string of a binary frame raises UnicodeDecodeError, and deep
    nesting (``[[[[…`` fits easily in one frame) raises RecursionError.
    """
    if isinstance(exc, RecursionError):
        return FrameError(ErrorCode.BAD_JSON, "malformed JSON: nested too deeply")
    return FrameError(ErrorCode.BAD_JSON, "malformed JSON: invalid UTF-8")


def decode_client(data: bytes | str) -> ClientFrame:
    try:
        frame: ClientFrame = client_decoder.decode(data)
        return frame
    except msgspec.DecodeError as exc:
        raise _classify(data, exc, _KNOWN_CLIENT_TYPES) from None
    except (UnicodeDecodeError, RecursionError) as exc:
        raise _unparsable(exc) from None


def decode_server(data: bytes | str) -> ServerFrame:
    try:
        frame: ServerFrame = server_decoder.decode(data)
        return frame
    except msgspec.DecodeError as exc:
        raise _classify(data, exc, _KNOWN_SERVER_TYPES) from None
    except (UnicodeDecodeError, RecursionError) as exc:
        raise _unparsable(exc) from None


def direct_conv_members(a: str, b: str) -> tuple[str, str]:
    """The canonical (sorted) member pair of a direct conversation."""
    return (a, b) if a <= b else (b, a)
