"""``hello {replay_pages: true}``: the same replay as ``history`` pages instead of messages."""

from __future__ import annotations

from tests.support.wire import (
    RunningServer,
    ServerFactory,
    connect_ws,
    login,
    recv_frame,
    recv_until,
    send_frame,
    send_message,
)
from tui_chat.protocol import (
    PROTOCOL_VERSION,
    Ack,
    Hello,
    HistoryPage,
    Message,
    Send,
    Synced,
    Welcome,
)
from tui_chat.server.config import Limits, ServerConfig

BIG = "x" * 3900


async def paged_login(
    srv: RunningServer, user: str, cursors: dict[str, int]
) -> tuple[list[HistoryPage], list[object], Synced]:
    ws = await connect_ws(srv.url)
    try:
        hello = Hello(
            v=PROTOCOL_VERSION,
            user=user,
            token=srv.tokens[user],
            cursors=cursors,
            replay_pages=True,
        )
        await send_frame(ws, hello)
        assert isinstance(await recv_frame(ws), Welcome)
        synced, before = await recv_until(ws, Synced)
    finally:
        await ws.close()
    pages = [f for f in before if isinstance(f, HistoryPage)]
    return pages, [f for f in before if not isinstance(f, HistoryPage)], synced


async def test_paged_replay_holds_exactly_the_messages_of_the_plain_one(
    chat_server_factory: ServerFactory,
) -> None:
    # No rate limit in the way of 1,200 sends in a burst.
    chat_server = await chat_server_factory(ServerConfig(limits=Limits(rate=1e6, burst=10_000)))
    alice, *_ = await login(chat_server.url, "alice", chat_server.tokens["alice"])
    try:
        # 1,200 messages: more than one page by count (1,000), and 150 large ones so
        # that the byte cap (512 KiB) splits a page too.
        for i in range(1200):
            await send_frame(
                alice, Send(client_id=f"a{i}", to="bob", body=BIG if i < 150 else f"m{i}")
            )
        last = await send_message(alice, "last", "bob")
        assert isinstance(last, Ack)
    finally:
        await alice.close()
    conv = last.conv
    plain = await login(chat_server.url, "bob", chat_server.tokens["bob"], {conv: 5})
    await plain.ws.close()
    pages, others, synced = await paged_login(chat_server, "bob", {conv: 5})
    # No message frame: every replayed message came inside a page.
    assert not [f for f in others if isinstance(f, Message)]
    assert len(pages) >= 3
    paged = [m for page in pages for m in page.messages]
    assert paged == plain.replayed
    assert [m.seq for m in paged] == list(range(6, last.seq + 1))
    # Each page says where it starts: contiguous with the cursor, then with the page before.
    below = 5
    for page in pages:
        assert (page.conv, page.after, page.before) == (conv, below, None)
        assert page.messages[0].seq == below + 1
        below = page.messages[-1].seq
    assert synced == plain.synced == Synced(cursors={conv: last.seq})


async def test_a_client_up_to_date_gets_no_page(chat_server: RunningServer) -> None:
    alice, *_ = await login(chat_server.url, "alice", chat_server.tokens["alice"])
    ack = await send_message(alice, "a1", "bob")
    await alice.close()
    assert isinstance(ack, Ack)
    pages, _others, synced = await paged_login(chat_server, "bob", {ack.conv: ack.seq})
    assert pages == []
    assert synced.cursors == {ack.conv: ack.seq}
