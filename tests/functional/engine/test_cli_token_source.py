"""The token source the entry points give the engine: read again after a refused login.

After an auth failure, F5 (``reconnect_now``) must pick up a token rotated in
``token_file`` or behind ``token_command`` without a restart; a ``token_command`` that
fails then is a reason on the status line, not a crash. Real server, real engine, real
files and a real command.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest

from harness.clientconf import client_config as harness_config
from harness.clientconf import write_client_toml
from harness.waits import until
from tests.support.engines import Engines
from tests.support.wire import RunningServer
from tui_chat.configfile import ConfigError
from tui_chat.core import config as client_config
from tui_chat.core.models import ConnState


def config_file(tmp_path: Path, url: str, **token: Any) -> tuple[client_config.ClientConfig, Path]:
    """A config file like a user's, with ``token_file=`` or ``token_command=``."""
    cfg = harness_config(tmp_path / "store", "alice", "unused", url)
    cfg = msgspec.structs.replace(cfg, account=client_config.AccountSection(user="alice", **token))
    path = write_client_toml(tmp_path / "client.toml", cfg)
    return client_config.load(path), path


def test_the_source_reads_the_file_again_on_each_call(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("first\n", encoding="utf-8")
    cfg, path = config_file(tmp_path, "ws://127.0.0.1:9", token_file=str(token_file))
    source = client_config.token_source(cfg, path, first="already-read")
    assert source() == "already-read"  # the value read at start-up is not read twice
    assert source() == "first"
    token_file.write_text("second\n", encoding="utf-8")
    assert source() == "second"
    token_file.unlink()
    with pytest.raises(ConfigError) as err:
        source()
    assert str(path) in str(err.value) and "account.token_file" in str(err.value)


def test_a_failing_token_command_says_what_it_printed(tmp_path: Path) -> None:
    script = "import sys; print('gpg: decryption failed\\x1b[31m', file=sys.stderr); sys.exit(2)"
    command = [sys.executable, "-c", script]
    cfg, path = config_file(tmp_path, "ws://127.0.0.1:9", token_command=command)
    with pytest.raises(ConfigError) as err:
        client_config.token_source(cfg, path)()
    message = str(err.value)
    assert "account.token_command" in message and "status 2" in message
    assert "gpg: decryption failed" in message and "\x1b" not in message


async def test_f5_after_an_auth_failure_reads_the_rotated_token_file(
    chat_server: RunningServer, engines: Engines, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("an-old-token\n", encoding="utf-8")
    cfg, path = config_file(tmp_path, chat_server.url, token_file=str(token_file))
    client = await engines.run(cfg, client_config.token_source(cfg, path))
    await until(lambda: client.state is ConnState.AUTH_FAILED, "the refused login")

    token_file.write_text(chat_server.tokens["alice"] + "\n", encoding="utf-8")
    client.engine.reconnect_now()  # what F5 does
    await client.online()


async def test_a_token_command_failing_at_f5_is_a_status_reason_not_a_crash(
    chat_server: RunningServer, engines: Engines, tmp_path: Path
) -> None:
    secret = tmp_path / "secret"
    secret.write_text("an-old-token", encoding="utf-8")
    script = (
        "import pathlib, sys; p = pathlib.Path(sys.argv[1]); "
        "print(p.read_text()) if p.exists() else sys.exit('vault locked')"
    )
    command = [sys.executable, "-c", script, str(secret)]
    cfg, path = config_file(tmp_path, chat_server.url, token_command=command)
    client = await engines.run(cfg, client_config.token_source(cfg, path))
    await until(lambda: client.state is ConnState.AUTH_FAILED, "the refused login")

    secret.unlink()  # the password manager is locked now
    client.engine.reconnect_now()
    await until(
        lambda: "vault locked" in (client.engine.status.reason or ""),
        "the command's failure as the status reason",
    )
    assert not client.task.done()  # the engine is still running
    assert client.state is not ConnState.ONLINE

    secret.write_text(chat_server.tokens["alice"], encoding="utf-8")
    client.engine.reconnect_now()
    await client.online()
