"""Talking to a real server the way a client does: accounts, websockets, frames, the database.

Every wait is bounded: helpers take a ``within`` (seconds) and fail the test instead of
hanging. They use ``asyncio.timeout`` rather than ``asyncio.wait_for``: on Python 3.11
``wait_for`` can swallow a cancellation that races with its result, leaving a cancelled
reader running.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, cast

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tui_chat.protocol import (
    PROTOCOL_VERSION,
    Ack,
    Hello,
    Message,
    Receipt,
    Reject,
    Send,
    ServerFrame,
    Synced,
    Welcome,
    _Frame,
    decode_server,
    encode,
)
from tui_chat.server import db
from tui_chat.server.app import ChatServer

USERS: tuple[str, ...] = ("alice", "bob", "carol")
# Default bound for one expected frame. Generous for a loaded CI box, tiny for a passing test.
STEP = 3.0
# How long "nothing arrives" is watched for.
QUIET = 0.3

F = TypeVar("F", bound=ServerFrame)


# ---------------------------------------------------------------- accounts and database


# A server's store: the SQLite file, or the URL of a PostgreSQL store (``postgresql://``).
StoreRef = Path | str


def is_pg(store: StoreRef) -> bool:
    return isinstance(store, str) and store.startswith("postgresql://")


def open_store(store: StoreRef) -> sqlite3.Connection:
    """An admin connection to the store: SQLite's, or PostgreSQL's speaking the same subset."""
    if is_pg(store):
        from tui_chat.server.nodes import open_store_conn

        return cast(sqlite3.Connection, open_store_conn(str(store)))
    conn, _epoch = db.open_db(Path(store))
    return conn


def make_users(db_path: StoreRef, *names: str) -> dict[str, str]:
    """Create ``names`` in the server's store at ``db_path``; return name → token."""
    conn = open_store(db_path)
    try:
        return {name: db.add_user(conn, name) for name in names}
    finally:
        conn.close()


def db_rows(db_path: StoreRef, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """Run a read-only query straight against the server's store (SQLite's WAL allows it live;
    on PostgreSQL the same SQLite-dialect statement is translated as the server's are)."""
    if is_pg(db_path):
        import psycopg

        from tui_chat.server.pg.conn import translate

        with psycopg.connect(str(db_path), autocommit=True) as pg:
            return [tuple(r) for r in pg.execute(translate(sql), tuple(params) or None)]
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=10)
    try:
        return [tuple(r) for r in conn.execute(sql, params).fetchall()]
    finally:
        conn.close()


# ---------------------------------------------------------------- in-process server


@dataclass
class RunningServer:
    """A started in-process server and what a test needs to talk to it."""

    server: ChatServer
    url: str
    # The SQLite file, or the postgresql:// URL of its store (see StoreRef).
    db_path: Any
    tokens: dict[str, str]

    @property
    def port(self) -> int:
        return self.server.port


ServerFactory = Callable[..., Awaitable[RunningServer]]


# ---------------------------------------------------------------- client helpers


@dataclass
class Login:
    """What a successful hello got: the socket, welcome, the replayed messages, synced.

    Unpacks as ``ws, welcome, replayed, synced``. Read positions replayed before ``synced``
    are in ``receipts``, apart from the messages.
    """

    ws: ClientConnection
    welcome: Welcome
    replayed: list[Message]
    synced: Synced
    receipts: list[Receipt] = field(default_factory=list)

    def __iter__(self) -> Iterator[Any]:
        return iter((self.ws, self.welcome, self.replayed, self.synced))


async def connect_ws(url: str, **kwargs: Any) -> ClientConnection:
    """Open a websocket with no proxy and a bounded handshake.

    ``max_queue`` defaults to unbounded: tests often leave frames unread, and a client whose
    receive queue is full stops reading the socket, so its closing handshake would stall for
    ``close_timeout``. Pass ``max_queue=16`` (websockets' default) to model a slow reader.
    """
    kwargs.setdefault("proxy", None)
    kwargs.setdefault("open_timeout", 5)
    kwargs.setdefault("close_timeout", 2)
    kwargs.setdefault("max_queue", None)
    return await connect(url, **kwargs)


async def send_frame(ws: ClientConnection, frame: _Frame) -> None:
    await ws.send(encode(frame).decode(), text=True)


async def send_raw(ws: ClientConnection, data: str | bytes) -> None:
    await ws.send(data)


