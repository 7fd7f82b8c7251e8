"""``tui-chat`` as a user runs it: config errors, ``config init|path|check``, ``--version``.

Every case runs the real entry point in a subprocess (``python -m tui_chat.cli``) with its
own HOME and XDG directories, so nothing here reads or writes the user's own config. A bad
file must give exit code 2 and one line on stderr that names the file and the key, and no
traceback, whichever command read it.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.cli import Run, env_for, tui_chat, uncomment_template, write
from tui_chat import __version__
from tui_chat.cli import TEMPLATE

GOOD = """\
[server]
url = "ws://127.0.0.1:1"

[account]
user = "alice"
token = "secret"
"""


# ---------------------------------------------------------------- bad files

ACCOUNT = '[account]\nuser = "alice"\ntoken = "t"\n'

# (id, file content, words the one line must hold besides the file name)
BAD_FILES: list[tuple[str, str | bytes, tuple[str, ...]]] = [
    ("invalid-toml", 'a = 1\nb = = 2\n', ("invalid TOML", "line 2")),
    ("invalid-toml-eof", "x = [\n", ("invalid TOML",)),
    ("not-utf8", b'[account]\nuser = "alice"\ntoken = "\xff"\n', ("UTF-8",)),
    ("unknown-key", ACCOUNT + 'colour = "red"\n', ("account.colour", "unknown key")),
    ("unknown-section", '[accont]\nuser = "alice"\n', ("accont", "unknown key")),
    ("unknown-sync-key", ACCOUNT + "[sync]\nfreshnes_window = 3\n", ("sync.freshnes_window",)),
    ("wrong-type-float", ACCOUNT + '[sync]\nfreshness_window = "soon"\n',
     ("sync.freshness_window", "float")),
    ("wrong-type-bool", ACCOUNT + '[ui]\nbell = "yes"\n', ("ui.bell", "bool")),
    ("not-a-table", "account = 3\n", ("account", "object")),
    ("out-of-range", ACCOUNT + "[sync]\nfreshness_window = -1\n", ("sync.freshness_window", "> 0")),
    ("bad-choice", ACCOUNT + '[sync]\non_failure = "drop"\n', ("sync.on_failure",)),
    ("bad-url-scheme", ACCOUNT + '[server]\nurl = "http://x"\n',
     ("server.url", "scheme 'http'", "wss://HOST")),
    # Start-up used to pass these and crash (traceback, exit 0) when the engine connected.
    ("port-out-of-range", ACCOUNT + '[server]\nurl = "ws://127.0.0.1:99999"\n',
     ("server.url", "ws://127.0.0.1:99999", "port from 1 to 65535")),
    ("port-zero", ACCOUNT + '[server]\nurl = "ws://127.0.0.1:0"\n',
     ("server.url", "port 0", "1-65535")),
    ("port-not-a-number", ACCOUNT + '[server]\nurl = "ws://chat.example:http"\n',
     ("server.url", "port from 1 to 65535")),
    ("url-without-host", ACCOUNT + '[server]\nurl = "ws://:8765"\n',
     ("server.url", "no host", "ws://HOST")),
    ("unknown-theme", ACCOUNT + '[ui]\ntheme = "solarised"\n',
     ("ui.theme", "'solarised'", "expected one of", "textual-dark", "nord")),
    ("key-wrong-case", ACCOUNT + '[keys]\nretry = "Ctrl+R"\n',
     ("keys.retry", "no terminal sends the key 'Ctrl+R'", "ctrl+a", "f1")),
    ("key-modifiers-out-of-order", ACCOUNT + '[keys]\ngive_up = "d,shift+ctrl+d"\n',
     ("keys.give_up", "'shift+ctrl+d'")),
    ("key-alt-with-dash", ACCOUNT + '[keys]\nnext_unread = "alt-a"\n',
     ("keys.next_unread", "'alt-a'", "alt+a")),
    ("key-shift-letter", ACCOUNT + '[keys]\nretry = "shift+r"\n', ("keys.retry", "'shift+r'")),
    ("key-empty-in-list", ACCOUNT + '[keys]\nretry = "r,"\n', ("keys.retry", "empty name")),
    ("key-misspelt-name", ACCOUNT + '[keys]\nquit = "ctrl+q,escpe"\n',
     ("keys.quit", "'escpe'", "escape")),
    ("bad-user-name", '[account]\nuser = "Alice!"\ntoken = "t"\n', ("account.user",)),
    ("missing-user", '[account]\ntoken = "t"\n', ("account", "user")),
    ("missing-account", '[server]\nurl = "ws://h:1"\n', ("account",)),
    ("two-token-sources", ACCOUNT + 'token_file = "/tmp/tok"\n',
     ("account.token", "token_file", "exactly one")),
    ("no-token-source", '[account]\nuser = "alice"\n', ("account.token", "exactly one")),
    ("unknown-binding", ACCOUNT + '[keys]\nfrobnicate = "x"\n',
     ("keys.frobnicate", "unknown binding id", "retry")),
    ("empty-token", '[account]\nuser = "alice"\ntoken = "  "\n', ("account.token", "empty")),
    ("missing-token-file", '[account]\nuser = "alice"\ntoken_file = "/nonexistent/tok"\n',
     ("account.token_file", "/nonexistent/tok")),
    ("failing-token-command", '[account]\nuser = "alice"\ntoken_command = ["false"]\n',
     ("account.token_command", "status 1")),
    ("missing-ca-file",
     '[server]\nurl = "wss://h:1"\nca_file = "/nonexistent/ca.pem"\n' + ACCOUNT,
     ("server.ca_file",)),
]  # fmt: skip


def assert_one_clean_line(run: Run, path: Path, words: tuple[str, ...]) -> None:
    both = run.out + run.err
    assert "Traceback" not in both, both
    assert run.code == 2, (run.code, both)
    assert len(run.err_lines) == 1, run.err
    line = run.err_lines[0]
    assert line.startswith("tui-chat: "), line
    assert str(path) in line, line
    for word in words:
        assert word in line, (word, line)


@pytest.mark.parametrize(("content", "words"), [pytest.param(c, w, id=i) for i, c, w in BAD_FILES])
@pytest.mark.parametrize("command", [(), ("config", "check"), ("headless",)], ids=" ".join)
def test_bad_config_is_one_line_and_exit_2(
    tmp_path: Path, command: tuple[str, ...], content: str | bytes, words: tuple[str, ...]
) -> None:
    path = write(tmp_path / "bad.toml", content)
    run = tui_chat(tmp_path, *command, "--config", str(path))
    assert_one_clean_line(run, path, words)


def test_wrong_type_in_keys_names_the_binding(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.toml", ACCOUNT + "[keys]\nretry = 1\n")
    run = tui_chat(tmp_path, "--config", str(path))
    assert_one_clean_line(run, path, ("keys.retry", "str"))


def test_missing_file_named_by_flag_or_env(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "config.toml"
    run = tui_chat(tmp_path, "--config", str(missing))
    assert_one_clean_line(run, missing, ("file not found",))

    env = env_for(tmp_path)
    env["TUI_CHAT_CONFIG"] = str(missing)
    run = tui_chat(tmp_path, "config", "check", env=env)
    assert_one_clean_line(run, missing, ("file not found",))


def test_directory_as_config(tmp_path: Path) -> None:
    folder = tmp_path / "folder.toml"
    folder.mkdir()
    run = tui_chat(tmp_path, "config", "check", "--config", str(folder))
    assert_one_clean_line(run, folder, ("cannot read",))


def test_bad_arguments_are_usage_errors(tmp_path: Path) -> None:
    run = tui_chat(tmp_path, "config", "frobnicate")
    assert run.code == 2
    assert "Traceback" not in run.out + run.err
    assert "invalid choice" in run.err


# ---------------------------------------------------------------- config init / path / check


def test_config_path_follows_xdg_env_and_flag(tmp_path: Path) -> None:
    run = tui_chat(tmp_path, "config", "path")
    assert run.code == 0, run.err
    assert run.out.strip() == str(tmp_path / "xdg-config" / "tui-chat" / "config.toml")

    env = env_for(tmp_path)
    env["TUI_CHAT_CONFIG"] = str(tmp_path / "from-env.toml")
    run = tui_chat(tmp_path, "config", "path", env=env)
    assert run.out.strip() == str(tmp_path / "from-env.toml")

    run = tui_chat(tmp_path, "config", "path", "--config", str(tmp_path / "flag.toml"), env=env)
    assert run.out.strip() == str(tmp_path / "flag.toml")


def test_config_init_writes_the_template_and_never_overwrites(tmp_path: Path) -> None:
    target = tmp_path / "xdg-config" / "tui-chat" / "config.toml"
    run = tui_chat(tmp_path, "config", "init")
    assert run.code == 0, run.err
    assert str(target) in run.out
    assert target.read_text(encoding="utf-8") == TEMPLATE
    assert target.stat().st_mode & 0o777 == 0o600  # it will hold a token

    target.write_text(GOOD, encoding="utf-8")
    run = tui_chat(tmp_path, "config", "init")
    assert run.code == 1
    assert "already exists" in run.err and str(target) in run.err
    assert "Traceback" not in run.out + run.err
    assert target.read_text(encoding="utf-8") == GOOD


def test_config_check_passes_on_the_edited_template(tmp_path: Path) -> None:
    assert tui_chat(tmp_path, "config", "init").code == 0
    target = tmp_path / "xdg-config" / "tui-chat" / "config.toml"
    edited = uncomment_template(target.read_text(encoding="utf-8"))
    edited = edited.replace('user = "alice"', 'user = "dave"')
    edited = re.sub(r'^token = ".*"', 'token = "s3cret"', edited, flags=re.M)
    edited = edited.replace("ws://127.0.0.1:8765", "ws://chat.example:9000")
    # Every documented section is really switched on, so every documented key is checked.
    for section in ("[server]", "[account]", "[storage]", "[sync]", "[ui]", "[keys]"):
        assert re.search(rf"^{re.escape(section)}", edited, re.M), section
    target.write_text(edited, encoding="utf-8")

    run = tui_chat(tmp_path, "config", "check")
    assert run.code == 0, run.out + run.err
    assert run.err == ""
    assert "OK" in run.out and "dave" in run.out and "ws://chat.example:9000" in run.out


def test_version(tmp_path: Path) -> None:
    run = tui_chat(tmp_path, "--version")
    assert run.code == 0
    assert run.out.strip() == f"tui-chat {__version__}"


# ---------------------------------------------------------------- token file permissions


def test_token_readable_by_others_is_warned_about(tmp_path: Path) -> None:
    token = write(tmp_path / "token", "s3cret\n", mode=0o644)
    cfg = write(
        tmp_path / "config.toml",
        f'[account]\nuser = "alice"\ntoken_file = "{token}"\n',
        mode=0o600,
    )
    run = tui_chat(tmp_path, "config", "check", "--config", str(cfg))
    assert run.code == 0, run.err
    assert len(run.err_lines) == 1, run.err
    assert "warning" in run.err and str(token) in run.err and "chmod 600" in run.err

    token.chmod(0o600)
    run = tui_chat(tmp_path, "config", "check", "--config", str(cfg))
    assert run.code == 0 and run.err == "", run.err


def test_config_with_inline_token_readable_by_others_is_warned_about(tmp_path: Path) -> None:
    cfg = write(tmp_path / "config.toml", GOOD, mode=0o604)
    run = tui_chat(tmp_path, "config", "check", "--config", str(cfg))
    assert run.code == 0, run.err
    assert "warning" in run.err and str(cfg) in run.err

    cfg.chmod(0o600)
    run = tui_chat(tmp_path, "config", "check", "--config", str(cfg))
    assert run.code == 0 and run.err == "", run.err


@pytest.mark.parametrize(
    "token",
    ["paste the token from `tui-chat-server add-user alice` here", "…"],
    ids=["template", "ellipsis"],
)
def test_the_templates_placeholder_token_is_not_accepted(tmp_path: Path, token: str) -> None:
    path = write(tmp_path / "c.toml", f'[account]\nuser = "alice"\ntoken = "{token}"\n')
    run = tui_chat(tmp_path, "config", "check", "--config", str(path))
    assert_one_clean_line(run, path, ("account.token", "template"))


def test_server_admin_commands_refuse_a_missing_database(tmp_path: Path) -> None:
    missing = tmp_path / "typo.db"
    for command in (["list-users"], ["remove-user", "bob"], ["revoke-token", "bob"]):
        run = subprocess.run(
            [sys.executable, "-m", "tui_chat.server.cli", *command, "--db", str(missing)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert run.returncode == 2, run
        assert "no database at" in run.stderr and "Traceback" not in run.stderr
        assert not missing.exists()  # a typo does not create an empty database
