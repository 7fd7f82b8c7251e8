"""Fixtures for every test: real servers (in-process or a subprocess), proxies, engines.

Everything talks real websockets on 127.0.0.1 with ephemeral ports and temp databases, and
everything a fixture starts is stopped at teardown. Helpers are plain modules, imported by
name: :mod:`tests.support.wire` (accounts, frames, database rows), :mod:`tests.support.engines`
(in-process engines), :mod:`tests.support.headless` (``tui-chat headless`` processes),
:mod:`tests.support.ui` (the app under Pilot), and from the harness :mod:`harness.waits`
(the one bounded wait) and :mod:`harness.clientconf` (the fast config and its TOML file).

Fixtures
    ``chat_server``         a started in-process :class:`ChatServer` with users alice, bob and
                            carol, as a :class:`RunningServer` (``.url``, ``.tokens``, ...).
    ``chat_server_factory`` ``await make(config=..., users=...)`` for servers with custom
                            limits; all are stopped at teardown.
    ``server_process``      a :class:`ServerProcess` (real ``tui-chat-server serve``) with the
                            same three users, killed at teardown.
    ``proxy``               a :class:`FaultProxy` in front of ``chat_server``.
    ``engines``             an :class:`Engines` that starts in-process engines and stops them.
    ``processes``           a list to put started :class:`HeadlessProc` in; killed at teardown.
    ``pg_cluster``          (session) a throwaway PostgreSQL cluster on a free loopback port
                            (:class:`harness.pgredis.PgCluster`); skipped if the binaries are
                            missing. ``pg_url`` is a new empty database of it for one test.
    ``redis_server``        (session) a throwaway redis-server on a free loopback port
                            (:class:`harness.pgredis.RedisServer`); ``bus_url`` its URL,
                            started again first if a test left it down.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path

import pytest

from harness.faultproxy import FaultProxy
from harness.pgredis import PgCluster, RedisServer, pg_missing, redis_missing
from harness.serverproc import ServerProcess
from tests.support.engines import Engines
from tests.support.headless import HeadlessProc
from tests.support.wire import USERS, RunningServer, ServerFactory, make_users
from tui_chat.server.app import ChatServer
from tui_chat.server.config import ServerConfig


@pytest.fixture
def store_kind() -> str:
    """Which store in-process servers use: "sqlite" here; the protocol's server tests
    (tests/functional/server) run with "postgresql" as well (a node with Redis as its bus)."""
    return "sqlite"


@pytest.fixture
async def chat_server_factory(
    tmp_path: Path, store_kind: str, request: pytest.FixtureRequest
) -> AsyncIterator[ServerFactory]:
    """``await make(config=None, users=USERS, name="server")`` → a started :class:`RunningServer`.

    Each call gets its own database ``tmp_path / f"{name}.db"`` (or its own PostgreSQL
    database, with ``store_kind`` "postgresql"; then ``db_path`` is its URL); pass distinct
    names when a test starts several servers. All servers are stopped at teardown.
    """
    started: list[ChatServer] = []
    pg: PgCluster | None = None
    bus: str | None = None
    if store_kind == "postgresql":
        pg = request.getfixturevalue("pg_cluster")
        bus = request.getfixturevalue("bus_url")

    async def make(
        config: ServerConfig | None = None,
        users: Sequence[str] = USERS,
        name: str = "server",
    ) -> RunningServer:
        db_path = tmp_path / f"{name}.db"
        if pg is not None:
            pg.wait_ready()
            store = pg.create_database()
            tokens = make_users(store, *users)
            server = ChatServer(db_path, config or ServerConfig(), store=store, bus=bus)
        else:
            tokens = make_users(db_path, *users)
            server = ChatServer(db_path, config or ServerConfig())
        await asyncio.wait_for(server.start("127.0.0.1", 0), 10)
        started.append(server)
        return RunningServer(server, server.url, store if pg is not None else db_path, tokens)

    yield make
    for server in reversed(started):
        await asyncio.wait_for(server.stop(), 15)


@pytest.fixture
async def chat_server(chat_server_factory: ServerFactory) -> RunningServer:
    """A started in-process server with default config and users alice, bob and carol."""
    return await chat_server_factory()


# ---------------------------------------------------------------- subprocess server


@pytest.fixture
def server_process(tmp_path: Path) -> Iterator[ServerProcess]:
    """A real ``tui-chat-server serve`` process on a free port with alice, bob and carol.

    Tokens are in ``server_process.tokens``. Killed at teardown.
    """
    db_path = tmp_path / "proc.db"
    tokens = make_users(db_path, *USERS)
    with ServerProcess(db_path) as proc:
        proc.tokens = tokens
        yield proc


@pytest.fixture
async def proxy(chat_server: RunningServer) -> AsyncIterator[FaultProxy]:
    """A fault proxy in front of ``chat_server`` (``proxy.url`` is what clients dial)."""
    async with FaultProxy("127.0.0.1", chat_server.port) as fault_proxy:
        yield fault_proxy


@pytest.fixture
async def engines(tmp_path: Path) -> AsyncIterator[Engines]:
    """Starts in-process engines with their own stores; stops and closes them all at the end."""
    made = Engines(tmp_path)
    try:
        yield made
    finally:
        await made.aclose()


@pytest.fixture
async def processes() -> AsyncIterator[list[HeadlessProc]]:
    """Headless processes started by a test; any still running at the end are killed."""
    started: list[HeadlessProc] = []
    yield started
    for proc in started:
        await proc.kill()


# ---------------------------------------------------------------- PostgreSQL and Redis


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    """One throwaway PostgreSQL cluster for the session (initdb, pg_ctl on a free port)."""
    missing = pg_missing()
    if missing is not None:
        pytest.skip(f"PostgreSQL tests need a local PostgreSQL: {missing}")
    cluster = PgCluster.start_new()
    try:
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture
def pg_url(pg_cluster: PgCluster) -> Iterator[str]:
    """A new, empty database of ``pg_cluster`` for this test (dropped afterwards)."""
    # A test may have stopped the cluster (PostgreSQL restarts): bring it back first.
    pg_cluster.wait_ready()
    url = pg_cluster.create_database()
    yield url
    with contextlib.suppress(Exception):
        pg_cluster.wait_ready()
        pg_cluster.drop_database(url.rsplit("/", 1)[1])


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One throwaway redis-server for the session (nothing saved, nothing appended)."""
    missing = redis_missing()
    if missing is not None:
        pytest.skip(f"bus tests need a local Redis: {missing}")
    server = RedisServer.start_new()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def bus_url(redis_server: RedisServer) -> str:
    """The URL of the session's Redis, started again if an earlier test left it down."""
    if not redis_server.running:
        redis_server.restart()
    return redis_server.url
