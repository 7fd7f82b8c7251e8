"""Attacks on the server's boundaries: login, membership, identity, client_id, token storage.

What is already proven elsewhere and not repeated here:

* a first frame that is not ``hello`` (one ``send``) and garbage first frames:
  ``test_server_auth.py``; every kind of first frame, fuzzed: ``test_fuzz_server.py``;
* 4429 after repeated bad tokens, per user name, and its expiry: ``test_server_auth.py``;
* a third user asking for a pair's conversation by history, read and cursors:
  ``test_server_messaging.py::test_third_user_cannot_see_the_pair``;
* the permission warning for token files and configs: ``test_cli_config.py``
  (``test_token_readable_by_others_is_warned_about``,
  ``test_config_with_inline_token_readable_by_others_is_warned_about``);
* markup in bodies, names and every reason in the TUI: ``test_ui_untrusted.py``.

wss://, the headless client's permission warning and escape injection into the headless
client's output are in ``test_security_tls.py``.
"""

from __future__ import annotations

import ast
import hashlib
import hmac
import inspect
import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.wire import (
    QUIET,
    RunningServer,
    ServerFactory,
    assert_silent,
    connect_ws,
    db_rows,
    expect_closed,
    login,
    recv_frame,
    recv_until,
    send_frame,
    send_message,
    send_raw,
)
from tui_chat import protocol as p
from tui_chat.server import db
from tui_chat.server.config import Limits, ServerConfig

TABLES = ("users", "conversations", "messages", "sends", "reads", "meta")


def snapshot(db_path: Path) -> dict[str, list[tuple[Any, ...]]]:
    return {t: sorted(db_rows(db_path, f"SELECT * FROM {t}")) for t in TABLES}


async def pair_conversation(srv: RunningServer, n: int = 2) -> str:
    """alice and bob exchange ``n`` messages; return their conversation id."""
    alice, *_ = await login(srv.url, "alice", srv.tokens["alice"])
    try:
        for i in range(n):
            ack = await send_message(alice, f"ab-{i}", "bob", f"private {i}")
            assert isinstance(ack, p.Ack)
    finally:
        await alice.close()
    return ack.conv


async def first_frames(
    url: str, *frames: str | bytes, **connect: Any
) -> tuple[int | None, list[Any]]:
    """Send ``frames`` at once on a new connection; return the close code and what came back."""
    ws = await connect_ws(url, **connect)
    try:
        for frame in frames:
            await send_raw(ws, frame)
        return await expect_closed(ws)
    finally:
        await ws.close()


def _raw(frame: p._Frame, **extra: Any) -> str:
    return json.dumps({**json.loads(p.encode(frame)), **extra})


# ---------------------------------------------------------------- before login


@pytest.mark.parametrize(
    "make",
    [
        lambda conv, tokens: _raw(p.Send(client_id="pre-1", to="bob", body="sneaky")),
        # alice's real credentials inside a send do not make it a hello.
        lambda conv, tokens: _raw(
            p.Send(client_id="pre-2", to="bob", body="x"), user="alice", token=tokens["alice"]
        ),
        lambda conv, tokens: _raw(p.HistoryRequest(conv=conv, before=None, limit=500, after=0)),
        lambda conv, tokens: _raw(p.Read(conv=conv, seq=2)),
    ],
    ids=["send", "send-with-credentials-inside", "history", "read"],
)
async def test_nothing_but_hello_is_served_before_login(
    chat_server: RunningServer, make: Callable[[str, dict[str, str]], str]
) -> None:
    conv = await pair_conversation(chat_server)
    before = snapshot(chat_server.db_path)
    code, frames = await first_frames(chat_server.url, make(conv, chat_server.tokens))
    assert code == p.CloseCode.BAD_HELLO
    assert [f.code for f in frames] == [p.ErrorCode.NOT_AUTHENTICATED]
    assert snapshot(chat_server.db_path) == before


