"""``tui-chat config check`` knows the Matrix protocol: MXIDs, http(s) URLs, password."""

from __future__ import annotations

from pathlib import Path

from harness.synapse import Synapse
from tests.support.cli import tui_chat, write


def _config(tmp_path: Path, url: str, user: str, secret: str) -> Path:
    return write(
        tmp_path / "config.toml",
        f'[server]\nprotocol = "matrix"\nurl = "{url}"\n[account]\nuser = "{user}"\n{secret}\n',
        mode=0o600,
    )


def test_check_offline_and_online(synapse: Synapse, tmp_path: Path) -> None:
    alice = synapse.register("alice")
    cfg = _config(tmp_path, synapse.url, alice.user_id, f'password = "{alice.password}"')
    run = tui_chat(tmp_path, "config", "check", "--config", str(cfg))
    assert run.code == 0, run.err
    assert "OK" in run.out and alice.user_id in run.out
    run = tui_chat(tmp_path, "config", "check", "--online", "--config", str(cfg))
    assert run.code == 0, run.out + run.err
    assert f"logged in as {alice.user_id}" in run.out

    wrong = _config(tmp_path, synapse.url, alice.user_id, 'password = "wrong"')
    run = tui_chat(tmp_path, "config", "check", "--online", "--config", str(wrong))
    assert run.code == 3, run.out + run.err
    assert "M_FORBIDDEN" in run.err and "Traceback" not in run.err


def test_check_rejects_what_the_protocol_cannot_use(tmp_path: Path) -> None:
    cases = [
        ("ws://127.0.0.1:1", "@a:localhost", 'token = "t"', "server.url"),
        ("http://127.0.0.1:1", "alice", 'token = "t"', "account.user"),
        ("http://127.0.0.1:1", "@a:localhost", 'token = "t"\npassword = "p"', "exactly one"),
    ]
    for url, user, secret, said in cases:
        cfg = _config(tmp_path, url, user, secret)
        run = tui_chat(tmp_path, "config", "check", "--config", str(cfg))
        assert run.code == 2, (url, user, run.out, run.err)
        assert said in run.err and "Traceback" not in run.err
    tui = write(
        tmp_path / "tui.toml", '[account]\nuser = "@a:localhost"\ntoken = "t"\n', mode=0o600
    )
    run = tui_chat(tmp_path, "config", "check", "--config", str(tui))
    assert run.code == 2 and 'protocol = "matrix"' in run.err
