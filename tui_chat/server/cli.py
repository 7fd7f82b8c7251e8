"""``tui-chat-server``: run the reference server and manage its accounts."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import signal
import sqlite3
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import cast

from tui_chat import __version__
from tui_chat.configfile import ConfigError
from tui_chat.server import config as server_config
from tui_chat.server import db
from tui_chat.server.app import ChatServer, load_tls
from tui_chat.server.nodes import StartError, check_store_url, open_store_conn, redact


def _add_db_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--db",
        type=Path,
        default=None,
        help=f"SQLite database file (default: {server_config.default_db_path()})",
    )
    p.add_argument(
        "--store",
        metavar="URL",
        help="a PostgreSQL store shared by several nodes (postgresql://user@host:port/db),"
        " instead of --db; needs tui-chat[server-pg]",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tui-chat-server", description="The tui-chat reference server."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the server")
    _add_db_arg(serve)
    serve.add_argument("--config", type=Path, help="server.toml with limits and settings")
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default 8765; 0 = any free)")
    serve.add_argument("--certfile", help="TLS certificate (PEM) to serve wss://")
    serve.add_argument("--keyfile", help="TLS private key (PEM)")
    serve.add_argument("-v", "--verbose", action="store_true", help="log each connection")
    serve.add_argument(
        "--bus",
        metavar="URL",
        help="with --store: the Redis that carries notifications between nodes"
        " (redis://host:port/0)",
    )

    add = sub.add_parser("add-user", help="create a user and print its token once")
    add.add_argument("name")
    _add_db_arg(add)
    lst = sub.add_parser("list-users", help="list users")
    _add_db_arg(lst)
    rm = sub.add_parser("remove-user", help="remove a user (their messages stay)")
    rm.add_argument("name")
    _add_db_arg(rm)
    rv = sub.add_parser("revoke-token", help="replace a user's token and print the new one")
    rv.add_argument("name")
    _add_db_arg(rv)
    mg = sub.add_parser(
        "migrate", help="copy an SQLite service (--from-db) into an empty store (--store)"
    )
    mg.add_argument("--from-db", type=Path, required=True, help="the SQLite database to copy")
    mg.add_argument("--store", metavar="URL", required=True, help="the PostgreSQL store")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "serve":
            return _serve(args)
        if args.command == "migrate":
            return _migrate(args)
        return _admin(args)
    except (ConfigError, db.UserError, StartError) as exc:
        print(f"tui-chat-server: {exc}", file=sys.stderr)
        return 2
    except sqlite3.DatabaseError as exc:
        where = (
            f"store {redact(args.store)}" if getattr(args, "store", None) else f"database {args.db}"
        )
        print(f"tui-chat-server: {where}: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader of our output went away (e.g. `| head`): nothing to report to.
        sys.stderr.close()
        return 1


def _db_path(arg: Path | None, cfg: server_config.ServerConfig | None = None) -> Path:
    if arg is not None:
        return arg
    if cfg is not None and cfg.server.db:
        return Path(cfg.server.db).expanduser()
    return server_config.default_db_path()


def _migrate(args: argparse.Namespace) -> int:
    check_store_url(args.store)
    open_store_conn(args.store).close()
    from tui_chat.server.pg import schema

    epoch, counts = schema.migrate_from_sqlite(args.from_db, args.store)
    copied = ", ".join(f"{n} {table}" for table, n in counts.items())
    print(f"copied {args.from_db} into {redact(args.store)} (epoch {epoch}): {copied}")
    return 0


def _admin(args: argparse.Namespace) -> int:
    conn: sqlite3.Connection
    if args.store is not None:
        if args.db is not None:
            raise StartError("--db and --store name two different stores: give one")
        # Speaks the sqlite3 subset that the account functions use (see tui_chat.server.pg).
        conn = cast(sqlite3.Connection, open_store_conn(args.store))
        where = f"--store {redact(args.store)}"
    else:
        path = _db_path(args.db)
        if args.command != "add-user" and not path.exists():
            # A mistyped --db must not silently create an empty database.
            raise db.UserError(f"no database at {path} (create it with: add-user NAME --db {path})")
        conn, _ = db.open_db(path)
        where = f"--db {path}"
    try:
        if args.command == "add-user":
            token = db.add_user(conn, args.name)
            print(f"created user {args.name!r}; token (shown once, keep it secret):")
            print(token)
        elif args.command == "revoke-token":
            token = db.revoke_token(conn, args.name)
            print(f"new token for {args.name!r} (the old one no longer works):")
            print(token)
        elif args.command == "remove-user":
            db.remove_user(conn, args.name)
            print(f"removed user {args.name!r}")
        elif args.command == "list-users":
            users = db.list_users(conn)
            if not users:
                print(f"no users in {where}; add one with: tui-chat-server add-user NAME {where}")
            for u in users:
                created = datetime.fromtimestamp(u.created_at / 1000, UTC)
                print(f"{u.name}\t{created:%Y-%m-%d %H:%M:%S} UTC")
    finally:
        conn.close()
    return 0


def _serve(args: argparse.Namespace) -> int:
    cfg = server_config.load(args.config) if args.config else server_config.ServerConfig()
    host = args.host or cfg.server.host
    port = args.port if args.port is not None else cfg.server.port
    certfile = args.certfile or cfg.server.certfile
    keyfile = args.keyfile or cfg.server.keyfile
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        tls = load_tls(certfile, keyfile)
    except (OSError, ValueError) as exc:
        print(f"tui-chat-server: cannot load TLS certificate {certfile}: {exc}", file=sys.stderr)
        return 2
    if args.bus is not None and args.store is None:
        raise StartError("--bus joins nodes that share a --store: give --store too")
    if args.store is not None and args.db is not None:
        raise StartError("--db and --store name two different stores: give one")
    server = ChatServer(_db_path(args.db, cfg), cfg, store=args.store, bus=args.bus)
    return asyncio.run(_run(server, host, port, tls))


async def _run(server: ChatServer, host: str, port: int, tls: object) -> int:
    import ssl

    # Handlers go in before the listening line: whoever reads that line may send SIGTERM
    # at once, and must get a clean shutdown (exit 0), not death by the default action.
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    try:
        await server.start(host, port, tls if isinstance(tls, ssl.SSLContext) else None)
    except StartError as exc:
        print(f"tui-chat-server: {exc}", file=sys.stderr)
        await server.stop()
        return 2
    except OSError as exc:
        print(f"tui-chat-server: cannot listen on {host}:{port}: {exc.strerror}", file=sys.stderr)
        return 2
    # What start() built (config, caches, the writer) lives as long as the process: keep
    # it out of the collector's full passes, and make those rarer. With 1,000 connections a
    # full pass took 49-64 ms, the whole event loop stalled with it (benchmarks.md, fan-out).
    gc.freeze()
    gen0, gen1, _ = gc.get_threshold()
    gc.set_threshold(gen0, gen1, 1000)
    scheme = "wss" if tls else "ws"
    shown = f"[{host}]" if ":" in host else host
    # Tests and scripts read this line to learn the port when --port 0 is used.
    where = f"store {redact(server.store)}" if server.store else f"db {server.db_path}"
    if server.bus:
        where += f", bus {server.bus}"
    print(
        f"tui-chat-server listening on {scheme}://{shown}:{server.port} "
        f"({where}, epoch {server.epoch})",
        flush=True,
    )
    await stopping.wait()
    print("tui-chat-server: stopping (closing connections with 1012)", flush=True)
    await server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
