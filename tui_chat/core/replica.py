"""The local replica: the store and the open outbox, with every change emitted once.

:class:`Replica` is where a change to what the user sees happens: a message
stored, an outbox row moving to another state, a conversation summary to
repaint. The sync core (frames) and the engine (commands) both change things
only through it, so each change is stored and announced in one place.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Final

from tui_chat import protocol as p
from tui_chat.core.mentions import mentions
from tui_chat.core.models import (
    PENDING_GROUP_PREFIX,
    ChatMessage,
    ConversationChanged,
    ConversationReplaced,
    DeliveredAnyway,
    Event,
    MessageAdded,
    MessageChanged,
    OutState,
    group_key,
    is_group_key,
)
from tui_chat.core.outbox import Outbox
from tui_chat.core.store import NOT_MEMBER_REASON, LocalStore, OutboxRow

_K = p.MessageKind

log = logging.getLogger(__name__)

FLUSH_DELAY: Final = 0.02  # seconds incoming writes may wait to share one commit


class Replica:
    def __init__(
        self, store: LocalStore, outbox: Outbox, emit: Callable[[Event], None], *, hold: bool
    ) -> None:
        self.store = store
        self.outbox = outbox
        self.user = store.user
        self.emit = emit
        self.hold = hold  # on_failure = "hold": later messages wait behind a failed one
        self._dirty_peers: set[str] = set()
        self._flush_handle: asyncio.TimerHandle | None = None

    # ------------------------------------------------------------ views

    def view(self, row: OutboxRow) -> ChatMessage:
        return LocalStore.outbox_view(row, self.user, held=self.outbox.is_held(row.client_id))

    def message_view(self, msg: p.Message) -> ChatMessage:
        own = msg.sender == self.user
        peer = group_key(msg.conv) if msg.to == "" else (msg.to if own else msg.sender)
        return ChatMessage(
            peer=peer,
            sender=msg.sender,
            client_id=msg.client_id,
            body=msg.body,
            ts=msg.ts,
            own=own,
            seq=msg.seq,
            conv=msg.conv,
            state=OutState.SENT if own else None,
            kind=msg.kind,
            user=msg.user,
            title=msg.title,
            mentions_me=not own and msg.kind == _K.TEXT and mentions(msg.body, self.user),
            written=self.store.written_at(msg.client_id) if own else None,
        )

    # ------------------------------------------------------------ outbox rows

    def add(self, row: OutboxRow) -> ChatMessage:
        """A new row: committed before anything else happens to it, then shown."""
        self.store.add_outbox(row)
        self.outbox.add(row)
        self.refresh_held(row.peer, emit=False)
        view = self.view(row)
        self.emit(MessageAdded(view))
        self.mark_dirty(row.peer)
        if is_group_key(row.peer) and not self.store.joined(row.peer):
            # The store already knows: the server would say not_member.
            self.fail(row, NOT_MEMBER_REASON, False)
            view = self.view(row)
        return view

    def save(self, row: OutboxRow, *, durable: bool = True) -> None:
        """Store a row's new state and show it (and who is now held behind it)."""
        self.store.save_outbox(row, durable=durable)
        self.emit(MessageChanged(self.view(row)))
        if (
            row.state is OutState.GIVEN_UP
            and row.op == "create"
            and row.peer.startswith(PENDING_GROUP_PREFIX)
        ):
            # Given up before the server stored it: the pending group is gone.
            self.store.drop_pending_group(row.peer)
            self._dirty_peers.discard(row.peer)
            self.emit(ConversationReplaced(row.peer, None))
            return
        self.mark_dirty(row.peer)
        self.refresh_held(row.peer)

    def fail_unjoined(self, peer: str, *, keep: str = "") -> None:
        """The user is no longer in the group ``peer``: its queued rows that have not left
        fail now, for that reason (one in flight gets the server's own answer)."""
        for row in self.outbox.of_peer(peer):
            if (
                row.state is OutState.PENDING
                and row.client_id != keep
                and row.client_id not in self.outbox.inflight
            ):
                self.fail(row, NOT_MEMBER_REASON, False)

    def replace_pending(self, row: OutboxRow, conv: str) -> str:
        """The server stored my create as ``conv``: the pending group becomes "#" + conv."""
        old = row.peer
        new = self.store.replace_pending_group(old, conv)
        for other in self.outbox.values():
            if other.peer == old:
                other.peer = new
        if old in self._dirty_peers:
            self._dirty_peers.discard(old)
        self.emit(ConversationReplaced(old, new))
        self.mark_dirty(new)
        return new

    def fail(self, row: OutboxRow, reason: str, retryable: bool) -> None:
        self.outbox.fail(row, reason, retryable)
        self.save(row)

    def refresh_held(self, peer: str, *, emit: bool = True) -> None:
        changed = self.outbox.refresh_held(peer, hold=self.hold)
        if emit:
            for cid in changed:
                row = self.outbox.get(cid)
                if row is not None:
                    self.emit(MessageChanged(self.view(row)))

    # ------------------------------------------------------------ incoming

    def apply(self, msg: p.Message, *, replay: bool, show: bool = True) -> int | None:
        """Store one message from the server; returns the watermark after it, or None
        when the message was not stored (a duplicate, or one that contradicts the
        history). ``show=False``: an older page, announced by the caller as one batch.
        """
        if msg.to == "":
            return self._apply_group(msg, replay=replay, show=show)
        own = msg.sender == self.user
        if not own and msg.to != self.user:
            # %r: conv is the server's text, and headless logs to a terminal (stderr).
            log.warning("ignoring message %r/%s not addressed to us", msg.conv, msg.seq)
            return None
        peer = msg.to if own else msg.sender
        store = self.store
        if store.peer_of(msg.conv) not in (None, peer):
            log.warning("ignoring message %r/%s: conversation of another peer", msg.conv, msg.seq)
            return None
        if store.conv_of(peer) not in (None, msg.conv):
            # A pair has one conversation (until an epoch reset clears it): another id would
            # re-point the peer's history and hand its watermark to the wrong conversation.
            log.warning("ignoring message %r/%s: not this peer's conversation", msg.conv, msg.seq)
            return None
        store.ensure_conversation(peer, msg.conv)
        if msg.seq <= store.watermark(msg.conv):
            return None  # already held: a duplicate
        if not store.insert_message(
            msg.conv, msg.seq, msg.sender, msg.to, msg.client_id, msg.body, msg.ts
        ):
            return None
        wm = store.advance_watermark(msg.conv)
        self.mark_dirty(peer)
        row = self._own_row(msg.client_id) if own else None
        if row is not None:
            self._confirm(row, msg)
        elif show:
            self.emit(MessageAdded(self.message_view(msg), replay=replay))
        return wm

    def _apply_group(self, msg: p.Message, *, replay: bool, show: bool) -> int | None:
        """A group event: stored if the group is ours, or if this event begins our view of
        it (a created or added-of-me carrying the member list that names us)."""
        store = self.store
        own = msg.sender == self.user
        row = self._own_row(msg.client_id) if own else None
        if (
            row is not None
            and row.op == "create"
            and msg.kind == _K.CREATED
            and row.peer.startswith(PENDING_GROUP_PREFIX)
        ):
            self.replace_pending(row, msg.conv)
        key = group_key(msg.conv)
        begins = (
            msg.members is not None
            and self.user in msg.members
            and (msg.kind == _K.CREATED or (msg.kind == _K.ADDED and msg.user == self.user))
        )
        known = store.peer_of(msg.conv)
        if known is None and not begins:
            log.warning("ignoring message %r/%s of a group we are not in", msg.conv, msg.seq)
            return None
        if known not in (None, key):
            log.warning("ignoring message %r/%s: conversation of a peer", msg.conv, msg.seq)
            return None
        if msg.kind not in _K.ALL:
            log.warning("ignoring message %r/%s of unknown kind %r", msg.conv, msg.seq, msg.kind)
            return None
        store.ensure_conversation(key, msg.conv)
        if begins:
            store.begin_view(msg.conv, msg.seq)
        if msg.seq <= store.watermark(msg.conv):
            return None  # already held: a duplicate
        if not store.insert_message(
            msg.conv,
            msg.seq,
            msg.sender,
            "",
            msg.client_id,
            msg.body,
            msg.ts,
            kind=msg.kind,
            user=msg.user,
            title=msg.title,
            members=msg.members,
        ):
            return None
        wm = store.advance_watermark(msg.conv)
        self.mark_dirty(key)
        was_in, now_in = True, True
        if msg.kind != _K.TEXT:
            was_in, now_in = store.recompute_group(key, msg.conv)
        if row is not None:
            self._confirm(row, msg)
        elif show:
            self.emit(MessageAdded(self.message_view(msg), replay=replay))
        if was_in and not now_in:
            self.fail_unjoined(key)
        return wm

    def _own_row(self, client_id: str) -> OutboxRow | None:
        """The outbox row of an own message that came back, unless it is already sent."""
        row = self.outbox.get(client_id)
        if row is None:
            # Not open: sent from another device (no row), or given up by an older
            # client that did not wait for the server's word.
            row = self.store.outbox_row(client_id)
            if row is None or row.state is OutState.SENT:
                return None
        return row

    def _confirm(self, row: OutboxRow, msg: p.Message) -> None:
        """The server has my message: the row is sent, shown once, and the peer moves on."""
        before = row.state
        self.outbox.confirm(row, msg.conv, msg.seq)
        self.store.save_outbox(row)
        self.refresh_held(row.peer)
        view = self.message_view(msg)
        self.emit(MessageChanged(view))
        if before in (OutState.CANCELLING, OutState.GIVEN_UP):
            self.emit(DeliveredAnyway(view))

    # ------------------------------------------------------------ flushing

    def mark_dirty(self, peer: str) -> None:
        self._dirty_peers.add(peer)
        self.schedule_flush()

    def schedule_flush(self) -> None:
        if self._flush_handle is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self.flush()
                return
            self._flush_handle = loop.call_later(FLUSH_DELAY, self.flush)

    def flush(self) -> None:
        """Commit what waits, then repaint the summaries of the conversations it touched."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        self.store.commit()
        dirty, self._dirty_peers = self._dirty_peers, set()
        open_rows = self.outbox.values()
        for peer in sorted(dirty):
            self.emit(ConversationChanged(self.store.summary(peer, open_rows)))
