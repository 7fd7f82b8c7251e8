"""Why a connection ended, in words for the status line."""

from __future__ import annotations

import ssl
from typing import Final

from tui_chat import protocol as p

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
