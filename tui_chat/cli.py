"""Entry point of ``tui-chat``: the TUI, the headless client, and config helpers."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import ssl
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from tui_chat import __version__, config_template
from tui_chat.configfile import ConfigError
from tui_chat.core import config as client_config
from tui_chat.core.store import StoreError

if TYPE_CHECKING:
    from tui_chat.core.engine import Engine

# Written once, from the config Structs (tui_chat/config_template.py).
TEMPLATE = config_template.template()
# Exit codes besides 0 and argparse's 2 for usage (a bad config file is 2 as well).
EXIT_CONFIG = 2
EXIT_REFUSED = 3  # the server refused the login (as for headless)
EXIT_UNREACHABLE = 4  # no answer, or not a tui-chat server


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
    headless.add_argument(
        "--follow",
        action="store_true",
        help="keep running after stdin ends, for incoming messages (stop with SIGTERM/SIGINT)",
    )
    cfg = sub.add_parser("config", help="create, locate or check the config file")
    cfg.add_argument("action", choices=["init", "path", "check"])
    cfg.add_argument("--config", dest="sub_config", help="config file")
    cfg.add_argument(
        "--online",
        action="store_true",
        help="check: also log in to the server once and report why it was refused",
    )
    return parser


def load_config(explicit: str | None) -> tuple[client_config.ClientConfig, Path]:
    """Everything start-up would trip on, as one ConfigError naming file and key."""
    path = client_config.resolve_config_path(explicit)
    cfg = client_config.load(path)
    check_theme(cfg, path)
    check_keys(cfg, path)
    return cfg, path


def check_theme(cfg: client_config.ClientConfig, path: Path) -> None:
    from textual.theme import BUILTIN_THEMES

    if cfg.ui.theme not in BUILTIN_THEMES:
        raise ConfigError(
            path,
            "ui.theme",
            f"unknown theme {cfg.ui.theme!r}; expected one of " + ", ".join(sorted(BUILTIN_THEMES)),
        )


def check_keys(cfg: client_config.ClientConfig, path: Path) -> list[str]:
    """Raise for an unknown binding id or a key no terminal sends; return warnings."""
    if not cfg.keys:
        return []
    from tui_chat import keynames
    from tui_chat.ui.keys import binding_ids

    known = binding_ids()
    warnings: list[str] = []
    for binding_id, keys in cfg.keys.items():
        if binding_id not in known:
            raise ConfigError(
                path,
                f"keys.{binding_id}",
                "unknown binding id; expected one of " + ", ".join(sorted(known)),
            )
        names = [k.strip() for k in keys.split(",")]
        for key in names:
            support = keynames.support(key)
            if support is keynames.KeySupport.NEVER:
                raise ConfigError(
                    path,
                    f"keys.{binding_id}",
                    f"no terminal sends the key {key!r}"
                    + (" (an empty name between commas)" if not key else "")
                    + "; expected keys separated by commas, each "
                    + keynames.examples(),
                )
            if support is keynames.KeySupport.KITTY_ONLY:
                warnings.append(
                    f"{path}: key {'keys.' + binding_id!r}: {key!r} arrives only from terminals"
                    " with the kitty keyboard protocol (kitty, foot, WezTerm, Ghostty), not"
                    " through tmux or xterm"
                )
    return warnings


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
            return _headless(
                args.sub_config or args.config, args.verbose, args.follow, prepare_engine
            )
        if args.command == "config":
            return _config_command(args.action, args.sub_config or args.config, args.online)
        return _tui(args.config, args.demo)
    except (ConfigError, StoreError) as exc:
        print(f"tui-chat: {exc}", file=sys.stderr)
        return EXIT_CONFIG


def _warn(cfg: client_config.ClientConfig, path: Path) -> None:
    warnings = client_config.permission_warnings(cfg, path) + check_keys(cfg, path)
    for warning in warnings:
        print(f"tui-chat: warning: {warning}", file=sys.stderr)


def _config_command(action: str, explicit: str | None, online: bool = False) -> int:
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
    _warn(cfg, path)
    token = client_config.resolve_token(cfg, path)
    ctx = ssl_context(cfg, path)
    # With --online the file's verdict waits for the login's: "OK" then "refused" would
    # read as a contradiction.
    what = f"user {cfg.account.user} at {cfg.server.url}, store {cfg.store_path()}"
    if not online:
        print(f"{path}: OK ({what})")
        return 0
    print(f"{path}: the file is valid ({what}); logging in…")
    if cfg.server.protocol == "matrix":
        from tui_chat.matrix.check import check_matrix_login

        result = asyncio.run(
            check_matrix_login(
                cfg.server.url,
                cfg.account.user,
                token,
                password=cfg.account.password is not None,
                request_timeout=cfg.sync.connect_timeout,
            )
        )
    else:
        from tui_chat.login_check import check_login

        result = asyncio.run(
            check_login(cfg.server.url, cfg.account.user, token, ctx, cfg.sync.connect_timeout)
        )
    if result.ok:
        print(f"{cfg.server.url}: {result.message}")
        return 0
    print(f"tui-chat: {cfg.server.url}: {result.message}", file=sys.stderr)
    return EXIT_REFUSED if result.code is not None else EXIT_UNREACHABLE


def _token_source(cfg: client_config.ClientConfig, path: Path) -> Callable[[], str]:
    # Read once now: a token that cannot be read at start is a config error (exit 2),
    # before anything starts. The engine calls the source again before the login that
    # follows a refused one (F5), so a rotated token_file or token_command is picked up.
    first = client_config.resolve_token(cfg, path)
    return client_config.token_source(cfg, path, first=first)


def _headless(
    config_path: str | None,
    verbose: bool,
    follow: bool = False,
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
    _warn(cfg, path)
    token = _token_source(cfg, path)
    ctx = ssl_context(cfg, path)

    async def go() -> int:
        engine = Engine(cfg, token, ssl_context=ctx)
        _report_store_repair(engine)
        if prepare_engine is not None:
            prepare_engine(engine)
        return await run_headless(engine, follow=follow)

    try:
        return asyncio.run(go())
    except KeyboardInterrupt:
        return 130


def _report_store_repair(engine: Engine) -> None:
    """One line on stderr when the store was found damaged and replaced at open."""
    report = engine.store_repair
    if report is not None:
        print(f"tui-chat: warning: {report.line()}", file=sys.stderr, flush=True)


def _tui(explicit: str | None, force_demo: bool) -> int:
    path = client_config.resolve_config_path(explicit)
    if force_demo or (explicit is None and not path.exists()):
        return asyncio.run(_run_demo())
    cfg, path = load_config(explicit)
    _warn(cfg, path)
    token = _token_source(cfg, path)
    ctx = ssl_context(cfg, path)
    return asyncio.run(_run_app(cfg, token, ctx))


async def _tune_gc(_pilot: object) -> None:
    """Run once the app is mounted (Textual's ready hook: ``run_async(auto_pilot=...)``)."""
    # Everything built so far lives as long as the app: keep it out of the
    # garbage collector's full passes, which otherwise stall message delivery
    # for tens of milliseconds (measured in benchmarks/ui_bench.py).
    gc.freeze()
    # Full passes come every 10 middle-generation passes by default; with a
    # screen that allocates on every frame that is several a second, each one a
    # visible stall. Every 1,000 keeps cycles collected without the stalls.
    gen0, gen1, _ = gc.get_threshold()
    gc.set_threshold(gen0, gen1, 1000)


async def _run_app(
    cfg: client_config.ClientConfig, token: Callable[[], str], ctx: ssl.SSLContext | None
) -> int:
    from tui_chat.core.engine import Engine
    from tui_chat.ui.app import ChatApp

    engine = Engine(cfg, token, ssl_context=ctx)
    _report_store_repair(engine)  # stays on the terminal after the TUI exits; also a toast
    app = ChatApp(engine, ui=cfg.ui, keymap=cfg.keys)
    try:
        await app.run_async(auto_pilot=_tune_gc)
    finally:
        engine.close()
    return 0


async def _run_demo() -> int:
    from tui_chat.demo import Demo
    from tui_chat.ui.demo_app import DemoApp

    logging.basicConfig(level=logging.CRITICAL)
    demo = Demo()
    engine = await demo.start()
    app = DemoApp(engine, demo)
    try:
        await app.run_async(auto_pilot=_tune_gc)
    finally:
        await demo.stop()
        engine.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
