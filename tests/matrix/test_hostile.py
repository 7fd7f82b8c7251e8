"""A broken homeserver: malformed JSON is reported, never a traceback, nothing stored lost.

Not a mock of Synapse: a deliberately broken HTTP server on 127.0.0.1 that answers the
login checks properly and then sends garbage for /sync, as a buggy proxy or server might.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest

from harness.synapse import Account
from harness.waits import until
from tests.matrix.support import start
from tests.support.engines import Engines
from tui_chat.core.models import ConnState, OutState, ServerNotice

USER = "@alice:broken"


async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
        path = head.split(b" ", 2)[1].decode()
        if "/account/whoami" in path:
            status, body = "200 OK", json.dumps({"user_id": USER, "device_id": "D"}).encode()
        elif "/sync" in path:
            status, body = "200 OK", b'{"next_batch": "s1", "rooms": {"join": {"!r:broken": [[['
        else:
            status, body = "404 Not Found", b'{"errcode": "M_UNRECOGNIZED", "error": "no"}'
        writer.write(
            f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )
        await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


@pytest.fixture
async def broken() -> AsyncIterator[str]:
    server = await asyncio.start_server(_serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield f"http://127.0.0.1:{port}"


async def test_malformed_sync_is_reported_and_nothing_is_lost(
    broken: str, engines: Engines
) -> None:
    acct = Account(USER, "alice", "", "token", "D")
    a = await start(engines, acct, broken)
    row = a.engine.send("@bob:broken", "kept safe")
    await until(lambda: a.of(ServerNotice), "the broken answer is reported", within=30)
    notice = a.of(ServerNotice)[0]
    assert "unexpected answer from the homeserver" in notice.reason
    assert a.state is not ConnState.ONLINE
    await until(lambda: a.engine.status.reason, "a reason on the status line")
    assert a.state_of(row.client_id) is OutState.PENDING  # still queued, not lost
    assert a.engine.store.epoch is not None  # the login itself was fine
    assert not a.task.done()  # no exception escaped the engine
