"""Pieces shared by the benchmark scripts in this folder.

The scripts are run as files (``.venv/bin/python benchmarks/NAME.py``), so this folder is on
``sys.path`` and they import this module as ``_common``. Importing it also puts the
repository root on ``sys.path``, so ``tui_chat`` is importable without installing it.

What is here: the server process (``harness.serverproc.ServerProcess``, started
with a generated ``server.toml`` and users created directly in its database), the
load-generator processes, CPU figures from ``/proc``, percentiles and medians, the
machine description printed with the results, random message bodies, and the ``--json``
output.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import importlib.metadata
import inspect
import json
import math
import multiprocessing
import multiprocessing.connection
import multiprocessing.process
import os
import platform
import random
import socket
import sqlite3
import statistics
import sys
import time
import traceback
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

ROOT: Final = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from harness.serverproc import ServerProcess  # noqa: E402

if TYPE_CHECKING:
    from tui_chat.core.config import ClientConfig

CLK_TCK: Final = os.sysconf("SC_CLK_TCK")

# The server's per-connection rate limit (default 100 frames/s, burst 200), raised so that
# it does not reject benchmark traffic: ``write_server_toml(path, {"limits": FAST_LIMITS})``.
FAST_LIMITS: Final[Mapping[str, int]] = {"rate": 100000, "burst": 100000}

_TEXT: Final = (
    "the quick brown fox jumps over lazy dog ok sure see you at noon tomorrow is fine "
    "did you push the fix yet? the build is green again lunch café 🙂 ping me when the "
    "deploy is done thanks! meeting moved to 3pm can't make it sorry running late"
)
WORDS: Final = tuple(_TEXT.split())


# ===================================================================== test data


def random_client_id(rng: random.Random) -> str:
    """Like Engine's ``new_client_id()``: 128 random bits, URL-safe base64, 22 characters."""
    return base64.urlsafe_b64encode(rng.getrandbits(128).to_bytes(16, "big")).decode()[:22]


def random_body(rng: random.Random) -> str:
    """A chat-like message body of 20-200 characters made of :data:`WORDS`."""
    target = rng.randint(20, 200)
    out: list[str] = []
    size = 0
    while size < target:
        w = rng.choice(WORDS)
        out.append(w)
        size += len(w) + 1
    return " ".join(out)[:target].strip() or "hi"


def client_config(user: str, token: str, url: str, store_dir: Path) -> ClientConfig:
    """A client configuration for ``user`` on ``url`` with its store in ``store_dir``."""
    from tui_chat.core.config import AccountSection, ClientConfig, ServerSection, StorageSection

    return ClientConfig(
        account=AccountSection(user=user, token=token),
        server=ServerSection(url=url),
        storage=StorageSection(dir=str(store_dir)),
    )


# ===================================================================== the server


def _toml_value(value: str | int | float) -> str:
    return json.dumps(value) if isinstance(value, str) else str(value)


def write_server_toml(
    path: Path, sections: Mapping[str, Mapping[str, str | int | float]], comment: str = ""
) -> None:
    """Write a ``server.toml`` of ``sections`` (``{"limits": {"rate": 100000}}``), the
    lines of ``comment`` first as ``#`` comments; sections are separated by a blank line."""
    head = "".join(f"# {line}\n" for line in comment.splitlines())
    body = [
        "".join(
            f"{line}\n"
            for line in [f"[{name}]", *(f"{k} = {_toml_value(v)}" for k, v in kv.items())]
        )
        for name, kv in sections.items()
    ]
    path.write_text(head + "\n".join(body))


def numbered_users(n: int) -> list[str]:
    """The user names ``u0000``, ``u0001``, ... of the load tests."""
    return [f"u{i:04d}" for i in range(n)]


