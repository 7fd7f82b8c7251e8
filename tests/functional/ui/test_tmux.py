"""One real-terminal test: ``tui-chat`` (the demo) driven through tmux.

Everything else drives the app through Textual's Pilot; this runs the installed
``tui-chat`` executable in a real pseudo-terminal, types with ``send-keys`` and reads
the screen with ``capture-pane``: terminal setup, key decoding (F6, ctrl+q) and a
clean exit are covered only here.

With XDG_CONFIG_HOME pointing at an empty directory there is no config file, so
``tui-chat`` opens the embedded demo; XDG_DATA_HOME keeps the demo data in tmp_path.
A private tmux server (``tmux -L <unique name>``) is used and killed at teardown; a
shell around ``tui-chat`` prints its exit status, which the test reads after ctrl+q.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from harness.serverproc import ServerProcess
from tests.support.wire import db_rows

TMUX = shutil.which("tmux")
pytestmark = pytest.mark.skipif(
    TMUX is None, reason="tmux is not installed: the real-terminal test needs it"
)

COLS, ROWS = 120, 32
# Starting Python, the embedded server, the proxy and the demo peers; generous for CI.
START_WITHIN = 30.0
STEP_WITHIN = 15.0
EXITED = "[tui-chat exited with status "


class Tmux:
    """A private tmux server with one session running one command."""

    def __init__(self, socket: str, session: str) -> None:
        self.socket = socket
        self.session = session

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        assert TMUX is not None
        return subprocess.run(
            [TMUX, "-u", "-L", self.socket, *args],
            capture_output=True,
            text=True,
            check=check,
            timeout=10,
        )

    def screen(self) -> str:
        return self.run("capture-pane", "-p", "-t", self.session).stdout

    def keys(self, *keys: str, literal: bool = False) -> None:
        self.run("send-keys", "-t", self.session, *(["-l"] if literal else []), *keys)

    def pane(self, fmt: str) -> str:
        return self.run("display-message", "-p", "-t", self.session, fmt).stdout.strip()

    def wait(self, cond: Callable[[str], bool], what: str, within: float = STEP_WITHIN) -> str:
        """Poll the screen until ``cond(screen)``; fail with the last screen after ``within``."""
        deadline = time.monotonic() + within
        screen = ""
        while time.monotonic() < deadline:
            screen = self.screen()
            if cond(screen):
                return screen
            time.sleep(0.1)
        pytest.fail(f"waited {within:.0f} s for {what}; the screen was:\n{screen}")

    def kill(self) -> None:
        self.run("kill-server", check=False)


def start_tmux(tmp_path: Path, *args: str) -> Tmux:
    """``tui-chat *args`` in a private tmux server, with an empty XDG world in tmp_path."""
    exe = Path(sys.executable).parent / "tui-chat"
    if not exe.exists():
        pytest.skip(f"no tui-chat executable beside {sys.executable}: install the project")
    data, config = tmp_path / "data", tmp_path / "config"
    data.mkdir(exist_ok=True)
    config.mkdir(exist_ok=True)
    conf = tmp_path / "tmux.conf"
    # No user config; quick ESC (alt keys and escape are not held back for 500 ms).
    conf.write_text('set -g default-terminal "tmux-256color"\nset -sg escape-time 10\n')
    env = {
        "XDG_DATA_HOME": str(data),
        "XDG_CONFIG_HOME": str(config),
        "XDG_STATE_HOME": str(tmp_path / "state"),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "COLORTERM": "truecolor",
    }
    # The command line sets the environment itself: a tmux server copies the
    # environment of whoever started it, which must not decide what tui-chat reads.
    # A shell runs tui-chat, prints its exit status and stays (sleeping) so the line
    # stays on screen. tmux's own remain-on-exit and #{pane_dead_status} proved
    # unreliable here: tmux 3.3a sometimes never reaped the exited process.
    command = " ".join(
        [
            "env",
            "-u",
            "TUI_CHAT_CONFIG",
            *(f"{k}={shlex.quote(v)}" for k, v in env.items()),
            shlex.quote(str(exe)),
            *(shlex.quote(a) for a in args),
        ]
    )
    command += f'; echo "{EXITED}$?]"; exec sleep 600'
    t = Tmux(f"tui-chat-test-{os.getpid()}-{uuid.uuid4().hex[:8]}", "tui-chat")
    size = ["-x", str(COLS), "-y", str(ROWS)]
    t.run("-f", str(conf), "new-session", "-d", "-s", t.session, *size, "sh", "-c", command)
    return t


@pytest.fixture
def tmux(tmp_path: Path) -> Iterator[Tmux]:
    """The demo (no config file)."""
    t = start_tmux(tmp_path)
    try:
        yield t
    finally:
        t.kill()


@pytest.fixture
def tmux_client(tmp_path: Path, server_process: ServerProcess) -> Iterator[Tmux]:
    """``tui-chat --config`` as alice on a real server process."""
    cfg = tmp_path / "alice.toml"
    cfg.write_text(
        f'[server]\nurl = "{server_process.url}"\n\n'
        f'[account]\nuser = "alice"\ntoken = "{server_process.tokens["alice"]}"\n\n'
        f'[storage]\ndir = "{tmp_path / "alice-store"}"\n'
    )
    cfg.chmod(0o600)
    t = start_tmux(tmp_path, "--config", str(cfg))
    try:
        yield t
    finally:
        t.kill()


def header_above(screen: str, body: str) -> str:
    """The line above the (first) line showing ``body``: an own message's "HH:MM you ✓"."""
    lines = screen.splitlines()
    for i, line in enumerate(lines):
        if body in line and i > 0:
            return lines[i - 1]
    return ""


