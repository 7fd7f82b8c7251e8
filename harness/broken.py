"""Deliberately broken variants of the server and the engine: proof that the checker bites.

Nothing here is reachable from the product: the variants are monkeypatches applied only by
the testing entry points below, so that ``tests/robustness/test_checker.py`` can run the
chaos harness against each and assert that the checker reports it.

Server variants (``python -m harness.broken server VARIANT serve --db ... ``):

``ack-before-commit``
    Every ``--every``-th batch of sends (default 3) is acked and fanned out *before* its
    transaction commits, and the process then dies (as in a crash or SIGKILL in that window),
    so the acked messages are not in the database.
``lossy-fanout``
    Not a bug but a fault a correct client must survive: every ``--every``-th live message
    frame is not delivered to the recipient's connections (the sender still gets its ack).
    The recipient sees a gap at the next message of that conversation and must fetch it.
``alter-body``
    Every ``--every``-th send is stored (and acked, and fanned out) with another body. Every
    view then agrees; only a comparison with what was composed sees it.
``truncate-body``
    The same, with the body cut to half its length.
``wrong-recipient``
    Every ``--every``-th send is filed under another user than the one it was sent to.
``fanout-to-removed``
    Groups: live events keep going to everyone who was ever a member of the group, so a
    removed (or departed) member goes on receiving what was said after their removal.
    Storage, replay and history are untouched.
``skip-group-seq``
    Groups: every ``--every``-th text in a group is stored one seq further than it should
    be, leaving a hole in the group's stream that no history request can fill.

Client variants (``python -m harness.chaos_client --broken VARIANT --config ...``):

``new-client-id``
    Every resend of a message goes out with a fresh client_id, so the server cannot tell
    it from a new message.
``skip-gap``
    The gap rule is ignored: a message above ``wm + 1`` is accepted, the watermark jumps over
    the hole, and the missing range is never fetched.
``drop-outbox-row``
    A message that fails is deleted from the outbox instead of kept as failed: it vanishes.
``spontaneous-give-up``
    Every third composed message is given up by the client itself, a moment after it was
    composed, without the user asking.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import threading
import time
from typing import Any, Final

import msgspec

from tui_chat import protocol as p

SERVER_VARIANTS: Final = (
    "ack-before-commit",
    "lossy-fanout",
    "alter-body",
    "truncate-body",
    "wrong-recipient",
    "fanout-to-removed",
    "skip-group-seq",
)
CLIENT_VARIANTS: Final = ("new-client-id", "skip-gap", "drop-outbox-row", "spontaneous-give-up")
# Exit status of a server that died on purpose after acking an uncommitted batch.
CRASH_STATUS: Final = 70


# ---------------------------------------------------------------- server variants


class _NoCommit:
    """A connection stand-in that runs every statement but the final COMMIT."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Any = ()) -> sqlite3.Cursor:
        if sql.strip().upper() == "COMMIT":
            return self._conn.execute("SELECT 1")
        return self._conn.execute(sql, params)


def _ack_before_commit(every: int) -> None:
    from tui_chat.server import writer as w

    original = w.Writer._commit
    sends = 0

    def commit(
        self: w.Writer, conn: sqlite3.Connection, batch: list[w.Request]
    ) -> list[tuple[w.Request, w.Outcome]]:
        nonlocal sends
        if not any(isinstance(r, w.SendRequest) for r in batch):
            return original(self, conn, batch)
        sends += 1
        if sends % every:
            return original(self, conn, batch)
        # The broken order: results (acks, fan-out) go out while the transaction is open...
        results = original(self, _NoCommit(conn), batch)  # type: ignore[arg-type]
        self._loop.call_soon_threadsafe(self._deliver, results)
        # ...and the process dies before the COMMIT (SQLite rolls the transaction back).
        time.sleep(0.5)
        sys.stdout.flush()
        os._exit(CRASH_STATUS)

    w.Writer._commit = commit  # type: ignore[method-assign]


