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
from tui_chat.core.models import (
    ChatMessage,
    ConversationChanged,
    DeliveredAnyway,
    Event,
    MessageAdded,
    MessageChanged,
    OutState,
)
from tui_chat.core.outbox import Outbox
from tui_chat.core.store import LocalStore, OutboxRow

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
        return ChatMessage(
            peer=msg.to if own else msg.sender,
            sender=msg.sender,
            client_id=msg.client_id,
            body=msg.body,
            ts=msg.ts,
            own=own,
            seq=msg.seq,
            conv=msg.conv,
            state=OutState.SENT if own else None,
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
        return view

    def save(self, row: OutboxRow, *, durable: bool = True) -> None:
        """Store a row's new state and show it (and who is now held behind it)."""
        self.store.save_outbox(row, durable=durable)
        self.emit(MessageChanged(self.view(row)))
        self.mark_dirty(row.peer)
        self.refresh_held(row.peer)

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
