"""The client's TOML configuration, shared by ``tui-chat`` and ``tui-chat headless``.

Unknown keys are errors: a misspelt setting that silently does nothing is worse
than a clear message naming the file and the key.
"""

from __future__ import annotations

import importlib.util
import os
import re
import stat
import subprocess
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Final, Literal

import msgspec
import platformdirs

from tui_chat import configfile
from tui_chat.configfile import ConfigError
from tui_chat.protocol import USER_RE

APP_NAME = "tui-chat"
ENV_CONFIG = "TUI_CHAT_CONFIG"

Seconds = Annotated[float, msgspec.Meta(gt=0)]

# Every setting is declared once, here: its type, its default and a one-line description
# (``msgspec.Meta(description=...)``). ``tui-chat config init`` writes its template and
# docs/config.md shows its table from these declarations (tui_chat/config_template.py),
# and a test keeps the committed copy in sync. ``examples`` give the template a value for
# settings without a default; ``extra={"template": "set"}`` writes a setting uncommented.
SET: Final = {"template": "set"}

# A Matrix user id (@localpart:server), as `[account] user` with protocol = "matrix".
MXID_RE: Final = re.compile(r"^@[a-z0-9._=/+-]{1,200}:[A-Za-z0-9.-]+(:[0-9]{1,5})?$")
Protocol = Literal["tui-chat", "matrix"]


def _doc(description: str, **meta: Any) -> msgspec.Meta:
    return msgspec.Meta(description=description, **meta)


