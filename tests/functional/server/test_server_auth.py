"""Authentication: the hello handshake, its failures, and login throttling."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from harness.waits import until
from tests.support.wire import (
    STEP,
    RunningServer,
    ServerFactory,
    assert_silent,
    connect_ws,
    expect_closed,
    login,
    recv_frame,
    send_frame,
    send_message,
    send_raw,
)
from tui_chat.protocol import (
    PROTOCOL_VERSION,
    Ack,
    CloseCode,
    Error,
    ErrorCode,
    Hello,
    Send,
    Synced,
    Welcome,
)
from tui_chat.server.config import Limits, ServerConfig


async def hello_and_close(url: str, hello: Hello | str) -> tuple[int | None, list[Any]]:
    ws = await connect_ws(url)
    if isinstance(hello, str):
        await send_raw(ws, hello)
    else:
        await send_frame(ws, hello)
    return await expect_closed(ws)


async def test_good_token_gets_welcome_then_synced(chat_server: RunningServer) -> None:
    before = int(time.time() * 1000)
    ws, welcome, replayed, synced = await login(
        chat_server.url, "alice", chat_server.tokens["alice"]
    )
    try:
        assert welcome.v == PROTOCOL_VERSION
        assert welcome.user == "alice"
        assert welcome.epoch == chat_server.server.epoch
        assert len(welcome.epoch) == 16
        assert before - 5000 <= welcome.server_time <= int(time.time() * 1000) + 5000
        assert welcome.max_body == 4000
        # A new user has nothing to replay.
        assert replayed == []
        assert synced == Synced(cursors={})
        assert chat_server.server.connection_count() == 1
        # The connection is usable.
        ack = await send_message(ws, "first", "bob")
        assert isinstance(ack, Ack) and ack.seq == 1
    finally:
        await ws.close()


async def test_bad_token_is_refused_with_4401(chat_server: RunningServer) -> None:
    code, frames = await hello_and_close(
        chat_server.url, Hello(v=1, user="alice", token=chat_server.tokens["bob"])
    )
    assert code == CloseCode.AUTH_FAILED == 4401
    assert len(frames) == 1
    assert isinstance(frames[0], Error) and frames[0].code == "auth_failed"
    assert chat_server.server.connection_count() == 0


async def test_empty_token_is_refused_with_4401(chat_server: RunningServer) -> None:
    code, frames = await hello_and_close(chat_server.url, Hello(v=1, user="alice", token=""))
    assert code == 4401
    assert [f.code for f in frames] == ["auth_failed"]


async def test_unknown_user_is_refused_like_a_bad_token(chat_server: RunningServer) -> None:
    code, frames = await hello_and_close(
        chat_server.url, Hello(v=1, user="mallory", token=chat_server.tokens["alice"])
    )
    assert code == 4401
    assert [f.code for f in frames] == ["auth_failed"]


async def test_missing_token_field_is_a_bad_hello(chat_server: RunningServer) -> None:
    code, frames = await hello_and_close(chat_server.url, '{"type":"hello","v":1,"user":"alice"}')
    assert code == CloseCode.BAD_HELLO == 4400
    assert len(frames) == 1
    assert isinstance(frames[0], Error) and frames[0].code == ErrorCode.BAD_FRAME
    assert "token" in frames[0].reason


async def test_hello_timeout_closes_with_4408(chat_server_factory: ServerFactory) -> None:
    srv = await chat_server_factory(ServerConfig(limits=Limits(hello_timeout=0.5)))
    ws = await connect_ws(srv.url)
    started = time.monotonic()
    code, frames = await expect_closed(ws, within=STEP)
    elapsed = time.monotonic() - started
    assert code == CloseCode.HELLO_TIMEOUT == 4408
    assert frames == []
    assert 0.3 <= elapsed < 2.5
    assert srv.server.connection_count() == 0


async def test_hello_just_in_time_is_accepted(chat_server_factory: ServerFactory) -> None:
    # A late hello, with slack for a loaded machine between the connect and the hello.
    srv = await chat_server_factory(ServerConfig(limits=Limits(hello_timeout=2.0)))
    ws = await connect_ws(srv.url)
    try:
        await asyncio.sleep(0.5)
        await send_frame(ws, Hello(v=1, user="bob", token=srv.tokens["bob"]))
        assert isinstance(await recv_frame(ws), Welcome)
        assert isinstance(await recv_frame(ws), Synced)
        # Well past the hello timeout, the authenticated connection stays open.
        await assert_silent(ws, 2.0)
        assert srv.server.connection_count() == 1
    finally:
        await ws.close()


async def test_first_frame_not_hello_is_refused(chat_server: RunningServer) -> None:
    ws = await connect_ws(chat_server.url)
    await send_frame(ws, Send(client_id="x1", to="bob", body="sneaky"))
    code, frames = await expect_closed(ws)
    assert code == 4400
    assert len(frames) == 1
    assert isinstance(frames[0], Error) and frames[0].code == ErrorCode.NOT_AUTHENTICATED


async def test_first_frame_garbage_is_refused(chat_server: RunningServer) -> None:
    code, frames = await hello_and_close(chat_server.url, "{nope")
    assert code == 4400
    assert [f.code for f in frames] == [ErrorCode.BAD_JSON]


async def test_unsupported_version_is_refused(chat_server: RunningServer) -> None:
    code, frames = await hello_and_close(
        chat_server.url, Hello(v=2, user="alice", token=chat_server.tokens["alice"])
    )
    assert code == 4400
    assert len(frames) == 1
    assert isinstance(frames[0], Error) and frames[0].code == "unsupported_version"
    assert "v1" in frames[0].reason


async def test_second_hello_is_an_error_but_not_fatal(chat_server: RunningServer) -> None:
    ws, *_ = await login(chat_server.url, "alice", chat_server.tokens["alice"])
    try:
        await send_frame(ws, Hello(v=1, user="bob", token=chat_server.tokens["bob"]))
        err = await recv_frame(ws)
        assert isinstance(err, Error) and err.code == ErrorCode.ALREADY_AUTHENTICATED
        # Still alice, still connected.
        ack = await send_message(ws, "after-second-hello", "bob")
        assert isinstance(ack, Ack)
    finally:
        await ws.close()


async def test_repeated_bad_tokens_are_throttled_with_4429(
    chat_server_factory: ServerFactory,
) -> None:
    srv = await chat_server_factory(ServerConfig(limits=Limits(auth_failures=3, auth_window=60)))
    for _ in range(3):
        code, frames = await hello_and_close(srv.url, Hello(v=1, user="alice", token="guess"))
        assert code == 4401
        assert [f.code for f in frames] == ["auth_failed"]
    # Now even the right token is turned away for a while: the name is under attack.
    code, frames = await hello_and_close(
        srv.url, Hello(v=1, user="alice", token=srv.tokens["alice"])
    )
    assert code == CloseCode.AUTH_THROTTLED == 4429
    assert [f.code for f in frames] == ["auth_throttled"]
    # Throttling is per user name: bob is unaffected.
    ws, welcome, *_ = await login(srv.url, "bob", srv.tokens["bob"])
    assert welcome.user == "bob"
    await ws.close()


async def test_throttle_expires_after_the_window(chat_server_factory: ServerFactory) -> None:
    srv = await chat_server_factory(ServerConfig(limits=Limits(auth_failures=2, auth_window=0.5)))
    for _ in range(2):
        code, _frames = await hello_and_close(srv.url, Hello(v=1, user="carol", token="nope"))
        assert code == 4401
    code, _frames = await hello_and_close(
        srv.url, Hello(v=1, user="carol", token=srv.tokens["carol"])
    )
    assert code == 4429
    await asyncio.sleep(0.6)
    ws, welcome, *_ = await login(srv.url, "carol", srv.tokens["carol"])
    assert welcome.user == "carol"
    await ws.close()


async def test_client_leaving_during_hello_leaves_no_session(chat_server: RunningServer) -> None:
    """A client that says hello and leaves before the welcome must not stay registered."""
    for i in range(5):
        ws = await connect_ws(chat_server.url)
        await send_frame(ws, Hello(v=1, user="bob", token=chat_server.tokens["bob"]))
        if i % 2:
            await ws.close()
        else:
            ws.transport.abort()
    await until(
        lambda: chat_server.server.connection_count() == 0, "every bob session unregistered"
    )
    assert not chat_server.server._sessions
