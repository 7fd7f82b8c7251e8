"""The TUI's group features on Matrix: create, add, rename, remove, leave, as rooms."""

from __future__ import annotations

from harness.synapse import Synapse
from harness.waits import until
from tests.matrix.support import start
from tests.support.engines import Engines
from tui_chat.core.models import GROUP_PREFIX, ConversationReplaced, OutState
from tui_chat.matrix.http import MatrixHttp


async def test_group_commands_become_room_events(synapse: Synapse, engines: Engines) -> None:
    alice, bob, carol = (synapse.register(n) for n in ("alice", "bob", "carol"))
    a = await start(engines, alice, synapse.url)
    await a.online(30)
    made = a.engine.create_group("Lunch", [bob.user_id])
    await until(lambda: a.state_of(made.client_id) is OutState.SENT, "the group is created", 30)
    (replaced,) = [e for e in a.of(ConversationReplaced) if e.old == made.peer]
    key = replaced.new
    assert key is not None and key.startswith(GROUP_PREFIX)
    room = key[len(GROUP_PREFIX) :]
    await until(lambda: a.engine.conversation(key).title == "Lunch", "titled Lunch")
    await until(lambda: bob.user_id in a.engine.store.members(key), "bob is invited")

    add = a.engine.add_member(key, carol.user_id)
    await until(lambda: a.state_of(add.client_id) is OutState.SENT, "carol is added", 30)
    assert carol.user_id in a.engine.store.members(key)
    ren = a.engine.rename_group(key, "Dinner")
    await until(lambda: a.state_of(ren.client_id) is OutState.SENT, "renamed", 30)
    await until(lambda: a.engine.conversation(key).title == "Dinner", "titled Dinner")
    rem = a.engine.remove_member(key, carol.user_id)
    await until(lambda: a.state_of(rem.client_id) is OutState.SENT, "carol removed", 30)
    assert carol.user_id not in a.engine.store.members(key)

    # Bob joins and writes; alice sees it in the same group.
    http = MatrixHttp(synapse.url, token=bob.access_token)
    try:
        await http.join(room)
        await http.send_message(room, "b1", {"msgtype": "m.text", "body": "count me in"})
    finally:
        await http.aclose()
    await until(lambda: any(m.body == "count me in" for m in a.engine.messages(key)), "bob's line")
    left = a.engine.leave_group(key)
    await until(lambda: a.state_of(left.client_id) is OutState.SENT, "alice left", 30)
    assert not a.engine.store.joined(key)
