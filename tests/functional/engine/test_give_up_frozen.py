"""Give-up is a fact, not a wish: through a frozen server (SIGSTOP) and the fault proxy.

A message that may have reached the server is never shown as given up until the server
has answered its cancel; the end state always agrees with what the server holds.
"""

from __future__ import annotations

import os
import signal

from harness.faultproxy import FaultProxy
from harness.serverproc import ServerProcess
from harness.waits import until
from tests.support.engines import Engines, server_copies
from tests.support.wire import RunningServer
from tui_chat.core.models import ConnState, DeliveredAnyway, OutState

CANCELLING, GIVEN_UP, SENT = OutState.CANCELLING, OutState.GIVEN_UP, OutState.SENT


async def test_give_up_while_the_server_is_frozen_ends_as_the_server_says(
    server_process: ServerProcess, engines: Engines
) -> None:
    db = server_process.db_path
    alice = await engines.start("alice", server_process.tokens["alice"], server_process.url)
    await alice.online()
    pid = server_process.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    try:
        cid = alice.engine.send("bob", "sent into a frozen server").client_id
        # It left the machine: the frozen server may process it when it wakes.
        await until(lambda: alice.engine.message(cid).attempts >= 1, "the send to go out")  # type: ignore[union-attr]
        await until(lambda: alice.state is not ConnState.ONLINE, "the silence noticed")
        gone = alice.engine.give_up(cid)
        assert gone.state is CANCELLING
        assert not any(e.message.state is GIVEN_UP for e in alice.changed(cid)), (
            "given up before the server said so"
        )
    finally:
        os.kill(pid, signal.SIGCONT)
    await until(lambda: alice.state_of(cid) in (SENT, GIVEN_UP), "the server's answer")
    await alice.online()
    copies = server_copies(db, cid)
    if alice.state_of(cid) is SENT:
        assert copies == 1
        assert [e.message.client_id for e in alice.of(DeliveredAnyway)] == [cid]
    else:
        assert copies == 0
    states = [e.message.state for e in alice.changed(cid)]
    assert states[-2:] in ([CANCELLING, SENT], [CANCELLING, GIVEN_UP]), states


async def test_a_send_lost_on_the_way_is_cancelled_and_refused_for_ever(
    chat_server: RunningServer, proxy: FaultProxy, engines: Engines
) -> None:
    alice = await engines.start("alice", chat_server.tokens["alice"], proxy.url)
    await alice.online()
    proxy.blackhole(direction="up")  # the send leaves the client and never arrives
    cid = alice.engine.send("bob", "lost on the way").client_id
    await until(lambda: alice.engine.message(cid).attempts >= 1, "the send to go out")  # type: ignore[union-attr]
    assert alice.engine.give_up(cid).state is CANCELLING
    await until(lambda: alice.state is not ConnState.ONLINE, "the dead link noticed")
    assert alice.state_of(cid) is CANCELLING
    proxy.pass_through()
    await until(lambda: alice.state_of(cid) is GIVEN_UP, "the tombstone confirmed")
    assert server_copies(chat_server.db_path, cid) == 0
    assert alice.of(DeliveredAnyway) == []
    # The blackholed send may still be in the proxy's buffers: whatever arrives later is
    # refused by the tombstone (tests/functional/server/test_server_cancel.py).
    await alice.online()
    assert server_copies(chat_server.db_path, cid) == 0
