"""``tui-chat headless`` with a wire log, for the chaos harness.

``python -m harness.chaos_client --config PATH [--broken VARIANT]`` runs exactly
``tui-chat headless --config PATH`` with one addition: just before the engine hands a
``send`` frame (or a group command: ``create``, ``add``, ``remove``, ``leave``,
``rename``) to its websocket it prints ``{"event":"wire","client_id":...}`` on the same
stdout as every other event. The line is written before the frame, so a message with no
``wire`` line before its give-up was certainly never on the wire (a SIGKILL between the line
and the frame only makes the log more cautious). The checker needs this to tell a given-up
message the server may legitimately hold (its ack was lost) from one that must not exist.

The line comes from :meth:`Engine.observe_frames` (the engine reports each frame just
before it writes it), attached through ``cli.main(prepare_engine=...)``: nothing is patched.

``--broken`` applies one of the deliberately broken engine variants of
:mod:`harness.broken`, so that tests can show the checker catching it.
"""

from __future__ import annotations

import argparse
import json
import sys

from tui_chat import protocol as p
from tui_chat.core.engine import Engine

# Every frame that carries a client_id the outbox keeps: a send, and the group commands
# (each is a message of the group's stream, given up and retried like a send).
_OUTBOX_FRAMES = (p.Send, p.Create, p.Add, p.Remove, p.Leave, p.Rename)


def wire_log(engine: Engine) -> None:
    """Print a ``wire`` line for every outbox frame, before the frame is written."""

    def observe(direction: str, frame: p.ServerFrame | p.ClientFrame) -> None:
        if direction == "out" and isinstance(frame, _OUTBOX_FRAMES):
            sys.stdout.write(json.dumps({"event": "wire", "client_id": frame.client_id}) + "\n")
            sys.stdout.flush()

    engine.observe_frames(observe)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.chaos_client")
    parser.add_argument("--config", required=True)
    parser.add_argument("--broken", default=None, help="a broken engine variant (testing only)")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    if args.broken:
        from harness import broken

        broken.apply_client(args.broken)
    from tui_chat.cli import main as cli_main

    # The engine reports each frame as it goes to the socket (after any broken variant
    # changed it), so the log shows what really goes on the wire.
    argv_ = ["headless", "--config", args.config] + (["-v"] if args.verbose else [])
    return cli_main(argv_, prepare_engine=wire_log)


if __name__ == "__main__":
    raise SystemExit(main())
