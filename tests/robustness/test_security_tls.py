"""Security of the client side as a user runs it: wss://, token file permissions, and what a
hostile server can write to the terminal of a ``tui-chat headless`` user.

All of these run the real programs: ``tui-chat-server serve --certfile --keyfile`` and
``tui-chat headless --config``. The certificates come from ``trustme`` (a throwaway CA made
in memory for the test; it is in the ``test`` extra).
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from harness.clientconf import FAST_SYNC, client_config, write_client_toml
from harness.serverproc import ServerProcess
from tests.support.headless import HeadlessProc, is_event
from tests.support.hostile import hostile_server
from tests.support.wire import USERS, db_rows, login, make_users
from tui_chat import protocol as p
from tui_chat.core import config as client_config_module


def headless_toml(
    path: Path, store: Path, user: str, token: str, url: str, *, ca_file: Path | None = None
) -> Path:
    """A client config as a user writes it, with ``ca_file`` in ``[server]`` when given."""
    write_client_toml(path, client_config(store, user, token, url, ca_file=ca_file))
    client_config_module.load(path)  # the file is valid
    return path


# ---------------------------------------------------------------- wss:// end to end


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


def tls_server(tmp_path: Path, ca: trustme.CA, host: str) -> Iterator[ServerProcess]:
    cert = ca.issue_cert(host)
    certfile, keyfile = tmp_path / f"{host}.crt", tmp_path / f"{host}.key"
    cert.cert_chain_pems[0].write_to_path(str(certfile))
    cert.private_key_pem.write_to_path(str(keyfile))
    db_path = tmp_path / f"tls-{host}.db"
    tokens = make_users(db_path, *USERS)
    with ServerProcess(
        db_path, extra_args=["--certfile", str(certfile), "--keyfile", str(keyfile)]
    ) as proc:
        proc.tokens = tokens
        yield proc


@pytest.fixture
def wss_server(tmp_path: Path, ca: trustme.CA) -> Iterator[ServerProcess]:
    """A real server with a certificate for 127.0.0.1 signed by ``ca``."""
    yield from tls_server(tmp_path, ca, "127.0.0.1")


@pytest.fixture
def ca_file(tmp_path: Path, ca: trustme.CA) -> Path:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


def trusting(ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    return ctx


async def test_wss_end_to_end_with_the_ca_file_in_the_client_config(
    wss_server: ServerProcess,
    ca: trustme.CA,
    ca_file: Path,
    tmp_path: Path,
    processes: list[HeadlessProc],
) -> None:
    assert wss_server.url.startswith("wss://127.0.0.1:")
    toml = headless_toml(
        tmp_path / "alice.toml", tmp_path / "a", "alice", wss_server.tokens["alice"],
        wss_server.url, ca_file=ca_file,
    )  # fmt: skip
    proc = await HeadlessProc.start(toml)
    processes.append(proc)
    await proc.wait_line(is_event("connection", state="online"), "online over wss")
    await proc.write({"cmd": "send", "to": "bob", "body": "over TLS", "id": 1})
    ok = await proc.wait_line(is_event("ok", id=1), "the send's ok")
    await proc.wait_line(is_event("state", client_id=ok["client_id"], state="sent"), "sent")

    # bob, trusting the same CA, gets it; the server stored it once.
    bob = await login(wss_server.url, "bob", wss_server.tokens["bob"], ssl=trusting(ca))
    await bob.ws.close()
    assert [(m.sender, m.body) for m in bob.replayed] == [("alice", "over TLS")]
    await proc.write({"cmd": "quit"})
    assert await proc.wait_exit() == 0


async def test_wss_without_the_ca_file_reports_a_tls_error_and_never_connects(
    wss_server: ServerProcess, tmp_path: Path, processes: list[HeadlessProc]
) -> None:
    toml = headless_toml(
        tmp_path / "alice.toml", tmp_path / "a", "alice", wss_server.tokens["alice"], wss_server.url
    )
    proc = await HeadlessProc.start(toml)
    processes.append(proc)
    await proc.write({"cmd": "send", "to": "bob", "body": "must not leave", "id": 1})
    ok = await proc.wait_line(is_event("ok", id=1), "the send's ok")
    for n in (1, 2, 3):
        await proc.wait_line(
            lambda _l, n=n: len(proc.matching(is_event("connection", state="offline"))) >= n,
            f"offline report {n}",
        )
    offline = proc.matching(is_event("connection", state="offline"))
    assert all(
        "TLS error" in o["reason"] and "CERTIFICATE_VERIFY_FAILED" in o["reason"] for o in offline
    ), offline
    assert proc.matching(is_event("connection", state="online")) == []
    assert proc.matching(is_event("state", client_id=ok["client_id"], state="sent")) == []
    await proc.write({"cmd": "quit"})
    assert await proc.wait_exit() == 0
    assert db_rows(wss_server.db_path, "SELECT count(*) FROM messages") == [(0,)]


async def test_wss_certificate_for_another_host_is_refused_even_with_the_ca_file(
    tmp_path: Path, ca: trustme.CA, ca_file: Path, processes: list[HeadlessProc]
) -> None:
    """The right CA does not make a certificate for another name acceptable."""
    for server in tls_server(tmp_path, ca, "example.org"):
        toml = headless_toml(
            tmp_path / "alice.toml", tmp_path / "a", "alice", server.tokens["alice"],
            server.url, ca_file=ca_file,
        )  # fmt: skip
        proc = await HeadlessProc.start(toml)
        processes.append(proc)
        offline = await proc.wait_line(is_event("connection", state="offline"), "offline")
        assert "TLS error" in offline["reason"]
        assert "CERTIFICATE_VERIFY_FAILED" in offline["reason"]
        assert proc.matching(is_event("connection", state="online")) == []
        await proc.write({"cmd": "quit"})
        assert await proc.wait_exit() == 0


# ---------------------------------------------------------------- token file permissions
# `tui-chat config check` is covered by test_cli_config.py (0644 token file, 0604 config).


@pytest.mark.parametrize(
    ("mode", "warned"),
    [(0o640, True), (0o604, True), (0o644, True), (0o600, False), (0o400, False), (0o700, False)],
)
def test_permission_warning_for_group_or_world_readable_token_files(
    tmp_path: Path, mode: int, warned: bool
) -> None:
    token = tmp_path / "token"
    token.write_text("secret\n")
    token.chmod(mode)
    cfg = client_config_module.ClientConfig(
        account=client_config_module.AccountSection(user="alice", token_file=str(token))
    )
    warnings = client_config_module.permission_warnings(cfg, tmp_path / "config.toml")
    assert bool(warnings) is warned
    if warned:
        assert str(token) in warnings[0] and "chmod 600" in warnings[0]
    command = client_config_module.ClientConfig(
        account=client_config_module.AccountSection(user="alice", token_command=["true"])
    )
    assert client_config_module.permission_warnings(command, tmp_path / "config.toml") == []


async def test_headless_warns_about_a_token_file_others_can_read(
    tmp_path: Path, processes: list[HeadlessProc]
) -> None:
    token = tmp_path / "token"
    token.write_text("secret\n")
    token.chmod(0o640)
    toml = tmp_path / "config.toml"
    toml.write_text(
        f'[account]\nuser = "alice"\ntoken_file = {json.dumps(str(token))}\n'
        f'[server]\nurl = "ws://127.0.0.1:9"\n[storage]\ndir = {json.dumps(str(tmp_path / "s"))}\n'
    )
    toml.chmod(0o600)
    proc = await HeadlessProc.start(toml)
    processes.append(proc)
    await proc.close_stdin()  # nothing queued: it exits at once
    assert await proc.wait_exit() == 0, proc.describe()
    warnings = [line for line in proc.stderr if "warning" in line]
    assert len(warnings) == 1, proc.describe()
    assert str(token) in warnings[0] and "chmod 600" in warnings[0]


# ---------------------------------------------------------------- escape injection, headless

EVIL = "[@click=app.quit]x[/] \x1b]52;c;aGk=\x07\x1b[2J\x9b31m\u202eevil\x00\x7f"
# What must never reach the terminal raw: C0 (but newline), C1 and the bidi controls.
FORBIDDEN = {chr(c) for c in [*range(0x20), *range(0x80, 0xA0)]} - {"\n"} | set(
    "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c"
)


async def test_a_hostile_server_cannot_write_escapes_to_a_headless_users_terminal(
    tmp_path: Path, processes: list[HeadlessProc]
) -> None:
    """Bodies, user names, error and reject reasons, close reasons and conversation ids:
    stdout is JSON with every control (C0, C1, bidi) escaped and the text itself intact;
    stderr, where the engine logs, holds no raw control character either."""
    async with hostile_server() as hostile:
        cfg = client_config(
            tmp_path / "s", "alice", "t", hostile.url, **{**FAST_SYNC, "ack_timeout": 60}
        )
        proc = await HeadlessProc.start(write_client_toml(tmp_path / "alice.toml", cfg))
        processes.append(proc)
        await proc.wait_line(is_event("connection", state="online"), "online")
        await proc.write({"cmd": "send", "to": "bob", "body": "hi", "id": 1})
        ok = await proc.wait_line(is_event("ok", id=1), "ok")
        await hostile.push(
            p.encode(p.Message("c-evil", 1, EVIL[:64], "e-1", EVIL, 5, to="alice")).decode(),
            p.encode(p.Message(EVIL, 1, "eve", "e-2", EVIL, 5, to="mallory")).decode(),
            p.encode(p.Message(EVIL, 2, "bob", "e-3", EVIL, 5, to="alice")).decode(),
            p.encode(p.Error(code=EVIL, reason=EVIL)).decode(),
            json.dumps({"type": EVIL}),
            p.encode(p.Reject(ok["client_id"], EVIL, EVIL, False, None)).decode(),
        )
        await proc.wait_line(is_event("state", client_id=ok["client_id"], state="failed"), "failed")
        assert hostile.current is not None
        await hostile.current.close(
            p.CloseCode.AUTH_FAILED, EVIL.encode()[:100].decode(errors="ignore")
        )
        await proc.wait_line(is_event("connection", state="auth_failed"), "auth_failed")
        await proc.write({"cmd": "quit"})
        assert await proc.wait_exit() == 3  # headless says "token rejected" to scripts

    # Before the fix, C1 controls and bidi overrides left headless raw on stdout, and the
    # engine's log line quoted a hostile conversation id raw on stderr.
    for line in [*proc.raw, *proc.stderr]:
        assert not set(line) & FORBIDDEN, line
    assert any("ignoring message" in line for line in proc.stderr), proc.describe()
    # The text itself is intact in the JSON: escaped for the terminal, not altered.
    message = proc.matching(is_event("message", client_id="e-1"))[0]
    assert message["body"] == EVIL and message["sender"] == EVIL[:64]
    assert proc.matching(is_event("notice", code=EVIL, reason=EVIL))
    failed = proc.matching(is_event("state", client_id=ok["client_id"], state="failed"))[0]
    assert failed["error"] == EVIL
    auth = proc.matching(is_event("connection", state="auth_failed"))[0]
    assert "\x1b" in auth["reason"]  # kept, and escaped on the way out
    # Someone else's conversation was not stored: the only conversations are bob's and c-evil's.
    assert {c["peer"] for c in proc.matching(is_event("conversation"))} <= {"bob", EVIL[:64]}
