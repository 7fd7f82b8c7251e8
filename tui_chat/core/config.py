"""The client's TOML configuration, shared by ``tui-chat`` and ``tui-chat headless``.

Unknown keys are errors: a misspelt setting that silently does nothing is worse
than a clear message naming the file and the key.
"""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path
from typing import Annotated, Literal

import msgspec
import platformdirs

from tui_chat import configfile
from tui_chat.configfile import ConfigError

APP_NAME = "tui-chat"
ENV_CONFIG = "TUI_CHAT_CONFIG"

Seconds = Annotated[float, msgspec.Meta(gt=0)]


class ServerSection(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    url: Annotated[str, msgspec.Meta(pattern=r"^wss?://")] = "ws://127.0.0.1:8765"
    # CA bundle (PEM) to trust for wss:// with a private or self-signed certificate.
    ca_file: str | None = None


class AccountSection(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    user: Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9][a-z0-9_.-]{0,31}$")]
    token: str | None = None
    token_file: str | None = None
    # A command whose standard output is the token (e.g. a password manager).
    token_command: list[str] | None = None


class StorageSection(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    dir: str | None = None


class SyncSection(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    # Pending messages older than this are not sent without the user's word.
    freshness_window: Seconds = 300.0
    backoff_initial: Seconds = 0.5
    backoff_cap: Seconds = 30.0
    # The backoff resets only after a link has stayed up this long.
    stable_after: Seconds = 10.0
    ping_interval: Seconds = 15.0
    ping_timeout: Seconds = 10.0
    connect_timeout: Seconds = 10.0
    # No ack within this time: the link is suspect, reconnect and resend.
    ack_timeout: Seconds = 10.0
    # "hold": later messages to a peer wait behind a failed one; "continue": send them.
    on_failure: Literal["hold", "continue"] = "hold"


class UiSection(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    theme: str = "textual-dark"
    bell: bool = True
    notify_failures: bool = True
    notify_connection: bool = True


class ClientConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    account: AccountSection
    server: ServerSection = msgspec.field(default_factory=ServerSection)
    storage: StorageSection = msgspec.field(default_factory=StorageSection)
    sync: SyncSection = msgspec.field(default_factory=SyncSection)
    ui: UiSection = msgspec.field(default_factory=UiSection)
    # Binding id → key(s), e.g. retry = "r" or quit = "ctrl+q,f10".
    keys: dict[str, str] = {}

    def data_dir(self) -> Path:
        if self.storage.dir:
            return Path(self.storage.dir).expanduser()
        return platformdirs.user_data_path(APP_NAME)

    def store_path(self) -> Path:
        host = self.server.url.split("://", 1)[1].split("/", 1)[0].replace(":", "_")
        return self.data_dir() / f"{self.account.user}@{host}.sqlite3"


def default_config_path() -> Path:
    return platformdirs.user_config_path(APP_NAME) / "config.toml"


def resolve_config_path(explicit: str | os.PathLike[str] | None) -> Path:
    if explicit:
        return Path(explicit).expanduser()
    env = os.environ.get(ENV_CONFIG)
    if env:
        return Path(env).expanduser()
    return default_config_path()


def load(path: Path) -> ClientConfig:
    """Read and validate a config file; raises :class:`ConfigError`."""
    cfg = configfile.load(path, ClientConfig)
    sources = [
        k for k in ("token", "token_file", "token_command") if getattr(cfg.account, k) is not None
    ]
    if len(sources) != 1:
        raise ConfigError(
            path,
            "account.token",
            "expected exactly one of account.token, account.token_file, account.token_command"
            + (f" (found {', '.join(sources)})" if sources else ""),
        )
    return cfg


def resolve_token(cfg: ClientConfig, path: Path | None = None) -> str:
    """The account's token, from the config itself, a token file, or a command."""
    acct = cfg.account
    if acct.token is not None:
        token = acct.token
    elif acct.token_file is not None:
        token_path = Path(acct.token_file).expanduser()
        try:
            token = token_path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(
                path, "account.token_file", f"cannot read {token_path}: {exc.strerror}"
            ) from None
    else:
        assert acct.token_command is not None
        try:
            done = subprocess.run(
                acct.token_command, capture_output=True, text=True, timeout=30, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ConfigError(path, "account.token_command", f"cannot run: {exc}") from None
        if done.returncode != 0:
            raise ConfigError(
                path, "account.token_command", f"exited with status {done.returncode}"
            )
        token = done.stdout
    token = token.strip()
    if not token:
        raise ConfigError(path, "account.token", "the token is empty")
    if any(ch.isspace() for ch in token) or token in ("…", "..."):
        # Tokens from `tui-chat-server add-user` are one word; this is the template's text.
        raise ConfigError(
            path,
            "account.token",
            "this is not a token (it still holds the template's text); paste the token"
            " printed by: tui-chat-server add-user NAME",
        )
    return token


def permission_warnings(cfg: ClientConfig, path: Path | None) -> list[str]:
    """Files holding a token that other users can read."""
    files: list[Path] = []
    if cfg.account.token is not None and path is not None:
        files.append(path)
    if cfg.account.token_file is not None:
        files.append(Path(cfg.account.token_file).expanduser())
    warnings = []
    for f in files:
        try:
            mode = f.stat().st_mode
        except OSError:
            continue
        if mode & (stat.S_IRGRP | stat.S_IROTH):
            warnings.append(f"{f} holds a token and is readable by other users; run: chmod 600 {f}")
    return warnings
