"""The outbox policy: which unsent messages are open, held, in flight or waiting.

:class:`Outbox` owns the engine's working set of open (pending or failed) outbox
rows and the bookkeeping around it, and makes the decisions: what expires, what
is held behind a failed message, what to send next and when to look again. It
neither writes the store nor emits events; the engine does both, through the
callbacks it passes in where a decision and its effects must interleave.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Final

from tui_chat.core.models import OutState
from tui_chat.core.store import OutboxRow

MAX_RETRY_DELAY: Final = 30.0  # seconds; cap for a retryable reject without retry_after
CANCELLING: Final = OutState.CANCELLING


class Outbox:
    def __init__(self, rows: Iterable[OutboxRow]) -> None:
        # Open (pending or failed) outbox rows, the engine's working set.
        self.rows: dict[str, OutboxRow] = {r.client_id: r for r in rows}
        self.held: set[str] = set()
        self.inflight: dict[str, float] = {}  # client_id -> monotonic time sent
        self.not_before: dict[str, float] = {}  # client_id -> monotonic time to resend
        # Cancelling rows whose cancel went out in this session (it is resent in the next).
        self.cancel_asked: set[str] = set()
        # Cancelling rows the server may have been told about: no undo for these. A row
        # that was already cancelling when the app started may have been told.
        self.told: set[str] = {r.client_id for r in self.rows.values() if r.state is CANCELLING}

    # ------------------------------------------------------------ queries

    def __len__(self) -> int:
        return len(self.rows)

    def __contains__(self, client_id: str) -> bool:
        return client_id in self.rows

    def get(self, client_id: str) -> OutboxRow | None:
        return self.rows.get(client_id)

    def values(self) -> list[OutboxRow]:
        return list(self.rows.values())

    def ordered(self) -> list[OutboxRow]:
        """Every open row in compose order."""
        return sorted(self.rows.values(), key=lambda r: r.ord)

    def of_peer(self, peer: str) -> list[OutboxRow]:
        return sorted((r for r in self.rows.values() if r.peer == peer), key=lambda r: r.ord)

    def peers(self) -> set[str]:
        return {r.peer for r in self.rows.values()}

    def failed_ids(self) -> list[str]:
        """Failed rows a retry may help: not those the server refused for good."""
        return [
            r.client_id for r in self.rows.values() if r.state is OutState.FAILED and r.retryable
        ]

    def is_held(self, client_id: str) -> bool:
        return client_id in self.held

    # ------------------------------------------------------------ changes

    def add(self, row: OutboxRow) -> None:
        self.rows[row.client_id] = row

    def pop(self, client_id: str) -> OutboxRow | None:
        return self.rows.pop(client_id, None)

    def retry(self, row: OutboxRow, now_ms: int) -> bool:
        """A failed row goes back to pending, fresh from ``now_ms``; False if it was not failed."""
        if row.state is not OutState.FAILED:
            return False
        row.state = OutState.PENDING
        row.error = None
        row.retryable = True
        row.fresh_since = now_ms
        self.not_before.pop(row.client_id, None)
        return True

    def give_up(self, row: OutboxRow) -> bool:
        """The user gives ``row`` up. True: it may have reached the server, so it is
        cancelling until the server answers; False: it never left, and is given up now."""
        if row.attempts == 0:  # in flight implies an attempt was counted
            self.given_up(row)
            return False
        row.state = CANCELLING
        self.not_before.pop(row.client_id, None)
        return True

    def given_up(self, row: OutboxRow) -> None:
        """Final: never sent again (the server confirmed the tombstone, or never saw it)."""
        row.state = OutState.GIVEN_UP
        self.rows.pop(row.client_id, None)
        self.inflight.pop(row.client_id, None)
        self.cancel_asked.discard(row.client_id)
        self.told.discard(row.client_id)

    def can_undo(self, row: OutboxRow) -> bool:
        """A give-up can be taken back until the server has been told."""
        if row.state is CANCELLING:
            return row.client_id not in self.told
        return row.state is OutState.GIVEN_UP and row.attempts == 0

    def undo_give_up(self, row: OutboxRow) -> None:
        """Back to failed: the message waits for the user's retry, as before the give-up."""
        row.state = OutState.FAILED
        row.error = "given up, then restored"
        row.retryable = True
        self.rows[row.client_id] = row

    def cancels_due(self, now: float) -> list[OutboxRow]:
        """Cancelling rows whose cancel has not gone out in this session; now told."""
        due = [
            r
            for r in self.ordered()
            if r.state is CANCELLING and r.client_id not in self.cancel_asked
        ]
        for row in due:
            self.cancel_asked.add(row.client_id)
            self.told.add(row.client_id)
            self.inflight[row.client_id] = now
        return due

    def fail(self, row: OutboxRow, reason: str, retryable: bool) -> None:
        row.state = OutState.FAILED
        row.error = reason
        row.retryable = retryable
        self.not_before.pop(row.client_id, None)

    def confirm(self, row: OutboxRow, conv: str, seq: int) -> None:
        """The server has the row at ``conv``/``seq``: it is sent (and no longer open)."""
        self.rows.pop(row.client_id, None)
        self.inflight.pop(row.client_id, None)
        self.not_before.pop(row.client_id, None)
        self.cancel_asked.discard(row.client_id)
        self.told.discard(row.client_id)
        row.state = OutState.SENT
        row.error = None
        row.conv = conv
        row.seq = seq

    def forget_inflight(self, client_id: str) -> None:
        self.inflight.pop(client_id, None)

    def clear_inflight(self) -> None:
        """The session ended: nothing is in flight, and cancels go out again in the next."""
        self.inflight.clear()
        self.cancel_asked.clear()

    def oldest_inflight(self) -> float | None:
        return min(self.inflight.values(), default=None)

    def take_rejected(self, client_id: str) -> OutboxRow | None:
        """A reject ends the attempt; returns the row if it is still open and pending."""
        row = self.rows.get(client_id)
        self.inflight.pop(client_id, None)
        if row is None or row.state is not OutState.PENDING:
            return None
        return row

    def defer(self, row: OutboxRow, reason: str, retry_after: float | None, now: float) -> None:
        """A retryable reject: resend no sooner than ``retry_after`` (or a backoff) from ``now``."""
        delay = (
            retry_after
            if retry_after is not None
            else min(MAX_RETRY_DELAY, 0.5 * 2 ** min(row.attempts, 6))
        )
        self.not_before[row.client_id] = now + delay
        row.error = reason

    # ------------------------------------------------------------ decisions

    def expire_on_start(self, now_ms: int, window_s: float) -> list[OutboxRow]:
        """Fail the pending rows that went stale while the app was closed; returns them."""
        window_ms = window_s * 1000
        expired: list[OutboxRow] = []
        for row in self.rows.values():
            if row.state is OutState.PENDING and now_ms - row.fresh_since > window_ms:
                row.state = OutState.FAILED
                row.error = (
                    f"not sent before the app closed, and older than {human_duration(window_s)}"
                )
                row.retryable = True
                expired.append(row)
        return expired

    def expire(
        self, now_ms: int, window_s: float, on_expired: Callable[[OutboxRow, str], None]
    ) -> float:
        """Hand each pending row older than the window to ``on_expired`` (with the reason).

        Rows are judged one at a time, as they are when their turn comes. Returns the
        seconds until the next pending row expires (``inf`` if none).
        """
        wait = math.inf
        window_ms = window_s * 1000
        for row in list(self.rows.values()):
            if row.state is not OutState.PENDING:
                continue
            age = now_ms - row.fresh_since
            if age > window_ms:
                on_expired(row, f"not delivered within {human_duration(window_s)}")
            else:
                wait = min(wait, (window_ms - age) / 1000 + 0.01)
        return wait

    def overdue_ack(self, now: float, ack_timeout: float) -> tuple[str | None, float]:
        """The first in-flight message without an ack in time, if any, and the seconds
        until the next ack is due (among those looked at; ``inf`` if none)."""
        wait = math.inf
        for cid, sent_at in list(self.inflight.items()):
            if now - sent_at > ack_timeout:
                return cid, wait
            wait = min(wait, ack_timeout - (now - sent_at) + 0.01)
        return None, wait

    def refresh_held(self, peer: str, *, hold: bool) -> set[str]:
        """Recompute which of ``peer``'s rows wait behind a failed one (with ``hold``).

        Returns the client_ids whose held flag changed.
        """
        held: set[str] = set()
        if hold:
            blocked = False
            for row in self.of_peer(peer):
                if row.state is OutState.FAILED:
                    blocked = True
                elif blocked:
                    held.add(row.client_id)
        mine = {r.client_id for r in self.rows.values() if r.peer == peer}
        before = self.held & mine
        self.held = (self.held - mine) | held
        return before ^ held

    def ready(self, now: float) -> tuple[list[OutboxRow], float]:
        """The next message of every peer that has none in flight, each now in flight
        with one more attempt counted; and the seconds to wait at most before looking
        again. A cancelling row keeps its peer waiting: its fate decides what follows.
        """
        wait = 1.0
        chosen: list[OutboxRow] = []
        busy = {self.rows[c].peer for c in self.inflight if c in self.rows}
        for row in self.ordered():
            if row.peer in busy:
                continue
            if row.state is CANCELLING:
                busy.add(row.peer)
                continue
            if row.state is not OutState.PENDING:
                continue
            busy.add(row.peer)
            if row.client_id in self.held:
                continue
            not_before = self.not_before.get(row.client_id, 0.0)
            if not_before > now:
                # Order within a peer: nothing later overtakes a message that waits.
                wait = min(wait, not_before - now)
                continue
            row.attempts += 1
            self.inflight[row.client_id] = now
            chosen.append(row)
        return chosen, wait


def human_duration(seconds: float) -> str:
    if seconds >= 120 and seconds % 60 == 0:
        return f"{int(seconds // 60)} min"
    return f"{seconds:g} s"
