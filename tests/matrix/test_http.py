"""The thin HTTP client against a real Synapse: answers decoded, errors typed."""

from __future__ import annotations

import pytest

from harness.synapse import Synapse
from tui_chat.matrix.http import MatrixError, MatrixHttp, Unreachable


async def test_login_whoami_send_sync_messages(synapse: Synapse) -> None:
    alice = synapse.register("alice")
    bob = synapse.register("bob")
    http = MatrixHttp(synapse.url)
    try:
        login = await http.login(alice.user_id, alice.password)
        assert login.user_id == alice.user_id
        me = await http.whoami()
        assert (me.user_id, me.device_id) == (alice.user_id, login.device_id)
        room = await http.create_room(name="Lunch", invite=[bob.user_id])
        event_id = await http.send_message(room, "txn-1", {"msgtype": "m.text", "body": "hi"})
        # The same txnId on the same device is the same event: the homeserver dedupes it.
        again = await http.send_message(room, "txn-1", {"msgtype": "m.text", "body": "hi"})
        assert again == event_id
        sync = await http.sync(None, timeout_ms=0)
        timeline = sync.rooms.join[room].timeline.events
        mine = [e for e in timeline if e.event_id == event_id]
        assert mine[0].unsigned is not None
        assert mine[0].unsigned.transaction_id == "txn-1"
        page = await http.messages(room, from_token=None, direction="b", limit=10)
        assert [e.event_id for e in page.chunk].count(event_id) == 1
    finally:
        await http.aclose()


async def test_errors_are_typed(synapse: Synapse) -> None:
    alice = synapse.register("alice")
    http = MatrixHttp(synapse.url, token="not-a-token")
    try:
        with pytest.raises(MatrixError) as bad_token:
            await http.whoami()
        assert bad_token.value.errcode == "M_UNKNOWN_TOKEN"
        assert bad_token.value.status == 401
        assert bad_token.value.auth
        with pytest.raises(MatrixError) as bad_password:
            await http.login(alice.user_id, "wrong")
        assert bad_password.value.errcode == "M_FORBIDDEN"
        http.token = alice.access_token
        with pytest.raises(MatrixError) as not_in_room:
            await http.send_message("!nowhere:localhost", "t", {"msgtype": "m.text", "body": "x"})
        assert not_in_room.value.status in (403, 404)
    finally:
        await http.aclose()


async def test_unreachable() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    http = MatrixHttp(f"http://127.0.0.1:{port}", timeout=2)
    try:
        with pytest.raises(Unreachable):
            await http.versions()
    finally:
        await http.aclose()
