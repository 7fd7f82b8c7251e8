"""``tui-chat config check``: keys that only some terminals send, and ``--online`` against a
real server (in-process, on 127.0.0.1): a good login, a refused token, an account that is
closed, nobody listening, and a certificate the client does not trust.

The bad-file cases (port range, URL without host, unknown theme, dead key names...) are
in test_cli_config.py's table, where every one is run through ``tui-chat``, ``config
check`` and ``headless`` alike.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trustme
from websockets.asyncio.server import ServerConnection, serve

from harness.clientconf import client_config, write_client_toml
from tests.support.cli import TIMEOUT, Run, tui_chat, tui_chat_async, write
from tests.support.wire import RunningServer, make_users
from tui_chat import protocol as p
from tui_chat.server.app import ChatServer
from tui_chat.server.config import ServerConfig


def config(
    tmp_path: Path, url: str, token: str, ca_file: Path | None = None, user: str = "alice"
) -> Path:
    cfg = client_config(tmp_path / "store", user, token, url, ca_file=ca_file, connect_timeout=10.0)
    return write_client_toml(tmp_path / "client.toml", cfg)


def assert_one_error(run: Run, code: int, *words: str) -> str:
    assert "Traceback" not in run.out + run.err, run.err
    assert run.code == code, (run.code, run.out, run.err)
    lines = run.err.strip().splitlines()
    assert len(lines) == 1, run.err
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


# ---------------------------------------------------------------- keys


def test_a_key_only_kitty_terminals_send_is_a_warning_not_an_error(tmp_path: Path) -> None:
    path = write(
        tmp_path / "c.toml",
        '[account]\nuser = "alice"\ntoken = "t"\n[keys]\nretry = "r,ctrl+enter"\n',
    )
    run = tui_chat(tmp_path, "config", "check", "--config", str(path))
    assert run.code == 0, run.err
    assert len(run.err_lines) == 1, run.err
    line = run.err_lines[0]
    for word in ("warning", str(path), "keys.retry", "'ctrl+enter'", "kitty", "tmux"):
        assert word in line, (word, line)


# ---------------------------------------------------------------- --online


async def test_online_check_logs_in_with_a_good_token(
    chat_server: RunningServer, tmp_path: Path
) -> None:
    path = config(tmp_path, chat_server.url, chat_server.tokens["alice"])
    run = await tui_chat_async(tmp_path, "config", "check", "--online", "--config", str(path))
    assert run.code == 0, run.out + run.err
    assert run.err == ""
    assert "the file is valid" in run.out and "logged in as alice" in run.out
    # It only looks: no local store is created by a check.
    assert not (tmp_path / "store").exists()


async def test_online_check_names_a_refused_token(
    chat_server: RunningServer, tmp_path: Path
) -> None:
    path = config(tmp_path, chat_server.url, "not-alices-token")
    run = await tui_chat_async(tmp_path, "config", "check", "--online", "--config", str(path))
    line = assert_one_error(run, 3, chat_server.url, "authentication failed", "close code 4401")
    assert "unknown user or wrong token" in line  # the server's own words
    assert "OK" not in run.out  # no verdict on the file that reads as one on the login


async def test_online_check_after_the_account_was_removed(
    chat_server: RunningServer, tmp_path: Path
) -> None:
    token = make_users(chat_server.db_path, "dora")["dora"]
    path = config(tmp_path, chat_server.url, token, user="dora")
    first = await tui_chat_async(tmp_path, "config", "check", "--online", "--config", str(path))
    assert first.code == 0, first.err
    db = str(chat_server.db_path)
    removed = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "tui_chat.server.cli", "remove-user", "dora", "--db", db],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert removed.returncode == 0, removed.stderr
    run2 = await tui_chat_async(tmp_path, "config", "check", "--online", "--config", str(path))
    assert_one_error(run2, 3, "close code 440")  # 4401 or 4403: refused, with the code


@pytest.fixture
async def closing_server() -> AsyncIterator[str]:
    """A websocket peer that refuses every login with 4403 and the server's reason.

    Our server sends 4403 to sessions that are open when an account is closed; a check
    logs in afresh, so this stands in for a server that refuses a login that way.
    """

    async def handler(ws: ServerConnection) -> None:
        await ws.recv()
        await ws.send(p.encode(p.Error(code="account_closed", reason="account removed")))
        await ws.close(p.CloseCode.ACCOUNT_CLOSED, "account removed")

    async with serve(handler, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        yield f"ws://127.0.0.1:{port}"


async def test_online_check_names_a_closed_account(closing_server: str, tmp_path: Path) -> None:
    path = config(tmp_path, closing_server, "some-token")
    run = await tui_chat_async(tmp_path, "config", "check", "--online", "--config", str(path))
    assert_one_error(run, 3, "account closed", "close code 4403", "account removed")


async def test_online_check_when_nobody_listens(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"ws://127.0.0.1:{port}"
    path = config(tmp_path, url, "some-token")
    run = await tui_chat_async(tmp_path, "config", "check", "--online", "--config", str(path))
    assert_one_error(run, 4, url, "server unreachable", "connection refused")


async def test_online_check_names_an_untrusted_certificate(tmp_path: Path) -> None:
    ca = trustme.CA()
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(tls)
    db_path = tmp_path / "tls.db"
    tokens = make_users(db_path, "alice")
    server = ChatServer(db_path, ServerConfig())
    await asyncio.wait_for(server.start("127.0.0.1", 0, tls=tls), 10)
    try:
        url = f"wss://127.0.0.1:{server.port}"
        # No ca_file: the system store does not know this CA.
        path = config(tmp_path, url, tokens["alice"])
        run = await tui_chat_async(tmp_path, "config", "check", "--online", "--config", str(path))
        assert_one_error(run, 4, url, "TLS error", "certificate", "server.ca_file")

        ca_file = tmp_path / "ca.pem"
        ca.cert_pem.write_to_path(str(ca_file))
        path = config(tmp_path, url, tokens["alice"], ca_file=ca_file)
        run = await tui_chat_async(tmp_path, "config", "check", "--online", "--config", str(path))
        assert run.code == 0, run.err
        assert "logged in as alice" in run.out
    finally:
        await asyncio.wait_for(server.stop(), 15)
