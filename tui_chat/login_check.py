"""``tui-chat config check --online``: one login attempt, and exactly why it failed.

The app itself retries and shows a reason in its status line; a person setting up a
config wants one answer and an exit code. This logs in once with the protocol's
``hello`` (no cursors: nothing is synced or stored) and closes at once.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from tui_chat import protocol as p

# Why a login was refused, by close code: what to do about it is different for each.
REFUSALS = {
    p.CloseCode.AUTH_FAILED: "authentication failed: the server does not accept this user"
    " and token (check account.user and the token, or get a new one with"
    " `tui-chat-server revoke-token NAME`)",
    p.CloseCode.ACCOUNT_CLOSED: "account closed: the account was removed or this token was"
    " revoked on the server",
    p.CloseCode.BAD_HELLO: "the server refused the login frame (protocol version mismatch?)",
    p.CloseCode.AUTH_THROTTLED: "too many failed logins from here; wait and try again",
}


@dataclass(frozen=True)
class LoginResult:
    ok: bool
    message: str
    # The close code when the server refused the login; None for a network problem
    # or any other close (the server restarting, say).
    code: int | None = None


def _closed(exc: ConnectionClosed, server_said: str = "") -> LoginResult:
    rcvd = exc.rcvd
    if rcvd is None:
        return LoginResult(False, "the connection was lost during the login")
    why = REFUSALS.get(rcvd.code, f"the server closed the connection ({rcvd.code})")
    detail = rcvd.reason or server_said
    text = f"{why} (close code {rcvd.code}" + (f": {detail!r})" if detail else ")")
    return LoginResult(False, text, rcvd.code if rcvd.code in REFUSALS else None)


def _network(exc: BaseException) -> LoginResult:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return LoginResult(
            False,
            f"TLS error: {exc.verify_message or exc.reason} (set server.ca_file to the"
            " CA that signed the server's certificate)",
        )
    if isinstance(exc, ssl.SSLError):
        return LoginResult(False, f"TLS error: {exc.reason or exc}")
    if isinstance(exc, ConnectionRefusedError):
        return LoginResult(False, "server unreachable (connection refused)")
    if isinstance(exc, TimeoutError):
        return LoginResult(False, "server unreachable (timed out)")
    if isinstance(exc, OSError):
        return LoginResult(False, f"server unreachable ({exc.strerror or exc})")
    return LoginResult(False, f"cannot connect: {exc}")


async def check_login(
    url: str, user: str, token: str, ssl_context: ssl.SSLContext | None, within: float
) -> LoginResult:
    """Log in once; never raises for a network or server problem."""
    try:
        async with asyncio.timeout(within):
            async with connect(
                url,
                proxy=None,
                open_timeout=within,
                ssl=ssl_context if url.startswith("wss://") else None,
                compression=None,
            ) as ws:
                hello = p.Hello(v=p.PROTOCOL_VERSION, user=user, token=token)
                await ws.send(p.encode(hello), text=True)
                server_said = ""
                try:
                    first = p.decode_server(await ws.recv())
                    if isinstance(first, p.Welcome):
                        return LoginResult(
                            True,
                            f"logged in as {first.user} (server epoch {first.epoch},"
                            f" max message {first.max_body} characters)",
                        )
                    if isinstance(first, p.Error):
                        server_said = first.reason
                    # A refusal: the close frame with its code follows.
                    await ws.recv()
                except ConnectionClosed as exc:
                    return _closed(exc, server_said)
                except p.FrameError as exc:
                    return LoginResult(False, f"not a tui-chat server: {exc.reason}")
                return LoginResult(False, "unexpected answer to the login")
    except ConnectionClosed as exc:
        return _closed(exc)
    except InvalidURI as exc:
        return LoginResult(False, f"invalid server URL: {exc}")
    except InvalidHandshake as exc:
        return LoginResult(False, f"not a websocket server {exc}")
    except (OSError, TimeoutError) as exc:
        return _network(exc)
