"""Why a websocket session ended: words for the status line, and whether to come back."""

from __future__ import annotations

import ssl
from typing import Final

from tui_chat import protocol as p
from tui_chat.core.transport import Retry, SessionEnd

CLOSE_REASONS: Final = {
    1000: "the server closed the connection",
    1001: "the server is going away",
    1006: "connection lost",
    1009: "a frame was too large",
    1011: "keepalive timeout or server error",
    1012: "the server is restarting",
    p.CloseCode.HELLO_TIMEOUT: "the server timed out waiting for login",
    p.CloseCode.TOO_SLOW: "too far behind; catching up",
    p.CloseCode.AUTH_THROTTLED: "too many failed logins; waiting",
}

# The server asked us to come back: a short jittered wait, not the growing backoff.
_PROMPT: Final = frozenset({1012, 1001, p.CloseCode.TOO_SLOW})


def close_end(code: int, text: str) -> SessionEnd:
    """The SessionEnd for a close frame the server sent (1006 when there was none)."""
    if code == p.CloseCode.AUTH_FAILED:
        return SessionEnd(text or "the server rejected the token", Retry.WAIT_FOR_USER)
    if code == p.CloseCode.BAD_HELLO:
        return SessionEnd(f"the server refused the login: {text}", Retry.WAIT_FOR_USER)
    if code == p.CloseCode.ACCOUNT_CLOSED:
        return SessionEnd(text or "the account was closed on the server", Retry.WAIT_FOR_USER)
    reason = CLOSE_REASONS.get(code, f"connection closed ({code})")
    return SessionEnd(reason, Retry.PROMPTLY if code in _PROMPT else Retry.BACKOFF)


def describe_os_error(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out connecting to the server"
    if isinstance(exc, ConnectionRefusedError):
        return "server unreachable (connection refused)"
    if isinstance(exc, ssl.SSLError):
        return f"TLS error: {exc.reason or exc}"
    if isinstance(exc, OSError) and exc.strerror:
        return f"network error: {exc.strerror}"
    return f"network error: {exc}"
