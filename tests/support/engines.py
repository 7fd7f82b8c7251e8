"""In-process engines for tests: started with fast timers, their events recorded, all stopped.

Engines get :data:`harness.clientconf.FAST_SYNC` (a dead link is noticed and a restored one
used again within about a second); waits are :func:`harness.waits.until`.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from harness.clientconf import client_config
from harness.waits import WAIT, until
from tui_chat.core.config import ClientConfig
from tui_chat.core.engine import Engine
from tui_chat.core.models import ConnState, Event, MessageAdded, MessageChanged
from tui_chat.core.transport import Transport

T = TypeVar("T")

# ---------------------------------------------------------------- engines


@dataclass
class Client:
    """A running engine and every event it emitted, in order."""

    engine: Engine
    task: asyncio.Task[None]
    config: ClientConfig
    events: list[Event] = field(default_factory=list)
    stopped: bool = False

    @property
    def state(self) -> ConnState:
        return self.engine.status.state

    async def online(self, within: float = WAIT) -> None:
        await until(lambda: self.state is ConnState.ONLINE, "the engine to be online", within)

    def of(self, kind: type[T]) -> list[T]:
        return [e for e in self.events if isinstance(e, kind)]

    def added(self, client_id: str) -> list[MessageAdded]:
        return [e for e in self.of(MessageAdded) if e.message.client_id == client_id]

    def changed(self, client_id: str) -> list[MessageChanged]:
        return [e for e in self.of(MessageChanged) if e.message.client_id == client_id]

    def state_of(self, client_id: str) -> object:
        m = self.engine.message(client_id)
        return None if m is None else m.state


class Engines:
    """Makes engines with their own store directories; stops and closes them all at the end."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.clients: list[Client] = []

    def config(
        self, user: str, token: str, url: str, *, name: str | None = None, **sync: Any
    ) -> ClientConfig:
        return client_config(self.root / "clients" / (name or user), user, token, url, **sync)

    async def start(
        self, user: str, token: str, url: str, *, name: str | None = None, **sync: Any
    ) -> Client:
        """A running engine for ``user`` at ``url``; ``name`` separates two devices of one user."""
        return await self.run(self.config(user, token, url, name=name, **sync), token)

    async def run(
        self, cfg: ClientConfig, token: str, transport: Transport | None = None
    ) -> Client:
        """A running engine with ``cfg`` (the same config again means the same store file)."""
        engine = Engine(cfg, token, transport=transport)
        events: list[Event] = []
        engine.subscribe(events.append)
        task = asyncio.create_task(engine.run(), name=f"engine-{cfg.account.user}")
        client = Client(engine, task, cfg, events)
        self.clients.append(client)
        return client

    async def stop(self, client: Client, within: float = WAIT) -> None:
        """Stop the engine, wait (bounded) for ``run()`` to return, and close its store."""
        if client.stopped:
            return
        client.stopped = True
        try:
            async with asyncio.timeout(within):
                await client.engine.stop()
            done, _ = await asyncio.wait({client.task}, timeout=within)
            if not done:
                client.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await client.task
                pytest.fail(f"engine.run() did not return within {within} s of stop()")
            client.task.result()  # re-raise anything run() died of
        finally:
            client.engine.close()

    async def aclose(self) -> None:
        errors: list[BaseException] = []
        for client in reversed(self.clients):
            try:
                await self.stop(client)
            except BaseException as exc:  # stop the rest before reporting
                errors.append(exc)
        if errors:
            raise errors[0]


# ---------------------------------------------------------------- server database


def server_messages(db_path: Path, sender: str | None = None) -> list[tuple[str, int, str, str]]:
    """(conv, seq, sender, client_id) of every stored message, by conversation and seq."""
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=10)
    try:
        sql = "SELECT conv, seq, sender, client_id FROM messages"
        params: tuple[str, ...] = ()
        if sender is not None:
            sql += " WHERE sender=?"
            params = (sender,)
        return [tuple(r) for r in conn.execute(sql + " ORDER BY conv, seq", params)]  # type: ignore[misc]
    finally:
        conn.close()


def server_copies(db_path: Path, client_id: str) -> int:
    """How many stored messages carry ``client_id`` (the invariant: never more than one)."""
    return sum(1 for m in server_messages(db_path) if m[3] == client_id)
