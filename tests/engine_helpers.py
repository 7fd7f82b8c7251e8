"""Helpers for the client-engine tests: engines with tiny timers, bounded waits, server rows.

Every engine made here uses sub-second keepalive and backoff so that a dead link is noticed
and a restored one is used again within about a second; every wait has a deadline and fails
the test with a description of what it waited for.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tui_chat.core.config import (
    AccountSection,
    ClientConfig,
    ServerSection,
    StorageSection,
    SyncSection,
)
from tui_chat.core.engine import Engine
from tui_chat.core.models import ConnState, Event, MessageAdded, MessageChanged
from tui_chat.core.transport import Transport
from tui_chat.server import db

T = TypeVar("T")

# Sync settings for tests: a blackholed link is noticed in well under a second, a refused
# reconnect is retried within half a second, a hung handshake gives up after a second.
FAST_SYNC: dict[str, Any] = {
    "backoff_initial": 0.05,
    "backoff_cap": 0.5,
    "ping_interval": 0.2,
    "ping_timeout": 0.2,
    "connect_timeout": 1.0,
    "ack_timeout": 3.0,
}
# Default bound for one expected outcome (a reconnect, a send, a catch-up).
WAIT = 10.0


# ---------------------------------------------------------------- waiting


async def until(
    cond: Callable[[], T], what: str, within: float = WAIT, interval: float = 0.01
) -> T:
    """Poll ``cond`` until it returns something truthy and return that; fail after ``within`` s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        value = cond()
        if value:
            return value
        if loop.time() >= deadline:
            pytest.fail(f"timed out after {within} s waiting for {what}")
        await asyncio.sleep(interval)


async def stays(cond: Callable[[], object], what: str, duration: float) -> None:
    """Fail as soon as ``cond`` turns false during ``duration`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + duration
    while loop.time() < deadline:
        if not cond():
            pytest.fail(f"expected {what} for {duration} s, it changed")
        await asyncio.sleep(0.01)
    if not cond():
        pytest.fail(f"expected {what} for {duration} s, it changed")


# ---------------------------------------------------------------- engines


def client_config(store_dir: Path, user: str, token: str, url: str, **sync: Any) -> ClientConfig:
    settings = {**FAST_SYNC, **sync}
    return ClientConfig(
        account=AccountSection(user=user, token=token),
        server=ServerSection(url=url),
        storage=StorageSection(dir=str(store_dir)),
        sync=SyncSection(**settings),
    )


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


def clone_users(src: Path, dst: Path) -> str:
    """A fresh server database at ``dst`` (new epoch) with ``src``'s users and tokens.

    Tokens are random and only their hashes are stored, so copying the hashes is the way to
    give a second server the same accounts. Returns the new database's epoch.
    """
    conn, epoch = db.open_db(dst)
    try:
        with contextlib.closing(sqlite3.connect(f"file:{src}?mode=ro", uri=True)) as old:
            rows = old.execute("SELECT name, token_hash, created_at FROM users").fetchall()
        conn.executemany("INSERT INTO users(name, token_hash, created_at) VALUES (?, ?, ?)", rows)
    finally:
        conn.close()
    return epoch


# ---------------------------------------------------------------- headless processes


def write_client_toml(path: Path, cfg: ClientConfig) -> Path:
    """The TOML file ``tui-chat headless --config`` reads, for an in-memory config."""
    s = cfg.sync
    lines = [
        "[account]",
        f"user = {json.dumps(cfg.account.user)}",
        f"token = {json.dumps(cfg.account.token)}",
        "[server]",
        f"url = {json.dumps(cfg.server.url)}",
        "[storage]",
        f"dir = {json.dumps(cfg.storage.dir)}",
        "[sync]",
    ]
    for key in (
        "freshness_window",
        "backoff_initial",
        "backoff_cap",
        "ping_interval",
        "ping_timeout",
        "connect_timeout",
        "ack_timeout",
    ):
        lines.append(f"{key} = {float(getattr(s, key))!r}")
    lines.append(f"on_failure = {json.dumps(s.on_failure)}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    path.chmod(0o600)
    return path


class HeadlessProc:
    """A real ``tui-chat headless`` process: JSON lines in, JSON lines out, every wait bounded."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[dict[str, Any]] = []
        self.raw: list[str] = []
        self.stderr: list[str] = []
        self._new = asyncio.Event()
        assert proc.stdout is not None and proc.stderr is not None
        self._readers = [
            asyncio.create_task(self._read_stdout(proc.stdout)),
            asyncio.create_task(self._read_stderr(proc.stderr)),
        ]

    @classmethod
    async def start(cls, config_path: Path) -> HeadlessProc:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tui_chat.cli",
            "headless",
            "--config",
            str(config_path),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
        return cls(proc)

    async def _read_stdout(self, stream: asyncio.StreamReader) -> None:
        while line := await stream.readline():
            text = line.decode("utf-8", "replace").rstrip("\n")
            self.raw.append(text)
            try:
                self.lines.append(json.loads(text))
            except ValueError:
                self.lines.append({"event": "<not json>", "text": text})
            self._new.set()
        self._new.set()

    async def _read_stderr(self, stream: asyncio.StreamReader) -> None:
        while line := await stream.readline():
            self.stderr.append(line.decode("utf-8", "replace").rstrip("\n"))

    def describe(self) -> str:
        out = "\n".join(self.raw[-30:])
        err = "\n".join(self.stderr[-30:])
        return f"stdout:\n{out}\nstderr:\n{err}"

    async def write(self, line: str | dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        text = line if isinstance(line, str) else json.dumps(line)
        self.proc.stdin.write(text.encode() + b"\n")
        await self.proc.stdin.drain()

    async def wait_line(
        self, pred: Callable[[dict[str, Any]], bool], what: str, within: float = WAIT
    ) -> dict[str, Any]:
        """The first output line (from the start) that matches ``pred``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while True:
            for line in self.lines:
                if pred(line):
                    return line
            if self.proc.returncode is not None and self._readers[0].done():
                pytest.fail(
                    f"headless exited ({self.proc.returncode}) before {what}\n" + self.describe()
                )
            remaining = deadline - loop.time()
            if remaining <= 0:
                pytest.fail(f"no {what} from headless within {within} s\n" + self.describe())
            self._new.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(remaining, 0.2)):
                    await self._new.wait()

    def matching(self, pred: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
        return [line for line in self.lines if pred(line)]

    async def close_stdin(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        with contextlib.suppress(ConnectionError):
            await self.proc.stdin.wait_closed()

    async def wait_exit(self, within: float = WAIT) -> int:
        try:
            async with asyncio.timeout(within):
                code = await self.proc.wait()
        except TimeoutError:
            pytest.fail(f"headless still running after {within} s\n" + self.describe())
        await asyncio.wait(self._readers, timeout=5)
        return code

    async def kill(self) -> None:
        """SIGKILL: no shutdown code runs in the client."""
        if self.proc.returncode is None:
            self.proc.kill()
        async with asyncio.timeout(WAIT):
            await self.proc.wait()
        await asyncio.wait(self._readers, timeout=5)
