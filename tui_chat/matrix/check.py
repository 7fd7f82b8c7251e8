"""``tui-chat config check --online`` for a Matrix homeserver: one whoami (or login).

Nothing is synced or stored: a password is tried with a login whose device is logged out
again at once, so the check leaves no device behind.
"""

from __future__ import annotations

from tui_chat.login_check import LoginResult
from tui_chat.matrix.http import API, MatrixHttp
from tui_chat.matrix.wire import BadResponse, MatrixError, Unreachable, _Empty


async def check_matrix_login(
    url: str, user: str, secret: str, *, password: bool, request_timeout: float
) -> LoginResult:
    http = MatrixHttp(url, timeout=request_timeout)
    try:
        await http.versions()
        if password:
            await http.login(user, secret)
        else:
            http.token = secret
        me = await http.whoami()
        if password:
            await http.request("POST", f"{API}/logout", _Empty, body={})
        if me.user_id != user:
            return LoginResult(False, f"the token belongs to {me.user_id}, not {user}", 401)
        return LoginResult(True, f"logged in as {me.user_id} (device {me.device_id})")
    except MatrixError as exc:
        return LoginResult(False, f"the homeserver refused the login: {exc}", exc.status)
    except Unreachable as exc:
        return LoginResult(False, str(exc))
    except BadResponse as exc:
        return LoginResult(False, f"not a Matrix homeserver? {exc}")
    finally:
        await http.aclose()