def _lossy_fanout(every: int) -> None:
    from tui_chat.server.app import ChatServer

    original = ChatServer._fan_out
    live = 0

    def fan_out(
        self: ChatServer, accounts: set[int], data: bytes, conv: str | None, seq: int
    ) -> None:
        nonlocal live
        if conv is None:
            original(self, accounts, data, conv, seq)
            return
        live += 1
        if live % every:
            original(self, accounts, data, conv, seq)
            return
        sender = msgspec.json.decode(data, type=p.Message).sender
        # Sessions are keyed by account id; the sender's is the one whose sessions carry
        # the sender's name.
        keep = {a for a in accounts if any(s.user == sender for s in self._sessions.get(a, ()))}
        names = sorted({s.user for a in accounts - keep for s in self._sessions.get(a, ())})
        print(f"lossy-fanout: dropped {conv}/{seq} for {names}", flush=True)
        original(self, keep, data, conv, seq)

    ChatServer._fan_out = fan_out  # type: ignore[method-assign]


def _rewrite_sends(every: int, rewrite: Any) -> None:
    """Every ``every``-th send frame the server accepts is first passed through ``rewrite``."""
    from tui_chat.server.app import ChatServer
    from tui_chat.server.session import Session

    original = ChatServer._on_send
    sends = 0

    def on_send(self: ChatServer, session: Session, frame: p.Send) -> None:
        nonlocal sends
        sends += 1
        if sends % every == 0:
            changed = rewrite(session.user, frame)
            print(f"broken server: {frame.client_id} stored as {changed!r}", flush=True)
            frame = changed
        original(self, session, frame)

    ChatServer._on_send = on_send  # type: ignore[method-assign]


def _fanout_to_removed() -> None:
    from tui_chat.server.app import ChatServer
    from tui_chat.server.writer import Stored

    original = ChatServer._fan_out_stored
    ever: dict[str, set[int]] = {}

    def fan_out_stored(self: ChatServer, outcome: Stored) -> None:
        original(self, outcome)
        if outcome.to:
            return  # a direct conversation
        # Everyone this group ever fanned out to (a removal's outcome still names the one
        # removed): the broken server forgets that membership ended.
        former = ever.setdefault(outcome.conv, set())
        gone = former - set(outcome.members)
        former |= set(outcome.members)
        if gone and outcome.kind != "added":
            # The same frame the members got (the ``added`` copies differ; skip them).
            data = p.encode(
                p.Message(
                    conv=outcome.conv,
                    seq=outcome.seq,
                    sender=outcome.sender,
                    client_id=outcome.client_id,
                    body=outcome.body,
                    ts=outcome.ts,
                    kind=outcome.kind,
                    user=outcome.user,
                    title=outcome.title,
                )
            )
            print(f"fanout-to-removed: {outcome.conv}/{outcome.seq} to {sorted(gone)}", flush=True)
            self._fan_out(gone, data, outcome.conv, outcome.seq)

    ChatServer._fan_out_stored = fan_out_stored  # type: ignore[method-assign]


def _skip_group_seq(every: int) -> None:
    from tui_chat.server import writer as w

    original = w.Writer._append
    texts = 0

    def append(self: w.Writer, conn: sqlite3.Connection, group: Any, req: Any, touched: Any,
               **kwargs: Any) -> tuple[int, int]:  # fmt: skip
        nonlocal texts
        if kwargs.get("kind") == "text":
            texts += 1
            if texts % every == 0:
                group.last += 1  # the seq below is never stored
                print(f"skip-group-seq: {group.id}/{group.last} skipped", flush=True)
        return original(self, conn, group, req, touched, **kwargs)

    w.Writer._append = append  # type: ignore[method-assign]


def _user_names(db_path: str | None) -> list[str]:
    if db_path is None:
        return []
    conn = sqlite3.connect(db_path)
    try:
        return sorted(str(r[0]) for r in conn.execute("SELECT name FROM users"))
    finally:
        conn.close()


