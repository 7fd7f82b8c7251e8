"""A real ``tui-chat headless`` process: JSON lines in, JSON lines out, every wait bounded."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from harness.env import subprocess_env
from harness.waits import WAIT


def is_event(kind: str, **fields: Any) -> Callable[[dict[str, Any]], bool]:
    """A predicate for :meth:`HeadlessProc.wait_line`: an ``event`` line with these fields."""
    return lambda line: (
        line.get("event") == kind and all(line.get(k) == v for k, v in fields.items())
    )


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
    async def start(
        cls, config_path: Path, *args: str, stdin: Any = asyncio.subprocess.PIPE
    ) -> HeadlessProc:
        """``tui-chat headless --config PATH ARGS``; ``stdin`` may be a file or DEVNULL."""
        env = subprocess_env(PYTHONUNBUFFERED="1")
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tui_chat.cli",
            "headless",
            "--config",
            str(config_path),
            *args,
            stdin=stdin,
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
