"""Nodes: real ``tui-chat-server serve --store … --bus …`` processes on one PostgreSQL and
one Redis (the session's throwaway servers), each test with a database of its own."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from harness.serverproc import ServerProcess
from tests.support.wire import USERS, make_users

NodeFactory = Callable[..., Awaitable[ServerProcess]]


@pytest.fixture
def node_tokens(pg_url: str) -> dict[str, str]:
    """alice, bob and carol in the test's store."""
    return make_users(pg_url, *USERS)


@pytest.fixture
async def start_node(
    tmp_path: Path, pg_url: str, bus_url: str, node_tokens: dict[str, str]
) -> AsyncIterator[NodeFactory]:
    """``await start_node()`` → another node of the test's service (killed at teardown);
    ``bus=`` another Redis than the session's."""
    started: list[ServerProcess] = []

    async def make(*extra: str, bus: str | None = None) -> ServerProcess:
        node = ServerProcess(
            tmp_path / "unused.db", store=pg_url, bus=bus or bus_url, extra_args=list(extra)
        )
        node.tokens = dict(node_tokens)
        started.append(node)
        return await node.astart()

    yield make
    for node in started:
        await node.__aexit__(None, None, None)
