"""The boundary between the sync core and a server: one session at a time.

A transport turns one connection to some server into protocol v1 frames: it
logs in, hands every frame it receives to a :class:`FrameSink` (the sync core),
sends the frames the core asks for, watches the link's health, and returns a
:class:`SessionEnd` saying why the session ended and whether to come back.
Nothing here raises to end a session: an ending is a value.

:class:`tui_chat.core.ws_transport.WebSocketTransport` talks to tui-chat's own
server; a Matrix transport fills the same interface by translating ``/sync``
and ``PUT send`` into the same frames.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final, Protocol

from tui_chat import protocol as p

# An answer (an ack, a pong) this late is shown as "no answer": the link may be dead,
# and nobody can know yet. Well above a loaded server's p99 ack (about 0.9 s measured).
SILENCE_AFTER: Final = 2.0


class Retry(enum.Enum):
    """What the reconnect loop does after a session ends."""

    BACKOFF = "backoff"  # a failure: wait the jittered, growing delay
    PROMPTLY = "promptly"  # the server asked us back (restart, too slow): a short delay
    AT_ONCE = "at_once"  # our own decision (epoch change, resync): log in again now
    WAIT_FOR_USER = "wait_for_user"  # the token was refused: nothing helps until the user acts


@dataclass(frozen=True, slots=True)
class SessionEnd:
    reason: str  # words for the status line
    retry: Retry = Retry.BACKOFF


class FrameSink(Protocol):
    """What a transport feeds: the sync core."""

    def on_welcome(self, welcome: p.Welcome) -> SessionEnd | None:
        """The login was accepted; a SessionEnd here ends the session at once."""

    def on_frame(self, frame: p.ServerFrame) -> SessionEnd | None:
        """One decoded frame after the welcome; a SessionEnd ends the session."""

    def on_undecodable(self, code: str, reason: str) -> None:
        """A frame that could not be decoded (the session goes on)."""

    def on_silence(self, since: float | None) -> None:
        """The link stopped answering in time (``since``: time.time()), or answers again."""

    # A transport whose server has no per-conversation seqs (Matrix) keeps state of its
    # own to resume from: where its server's stream stands, and how it numbered what it
    # fed so far. That state must never run ahead of, or behind, the stored messages.

    def on_checkpoint(self, state: bytes) -> None:
        """The transport's resume state after every frame fed so far (opaque bytes).

        Stored in the same transaction as those frames' messages and committed with
        them, so after a crash the store and this state agree. Cleared with the replica
        when the epoch changes.
        """

    def resume_state(self) -> bytes | None:
        """The last committed :meth:`on_checkpoint` state (None: start afresh)."""

    def save_login(self, state: bytes) -> None:
        """Credentials the transport obtained itself (e.g. an access token and device id
        from a password login): committed durably at once, kept across epoch changes."""

    def saved_login(self) -> bytes | None:
        """What :meth:`save_login` stored last (None: nothing yet)."""


class Transport(Protocol):
    """One server. ``session`` is called again by the engine for every reconnect."""

    async def session(self, hello: p.Hello, sink: FrameSink) -> SessionEnd:
        """Connect, log in with ``hello``, pump frames into ``sink`` until the end."""

    async def send(self, frame: p.ClientFrame) -> bool:
        """Send one frame on the current session; False if there is none or it closed.

        True means handed to the link, not delivered: only the protocol's answer counts.
        """

    def end(self, why: SessionEnd) -> None:
        """End the current session now (no close handshake wait); ``session`` returns ``why``."""

    @property
    def latency_ms(self) -> float | None:
        """Round trip of the last keepalive, while a session is up."""

    async def aclose(self) -> None:
        """End any session for good (the engine is stopping)."""
