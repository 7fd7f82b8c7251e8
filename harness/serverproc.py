"""Run ``tui-chat-server serve`` as a real subprocess, for tests and benchmarks.

Crash-safety claims ("an acked message survives SIGKILL") can only be checked against a
real process that really dies, so this helper starts the server exactly as a user would
(``python -m tui_chat.server.cli serve``), learns its port from the line it prints, and
can kill it, stop it politely, and start it again on the same port so that clients can
reconnect to the same URL::

    with ServerProcess(db_path) as proc:        # started, port parsed from stdout
        ...connect to proc.url...
        proc.kill()                              # SIGKILL: no chance to clean up
        proc.restart()                           # same db, same port
        code = proc.terminate()                  # SIGTERM; 0 means a clean shutdown

Every wait is bounded. The blocking methods have ``a``-prefixed async twins that run
them in a thread, so an event loop driving websocket clients keeps running meanwhile
(for example so that clients can answer the server's 1012 close during ``aterminate``).
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Final, Self

from harness.env import subprocess_env
from tui_chat.server import db

__all__ = ["ServerProcess", "ServerStartError"]

LISTENING_RE: Final = re.compile(r"tui-chat-server listening on (wss?)://(\S+):(\d+) ")
# Exit code of ``serve`` when it cannot bind, e.g. when the old port is briefly taken.
_EXIT_CANNOT_LISTEN: Final = 2


class ServerStartError(RuntimeError):
    """The server did not print its listening line in time, or exited first."""


class _Pipe:
    """Drains one pipe of the child in a thread so it can never fill up and block it."""

    def __init__(self, stream: IO[str], name: str) -> None:
        self.lines: list[str] = []
        self.queue: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._stream = stream
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for line in self._stream:
                line = line.rstrip("\n")
                self.lines.append(line)
                self.queue.put(line)
        except (OSError, ValueError):
            pass
        finally:
            self.queue.put(None)

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)


class ServerProcess:
    """One ``tui-chat-server serve`` child process; see the module docstring.

    ``store`` and ``bus`` make it a node of a multi-node service (``--store``, ``--bus``).
    ``port=0`` lets the first start pick a free port; every restart reuses the port the
    previous run reported. ``config`` is an optional ``server.toml``. ``extra_args`` are
    appended to the ``serve`` command line. Output of all runs is kept in ``stdout_lines``
    and ``stderr_lines`` (the current run's only) for assertion messages.
    """

    def __init__(
        self,
        db_path: Path,
        *,
        port: int = 0,
        host: str = "127.0.0.1",
        config: Path | None = None,
        extra_args: Sequence[str] = (),
        start_timeout: float = 15.0,
        stop_timeout: float = 15.0,
        env: dict[str, str] | None = None,
        store: str | None = None,
        bus: str | None = None,
    ) -> None:
        self.db_path = Path(db_path)
        # A node of a multi-node service: the PostgreSQL store (then db_path is unused) and
        # the Redis bus between the nodes.
        self.store = store
        self.bus = bus
        self.host = host
        self.port = port
        self.config = config
        self.extra_args = list(extra_args)
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.env = env
        self.scheme = "ws"
        self.returncode: int | None = None
        self.starts = 0
        # Not used here: a place for callers to keep the tokens of users they created.
        self.tokens: dict[str, str] = {}
        self._proc: subprocess.Popen[str] | None = None
        self._stdout: _Pipe | None = None
        self._stderr: _Pipe | None = None

    # ------------------------------------------------------------ properties

    @property
    def url(self) -> str:
        if not self.port:
            raise RuntimeError("the server has not started yet")
        return f"{self.scheme}://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def stdout_lines(self) -> list[str]:
        return [] if self._stdout is None else list(self._stdout.lines)

    @property
    def stderr_lines(self) -> list[str]:
        return [] if self._stderr is None else list(self._stderr.lines)

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "tui_chat.server.cli", "serve"]
        if self.store is not None:
            cmd += ["--store", self.store]
        else:
            cmd += ["--db", str(self.db_path)]
        if self.bus is not None:
            cmd += ["--bus", self.bus]
        cmd += ["--host", self.host, "--port", str(self.port)]
        if self.config is not None:
            cmd += ["--config", str(self.config)]
        return cmd + self.extra_args

    # ------------------------------------------------------------ lifecycle

    def start(self) -> Self:
        """Spawn the server and wait (bounded) until it prints its listening line.

        A restart on a fixed port retries for a short while if the port is still taken.
        """
        if self.running:
            raise RuntimeError("the server is already running")
        deadline = time.monotonic() + self.start_timeout
        while True:
            try:
                self._spawn(deadline)
                return self
            except ServerStartError:
                retry = (
                    self.port != 0
                    and self.returncode == _EXIT_CANNOT_LISTEN
                    and any("cannot listen" in line for line in self.stderr_lines)
                    and time.monotonic() + 0.2 < deadline
                )
                if not retry:
                    raise
                time.sleep(0.1)

    def _spawn(self, deadline: float) -> None:
        # Unbuffered so that nothing but our explicit flushes decides when lines appear; the
        # checkout on PYTHONPATH so that a broken variant (``-m harness.broken``) is found.
        env = subprocess_env(self.env, PYTHONUNBUFFERED="1")
        self.returncode = None
        proc = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert proc.stdout is not None and proc.stderr is not None
        self._proc = proc
        self._stdout = _Pipe(proc.stdout, f"serverproc-{proc.pid}-out")
        self._stderr = _Pipe(proc.stderr, f"serverproc-{proc.pid}-err")
        self.starts += 1
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._reap(signal.SIGKILL)
                raise ServerStartError(self._describe("no listening line in time"))
            try:
                line = self._stdout.queue.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                self._reap(signal.SIGKILL)
                raise ServerStartError(self._describe("server exited before listening"))
            match = LISTENING_RE.search(line)
            if match:
                self.scheme = match.group(1)
                self.port = int(match.group(3))
                return

    def kill(self) -> int:
        """SIGKILL the server (no shutdown code runs) and return its exit code."""
        return self._reap(signal.SIGKILL)

    def terminate(self, grace: float | None = None) -> int:
        """SIGTERM the server, wait for it to exit and return its exit code.

        If it does not exit within ``grace`` seconds (default ``stop_timeout``) it is killed
        and :class:`TimeoutError` is raised: a server that hangs on shutdown is a bug.
        """
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return self._reap(None)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(self.stop_timeout if grace is None else grace)
        except subprocess.TimeoutExpired:
            self._reap(signal.SIGKILL)
            raise TimeoutError(self._describe("server did not exit after SIGTERM")) from None
        return self._reap(None)

    def restart(self) -> Self:
        """Start again with the same database on the same port (kills a running server)."""
        if self.running:
            self.kill()
        return self.start()

    def close(self) -> None:
        """Kill the server if it is still running; safe to call more than once."""
        if self._proc is not None:
            self._reap(signal.SIGKILL)

    def _reap(self, sig: signal.Signals | None) -> int:
        proc = self._proc
        if proc is None:
            if self.returncode is None:
                raise RuntimeError("the server was never started")
            return self.returncode
        if sig is not None and proc.poll() is None:
            proc.send_signal(sig)
        try:
            code = proc.wait(self.stop_timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait(self.stop_timeout)
        for pipe in (self._stdout, self._stderr):
            if pipe is not None:
                pipe.join(2.0)
        self.returncode = code
        self._proc = None
        return code

    def _describe(self, what: str) -> str:
        out = "\n".join(self.stdout_lines[-20:])
        err = "\n".join(self.stderr_lines[-20:])
        return (
            f"{what} (exit code {self.returncode}); command: {' '.join(self.command())}\n"
            f"stdout:\n{out}\nstderr:\n{err}"
        )

    # ------------------------------------------------------------ async twins

    async def astart(self) -> Self:
        return await asyncio.to_thread(self.start)

    async def akill(self) -> int:
        return await asyncio.to_thread(self.kill)

    async def aterminate(self, grace: float | None = None) -> int:
        return await asyncio.to_thread(self.terminate, grace)

    async def arestart(self) -> Self:
        return await asyncio.to_thread(self.restart)

    # ------------------------------------------------------------ context managers

    def __enter__(self) -> Self:
        if not self.running:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        if not self.running:
            await self.astart()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.close)


def clone_users(src: Path, dst: Path) -> str:
    """A fresh server database at ``dst`` (new epoch) with ``src``'s accounts and tokens.

    Tokens are random and only their hashes are stored, so copying the hashes is the way to
    give a second server (or a server that lost its history) the same accounts. Returns the
    new database's epoch.
    """
    conn, epoch = db.open_db(dst)
    try:
        with contextlib.closing(sqlite3.connect(f"file:{src}?mode=ro", uri=True)) as old:
            rows = old.execute(
                "SELECT name, token_hash, created_at FROM users WHERE removed_at IS NULL"
            ).fetchall()
        conn.executemany("INSERT INTO users(name, token_hash, created_at) VALUES (?, ?, ?)", rows)
    finally:
        conn.close()
    return epoch
