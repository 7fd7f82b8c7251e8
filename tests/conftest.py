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
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path

import pytest

from harness.faultproxy import FaultProxy
from harness.serverproc import ServerProcess
from tests.support.engines import Engines
from tests.support.headless import HeadlessProc
from tests.support.wire import USERS, RunningServer, ServerFactory, make_users
from tui_chat.server.app import ChatServer
from tui_chat.server.config import ServerConfig


@pytest.fixture
async def chat_server_factory(tmp_path: Path) -> AsyncIterator[ServerFactory]:
    """``await make(config=None, users=USERS, name="server")`` → a started :class:`RunningServer`.

    Each call gets its own database ``tmp_path / f"{name}.db"``; pass distinct names when a
    test starts several servers. All servers are stopped at teardown.
    """
    started: list[ChatServer] = []

    async def make(
        config: ServerConfig | None = None,
        users: Sequence[str] = USERS,
        name: str = "server",
    ) -> RunningServer:
        db_path = tmp_path / f"{name}.db"
        tokens = make_users(db_path, *users)
        server = ChatServer(db_path, config or ServerConfig())
        await asyncio.wait_for(server.start("127.0.0.1", 0), 10)
        started.append(server)
        return RunningServer(server, server.url, db_path, tokens)

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
