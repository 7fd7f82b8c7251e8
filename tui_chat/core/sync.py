"""The sync core: protocol logic with no I/O, fed frames, answering with frames.

Like websockets' own protocol object, :class:`SyncCore` never touches a socket.
A transport hands it decoded frames (:meth:`on_welcome`, :meth:`on_frame`) and
the engine calls :meth:`poll` when a timer is due; the core changes the replica
(store, outbox, events) and queues the frames it wants sent in :attr:`out`,
which the engine drains through the transport. A session ends when a method
returns a :class:`SessionEnd`: nothing here raises to change control flow.

What lives here: the gap rule, acks and rejects, cancels (a truthful give-up),
history and lookup waiters, the epoch, freshness and ack timeouts, and the
"no answer" silence that the status line shows.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from msgspec.structs import replace

from tui_chat import protocol as p
from tui_chat.core.config import SyncSection
from tui_chat.core.models import (
    GROUP_PREFIX,
    PENDING_GROUP_PREFIX,
    EpochReset,
    GapUnfillable,
    OutState,
    ServerNotice,
    Synced,
    group_key,
)
from tui_chat.core.outbox import human_duration
from tui_chat.core.replica import Replica
from tui_chat.core.store import (
    LOGIN_SLOT,
    NOT_MEMBER_REASON,
    OP_KIND,
    RESUME_SLOT,
    OutboxRow,
    create_args,
    initial_members,
)
from tui_chat.core.transport import SILENCE_AFTER, Retry, SessionEnd

log = logging.getLogger(__name__)

GAP_PAGE: Final = 500
GAP_TRIES: Final = 3  # pages in a row that do not fill a gap before it is called unfillable
GAP_RETRY: Final = 0.5  # seconds before the first re-ask, doubling

HistoryCallback = Callable[[p.HistoryPage | None], None]
LookupCallback = Callable[[bool | None], None]


@dataclass(slots=True)
class _Gap:
    wm: int  # the watermark the last request started from
    tries: int = 0  # answers in a row that did not move the watermark
    asked: bool = True  # a request is out
    not_before: float = 0.0  # monotonic time to ask again
    unfillable: bool = False


class SyncCore:
    def __init__(
        self,
        replica: Replica,
        settings: SyncSection,
        *,
        on_online: Callable[[], None],
        on_silence: Callable[[float | None], None],
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    ) -> None:
        self.replica = replica
        self.store = replica.store
        self.outbox = replica.outbox
        self.settings = settings
        self._on_online = on_online
        self._on_silence = on_silence
        self._clock = clock
        self._wall = wall
        self.out: list[p.ClientFrame] = []  # frames to send, drained by the engine
        # Set when a frame in ``out`` announces a message's first transmission: the
        # store must be committed first, so that a give-up after a crash knows it left.
        self.commit_before_send = False
        self.online = False
        self.max_body = 4000
        self._replayed = 0
        self._gaps: dict[str, _Gap] = {}
        self._history: dict[tuple[str, int | None], HistoryCallback] = {}
        self._lookups: dict[str, list[LookupCallback]] = {}
        self._unsent_reads: dict[str, int] = {}  # conv -> seq read while offline
        self._link_silent: float | None = None
        self._silent: float | None = None

    # ------------------------------------------------------------ session

    def hello(self, token: str) -> p.Hello:
        return p.Hello(
            v=p.PROTOCOL_VERSION,
            user=self.replica.user,
            token=token,
            cursors=self.store.watermarks(),
            replay_pages=True,
        )

    def end_session(self) -> None:
        """The link is gone: nothing is in flight, nobody waits for an answer."""
        self.online = False
        self.out.clear()
        self.commit_before_send = False
        self.outbox.clear_inflight()
        self._gaps.clear()
        for callback in self._history.values():
            callback(None)
        self._history.clear()
        for callbacks in self._lookups.values():
            for lookup in callbacks:
                lookup(None)
        self._lookups.clear()
        self._link_silent = None
        self._update_silence(None)
        self.replica.flush()

    def on_welcome(self, welcome: p.Welcome) -> SessionEnd | None:
        self.max_body = welcome.max_body
        self._replayed = 0
        old = self.store.epoch
        if old is None:
            self.store.set_epoch(welcome.epoch)
        elif old != welcome.epoch:
            # Our cursors name another history: drop them and log in again.
            return self._resync(old, welcome.epoch)
        return None

    def _resync(self, old: str, new: str) -> SessionEnd:
        self.store.reset_for_epoch(new)
        self.replica.emit(EpochReset(old, new))
        # After the reset: the groups of the old history are gone with it.
        for peer in self.store.peers():
            self.replica.mark_dirty(peer)
        return SessionEnd("the server's history changed; resyncing", Retry.AT_ONCE)

    def on_undecodable(self, code: str, reason: str) -> None:
        log.warning("undecodable frame from server: %s", reason)
        self.replica.emit(ServerNotice(code, f"undecodable frame from server: {reason}"))

    def on_silence(self, since: float | None) -> None:
        self._link_silent = since
        self._update_silence(self._ack_silence(self._clock()))

    # ------------------------------------------------------------ transport state

    def on_checkpoint(self, state: bytes) -> None:
        """In the open transaction: committed with the messages fed before it."""
        self.store.set_transport_state(RESUME_SLOT, state)
        self.replica.schedule_flush()

    def resume_state(self) -> bytes | None:
        return self.store.transport_state(RESUME_SLOT)

    def save_login(self, state: bytes) -> None:
        self.store.set_transport_state(LOGIN_SLOT, state, durable=True)

    def saved_login(self) -> bytes | None:
        return self.store.transport_state(LOGIN_SLOT)

    # ------------------------------------------------------------ frames

    def on_frame(self, frame: p.ServerFrame) -> SessionEnd | None:
        if isinstance(frame, p.Message):
            self._on_message(frame)
        elif isinstance(frame, p.Ack):
            self._on_ack(frame)
        elif isinstance(frame, p.Reject):
            self._on_reject(frame)
        elif isinstance(frame, p.Synced):
            return self._on_synced(frame)
        elif isinstance(frame, p.HistoryPage):
            self._on_history(frame)
        elif isinstance(frame, p.Receipt):
            self._on_receipt(frame)
        elif isinstance(frame, p.Cancelled):
            self._on_cancelled(frame)
        elif isinstance(frame, p.UserInfo):
            for lookup in self._lookups.pop(frame.user, []):
                lookup(frame.exists)
        elif isinstance(frame, p.Error):
            self.replica.emit(ServerNotice(frame.code, frame.reason))
        # A welcome after login is ignored: nothing in it changes mid-session.
        return None

    def _on_message(self, msg: p.Message) -> None:
        if not self.online:
            self._replayed += 1
        self._apply(msg, replay=not self.online)

    def _apply(self, msg: p.Message, *, replay: bool, show: bool = True) -> None:
        wm = self.replica.apply(msg, replay=replay, show=show)
        if wm is not None and wm < msg.seq:
            # Gap rule: seq is stored but something below it is missing; fetch it.
            self._ask_gap(msg.conv, wm, msg.seq)

    def _on_ack(self, ack: p.Ack) -> None:
        row = self.outbox.get(ack.client_id)
        if row is None:
            self.outbox.forget_inflight(ack.client_id)
            return  # already sent (the echo came first), or not ours to know
        held = self.store.message_view(ack.conv, ack.seq)
        # A create names its group in the ack: the pending key becomes "#" + conv.
        peer = group_key(ack.conv) if row.peer.startswith(PENDING_GROUP_PREFIX) else row.peer
        if (
            self.store.peer_of(ack.conv) not in (None, peer)
            or self.store.conv_of(peer) not in (None, ack.conv)
            or (row.op != "send" and peer != group_key(ack.conv))
            or (held is not None and held.key != (self.replica.user, ack.client_id))
        ):
            # Only a broken or hostile server says this: "sent" would point the message at
            # another conversation, or at a place another message holds. It stays in
            # flight: if no true answer comes, the ack timeout ends the session.
            log.warning(
                "ignoring ack for %r: %r/%s contradicts the history",
                ack.client_id,
                ack.conv,
                ack.seq,
            )
            return
        self.outbox.forget_inflight(ack.client_id)
        # The ack and the row carry everything the message frame would: the server has it.
        self._apply(self._acked_message(row, ack), replay=False)

    def _acked_message(self, row: OutboxRow, ack: p.Ack) -> p.Message:
        """The event the server stored for ``row``, as its echo would show it."""
        me = self.replica.user
        base = p.Message(
            conv=ack.conv,
            seq=ack.seq,
            sender=me,
            client_id=ack.client_id,
            body="",
            ts=ack.ts,
            kind=OP_KIND[row.op],
        )
        if row.op == "send":
            group = row.peer.startswith(GROUP_PREFIX)
            return replace(base, body=row.body, to="" if group else row.peer)
        if row.op == "create":
            args = create_args(row)
            return replace(base, title=args.title, members=initial_members(me, args.members))
        if row.op in ("add", "remove"):
            return replace(base, user=row.arg)
        if row.op == "leave":
            return replace(base, user=me)
        return replace(base, title=row.arg)  # rename

    def _on_reject(self, rej: p.Reject) -> None:
        self.outbox.forget_inflight(rej.client_id)
        row = self.outbox.get(rej.client_id)
        if row is None:
            return
        if rej.code == p.ErrorCode.CANCELLED:
            # The server holds a tombstone for this id: it will never be stored.
            self._given_up(rej.client_id)
        elif row.state is not OutState.PENDING:
            return
        elif rej.code == p.ErrorCode.NOT_MEMBER:
            self.replica.fail(row, NOT_MEMBER_REASON, False)
        elif rej.retryable:
            self.outbox.defer(row, rej.reason, rej.retry_after, self._clock())
            self.store.save_outbox(row)
        else:
            self.replica.fail(row, rej.reason, False)

    def _on_cancelled(self, frame: p.Cancelled) -> None:
        self.outbox.forget_inflight(frame.client_id)
        self._given_up(frame.client_id)

    def _given_up(self, client_id: str) -> None:
        row = self.outbox.get(client_id)
        if row is None or row.state is not OutState.CANCELLING:
            return
        self.outbox.given_up(row)
        self.replica.save(row)

    def _on_synced(self, frame: p.Synced) -> SessionEnd | None:
        behind = [c for c, seq in frame.cursors.items() if seq < self.store.watermark(c)]
        if behind:
            # The server holds less than we do (restored from a backup without a
            # new epoch). Keeping our watermarks would drop its next messages as
            # duplicates, so start over as for a new epoch.
            log.warning("server is behind our cursors for %s; resyncing", behind)
            epoch = self.store.epoch or ""
            return self._resync(epoch, epoch)
        self.replica.flush()
        self.online = True
        for conv, seq in self._unsent_reads.items():
            peer = self.store.peer_of(conv)
            if peer is not None and self.store.joined(peer):
                self.out.append(p.Read(conv=conv, seq=seq))
        self._unsent_reads.clear()
        self._on_online()
        self.replica.emit(Synced(self._replayed))
        return None

    def _on_receipt(self, frame: p.Receipt) -> None:
        self.store.set_read_from_server(frame.conv, frame.user, frame.read_seq)
        peer = self.store.peer_of(frame.conv)
        if peer is not None:
            self.replica.mark_dirty(peer)

    # ------------------------------------------------------------ history

    def _ask_gap(self, conv: str, wm: int, seq: int) -> None:
        gap = self._gaps.get(conv)
        if gap is not None and (gap.unfillable or (gap.asked and gap.wm >= wm)):
            return
        if gap is None:
            gap = self._gaps[conv] = _Gap(wm)
        elif gap.not_before > self._clock():
            return  # poll() asks again when the wait is over
        gap.wm = wm
        gap.asked = True
        before = min(seq, wm + 1 + GAP_PAGE)
        self.out.append(p.HistoryRequest(conv=conv, before=before, after=wm, limit=GAP_PAGE))

    def _on_history(self, page: p.HistoryPage) -> None:
        callback = self._history.pop((page.conv, page.before), None)
        if page.after is None:
            # An older page: below the view, so it is announced as one batch.
            wm = self.store.watermark(page.conv)
            for m in page.messages:
                self._apply(m, replay=True, show=m.seq > wm)
            if callback is not None:
                callback(page)
            return
        if not self.online:
            self._replayed += len(page.messages)
        for m in page.messages:
            self._apply(m, replay=True)
        self._gap_answered(page.conv, page.after)

    def _gap_answered(self, conv: str, after: int) -> None:
        gap = self._gaps.get(conv)
        if gap is None:
            return
        gap.asked = False
        wm = self.store.watermark(conv)
        peer = self.store.peer_of(conv)
        top = self.store.latest_seq(peer or "")
        if top <= wm + 1:
            del self._gaps[conv]  # filled
            return
        if wm > gap.wm:
            gap.tries = 0
            self._ask_gap(conv, wm, top)
            return
        # The server said nothing new about a gap it made: a buggy or hostile server.
        # Asking again at once would loop; wait longer each time, then stop asking.
        gap.tries += 1
        if gap.tries >= GAP_TRIES:
            gap.unfillable = True
            log.warning("gap %r/%s..%s not filled after %d tries", conv, wm, top, gap.tries)
            self.replica.emit(GapUnfillable(peer or "", conv, after=wm, before=top))
        else:
            gap.not_before = self._clock() + GAP_RETRY * 2 ** (gap.tries - 1)

    def request_older(self, conv: str, before: int, limit: int, callback: HistoryCallback) -> None:
        """Ask for the page below ``before``; ``callback`` gets it, or None if the session ends."""
        if not self.online:
            callback(None)
            return
        previous = self._history.pop((conv, before), None)
        if previous is not None:
            previous(None)
        self._history[(conv, before)] = callback
        self.out.append(p.HistoryRequest(conv=conv, before=before, after=None, limit=limit))

    def lookup(self, user: str, callback: LookupCallback) -> None:
        """Does ``user`` exist? ``callback`` gets the answer, or None if it cannot be known."""
        if not self.online:
            callback(None)
            return
        waiting = self._lookups.setdefault(user, [])
        waiting.append(callback)
        if len(waiting) == 1:
            self.out.append(p.Lookup(user=user))

    def mark_read(self, conv: str, seq: int) -> None:
        if self.online:
            self.out.append(p.Read(conv=conv, seq=seq))
        else:
            # Told at the next Synced: the peer's ✓✓ and our other devices need it.
            self._unsent_reads[conv] = max(seq, self._unsent_reads.get(conv, 0))

    # ------------------------------------------------------------ timers

    def poll(self) -> tuple[float, SessionEnd | None]:
        """Expire stale messages, check acks, queue sends and cancels.

        Returns the seconds until something is due, and a SessionEnd if the link is
        to be dropped (an ack overdue).
        """
        now = self._clock()
        window = self.settings.freshness_window
        wait = min(1.0, self.outbox.expire(self._wall(), window, self._expired))
        if not self.online:
            return wait, None
        overdue, ack_wait = self.outbox.overdue_ack(now, self.settings.ack_timeout)
        if overdue is not None:
            # No answer in time: the link is suspect. Reconnect; the message is
            # resent with the same client_id after the catch-up.
            log.info("no answer for %s within %ss", overdue, self.settings.ack_timeout)
            return 0.0, SessionEnd(
                f"no answer from the server within {human_duration(self.settings.ack_timeout)};"
                " reconnecting",
                Retry.PROMPTLY,
            )
        wait = min(wait, ack_wait)
        for row in self.outbox.cancels_due(now):
            self.out.append(p.Cancel(client_id=row.client_id))
        rows, send_wait = self.outbox.ready(now)
        wait = min(wait, send_wait)
        for row in rows:
            # Counted before it leaves: from now on the server may have it.
            self.store.save_outbox(row)
            if row.attempts == 1:
                self.commit_before_send = True
            self.out.append(command_frame(row))
        for conv, gap in self._gaps.items():
            if not gap.asked and not gap.unfillable:
                if gap.not_before <= now:
                    wm = self.store.watermark(conv)
                    self._ask_gap(conv, wm, self.store.latest_seq(self.store.peer_of(conv) or ""))
                else:
                    wait = min(wait, gap.not_before - now)
        silent = self._ack_silence(now)
        self._update_silence(silent)
        if silent is None and self.outbox.inflight:
            wait = min(wait, SILENCE_AFTER)
        return max(wait, 0.0), None

    def _expired(self, row: OutboxRow, reason: str) -> None:
        self.replica.fail(row, reason, True)

    def _ack_silence(self, now: float) -> float | None:
        oldest = self.outbox.oldest_inflight()
        if oldest is None or now - oldest < SILENCE_AFTER:
            return None
        return self._wall() / 1000 - (now - oldest)

    def _update_silence(self, ack_silent: float | None) -> None:
        known = [t for t in (self._link_silent, ack_silent) if t is not None]
        silent = min(known) if known else None
        if (silent is None) != (self._silent is None):
            self._silent = silent
            self._on_silence(silent)


def command_frame(row: OutboxRow) -> p.ClientFrame:
    """The frame that asks the server for what ``row`` holds."""
    cid = row.client_id
    conv = row.peer[len(GROUP_PREFIX) :]
    if row.op == "send":
        if row.peer.startswith(GROUP_PREFIX):
            return p.Send(client_id=cid, conv=conv, body=row.body)
        return p.Send(client_id=cid, to=row.peer, body=row.body)
    if row.op == "create":
        args = create_args(row)
        return p.Create(client_id=cid, title=args.title, members=args.members)
    if row.op == "add":
        return p.Add(client_id=cid, conv=conv, user=row.arg or "")
    if row.op == "remove":
        return p.Remove(client_id=cid, conv=conv, user=row.arg or "")
    if row.op == "leave":
        return p.Leave(client_id=cid, conv=conv)
    return p.Rename(client_id=cid, conv=conv, title=row.arg or "")