def test_demo_in_a_real_terminal(tmux: Tmux) -> None:
    tmux.wait(
        lambda s: "DEMO: local server" in s and "● online" in s,
        'the demo to start and show "DEMO: local server" and "online"',
        within=START_WITHIN,
    )
    # The first greeting opens its conversation (a peer's, or the demo group): until then
    # there is no one to write to.
    tmux.wait(
        lambda s: "Conversation with" in s or "Group “Demo group”" in s,
        "a demo peer's greeting to open a conversation",
    )

    first = "hello from tmux"
    tmux.keys(first, literal=True)
    tmux.keys("Enter")
    tmux.wait(lambda s: "you ✓" in header_above(s, first), f"{first!r} to be marked ✓ (sent)")

    # F6 cuts the demo's network: the next message is stored and shown, but only ◷.
    tmux.keys("F6")
    tmux.wait(lambda s: "Network cut" in s or "connecting" in s or "offline" in s, "the cut")
    second = "sent while the network is cut"
    tmux.keys(second, literal=True)
    tmux.keys("Enter")
    tmux.wait(
        lambda s: "you ◷" in header_above(s, second), f"{second!r} to be marked ◷ (maybe sent)"
    )
    # The hint line under it; the demo's "Network cut" toast may cover it until it times out.
    tmux.wait(lambda s: "◷ maybe sent" in s, "the ◷ maybe sent hint")

    tmux.keys("C-q")
    screen = tmux.wait(lambda s: EXITED in s, "tui-chat to exit after ctrl+q")
    assert f"{EXITED}0]" in screen, screen


def bodies_on_server(server: ServerProcess) -> list[str]:
    rows = db_rows(server.db_path, "SELECT body FROM messages WHERE sender='alice' ORDER BY seq")
    return [str(r[0]) for r in rows]


def wait_for_bodies(server: ServerProcess, expected: list[str], what: str) -> None:
    deadline = time.monotonic() + STEP_WITHIN
    bodies: list[str] = []
    while time.monotonic() < deadline:
        bodies = bodies_on_server(server)
        if bodies == expected:
            return
        time.sleep(0.1)
    pytest.fail(f"waited {STEP_WITHIN:.0f} s for {what}; the server holds {bodies!r}")


def test_a_burst_of_keys_and_a_bracketed_paste(
    tmux_client: Tmux, server_process: ServerProcess
) -> None:
    """What is typed is what is sent: five lines typed in ONE burst arrive as five
    messages, each once, in order; a two-line bracketed paste arrives as ONE message."""
    tmux = tmux_client
    tmux.wait(lambda s: "● online" in s, "tui-chat to connect", within=START_WITHIN)
    tmux.keys("C-o")
    tmux.wait(lambda s: "Start a conversation with" in s, "the ctrl+o dialog")
    tmux.keys("bob", literal=True)
    tmux.keys("Enter")
    tmux.wait(lambda s: "Conversation with bob" in s, "the conversation with bob")

    # One send-keys call: the terminal delivers it as one burst of bytes.
    burst: list[str] = []
    for i in range(5):
        burst += [f"k{i}", "Enter"]
    tmux.keys(*burst)
    wait_for_bodies(server_process, [f"k{i}" for i in range(5)], "k0..k4, each once, in order")

    # A paste with bracketed paste (the app asks for it; -p sends the brackets). tmux
    # turns the LF into CR, as a terminal does.
    tmux.run("set-buffer", "-b", "two", "first pasted line\nsecond pasted line")
    tmux.run("paste-buffer", "-p", "-b", "two", "-t", tmux.session)
    tmux.wait(
        lambda s: "first pasted line" in s and "second pasted line" in s, "the paste on screen"
    )
    assert len(bodies_on_server(server_process)) == 5, "the paste must not send by itself"
    tmux.keys("Enter")
    wait_for_bodies(
        server_process,
        [*(f"k{i}" for i in range(5)), "first pasted line\nsecond pasted line"],
        "the paste as one two-line message",
    )

    # ctrl+j as the terminal sends it (a bare LF byte) starts a new line in the message.
    tmux.keys("typed line", "C-j", "next line", "Enter")
    wait_for_bodies(
        server_process,
        [
            *(f"k{i}" for i in range(5)),
            "first pasted line\nsecond pasted line",
            "typed line\nnext line",
        ],
        "a typed two-line message",
    )

    tmux.keys("C-q")
    screen = tmux.wait(lambda s: EXITED in s, "tui-chat to exit after ctrl+q")
    assert f"{EXITED}0]" in screen, screen
