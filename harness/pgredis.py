"""Throwaway PostgreSQL clusters and Redis servers on free loopback ports, for tests.

Both are real servers started from the machine's binaries, owned by the test session and
deleted at its end. Nothing listens on anything but 127.0.0.1::

    with PgCluster.start_new() as pg:          # initdb + pg_ctl start on a free port
        url = pg.create_database("t1")          # postgresql://postgres@127.0.0.1:P/t1
        pg.restart()                            # pg_ctl restart (fast), same port
    with RedisServer.start_new() as bus:        # redis-server --save '' --appendonly no
        bus.url                                 # redis://127.0.0.1:P/0
        bus.restart()                           # everything it held is gone, same port

PostgreSQL refuses to run as root: when the tests run as root, initdb and pg_ctl run as
the ``postgres`` user (``runuser``) on a data directory that user owns. The throwaway
cluster runs with ``fsync=off``: it is deleted at the end and never survives a machine
crash, and what the tests prove (nothing acked is lost when a *node* dies, or when
PostgreSQL is shut down and started again) does not depend on it. The server under test
keeps ``synchronous_commit`` on whatever the cluster does.

Every wait is bounded and waits for a condition (a connection that works), never a fixed
time. ``missing()`` says why the servers cannot be started here, for a clear skip.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Final, Self

__all__ = ["PgCluster", "RedisServer", "free_port", "pg_bin", "pg_missing", "redis_missing"]

_PG_DIRS: Final = ("/usr/local/bin", "/usr/local/pgsql/bin", "/usr/lib/postgresql")
START_TIMEOUT: Final = 60.0


def free_port() -> int:
    """A port that was free on 127.0.0.1 a moment ago (the caller retries if it is taken)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pg_bin(name: str) -> str | None:
    """The path of a PostgreSQL server binary (initdb, pg_ctl), or None."""
    found = shutil.which(name)
    if found:
        return found
    for base in _PG_DIRS:
        direct = Path(base) / name
        if direct.is_file():
            return str(direct)
        # Debian's layout: /usr/lib/postgresql/<version>/bin/<name>, newest first.
        for candidate in sorted(Path(base).glob(f"*/bin/{name}"), reverse=True):
            return str(candidate)
    return None


def pg_missing() -> str | None:
    """Why a throwaway PostgreSQL cannot be started here, or None if it can."""
    for name in ("initdb", "pg_ctl"):
        if pg_bin(name) is None:
            return f"PostgreSQL server binary {name!r} not found (install PostgreSQL)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no 'postgres' user to run PostgreSQL as"
        if shutil.which("runuser") is None:
            return "running as root and 'runuser' is not found"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (pip install -e '.[dev]')"
    return None


def redis_missing() -> str | None:
    if shutil.which("redis-server") is None:
        return "redis-server not found (apt-get install redis-server)"
    try:
        import redis  # noqa: F401
    except ImportError:
        return "redis-py is not installed (pip install -e '.[dev]')"
    return None


def _as_postgres(cmd: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *cmd]
    return cmd


class PgCluster:
    """One PostgreSQL cluster in a temporary directory, listening on 127.0.0.1:port."""

    def __init__(self, root: Path, port: int) -> None:
        self.root = root
        self.data = root / "data"
        self.sock = root / "sock"
        self.log = root / "postgres.log"
        self.port = port
        self._databases = 0

    @classmethod
    def start_new(cls) -> PgCluster:
        missing = pg_missing()
        if missing is not None:
            raise RuntimeError(missing)
        root = Path(tempfile.mkdtemp(prefix="tui-chat-pg-"))
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(root, owner.pw_uid, owner.pw_gid)
        os.chmod(root, 0o700)
        cluster = cls(root, free_port())
        try:
            cluster.sock.mkdir()
            if os.geteuid() == 0:
                os.chown(cluster.sock, owner.pw_uid, owner.pw_gid)
            initdb = pg_bin("initdb")
            assert initdb is not None
            cmd = [initdb, "-D", str(cluster.data), "-U", "postgres", "-A", "trust"]
            cmd += ["-E", "UTF8", "--no-sync", "--no-instructions"]
            subprocess.run(
                _as_postgres(cmd),
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                timeout=START_TIMEOUT,
            )
            cluster.start()
        except BaseException:
            cluster.destroy()
            raise
        return cluster

    @property
    def admin_url(self) -> str:
        return self.url("postgres")

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _pg_ctl(self, *args: str, timeout: float = START_TIMEOUT) -> None:
        pg_ctl = pg_bin("pg_ctl")
        assert pg_ctl is not None
        subprocess.run(
            _as_postgres([pg_ctl, "-D", str(self.data), *args]),
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=timeout,
        )

    def start(self) -> None:
        """Start on ``self.port`` and wait until a connection works."""
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.sock} "
            "-c fsync=off -c full_page_writes=off -c max_connections=200"
        )
        timeout = str(int(START_TIMEOUT))
        self._pg_ctl("start", "-w", "-t", timeout, "-l", str(self.log), "-o", options)
        self.wait_ready()

    def stop(self) -> None:
        """Stop (fast: open sessions are ended) and wait until it is down."""
        with contextlib.suppress(subprocess.CalledProcessError):
            self._pg_ctl("stop", "-m", "fast", "-w")

    def restart(self) -> None:
        self.stop()
        self.start()

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(self.admin_url, connect_timeout=5) as conn:
                    conn.execute("SELECT 1")
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def create_database(self, name: str | None = None) -> str:
        """A new, empty database; its URL."""
        import psycopg

        if name is None:
            self._databases += 1
            name = f"t{os.getpid()}_{self._databases}"
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def destroy(self) -> None:
        if (self.data / "postmaster.pid").exists():
            with contextlib.suppress(subprocess.CalledProcessError, subprocess.TimeoutExpired):
                self._pg_ctl("stop", "-m", "immediate", "-w", timeout=30)
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.destroy()


class RedisServer:
    """One redis-server that keeps nothing on disk, on 127.0.0.1:port."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._proc: subprocess.Popen[bytes] | None = None

    @classmethod
    def start_new(cls) -> RedisServer:
        missing = redis_missing()
        if missing is not None:
            raise RuntimeError(missing)
        for _ in range(5):
            server = cls(free_port())
            try:
                server.start()
                return server
            except RuntimeError:
                server.stop()
        raise RuntimeError("redis-server did not start on a free port in 5 attempts")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = START_TIMEOUT) -> None:
        cmd = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
        cmd += ["--save", "", "--appendonly", "no", "--daemonize", "no"]
        cmd += ["--loglevel", "warning", "--dir", tempfile.gettempdir()]
        self._proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while not self._ping():
            if self._proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self._proc.returncode}")
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not answer PING in time")
            time.sleep(0.02)

    def _ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(30)

    def restart(self) -> None:
        """Kill and start again on the same port: every subscription is dropped."""
        self.stop()
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                self.start()
                return
            except RuntimeError:
                # The port may take a moment to be free again.
                self.stop()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