@pytest.mark.parametrize(
    ("hello", "error", "close"),
    [
        (p.Hello(v=1, user="carol", token="wrong"), "auth_failed", 4401),
        (p.Hello(v=1, user="nobody", token="wrong"), "auth_failed", 4401),
        (p.Hello(v=2, user="carol", token="t"), "unsupported_version", 4400),
    ],
    ids=["wrong-token", "unknown-user", "wrong-version"],
)
async def test_frames_pipelined_behind_a_refused_hello_are_never_handled(
    chat_server: RunningServer, hello: p.Hello, error: str, close: int
) -> None:
    """A client that does not wait for ``welcome`` gets nothing for what it sent after."""
    conv = await pair_conversation(chat_server)
    bob, *_ = await login(chat_server.url, "bob", chat_server.tokens["bob"])
    try:
        before = snapshot(chat_server.db_path)
        code, frames = await first_frames(
            chat_server.url,
            p.encode(hello).decode(),
            _raw(p.Send(client_id="piped-1", to="bob", body="sneaky")),
            _raw(p.HistoryRequest(conv=conv, before=None, limit=500, after=0)),
            _raw(p.Read(conv=conv, seq=2)),
        )
        assert code == close
        assert [f.code for f in frames] == [error]
        assert snapshot(chat_server.db_path) == before
        await assert_silent(bob)  # no message, no receipt
    finally:
        await bob.close()


# ---------------------------------------------------------------- login throttling


async def test_throttle_is_per_user_name_and_address(chat_server_factory: ServerFactory) -> None:
    """Failures from one address lock that address out of that name only; the owner,
    logging in from elsewhere, still gets in (an attacker cannot lock a user out everywhere)."""
    srv = await chat_server_factory(ServerConfig(limits=Limits(auth_failures=3, auth_window=60)))
    here, there = {"local_addr": ("127.0.0.1", 0)}, {"local_addr": ("127.0.0.2", 0)}
    wrong = p.encode(p.Hello(v=1, user="alice", token="guess")).decode()
    right = p.encode(p.Hello(v=1, user="alice", token=srv.tokens["alice"])).decode()
    for _ in range(3):
        code, _frames = await first_frames(srv.url, wrong, **here)
        assert code == p.CloseCode.AUTH_FAILED
    code, frames = await first_frames(srv.url, right, **here)
    assert (code, [f.code for f in frames]) == (p.CloseCode.AUTH_THROTTLED, ["auth_throttled"])

    # The same name from another address: not throttled, and the right token works.
    ws, welcome, *_ = await login(srv.url, "alice", srv.tokens["alice"], **there)
    assert welcome.user == "alice"
    await ws.close()
    # Another name from the throttled address: not throttled either.
    ws, welcome, *_ = await login(srv.url, "bob", srv.tokens["bob"], **here)
    assert welcome.user == "bob"
    await ws.close()
    # Failures from the second address count for that address only.
    for _ in range(3):
        code, _frames = await first_frames(srv.url, wrong, **there)
        assert code == p.CloseCode.AUTH_FAILED
    code, _frames = await first_frames(srv.url, right, **there)
    assert code == p.CloseCode.AUTH_THROTTLED