def create_users(db_path: Path, names: Sequence[str]) -> list[tuple[str, str]]:
    """Create ``names`` in the server database and return ``(name, token)`` pairs.

    The same calls as ``tui-chat-server add-user``, in one transaction (hundreds of CLI
    runs would take minutes).
    """
    from tui_chat.server import db

    conn, _ = db.open_db(db_path)
    try:
        conn.execute("BEGIN")
        users = [(name, db.add_user(conn, name)) for name in names]
        conn.execute("COMMIT")
    finally:
        conn.close()
    return users


def start_server(
    db_path: Path,
    config: Path,
    *,
    extra_args: Sequence[str] = (),
    timeout: float = 30.0,
    server_class: type[ServerProcess] = ServerProcess,
) -> ServerProcess:
    """Start ``tui-chat-server serve`` on 127.0.0.1, a free port, ``db_path`` and ``config``
    (with the repository on ``PYTHONPATH``); return it once it listens."""
    server = server_class(
        db_path,
        config=config,
        extra_args=extra_args,
        start_timeout=timeout,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    return server.start()


def stop_server(
    server: ServerProcess, grace: float = 15.0, stderr_file: Path | None = None
) -> int | None:
    """SIGTERM the server and return its exit code (``None`` if it never started).

    A server still running after ``grace`` seconds is killed and its (negative) exit code
    returned. Safe to call more than once. ``stderr_file`` receives what it wrote to stderr.
    """
    if server.pid is None and server.returncode is None:
        return None
    try:
        code: int | None = server.terminate(grace)
    except TimeoutError:
        code = server.returncode
    if stderr_file is not None:
        with contextlib.suppress(OSError):
            stderr_file.write_text("".join(f"{line}\n" for line in server.stderr_lines))
    return code


def stderr_tail(server: ServerProcess, chars: int = 2000) -> str:
    """The last ``chars`` characters the server wrote to stderr."""
    return "".join(f"{line}\n" for line in server.stderr_lines)[-chars:]


# ===================================================================== load generators


class Workers:
    """``count`` load-generator processes, each running ``target(pipe)``.

    The protocol on the pipe: the parent sends ``(command, kwargs)``, the worker answers
    ``("ok", result)`` or ``("error", text)``; ``("close", {})`` ends it.
    """

    def __init__(
        self, count: int, target: Callable[[multiprocessing.connection.Connection], None]
    ) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.pipes: list[multiprocessing.connection.Connection] = []
        self.procs: list[multiprocessing.process.BaseProcess] = []
        for _ in range(count):
            parent, child = ctx.Pipe()
            p = ctx.Process(target=target, args=(child,), daemon=True)
            p.start()
            child.close()
            self.pipes.append(parent)
            self.procs.append(p)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs if p.pid is not None]

    def call(self, cmd: str, per_worker: list[dict[str, Any]], timeout: float) -> list[Any]:
        """Send ``cmd`` with one kwargs dict per worker; return their results in order."""
        for pipe, args in zip(self.pipes, per_worker, strict=True):
            pipe.send((cmd, args))
        deadline = time.monotonic() + timeout
        out = []
        for pipe in self.pipes:
            if not pipe.poll(max(0.0, deadline - time.monotonic())):
                raise TimeoutError(f"load generator did not finish {cmd} in {timeout:.0f} s")
            status, result = pipe.recv()
            if status != "ok":
                raise RuntimeError(f"load generator failed in {cmd}: {result}")
            out.append(result)
        return out

    def shutdown(self) -> None:
        """Ask every worker to close, wait (bounded) for its answer and its exit."""
        for pipe in self.pipes:
            with contextlib.suppress(OSError, BrokenPipeError):
                pipe.send(("close", {}))
        for pipe in self.pipes:
            with contextlib.suppress(OSError, EOFError):
                if pipe.poll(20):
                    pipe.recv()
        for p in self.procs:
            p.join(10)
            if p.is_alive():
                p.terminate()
                p.join(5)