def apply_server(variant: str, every: int = 3, db_path: str | None = None) -> None:
    if variant == "ack-before-commit":
        _ack_before_commit(every)
    elif variant == "lossy-fanout":
        _lossy_fanout(every)
    elif variant == "alter-body":
        _rewrite_sends(
            every, lambda _u, f: msgspec.structs.replace(f, body=f.body + " (as the server saw it)")
        )
    elif variant == "truncate-body":
        _rewrite_sends(
            every, lambda _u, f: msgspec.structs.replace(f, body=f.body[: max(1, len(f.body) // 2)])
        )
    elif variant == "wrong-recipient":
        users = _user_names(db_path)

        def misfile(sender: str, frame: p.Send) -> p.Send:
            others = [u for u in users if u not in (sender, frame.to)]
            return msgspec.structs.replace(frame, to=others[0]) if others else frame

        _rewrite_sends(every, misfile)
    elif variant == "fanout-to-removed":
        _fanout_to_removed()
    elif variant == "skip-group-seq":
        _skip_group_seq(every)
    else:
        raise ValueError(f"unknown server variant {variant!r}; expected one of {SERVER_VARIANTS}")


# ---------------------------------------------------------------- client variants


def _new_client_id() -> None:
    from tui_chat.core.engine import new_client_id
    from tui_chat.core.ws_transport import WebSocketTransport

    original = WebSocketTransport.send
    seen: set[str] = set()
    lock = threading.Lock()

    async def send(self: WebSocketTransport, frame: p.ClientFrame) -> bool:
        if isinstance(frame, p.Send):
            with lock:
                again = frame.client_id in seen
                seen.add(frame.client_id)
            if again:
                frame = msgspec.structs.replace(frame, client_id=new_client_id())
        return await original(self, frame)

    WebSocketTransport.send = send  # type: ignore[method-assign]


def _skip_gap() -> None:
    from tui_chat.core.store import LocalStore
    from tui_chat.core.sync import SyncCore

    def ask_gap(self: SyncCore, conv: str, wm: int, seq: int) -> None:
        return None

    def advance_watermark(self: LocalStore, conv: str) -> int:
        top = self._top_seq(conv)
        if top > self._wm.get(conv, 0):
            self._begin()
            self._db.execute("UPDATE conversations SET wm=? WHERE conv=?", (top, conv))
            self._wm[conv] = top
        return self._wm.get(conv, 0)

    SyncCore._ask_gap = ask_gap  # type: ignore[method-assign]
    LocalStore.advance_watermark = advance_watermark  # type: ignore[method-assign]


def _drop_outbox_row() -> None:
    from tui_chat.core.models import OutState
    from tui_chat.core.store import LocalStore, OutboxRow

    original = LocalStore.save_outbox

    def save_outbox(self: LocalStore, row: OutboxRow, *, durable: bool = False) -> None:
        if row.state is OutState.FAILED:
            self._begin()
            self._db.execute("DELETE FROM outbox WHERE client_id=?", (row.client_id,))
            self.commit()
            return
        original(self, row, durable=durable)

    LocalStore.save_outbox = save_outbox  # type: ignore[method-assign]


def _spontaneous_give_up() -> None:
    import asyncio
    import contextlib

    from tui_chat.core.engine import Engine
    from tui_chat.core.models import ChatMessage

    original = Engine.send
    composed = 0

    def send(self: Engine, peer: str, body: str) -> ChatMessage:
        nonlocal composed
        message = original(self, peer, body)
        composed += 1
        if composed % 3 == 0:

            def give_up() -> None:
                with contextlib.suppress(KeyError, ValueError):
                    self.give_up(message.client_id)

            asyncio.get_running_loop().call_later(0.05, give_up)
        return message

    Engine.send = send  # type: ignore[method-assign]


def apply_client(variant: str) -> None:
    if variant == "new-client-id":
        _new_client_id()
    elif variant == "skip-gap":
        _skip_gap()
    elif variant == "drop-outbox-row":
        _drop_outbox_row()
    elif variant == "spontaneous-give-up":
        _spontaneous_give_up()
    else:
        raise ValueError(f"unknown client variant {variant!r}; expected one of {CLIENT_VARIANTS}")


# ---------------------------------------------------------------- entry point


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m harness.broken",
        description="run tui-chat-server with a deliberately broken variant (testing only)",
    )
    sub = parser.add_subparsers(dest="what", required=True)
    server = sub.add_parser("server")
    server.add_argument("variant", choices=SERVER_VARIANTS)
    server.add_argument("--every", type=int, default=3)
    server.add_argument("rest", nargs=argparse.REMAINDER, help="tui-chat-server arguments")
    args = parser.parse_args(argv)
    db_path = args.rest[args.rest.index("--db") + 1] if "--db" in args.rest else None
    apply_server(args.variant, args.every, db_path)
    from tui_chat.server.cli import main as server_main

    rest = [a for a in args.rest if a != "--"]
    return server_main(rest)


if __name__ == "__main__":
    raise SystemExit(main())
