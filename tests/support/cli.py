"""Running ``tui-chat`` as a user does: a subprocess with its own HOME and XDG directories.

Nothing here reads or writes the user's own config; every run is bounded in time.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

TIMEOUT = 30


@dataclass
class Run:
    code: int
    out: str
    err: str

    @property
    def err_lines(self) -> list[str]:
        return self.err.strip().splitlines()


def env_for(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "TUI_CHAT_"))}
    env.update(
        HOME=str(tmp_path / "home"),
        XDG_CONFIG_HOME=str(tmp_path / "xdg-config"),
        XDG_DATA_HOME=str(tmp_path / "xdg-data"),
        XDG_STATE_HOME=str(tmp_path / "xdg-state"),
        XDG_CACHE_HOME=str(tmp_path / "xdg-cache"),
        NO_COLOR="1",
    )
    return env


def tui_chat(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> Run:
    """Run ``tui-chat ARGS`` without a terminal; a case that opened the TUI would time out."""
    try:
        done = subprocess.run(
            [sys.executable, "-m", "tui_chat.cli", *args],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            env=env or env_for(tmp_path),
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"tui-chat {' '.join(args)} did not exit within {TIMEOUT} s: {exc}")
    return Run(done.returncode, done.stdout, done.stderr)


def write(path: Path, text: str | bytes, mode: int = 0o600) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    path.chmod(mode)
    return path


async def tui_chat_async(tmp_path: Path, *args: str, within: float = 2 * TIMEOUT) -> Run:
    """``tui-chat ARGS`` in a subprocess while this event loop keeps serving (a server)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tui_chat.cli",
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env_for(tmp_path),
    )
    try:
        async with asyncio.timeout(within):
            out, err = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        pytest.fail(f"tui-chat {' '.join(args)} did not exit within {within} s")
    assert proc.returncode is not None
    return Run(proc.returncode, out.decode(), err.decode())


def uncomment_template(text: str) -> str:
    """The template with every optional setting switched on (one token source kept)."""
    out = []
    for line in text.splitlines():
        m = re.match(r"^# (\[[a-z]+\](?:\s+#.*)?|[a-z_]+ = .*)$", line)
        if m and not re.match(r"# (token_file|token_command|ca_file|password) ", line):
            line = m.group(1)
        out.append(line)
    return "\n".join(out) + "\n"
