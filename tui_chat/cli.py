"""Entry point of ``tui-chat``: the TUI, the headless client, and config helpers."""

from __future__ import annotations

import argparse
import asyncio
import logging
import ssl
import sys
from pathlib import Path

from tui_chat import __version__
from tui_chat.configfile import ConfigError
from tui_chat.core import config as client_config
from tui_chat.core.store import StoreError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tui-chat", description="A resilient terminal chat client."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--config", help="config file (default: $TUI_CHAT_CONFIG or the user config dir)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    headless = sub.add_parser("headless", help="JSON lines on stdin/stdout, for scripts and bots")
    headless.add_argument("--config", dest="sub_config", help="config file")
    headless.add_argument("-v", "--verbose", action="store_true", help="log to stderr")
    return parser


def load_config(explicit: str | None) -> tuple[client_config.ClientConfig, Path]:
    path = client_config.resolve_config_path(explicit)
    return client_config.load(path), path


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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "headless":
            return _headless(args.sub_config or args.config, args.verbose)
        print(
            "tui-chat: the terminal UI is not built yet; use `tui-chat headless --config FILE`.",
            file=sys.stderr,
        )
        return 1
    except ConfigError as exc:
        print(f"tui-chat: {exc}", file=sys.stderr)
        return 2
    except StoreError as exc:
        print(f"tui-chat: {exc}", file=sys.stderr)
        return 2


def _headless(config_path: str | None, verbose: bool) -> int:
    from tui_chat.core.engine import Engine
    from tui_chat.headless import run_headless

    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    cfg, path = load_config(config_path)
    for warning in client_config.permission_warnings(cfg, path):
        print(f"tui-chat: warning: {warning}", file=sys.stderr)
    token = client_config.resolve_token(cfg, path)
    ctx = ssl_context(cfg, path)

    async def go() -> int:
        engine = Engine(cfg, token, ssl_context=ctx)
        return await run_headless(engine)

    try:
        return asyncio.run(go())
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