async def test_a_throttled_login_is_refused_before_the_token_is_checked(
    chat_server_factory: ServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once throttled, no token is even compared: guessing gets no answer at all."""
    srv = await chat_server_factory(ServerConfig(limits=Limits(auth_failures=2, auth_window=60)))
    checks: list[str] = []
    real = db.authenticate

    def counting(conn: sqlite3.Connection, name: str, token: str) -> db.Account | None:
        checks.append(name)
        return real(conn, name, token)

    monkeypatch.setattr(db, "authenticate", counting)
    for _ in range(2):
        code, _ = await first_frames(srv.url, p.encode(p.Hello(v=1, user="carol", token="x")))
        assert code == p.CloseCode.AUTH_FAILED
    assert checks == ["carol", "carol"]
    for token in ("still-wrong", srv.tokens["carol"]):
        code, frames = await first_frames(
            srv.url, p.encode(p.Hello(v=1, user="carol", token=token))
        )
        assert (code, [f.code for f in frames]) == (4429, ["auth_throttled"])
    assert checks == ["carol", "carol"]


async def test_unknown_and_known_user_names_get_the_same_answers(
    chat_server_factory: ServerFactory,
) -> None:
    """The error frame, the close code and the throttle are identical for a user that exists
    and one that does not, so neither reveals which names have accounts."""
    srv = await chat_server_factory(ServerConfig(limits=Limits(auth_failures=2, auth_window=60)))
    answers: dict[str, list[tuple[Any, ...]]] = {}
    for user in ("alice", "no-such-user"):
        seen = []
        for _ in range(3):
            ws = await connect_ws(srv.url)
            await send_frame(ws, p.Hello(v=1, user=user, token="guess"))
            code, frames = await expect_closed(ws)
            reason = ws.close_reason
            seen.append((code, reason, [(f.code, f.reason) for f in frames]))
        answers[user] = seen
    assert answers["alice"] == answers["no-such-user"]
    assert [a[0] for a in answers["alice"]] == [4401, 4401, 4429]


# ---------------------------------------------------------------- membership


async def test_no_way_of_paging_or_reading_a_foreign_conversation_works(
    chat_server: RunningServer,
) -> None:
    """Every history range and read position on alice and bob's conversation, from carol,
    is ``not_member`` with the same reason as a conversation that does not exist."""
    url, tokens = chat_server.url, chat_server.tokens
    conv = await pair_conversation(chat_server, 3)
    alice, *_ = await login(url, "alice", tokens["alice"])
    bob, *_ = await login(url, "bob", tokens["bob"])
    carol, *_ = await login(url, "carol", tokens["carol"], {conv: 0})
    try:
        before = snapshot(chat_server.db_path)
        requests = [
            p.HistoryRequest(conv=c, before=before_, limit=limit, after=after)
            for c in (conv, "c000000000000")
            for before_, limit, after in [
                (None, 100, None),
                (4, 1, 2),
                (None, 500, 0),
                (p.MAX_SEQ, 500, 0),
            ]
        ] + [p.Read(conv=c, seq=s) for c in (conv, "c000000000000") for s in (0, 1, 3, p.MAX_SEQ)]
        for frame in requests:
            await send_frame(carol, frame)
        answers = [await recv_frame(carol) for _ in requests]
        assert {(type(a), a.code, a.reason) for a in answers} == {
            (p.Error, p.ErrorCode.NOT_MEMBER, "no such conversation for this user"),
            (p.Error, p.ErrorCode.NOT_MEMBER, "not a member of this conversation"),
        }
        reasons = {c: {a.reason for a, f in zip(answers, requests, strict=True) if f.conv == c}
                   for c in (conv, "c000000000000")}  # fmt: skip
        assert reasons[conv] == reasons["c000000000000"]
        assert snapshot(chat_server.db_path) == before
        await assert_silent(alice)
        await assert_silent(bob)
    finally:
        for ws in (alice, bob, carol):
            await ws.close()


async def test_a_send_cannot_be_aimed_at_a_conversation(chat_server: RunningServer) -> None:
    """A forged ``conv``/``seq`` changes nothing: a ``send`` with both ``to`` and ``conv`` is
    refused (``bad_frame``), and a direct conversation's id in ``conv`` is no group of the
    sender's (``not_member``), even for one of its members."""
    conv = await pair_conversation(chat_server, 2)
    carol, *_ = await login(chat_server.url, "carol", chat_server.tokens["carol"])
    alice, *_ = await login(chat_server.url, "alice", chat_server.tokens["alice"])
    try:
        await send_raw(
            carol, _raw(p.Send(client_id="aim-1", to="bob", body="in?"), conv=conv, seq=3, ts=1)
        )
        reject, _ = await recv_until(carol, p.Reject)
        assert (reject.client_id, reject.code) == ("aim-1", p.ErrorCode.BAD_FRAME)
        for ws, cid in ((carol, "aim-2"), (alice, "aim-3")):
            await send_frame(ws, p.Send(client_id=cid, conv=conv, body="in?"))
            reject, _ = await recv_until(ws, p.Reject)
            assert (reject.client_id, reject.code) == (cid, p.ErrorCode.NOT_MEMBER)
    finally:
        await carol.close()
        await alice.close()
    assert db_rows(
        chat_server.db_path, "SELECT last_seq FROM conversations WHERE id=?", (conv,)
    ) == [(2,)]
    assert db_rows(
        chat_server.db_path, "SELECT count(*) FROM messages WHERE client_id LIKE 'aim-%'"
    ) == [(0,)]


# ---------------------------------------------------------------- identity


async def test_the_sender_is_always_the_authenticated_user(chat_server: RunningServer) -> None:
    """There is no sender field: one smuggled in is ignored, and a second hello with bob's
    real token does not make carol bob."""
    url, tokens = chat_server.url, chat_server.tokens
    carol, *_ = await login(url, "carol", tokens["carol"])
    alice, *_ = await login(url, "alice", tokens["alice"])
    try:
        forged = _raw(
            p.Send(client_id="forged-1", to="alice", body="from bob, honest"),
            sender="bob", **{"from": "bob"}, user="bob",
        )  # fmt: skip
        await send_raw(carol, forged)
        await recv_until(carol, p.Ack)
        got, _ = await recv_until(alice, p.Message)
        assert (got.sender, got.to, got.client_id) == ("carol", "alice", "forged-1")

        await send_frame(carol, p.Hello(v=1, user="bob", token=tokens["bob"]))
        err, _ = await recv_until(carol, p.Error)
        assert err.code == p.ErrorCode.ALREADY_AUTHENTICATED
        ack2 = await send_message(carol, "forged-2", "alice", "after the second hello")
        assert isinstance(ack2, p.Ack)
        got, _ = await recv_until(alice, p.Message)
        assert got.sender == "carol"
        # And bob's traffic does not reach her.
        await send_message(alice, "to-bob", "bob", "for bob")
        await recv_until(carol, p.Message)  # her own forged-2 echo
        await assert_silent(carol, QUIET)
    finally:
        await carol.close()
        await alice.close()
    assert db_rows(
        chat_server.db_path, "SELECT DISTINCT sender FROM messages WHERE client_id LIKE 'forged-%'"
    ) == [("carol",)]


async def test_anothers_client_id_reveals_nothing_about_their_message(
    chat_server: RunningServer,
) -> None:
    """carol reuses bob's client_id: she gets a new message of her own, never bob's
    conversation, seq or time, and no duplicate flag that would confirm bob used it."""
    url, tokens = chat_server.url, chat_server.tokens
    bob, *_ = await login(url, "bob", tokens["bob"])
    carol, *_ = await login(url, "carol", tokens["carol"])
    try:
        for i in range(3):
            bobs = await send_message(bob, f"bob-{i}", "alice", f"bob's secret {i}")
        assert isinstance(bobs, p.Ack) and bobs.seq == 3
        last_echo, _ = await recv_until(bob, p.Message)  # earlier echoes were skipped
        assert last_echo.client_id == "bob-2"
        stolen = "bob-2"

        mine = await send_message(carol, stolen, "alice", "carol's own")
        assert isinstance(mine, p.Ack)
        assert not mine.duplicate
        assert mine.conv != bobs.conv and mine.seq == 1
        assert (mine.conv, mine.seq, mine.ts) != (bobs.conv, bobs.seq, bobs.ts)
        echo, _ = await recv_until(carol, p.Message)
        assert (echo.conv, echo.sender, echo.body) == (mine.conv, "carol", "carol's own")
        # Sent to bob's peer or to bob himself: always her own message, now a duplicate of it.
        for to in ("alice", "bob"):
            again = await send_message(carol, stolen, to, "again")
            assert isinstance(again, p.Ack)
            assert (again.conv, again.seq, again.ts, again.duplicate) == (
                mine.conv, mine.seq, mine.ts, True,
            )  # fmt: skip
        # Her own echo was the only message she ever saw.
        await assert_silent(carol)
        # bob's stream is untouched by it.
        await assert_silent(bob)
    finally:
        await bob.close()
        await carol.close()
    rows = db_rows(
        chat_server.db_path,
        "SELECT sender, conv, seq, body FROM messages WHERE client_id=?",
        (stolen,),
    )
    assert sorted(rows) == [
        ("bob", bobs.conv, 3, "bob's secret 2"),
        ("carol", mine.conv, 1, "carol's own"),
    ]


# ---------------------------------------------------------------- tokens at rest


def _db_bytes(db_path: Path) -> bytes:
    return b"".join(f.read_bytes() for f in db_path.parent.glob(db_path.name + "*") if f.is_file())


async def test_tokens_are_stored_only_as_sha256_hashes(chat_server: RunningServer) -> None:
    rows = dict(db_rows(chat_server.db_path, "SELECT name, token_hash FROM users"))
    assert set(rows) == set(chat_server.tokens)
    for name, token in chat_server.tokens.items():
        stored = bytes(rows[name])
        assert stored == hashlib.sha256(token.encode()).digest()
        assert len(stored) == 32 and token.encode() not in stored
    # Not in the database file, its WAL or its shared memory, in any form a reader could use.
    raw = _db_bytes(chat_server.db_path)
    for token in chat_server.tokens.values():
        assert token.encode() not in raw
        assert token.encode().hex().encode() not in raw


async def test_revoked_token_stops_working_and_only_the_new_hash_is_kept(
    chat_server: RunningServer,
) -> None:
    old = chat_server.tokens["bob"]
    conn, _ = db.open_db(chat_server.db_path)
    try:
        new = db.revoke_token(conn, "bob")
    finally:
        conn.close()
    code, frames = await first_frames(
        chat_server.url, p.encode(p.Hello(v=1, user="bob", token=old))
    )
    assert (code, [f.code for f in frames]) == (4401, ["auth_failed"])
    ws, welcome, *_ = await login(chat_server.url, "bob", new)
    assert welcome.user == "bob"
    await ws.close()
    # (The old hash may linger in free pages or the WAL: useless without the token itself.)
    raw = _db_bytes(chat_server.db_path)
    assert old.encode() not in raw and new.encode() not in raw


async def test_every_login_compares_token_hashes_in_constant_time(
    chat_server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Right token, wrong token, unknown user: each login makes exactly one
    ``hmac.compare_digest`` of two SHA-256 digests (an unknown user against a dummy hash).
    A timing measurement would be flaky; the code path is what is checked."""
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", counting)
    url, tokens = chat_server.url, chat_server.tokens
    ws, *_ = await login(url, "alice", tokens["alice"])
    await ws.close()
    for user, token in (("alice", "wrong"), ("nobody", "wrong"), ("nobody", tokens["alice"])):
        code, _ = await first_frames(url, p.encode(p.Hello(v=1, user=user, token=token)))
        assert code == p.CloseCode.AUTH_FAILED
    assert len(calls) == 4
    assert all(
        isinstance(a, bytes) and isinstance(b, bytes) and len(a) == len(b) == 32 for a, b in calls
    )


def test_authenticate_has_no_early_exit_comparison() -> None:
    """No ``==``/``!=`` in ``authenticate``: the only comparison of secrets is compare_digest,
    and it runs for unknown users too (against the dummy hash), before ``row is not None``."""
    source = inspect.getsource(db.authenticate)
    tree = ast.parse(source)
    ops = [type(op) for node in ast.walk(tree) if isinstance(node, ast.Compare) for op in node.ops]
    assert ast.Eq not in ops and ast.NotEq not in ops, ops
    assert "hmac.compare_digest(" in source and "_DUMMY_HASH" in source
    # One return, after the comparison: no branch answers before the digest is compared.
    returns = [n for n in ast.walk(tree) if isinstance(n, ast.Return)]
    assert len(returns) == 1
    assert hashlib.sha256(b"no-such-user").digest() == db._DUMMY_HASH