class ServerSection(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Where the chat server is."""

    protocol: Annotated[
        Protocol,
        _doc('"tui-chat" (tui-chat-server) or "matrix" (a Matrix homeserver, e.g. Synapse)'),
    ] = "tui-chat"
    # Checked by check_url (scheme, host, port range) for a message that says which part.
    url: Annotated[
        str,
        _doc(
            "the server's address: ws://HOST:PORT or wss://HOST:PORT (matrix: https://HOST[:PORT])",
            extra=SET,
        ),
    ] = "ws://127.0.0.1:8765"
    ca_file: Annotated[
        str | None,
        _doc("CA bundle (PEM) to trust for a private wss:// server", examples=["/path/to/ca.pem"]),
    ] = None


class AccountSection(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Who you are. Exactly one of token, token_file, token_command (matrix: or password)."""

    # Checked by check_user: a name for tui-chat, a Matrix user id for matrix.
    user: Annotated[
        str,
        msgspec.Meta(min_length=1, max_length=255),
        _doc(
            "your user name (1-32 of a-z 0-9 _ . -, starting with a letter or digit),"
            " or @name:server on Matrix",
            examples=["alice"],
        ),
    ]
    token: Annotated[
        str | None,
        _doc(
            "the token printed by `tui-chat-server add-user NAME`",
            examples=["paste the token from `tui-chat-server add-user alice` here"],
            extra=SET,
        ),
    ] = None
    token_file: Annotated[
        str | None,
        _doc(
            "a file holding the token (read again after a refused login)",
            examples=["~/.config/tui-chat/token"],
        ),
    ] = None
    token_command: Annotated[
        list[str] | None,
        _doc(
            "a command that prints the token, e.g. a password manager",
            examples=[["pass", "show", "tui-chat"]],
        ),
    ] = None
    password: Annotated[
        str | None,
        _doc(
            "matrix: log in once with it (the access token is kept in the store)",
            examples=["…"],
        ),
    ] = None


class StorageSection(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Where the local message store (outbox and history) lives."""

    dir: Annotated[
        str | None,
        _doc(
            "directory of the local store (default: the user data dir)",
            examples=["~/.local/share/tui-chat"],
        ),
    ] = None


class SyncSection(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Retries, freshness and keepalive (seconds)."""

    freshness_window: Annotated[
        Seconds,
        _doc("a pending message is retried automatically while younger; then it waits for you"),
    ] = 300.0
    backoff_initial: Annotated[
        Seconds, _doc("ceiling of the first reconnect wait (full jitter)")
    ] = 0.5
    backoff_cap: Annotated[Seconds, _doc("largest reconnect wait")] = 30.0
    stable_after: Annotated[
        Seconds, _doc("the link must stay up this long before the backoff resets")
    ] = 10.0
    ping_interval: Annotated[Seconds, _doc("keepalive ping every this many seconds")] = 15.0
    ping_timeout: Annotated[Seconds, _doc("no pong within this: the link is dead")] = 10.0
    connect_timeout: Annotated[Seconds, _doc("limit for the handshake and the login")] = 10.0
    ack_timeout: Annotated[
        Seconds, _doc("no ack within this: reconnect and resend after catch-up")
    ] = 10.0
    on_failure: Annotated[
        Literal["hold", "continue"],
        _doc('"hold" later messages to a peer behind a failed one, or "continue"'),
    ] = "hold"


class UiSection(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """How the terminal UI looks and what it announces."""

    theme: Annotated[str, _doc("a Textual theme name (config check lists them)")] = "textual-dark"
    bell: Annotated[
        bool,
        _doc(
            "ring for a new message in another conversation, for a mention, and, while the"
            " terminal is in the background, for a direct message in the open one"
        ),
    ] = True
    notify_failures: Annotated[bool, _doc("a toast when a message fails")] = True
    notify_connection: Annotated[bool, _doc("a toast when the connection drops or returns")] = True
    terminal_title: Annotated[
        bool,
        _doc(
            "name the terminal's title after tui-chat and, while the terminal is in the"
            " background, the unread count"
        ),
    ] = True
    desktop_notifications: Annotated[
        Literal["off", "osc777", "osc9"],
        _doc(
            "while the terminal is in the background, a desktop notification for a direct"
            " message or a mention, through the terminal's own escape: osc777 (foot, kitty,"
            " WezTerm, urxvt, Windows Terminal) or osc9 (iTerm2, kitty, WezTerm)"
        ),
    ] = "off"


class ClientConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    # In the order the template and docs/config.md show them.
    server: ServerSection = msgspec.field(default_factory=ServerSection)
    account: AccountSection
    storage: StorageSection = msgspec.field(default_factory=StorageSection)
    sync: SyncSection = msgspec.field(default_factory=SyncSection)
    ui: UiSection = msgspec.field(default_factory=UiSection)
    keys: Annotated[
        dict[str, str],
        _doc(
            'Remap keys by binding id: ID = "KEY" or "KEY1,KEY2" (config check lists the ids)',
            examples=[{"retry": "r", "give_up": "d,delete", "retry_all": "ctrl+r"}],
        ),
    ] = {}

    def data_dir(self) -> Path:
        if self.storage.dir:
            return Path(self.storage.dir).expanduser()
        return platformdirs.user_data_path(APP_NAME)

    def store_path(self) -> Path:
        host = self.server.url.split("://", 1)[1].split("/", 1)[0].replace(":", "_")
        # A Matrix localpart may hold "/": never a directory of its own.
        user = self.account.user.replace("/", "%2F")
        return self.data_dir() / f"{user}@{host}.sqlite3"


def default_config_path() -> Path:
    return platformdirs.user_config_path(APP_NAME) / "config.toml"


def resolve_config_path(explicit: str | os.PathLike[str] | None) -> Path:
    if explicit:
        return Path(explicit).expanduser()
    env = os.environ.get(ENV_CONFIG)
    if env:
        return Path(env).expanduser()
    return default_config_path()


def check_user(cfg: ClientConfig, path: Path | None) -> None:
    """account.user: a tui-chat name, or a Matrix user id with protocol = "matrix"."""
    user = cfg.account.user
    if cfg.server.protocol == "matrix":
        if not MXID_RE.match(user):
            raise ConfigError(
                path,
                "account.user",
                f"{user!r} is not a Matrix user id;"
                " expected @name:server (e.g. @alice:example.org)",
            )
    elif not USER_RE.match(user):
        raise ConfigError(
            path,
            "account.user",
            f"{user!r} is not a user name; expected 1-32 of a-z 0-9 _ . -, starting with a"
            ' letter or digit (a Matrix id needs [server] protocol = "matrix")',
        )


def check_url(url: str, path: Path | None, protocol: Protocol = "tui-chat") -> None:
    """What the pattern cannot say: a host, and a port the socket layer accepts.

    Without this a port like 99999 passes the pattern and then fails deep inside the
    connection code, long after start-up said nothing.
    """
    schemes = ("http", "https") if protocol == "matrix" else ("ws", "wss")
    expected = (
        "expected https://HOST[:PORT] (or http:// on 127.0.0.1) for a Matrix homeserver"
        if protocol == "matrix"
        else "expected ws://HOST[:PORT][/PATH] or wss://HOST[:PORT][/PATH]"
    )
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as exc:
        if "port" in str(exc).lower():  # "Port out of range 0-65535", "Port could not be cast"
            raise ConfigError(
                path, "server.url", f"bad port in {url!r}; expected a port from 1 to 65535"
            ) from None
        raise ConfigError(path, "server.url", f"{exc} in {url!r}; {expected}") from None
    if parts.scheme not in schemes:
        raise ConfigError(path, "server.url", f"scheme {parts.scheme!r} in {url!r}; {expected}")
    if not parts.hostname:
        raise ConfigError(path, "server.url", f"no host in {url!r}; {expected}")
    if port is not None and not 1 <= port <= 65535:
        raise ConfigError(
            path, "server.url", f"port {port} in {url!r} is out of range; expected 1-65535"
        )
    if parts.query or parts.fragment:
        raise ConfigError(path, "server.url", f"query or fragment in {url!r}; {expected}")


def _have(module: str) -> bool:
    """Whether ``module`` can be imported, without importing it."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def load(path: Path) -> ClientConfig:
    """Read and validate a config file; raises :class:`ConfigError`."""
    cfg = configfile.load(path, ClientConfig)
    check_url(cfg.server.url, path, cfg.server.protocol)
    check_user(cfg, path)
    keys = ["token", "token_file", "token_command"]
    if cfg.server.protocol == "matrix":
        keys.append("password")
        if not _have("httpx"):
            raise ConfigError(
                path,
                "server.protocol",
                "the Matrix back-end needs the matrix extra: pip install 'tui-chat[matrix]'",
            )
    elif cfg.account.password is not None:
        raise ConfigError(
            path, "account.password", 'a password login needs [server] protocol = "matrix"'
        )
    sources = [k for k in keys if getattr(cfg.account, k) is not None]
    if len(sources) != 1:
        raise ConfigError(
            path,
            "account.token",
            "expected exactly one of "
            + ", ".join(f"account.{k}" for k in keys)
            + (f" (found {', '.join(sources)})" if sources else ""),
        )
    return cfg


def resolve_token(cfg: ClientConfig, path: Path | None = None) -> str:
    """The account's token, from the config itself, a token file, or a command."""
    acct = cfg.account
    if acct.password is not None:
        # Matrix: the transport logs in with it once and keeps the access token.
        if not acct.password:
            raise ConfigError(path, "account.password", "the password is empty")
        return acct.password
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
            said = _last_line(done.stderr)
            raise ConfigError(
                path,
                "account.token_command",
                f"exited with status {done.returncode}" + (f": {said}" if said else ""),
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


def _last_line(text: str) -> str:
    """The command's last words, safe for a one-line message (no control characters)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return ""
    line = "".join(ch if ch.isprintable() else "?" for ch in lines[-1])
    return line[:200]


def token_source(
    cfg: ClientConfig, path: Path | None = None, *, first: str | None = None
) -> Callable[[], str]:
    """A callable that reads the token afresh each time (for the engine).

    The engine calls it at start and again before the login that follows a refused one,
    so a token rotated in ``token_file`` or the password manager is picked up by F5
    without a restart. It raises :class:`ConfigError` (one line: file, key, problem)
    when the token cannot be read; the engine shows that as the reason it is not online.
    ``first`` is a token the caller already read to check it at start: the first call
    returns it rather than running ``token_command`` a second time.
    """
    already = [first] if first is not None else []

    def read() -> str:
        if already:
            return already.pop()
        return resolve_token(cfg, path)

    return read


def permission_warnings(cfg: ClientConfig, path: Path | None) -> list[str]:
    """Files holding a token that other users can read."""
    files: list[Path] = []
    if (cfg.account.token is not None or cfg.account.password is not None) and path is not None:
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
