"""The Matrix client-server API's JSON as msgspec Structs, and the back-end's errors.

No I/O here (and no httpx): the sans-I/O mapping and its unit tests use these alone.
"""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec

T = TypeVar("T")


class MatrixError(Exception):
    """The homeserver refused a request."""

    def __init__(
        self, status: int, errcode: str, error: str, retry_after_ms: int | None = None
    ) -> None:
        super().__init__(f"{errcode} ({status}): {error}")
        self.status = status
        self.errcode = errcode
        self.error = error
        self.retry_after_ms = retry_after_ms

    @property
    def rate_limited(self) -> bool:
        return self.status == 429 or self.errcode == "M_LIMIT_EXCEEDED"

    @property
    def auth(self) -> bool:
        """The access token or the password was refused: nothing helps until the user acts."""
        return self.status == 401 or self.errcode in ("M_UNKNOWN_TOKEN", "M_MISSING_TOKEN")


class Unreachable(Exception):
    """No answer: the homeserver could not be reached, or did not answer in time."""


class BadResponse(Exception):
    """The homeserver's answer is not what the spec says (malformed JSON, wrong shape)."""


# ---------------------------------------------------------------- answers


class _ErrorBody(msgspec.Struct):
    errcode: str = "M_UNKNOWN"
    error: str = ""
    retry_after_ms: int | None = None


class Login(msgspec.Struct):
    user_id: str
    access_token: str
    device_id: str


class WhoAmI(msgspec.Struct):
    user_id: str
    device_id: str | None = None


class EventId(msgspec.Struct):
    event_id: str


class RoomId(msgspec.Struct):
    room_id: str


class Unsigned(msgspec.Struct):
    transaction_id: str | None = None


class Event(msgspec.Struct):
    """A client event as /sync and /messages give it (``content`` is read by the mapping)."""

    type: str
    sender: str = ""
    event_id: str = ""
    origin_server_ts: int = 0
    content: dict[str, Any] = {}
    state_key: str | None = None
    unsigned: Unsigned | None = None


class Timeline(msgspec.Struct):
    events: list[Event] = []
    limited: bool = False
    prev_batch: str | None = None


class EventList(msgspec.Struct):
    events: list[Event] = []


class JoinedRoom(msgspec.Struct):
    timeline: Timeline = msgspec.field(default_factory=Timeline)
    state: EventList = msgspec.field(default_factory=EventList)
    account_data: EventList = msgspec.field(default_factory=EventList)


class InviteState(msgspec.Struct):
    events: list[Event] = []


class InvitedRoom(msgspec.Struct):
    invite_state: InviteState = msgspec.field(default_factory=InviteState)


class LeftRoom(msgspec.Struct):
    timeline: Timeline = msgspec.field(default_factory=Timeline)
    state: EventList = msgspec.field(default_factory=EventList)


class Rooms(msgspec.Struct):
    join: dict[str, JoinedRoom] = {}
    invite: dict[str, InvitedRoom] = {}
    leave: dict[str, LeftRoom] = {}


class SyncResponse(msgspec.Struct):
    next_batch: str
    rooms: Rooms = msgspec.field(default_factory=Rooms)
    account_data: EventList = msgspec.field(default_factory=EventList)


class Messages(msgspec.Struct):
    start: str = ""
    end: str | None = None
    chunk: list[Event] = []


class Versions(msgspec.Struct):
    versions: list[str]


class Profile(msgspec.Struct):
    displayname: str | None = None


class _Empty(msgspec.Struct):
    pass


_decoders: dict[type[Any], msgspec.json.Decoder[Any]] = {}


def decode(data: bytes, kind: type[T]) -> T:
    dec = _decoders.get(kind)
    if dec is None:
        dec = _decoders[kind] = msgspec.json.Decoder(kind)
    try:
        value: T = dec.decode(data)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise BadResponse(f"unexpected answer from the homeserver: {exc}") from None
    return value