async def serve_commands(
    pipe: multiprocessing.connection.Connection,
    commands: Mapping[str, Callable[..., Any]],
    close: Callable[[], Awaitable[None]],
    *,
    with_traceback: bool = False,
) -> None:
    """The worker's side of :class:`Workers`: run each ``(command, kwargs)`` received on
    ``pipe`` with ``commands[command]`` (awaited if it is a coroutine function) and answer
    its result or the error; ``close`` awaits ``close()``, answers and returns."""
    while True:
        cmd, args = await asyncio.to_thread(pipe.recv)
        try:
            if cmd == "close":
                await close()
                pipe.send(("ok", None))
                return
            if cmd not in commands:
                raise ValueError(f"unknown command {cmd}")
            result = commands[cmd](**args)
            if inspect.isawaitable(result):
                result = await result
        except Exception as exc:  # reported to the orchestrator, which stops the run
            text = f"{type(exc).__name__}: {exc}"
            pipe.send(("error", f"{text}\n{traceback.format_exc()}" if with_traceback else text))
            continue
        pipe.send(("ok", result))


# ===================================================================== CPU from /proc


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads) from /proc, in seconds (NaN if gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return float("nan")
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def machine_cpu_seconds() -> tuple[float, float]:
    """CPU seconds all cores spent since boot (a) running processes (user, nice, system,
    steal) and (b) in interrupts (irq, softirq: mostly the loopback network stack), which
    the kernel does not charge to any process."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + steal) / CLK_TCK, (irq + softirq) / CLK_TCK


def wait_for_quiet(max_wait: float, threshold: float, *, count_irq: bool = False) -> float:
    """Wait (up to ``max_wait`` s) until the machine is nearly idle; return the busy cores
    seen over the last second (with ``count_irq``, interrupts count as busy). Other work on
    the same cores skews every figure."""

    def busy_seconds() -> float:
        procs, irq = machine_cpu_seconds()
        return procs + irq if count_irq else procs

    deadline = time.monotonic() + max_wait
    while True:
        m0, t0 = busy_seconds(), time.monotonic()
        time.sleep(1.0)
        busy = (busy_seconds() - m0) / (time.monotonic() - t0)
        if busy <= threshold or time.monotonic() >= deadline:
            return busy


# ===================================================================== statistics


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (``p`` in 0..100); NaN for no values."""
    if not values:
        return float("nan")
    s = sorted(values)
    k = max(0, math.ceil(p / 100 * len(s)) - 1)
    return s[k]


def median(values: Sequence[float], *, skip_nan: bool = False) -> float:
    """The median; NaN for no values (with ``skip_nan``, NaN values do not count)."""
    if skip_nan:
        values = [v for v in values if not math.isnan(v)]
    return statistics.median(values) if values else float("nan")


# ===================================================================== machine and output


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo ('' if unknown)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return ""


_MACHINE_FIELDS: Final[Mapping[str, Callable[[], Any]]] = {
    "nproc": os.cpu_count,
    "cpu": cpu_model,
    "python": platform.python_version,
    "implementation": platform.python_implementation,
    "platform": platform.platform,
    "kernel": platform.release,
    "hostname": socket.gethostname,
    "sqlite": lambda: sqlite3.sqlite_version,
    "loadavg": os.getloadavg,
}


def machine_info(*fields: str) -> dict[str, Any]:
    """The machine described by ``fields``, in that order: ``nproc``, ``cpu``, ``python``,
    ``implementation``, ``platform``, ``kernel``, ``hostname``, ``sqlite``, ``loadavg``;
    any other name is an installed distribution whose version is reported."""
    return {
        f: _MACHINE_FIELDS[f]() if f in _MACHINE_FIELDS else importlib.metadata.version(f)
        for f in fields
    }


def write_json(dest: Path, doc: Any, *, indent: int = 2) -> None:
    """Write ``doc`` as JSON to ``dest`` (``-``: print it); what JSON lacks becomes str."""
    text = json.dumps(doc, indent=indent, default=str)
    if str(dest) == "-":
        print(text)
    else:
        dest.write_text(text)
