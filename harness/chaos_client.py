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


def group_commands() -> None:
    """Group commands for a ``tui-chat headless`` that does not parse them yet.

    The contract's headless commands (``create {title, members}``, ``send {conv, body}``,
    ``add {conv, user}``, ``remove {conv, user}``, ``leave {conv}``, ``rename {conv,
    title}``) are answered here with the engine API, with the same ``ok`` replies (what
    was asked, the client_id, ``peer``/``conv``). A headless that has them is left alone.
    """
    from tui_chat import headless

    if hasattr(headless, "CreateCmd"):
        return
    original = headless.Headless.handle_line

    def handle_line(self: headless.Headless, line: str) -> bool:
        try:
            cmd = json.loads(line)
        except ValueError:
            return original(self, line)
        if not isinstance(cmd, dict) or not _is_group_command(cmd):
            return original(self, line)
        e = self.engine
        try:
            what = str(cmd["cmd"])
            key = "#" + str(cmd.get("conv", ""))
            if what == "send":
                m = e.send(key, str(cmd["body"]))
            elif what == "create":
                m = e.create_group(str(cmd["title"]), [str(u) for u in cmd.get("members", [])])
            elif what == "add":
                m = e.add_member(key, str(cmd["user"]))
            elif what == "remove":
                m = e.remove_member(key, str(cmd["user"]))
            elif what == "leave":
                m = e.leave_group(key)
            else:
                m = e.rename_group(key, str(cmd["title"]))
        except (KeyError, ValueError) as exc:
            reason = exc.args[0] if exc.args else str(exc)
            self.emit({"event": "error", "id": cmd.get("id"), "code": "rejected", "reason": reason})
            return True
        reply: dict[str, object] = {
            "event": "ok",
            "id": cmd.get("id"),
            "cmd": what,
            "client_id": m.client_id,
            "peer": m.peer,
        }
        if m.peer.startswith("#"):
            reply["conv"] = m.peer[1:]
        for name in ("body", "user", "title", "members"):
            if name in cmd:
                reply[name] = cmd[name]
        self.emit(reply)
        return True

    headless.Headless.handle_line = handle_line  # type: ignore[method-assign]


def _is_group_command(cmd: dict[str, object]) -> bool:
    name = cmd.get("cmd")
    return name in ("create", "add", "remove", "leave", "rename") or (
        name == "send" and "conv" in cmd
    )


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

    group_commands()

    # The engine reports each frame as it goes to the socket (after any broken variant
    # changed it), so the log shows what really goes on the wire.
    argv_ = ["headless", "--config", args.config] + (["-v"] if args.verbose else [])
    return cli_main(argv_, prepare_engine=wire_log)


if __name__ == "__main__":
    raise SystemExit(main())