async def recv_frame(ws: ClientConnection, within: float = STEP) -> ServerFrame:
    """The next frame, decoded; fails the test if none arrives in ``within`` seconds."""
    try:
        async with asyncio.timeout(within):
            raw = await ws.recv()
    except TimeoutError:
        pytest.fail(f"no frame within {within} s")
    return decode_server(raw)


async def recv_until(
    ws: ClientConnection, kind: type[F], within: float = STEP
) -> tuple[F, list[ServerFrame]]:
    """Read until a frame of type ``kind``; return it and the frames skipped before it."""
    skipped: list[ServerFrame] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        remaining = deadline - loop.time()
        if remaining <= 0:
            pytest.fail(f"no {kind.__name__} within {within} s; got {skipped!r}")
        frame = await recv_frame(ws, remaining)
        if isinstance(frame, kind):
            return frame, skipped
        skipped.append(frame)


async def expect_closed(ws: ClientConnection, within: float = STEP) -> tuple[int | None, list[Any]]:
    """Read until the connection closes; return the close code received and frames read.

    The code is the one in the server's close frame (``None`` if the TCP connection just
    dropped without one).
    """
    frames: list[Any] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    try:
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                pytest.fail(f"connection still open after {within} s; got {frames!r}")
            async with asyncio.timeout(remaining):
                raw = await ws.recv()
            try:
                frames.append(decode_server(raw))
            except Exception:
                frames.append(raw)
    except TimeoutError:
        pytest.fail(f"connection still open after {within} s; got {frames!r}")
    except ConnectionClosed as exc:
        return (exc.rcvd.code if exc.rcvd is not None else None), frames


async def assert_silent(ws: ClientConnection, within: float = QUIET) -> None:
    """Fail if any frame arrives within ``within`` seconds."""
    try:
        async with asyncio.timeout(within):
            raw = await ws.recv()
    except TimeoutError:
        return
    pytest.fail(f"unexpected frame {raw!r}")


async def login(
    url: str,
    user: str,
    token: str,
    cursors: dict[str, int] | None = None,
    *,
    within: float = STEP,
    **connect_kwargs: Any,
) -> Login:
    """Connect, say hello, and read welcome, the replay and ``synced``.

    Fails the test if anything but messages and receipts arrives (an error frame, a close)
    before ``synced``.
    ``connect_kwargs`` go to :func:`connect_ws`.
    """
    ws = await connect_ws(url, **connect_kwargs)
    try:
        await send_frame(
            ws, Hello(v=PROTOCOL_VERSION, user=user, token=token, cursors=cursors or {})
        )
        welcome = await recv_frame(ws, within)
        assert isinstance(welcome, Welcome), f"expected welcome, got {welcome!r}"
        synced, before = await recv_until(ws, Synced, within)
        messages = [f for f in before if isinstance(f, Message)]
        receipts = [f for f in before if isinstance(f, Receipt)]
        assert len(messages) + len(receipts) == len(before), before
    except BaseException:
        await ws.close()
        raise
    return Login(ws, welcome, messages, synced, receipts)


async def send_message(
    ws: ClientConnection, client_id: str, to: str, body: str = "hi", within: float = STEP
) -> Ack | Reject:
    """Send one message and return its ack or reject (other frames before it are dropped)."""
    await send_frame(ws, Send(client_id=client_id, to=to, body=body))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        frame = await recv_frame(ws, max(0.0, deadline - loop.time()))
        if isinstance(frame, Ack | Reject) and frame.client_id == client_id:
            return frame


async def command(ws: ClientConnection, frame: _Frame, within: float = STEP) -> Ack | Reject:
    """Send a frame answered by ack or reject (``send``, ``create``, ``add``, ``remove``,
    ``leave``, ``rename``) and return the answer with its ``client_id``; other frames before
    it are dropped."""
    client_id = getattr(frame, "client_id")  # noqa: B009 - every such frame has one
    await send_frame(ws, frame)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        got = await recv_frame(ws, max(0.0, deadline - loop.time()))
        if isinstance(got, Ack | Reject) and got.client_id == client_id:
            return got


async def recv_messages(ws: ClientConnection, count: int, within: float = STEP) -> list[Message]:
    """The next ``count`` message frames (other frames in between are skipped)."""
    out: list[Message] = []
    for _ in range(count):
        msg, _skipped = await recv_until(ws, Message, within)
        out.append(msg)
    return out
