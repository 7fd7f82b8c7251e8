"""``tui-chat headless`` with a wire log, for the chaos harness.

``python -m harness.chaos_client --config PATH [--broken VARIANT]`` runs exactly
``tui-chat headless --config PATH`` with one addition: just before the engine hands a
``send`` frame to its websocket it prints ``{"event":"wire","client_id":...}`` on the same
stdout as every other event. The line is written before the frame, so a message with no
``wire`` line before its give-up was certainly never on the wire (a SIGKILL between the line
and the frame only makes the log more cautious). The checker needs this to tell a given-up
message the server may legitimately hold (its ack was lost) from one that must not exist.

``--broken`` applies one of the deliberately broken engine variants of
:mod:`harness.broken`, so that tests can show the checker catching it.
"""

from __future__ import annotations

import argparse
import json
import sys

from tui_chat import protocol as p
from tui_chat.core.ws_transport import WebSocketTransport


def install_wire_log() -> None:
    original = WebSocketTransport.send

    async def send(self: WebSocketTransport, frame: p.ClientFrame) -> bool:
        if isinstance(frame, p.Send):
            sys.stdout.write(json.dumps({"event": "wire", "client_id": frame.client_id}) + "\n")
            sys.stdout.flush()
        return await original(self, frame)

    WebSocketTransport.send = send  # type: ignore[method-assign]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.chaos_client")
    parser.add_argument("--config", required=True)
    parser.add_argument("--broken", default=None, help="a broken engine variant (testing only)")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    # Before any broken patch, so that the log shows what really goes on the wire.
    install_wire_log()
    if args.broken:
        from harness import broken

        broken.apply_client(args.broken)
    from tui_chat.cli import main as cli_main

    return cli_main(["headless", "--config", args.config] + (["-v"] if args.verbose else []))


if __name__ == "__main__":
    raise SystemExit(main())
