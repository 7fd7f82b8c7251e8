"""Encrypted rooms: shown as "encrypted: not supported yet", never garbage, nothing sent."""

from __future__ import annotations

from harness.synapse import Synapse
from harness.waits import until
from tests.matrix.support import room_texts, start
from tests.support.engines import Engines
from tui_chat.core.models import GROUP_PREFIX, OutState
from tui_chat.matrix.http import API, MatrixHttp, quote
from tui_chat.matrix.mapping import ENCRYPTED_BODY
from tui_chat.matrix.wire import EventId, RoomId


async def test_encrypted_room_is_marked_and_nothing_is_sent(
    synapse: Synapse, engines: Engines
) -> None:
    alice, bob = synapse.register("alice"), synapse.register("bob")
    http = MatrixHttp(synapse.url, token=bob.access_token)
    try:
        body = {
            "preset": "private_chat",
            "name": "Secret",
            "invite": [alice.user_id],
            "initial_state": [
                {
                    "type": "m.room.encryption",
                    "state_key": "",
                    "content": {"algorithm": "m.megolm.v1.aes-sha2"},
                }
            ],
        }
        room = (await http.request("POST", f"{API}/createRoom", RoomId, body=body)).room_id
        await http.request(
            "PUT",
            f"{API}/rooms/{quote(room)}/send/m.room.encrypted/e1",
            EventId,
            body={"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "AwgAEn…", "session_id": "x"},
        )
    finally:
        await http.aclose()
    guest = MatrixHttp(synapse.url, token=alice.access_token)
    try:
        await guest.join(room)
    finally:
        await guest.aclose()
    key = GROUP_PREFIX + room
    a = await start(engines, alice, synapse.url)
    await a.online(30)
    await until(lambda: a.engine.store.has_conversation(key), "alice sees the room")
    assert ENCRYPTED_BODY in (a.engine.conversation(key).title or "")
    await until(
        lambda: any(m.body == ENCRYPTED_BODY for m in a.engine.messages(key)),
        "the encrypted event is shown as such",
    )
    sent = a.engine.send(key, "must not leave in clear text")
    await until(lambda: a.state_of(sent.client_id) is OutState.FAILED, "refused here", 30)
    failed = a.engine.message(sent.client_id)
    assert failed is not None and "encrypted" in (failed.error or "")
    assert await room_texts(synapse, alice, room) == []
