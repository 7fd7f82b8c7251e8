"""A thin Matrix client-server API client over the few endpoints the transport needs.

No sync state, no retry loop, no event cache: those belong to the engine (outbox, store,
backoff). Each method is one HTTP request; its answer is decoded into a msgspec Struct,
and every failure is one of three exceptions:

* :class:`MatrixError`: the homeserver answered with an error (``errcode``, HTTP
  ``status``, ``retry_after_ms`` for 429 ``M_LIMIT_EXCEEDED``);
* :class:`Unreachable`: no answer (connection refused, reset, timeout);
* :class:`BadResponse`: an answer that is not the JSON the spec promises.
"""

from __future__ import annotations

import urllib.parse
from typing import Any, Final, TypeVar

import httpx
import msgspec

from tui_chat.matrix.wire import (
    BadResponse,
    EventId,
    Login,
    MatrixError,
    Messages,
    Profile,
    RoomId,
    SyncResponse,
    Unreachable,
    Versions,
    WhoAmI,
    _Empty,
    _ErrorBody,
    decode,
)

__all__ = ["API", "BadResponse", "MatrixError", "MatrixHttp", "Unreachable"]

T = TypeVar("T")

API: Final = "/_matrix/client/v3"


def quote(part: str) -> str:
    return urllib.parse.quote(part, safe="")


class MatrixHttp:
    """One homeserver, one access token (``token``; None until login)."""

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        timeout: float = 10.0,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self._client = client or httpx.AsyncClient(trust_env=False)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def request(
        self,
        method: str,
        path: str,
        kind: type[T],
        *,
        body: object = None,
        params: dict[str, str] | None = None,
        wait: float | None = None,
        auth: bool = True,
    ) -> T:
        headers = {"Authorization": f"Bearer {self.token}"} if auth and self.token else {}
        content = None if body is None else msgspec.json.encode(body)
        if content is not None:
            headers["Content-Type"] = "application/json"
        try:
            resp = await self._client.request(
                method,
                self.base_url + path,
                content=content,
                params=params,
                headers=headers,
                timeout=self.timeout if wait is None else wait,
            )
        except httpx.TimeoutException as exc:
            what = type(exc).__name__
            raise Unreachable(f"no answer from the homeserver in time ({what})") from None
        except (httpx.TransportError, OSError) as exc:
            raise Unreachable(f"cannot reach the homeserver: {exc or type(exc).__name__}") from None
        if resp.status_code >= 400:
            try:
                err = msgspec.json.decode(resp.content, type=_ErrorBody)
            except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
                err = _ErrorBody("M_UNKNOWN", resp.reason_phrase)
            retry_ms = err.retry_after_ms
            if retry_ms is None and resp.status_code == 429:
                with_header = resp.headers.get("Retry-After", "")
                if with_header.isdigit():
                    retry_ms = int(with_header) * 1000
            raise MatrixError(resp.status_code, err.errcode, err.error[:300], retry_ms)
        return decode(resp.content, kind)

    # ------------------------------------------------------------ endpoints

    async def versions(self) -> Versions:
        return await self.request("GET", "/_matrix/client/versions", Versions, auth=False)

    async def login(self, user: str, password: str, device_id: str | None = None) -> Login:
        body: dict[str, object] = {
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": user},
            "password": password,
            "initial_device_display_name": "tui-chat",
        }
        if device_id:
            body["device_id"] = device_id  # the same device: its txnIds stay known
        login = await self.request("POST", f"{API}/login", Login, body=body, auth=False)
        self.token = login.access_token
        return login

    async def whoami(self) -> WhoAmI:
        return await self.request("GET", f"{API}/account/whoami", WhoAmI)

    async def sync(
        self,
        since: str | None,
        *,
        timeout_ms: int,
        filter: str | None = None,
        full_state: bool = False,
        wait: float | None = None,
    ) -> SyncResponse:
        params = {"timeout": str(timeout_ms)}
        if since:
            params["since"] = since
        if filter:
            params["filter"] = filter
        if full_state:
            params["full_state"] = "true"
        # The long poll holds the request open: allow it on top of the usual limit.
        return await self.request(
            "GET",
            f"{API}/sync",
            SyncResponse,
            params=params,
            wait=self.timeout + timeout_ms / 1000 if wait is None else wait,
        )

    async def send_message(self, room_id: str, txn_id: str, content: dict[str, Any]) -> str:
        path = f"{API}/rooms/{quote(room_id)}/send/m.room.message/{quote(txn_id)}"
        return (await self.request("PUT", path, EventId, body=content)).event_id

    async def messages(
        self,
        room_id: str,
        *,
        from_token: str | None,
        direction: str = "b",
        limit: int = 100,
        filter: str | None = None,
    ) -> Messages:
        params = {"dir": direction, "limit": str(limit)}
        if from_token:
            params["from"] = from_token
        if filter:
            params["filter"] = filter
        return await self.request(
            "GET", f"{API}/rooms/{quote(room_id)}/messages", Messages, params=params
        )

    async def create_room(
        self,
        *,
        name: str | None = None,
        invite: list[str] | None = None,
        is_direct: bool = False,
        preset: str = "private_chat",
        creation_content: dict[str, Any] | None = None,
    ) -> str:
        body: dict[str, object] = {"preset": preset, "invite": invite or []}
        if creation_content:
            body["creation_content"] = creation_content
        if name is not None:
            body["name"] = name
        if is_direct:
            body["is_direct"] = True
        return (await self.request("POST", f"{API}/createRoom", RoomId, body=body)).room_id

    async def put_state(
        self, room_id: str, kind: str, state_key: str, content: dict[str, Any]
    ) -> str:
        """A state event (a name, a membership); returns its event id."""
        path = f"{API}/rooms/{quote(room_id)}/state/{quote(kind)}/{quote(state_key)}"
        return (await self.request("PUT", path, EventId, body=content)).event_id

    async def join(self, room: str) -> str:
        return (await self.request("POST", f"{API}/join/{quote(room)}", RoomId, body={})).room_id

    async def invite(self, room_id: str, user_id: str) -> None:
        path = f"{API}/rooms/{quote(room_id)}/invite"
        await self.request("POST", path, _Empty, body={"user_id": user_id})

    async def leave(self, room_id: str) -> None:
        await self.request("POST", f"{API}/rooms/{quote(room_id)}/leave", _Empty, body={})

    async def read_receipt(self, room_id: str, event_id: str) -> None:
        path = f"{API}/rooms/{quote(room_id)}/receipt/m.read/{quote(event_id)}"
        await self.request("POST", path, _Empty, body={})

    async def account_data(self, user_id: str, kind: str) -> dict[str, Any]:
        path = f"{API}/user/{quote(user_id)}/account_data/{quote(kind)}"
        raw = await self.request("GET", path, msgspec.Raw)
        value = decode(bytes(raw), dict[str, Any])
        return value

    async def set_account_data(self, user_id: str, kind: str, content: dict[str, Any]) -> None:
        path = f"{API}/user/{quote(user_id)}/account_data/{quote(kind)}"
        await self.request("PUT", path, _Empty, body=content)

    async def profile(self, user_id: str) -> Profile:
        return await self.request("GET", f"{API}/profile/{quote(user_id)}", Profile)
