"""Entry point of ``tui-chat``: the TUI, the headless client, and config helpers."""

from __future__ import annotations

import argparse
import asyncio
import logging
import ssl
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from tui_chat import __version__
from tui_chat.configfile import ConfigError
from tui_chat.core import config as client_config
from tui_chat.core.store import StoreError

if TYPE_CHECKING:
    from tui_chat.core.engine import Engine

TEMPLATE = """\
# tui-chat configuration. Every key is optional unless marked "required".
# Check it with: tui-chat config check

[server]
url = "ws://127.0.0.1:8765"          # ws:// or wss://
# ca_file = "/path/to/ca.pem"        # trust a private CA for wss://

[account]
user = "alice"                       # required
# Exactly one of these three:
token = "paste the token from `tui-chat-server add-user alice` here"
# token_file = "~/.config/tui-chat/token"
# token_command = ["pass", "show", "tui-chat"]

# [storage]
# dir = "~/.local/share/tui-chat"    # where the local message store lives

# [sync]
# freshness_window = 300.0           # seconds a pending message is retried automatically
# backoff_initial = 0.5              # first reconnect delay ceiling (full jitter)
# backoff_cap = 30.0                 # longest reconnect delay
# stable_after = 10.0                # link must stay up this long to reset the backoff
# ping_interval = 15.0               # keepalive ping every ... seconds
# ping_timeout = 10.0                # ... and give up on the link after this
# connect_timeout = 10.0
# ack_timeout = 10.0                 # no ack within this: reconnect and resend
# on_failure = "hold"                # "hold" later messages behind a failed one, or "continue"

# [ui]
# theme = "textual-dark"
# bell = true                        # ring for a new message in another conversation
# notify_failures = true
# notify_connection = true

# [keys]                             # remap by binding id, e.g.:
# retry = "r"
# give_up = "d,delete"
# retry_all = "ctrl+r"
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tui-chat",
        description="A resilient terminal chat client. With no config file it opens a demo.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--config", help="config file (default: $TUI_CHAT_CONFIG, else the user config dir)"
    )
    parser.add_argument("--demo", action="store_true", help="open the demo even if configured")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    headless = sub.add_parser("headless", help="JSON lines on stdin/stdout, for scripts and bots")
    headless.add_argument("--config", dest="sub_config", help="config file")
    headless.add_argument("-v", "--verbose", action="store_true", help="log to stderr")
    cfg = sub.add_parser("config", help="create, locate or check the config file")
    cfg.add_argument("action", choices=["init", "path", "check"])
    cfg.add_argument("--config", dest="sub_config", help="config file")
    return parser


def load_config(explicit: str | None) -> tuple[client_config.ClientConfig, Path]:
    path = client_config.resolve_config_path(explicit)
    cfg = client_config.load(path)
    check_keys(cfg, path)
    return cfg, path


def check_keys(cfg: client_config.ClientConfig, path: Path) -> None:
    if not cfg.keys:
        return
    from tui_chat.ui.keys import binding_ids

    known = binding_ids()
    for binding_id in cfg.keys:
        if binding_id not in known:
            raise ConfigError(
                path,
                f"keys.{binding_id}",
                "unknown binding id; expected one of " + ", ".join(sorted(known)),
            )


def ssl_context(cfg: client_config.ClientConfig, path: Path) -> ssl.SSLContext | None:
    if not cfg.server.url.startswith("wss://"):
        return None
    ctx = ssl.create_default_context()
    if cfg.server.ca_file:
        try:
            ctx.load_verify_locations(Path(cfg.server.ca_file).expanduser())
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(path, "server.ca_file", f"cannot load CA file: {exc}") from None
    return ctx


def main(
    argv: list[str] | None = None, *, prepare_engine: Callable[[Engine], object] | None = None
) -> int:
    """``prepare_engine`` (headless only) gets the engine before it runs: the chaos harness
    attaches its frame observer there, through the public API."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "headless":
            return _headless(args.sub_config or args.config, args.verbose, prepare_engine)
        if args.command == "config":
            return _config_command(args.action, args.sub_config or args.config)
        return _tui(args.config, args.demo)
    except (ConfigError, StoreError) as exc:
        print(f"tui-chat: {exc}", file=sys.stderr)
        return 2


def _warn_permissions(cfg: client_config.ClientConfig, path: Path) -> None:
    for warning in client_config.permission_warnings(cfg, path):
        print(f"tui-chat: warning: {warning}", file=sys.stderr)


def _config_command(action: str, explicit: str | None) -> int:
    path = client_config.resolve_config_path(explicit)
    if action == "path":
        print(path)
        return 0
    if action == "init":
        if path.exists():
            print(f"tui-chat: {path} already exists; not overwriting it", file=sys.stderr)
            return 1
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(TEMPLATE, encoding="utf-8")
        path.chmod(0o600)
        check = "tui-chat config check" + (f" --config {path}" if explicit else "")
        print(f"wrote {path}; edit [server] and [account], then run: {check}")
        return 0
    cfg, path = load_config(explicit)
    _warn_permissions(cfg, path)
    client_config.resolve_token(cfg, path)
    ssl_context(cfg, path)
    print(f"{path}: OK (user {cfg.account.user} at {cfg.server.url}, store {cfg.store_path()})")
    return 0


def _headless(
    config_path: str | None,
    verbose: bool,
    prepare_engine: Callable[[Engine], object] | None = None,
) -> int:
    from tui_chat.core.engine import Engine
    from tui_chat.headless import run_headless

    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    cfg, path = load_config(config_path)
    _warn_permissions(cfg, path)
    token = client_config.resolve_token(cfg, path)
    ctx = ssl_context(cfg, path)

    async def go() -> int:
        engine = Engine(cfg, token, ssl_context=ctx)
        _report_store_repair(engine)
        if prepare_engine is not None:
            prepare_engine(engine)
        return await run_headless(engine)

    try:
        return asyncio.run(go())
    except KeyboardInterrupt:
        return 130


def _report_store_repair(engine: Engine) -> None:
    """One line on stderr when the store was found damaged and replaced at open."""
    report = engine.store.repair_report
    if report is not None:
        print(f"tui-chat: warning: {report.line()}", file=sys.stderr, flush=True)


def _tui(explicit: str | None, force_demo: bool) -> int:
    path = client_config.resolve_config_path(explicit)
    if force_demo or (explicit is None and not path.exists()):
        return asyncio.run(_run_demo())
    cfg, path = load_config(explicit)
    _warn_permissions(cfg, path)
    token = client_config.resolve_token(cfg, path)
    ctx = ssl_context(cfg, path)
    return asyncio.run(_run_app(cfg, token, ctx))


async def _run_app(cfg: client_config.ClientConfig, token: str, ctx: ssl.SSLContext | None) -> int:
    from tui_chat.core.engine import Engine
    from tui_chat.ui.app import ChatApp

    engine = Engine(cfg, token, ssl_context=ctx)
    _report_store_repair(engine)  # stays on the terminal after the TUI exits; also a toast
    app = ChatApp(engine, ui=cfg.ui, keymap=cfg.keys)
    try:
        await app.run_async()
    finally:
        engine.close()
    return 0


async def _run_demo() -> int:
    from tui_chat.demo import Demo
    from tui_chat.ui.app import ChatApp

    logging.basicConfig(level=logging.CRITICAL)
    demo = Demo()
    engine = await demo.start()
    app = ChatApp(engine, demo=demo)
    try:
        await app.run_async()
    finally:
        await demo.stop()
        engine.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
