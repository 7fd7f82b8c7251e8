"""A real Synapse homeserver as a subprocess, for the Matrix back-end's tests.

:class:`Synapse` writes a ``homeserver.yaml`` into a directory of its own (SQLite,
``server_name: localhost``, only the client listener on 127.0.0.1, no federation, no
public registration, registration by shared secret, ``bcrypt_rounds: 4``, rate limits
raised so tests are never throttled unless they ask to be), starts
``python -m synapse.app.homeserver -c …`` exactly as an operator would, waits for
``/_matrix/client/versions`` to answer (a condition, never a fixed sleep), registers users
through the shared-secret admin API and stops the process at the end::

    with Synapse(tmp_dir) as hs:
        alice = hs.register("alice")       # Account(user_id, access_token, device_id, ...)
        ...http://127.0.0.1:{hs.port}...
        hs.pause(); hs.resume()             # SIGSTOP / SIGCONT: a homeserver that hangs

The harness uses only the standard library (urllib) so it runs whether or not the
``matrix`` extra is installed; synapse itself must be importable (:func:`available`).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import importlib.util
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

from harness.env import subprocess_env

__all__ = ["Account", "Synapse", "SynapseStartError", "available"]

START_TIMEOUT: Final = 120.0  # a cold start on a loaded 2-core machine takes ~10 s
SHARED_SECRET: Final = "tui-chat-test-shared-secret"
_HIGH: Final = {"per_second": 10_000, "burst_count": 100_000}


def available() -> bool:
    """Whether synapse can be started here (the test extra is installed)."""
    try:
        return importlib.util.find_spec("synapse") is not None
    except (ImportError, ValueError):
        return False


class SynapseStartError(RuntimeError):
    """The homeserver did not answer in time, or exited first (its log is in the message)."""


@dataclass(frozen=True, slots=True)
class Account:
    user_id: str  # "@alice:localhost"
    localpart: str
    password: str
    access_token: str
    device_id: str


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def homeserver_config(directory: Path, port: int, **overrides: Any) -> dict[str, Any]:
    """The homeserver.yaml content (JSON is valid YAML) for a private test server."""
    cfg: dict[str, Any] = {
        "server_name": "localhost",
        "public_baseurl": f"http://127.0.0.1:{port}/",
        "pid_file": str(directory / "homeserver.pid"),
        "listeners": [
            {
                "port": port,
                "bind_addresses": ["127.0.0.1"],
                "type": "http",
                "tls": False,
                "x_forwarded": False,
                "resources": [{"names": ["client"], "compress": False}],
            }
        ],
        "database": {"name": "sqlite3", "args": {"database": str(directory / "homeserver.db")}},
        "log_config": str(directory / "log.yaml"),
        "media_store_path": str(directory / "media"),
        "signing_key_path": str(directory / "signing.key"),
        "report_stats": False,
        "enable_metrics": False,
        "enable_registration": False,
        "registration_shared_secret": SHARED_SECRET,
        "macaroon_secret_key": secrets.token_hex(16),
        "form_secret": secrets.token_hex(16),
        "bcrypt_rounds": 4,
        "trusted_key_servers": [],
        "suppress_key_server_warning": True,
        "federation_domain_whitelist": [],
        "url_preview_enabled": False,
        "presence": {"enabled": False},
        "rc_message": _HIGH,
        "rc_registration": _HIGH,
        "rc_login": {"address": _HIGH, "account": _HIGH, "failed_attempts": _HIGH},
        "rc_joins": {"local": _HIGH, "remote": _HIGH},
        "rc_joins_per_room": _HIGH,
        "rc_invites": {"per_room": _HIGH, "per_user": _HIGH, "per_issuer": _HIGH},
        "rc_3pid_validation": _HIGH,
        "rc_admin_redaction": _HIGH,
    }
    cfg.update(overrides)
    return cfg


_LOG_CONFIG: Final = """\
version: 1
formatters:
  precise:
    format: '%(asctime)s - %(name)s - %(lineno)d - %(levelname)s - %(message)s'
handlers:
  file:
    class: logging.FileHandler
    formatter: precise
    filename: {path}
root:
  level: WARNING
  handlers: [file]
disable_existing_loggers: false
"""


class Synapse:
    """One homeserver process; see the module docstring."""

    def __init__(self, directory: Path, **overrides: Any) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = _free_port()
        self.overrides = overrides
        self.proc: subprocess.Popen[bytes] | None = None
        self._count = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.dir / "homeserver.log"

    def _write_config(self) -> Path:
        from signedjson.key import generate_signing_key, write_signing_keys

        key_path = self.dir / "signing.key"
        if not key_path.exists():
            with key_path.open("w") as f:
                write_signing_keys(f, [generate_signing_key("a_test")])
        (self.dir / "log.yaml").write_text(_LOG_CONFIG.format(path=self.log_path))
        path = self.dir / "homeserver.yaml"
        path.write_text(json.dumps(homeserver_config(self.dir, self.port, **self.overrides)))
        return path

    def start(self, timeout: float = START_TIMEOUT) -> None:
        config = self._write_config()
        stderr = (self.dir / "stderr.log").open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "synapse.app.homeserver", "-c", str(config)],
            cwd=self.dir,
            env=subprocess_env(),
            stdin=subprocess.DEVNULL,
            stdout=stderr,
            stderr=stderr,
        )
        stderr.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise SynapseStartError(
                    f"synapse exited with {self.proc.returncode}:\n{self._tail()}"
                )
            with contextlib.suppress(OSError, ValueError):
                if self._get("/_matrix/client/versions", timeout=2.0).get("versions"):
                    return
            if time.monotonic() > deadline:
                self.stop()
                raise SynapseStartError(
                    f"synapse did not answer within {timeout} s:\n{self._tail()}"
                )
            time.sleep(0.1)

    def _tail(self) -> str:
        text = ""
        for name in ("stderr.log", "homeserver.log"):
            with contextlib.suppress(OSError):
                text += (self.dir / name).read_text(errors="replace")[-4000:]
        return text

    def _get(self, path: str, timeout: float = 10.0) -> dict[str, Any]:
        with urllib.request.urlopen(self.url + path, timeout=timeout) as resp:
            data: dict[str, Any] = json.loads(resp.read())
            return data

    def _post(self, path: str, body: dict[str, Any], token: str | None = None) -> dict[str, Any]:
        req = urllib.request.Request(
            self.url + path,
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"}
            | ({"Authorization": f"Bearer {token}"} if token else {}),
            method="POST",
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            data: dict[str, Any] = json.loads(resp.read())
            return data

    def register(
        self, localpart: str, password: str = "", *, unique: bool = True, admin: bool = False
    ) -> Account:
        """A new user through the shared-secret admin API (HMAC-SHA1 over nonce and fields).

        ``unique`` appends a counter so that tests sharing one homeserver never collide.
        """
        if unique:
            self._count += 1
            localpart = f"{localpart}-{os.getpid()}-{self._count}"
        password = password or secrets.token_urlsafe(12)
        nonce = self._get("/_synapse/admin/v1/register")["nonce"]
        mac = hmac.new(SHARED_SECRET.encode(), digestmod=hashlib.sha1)
        role = "admin" if admin else "notadmin"
        mac.update("\x00".join((nonce, localpart, password, role)).encode())
        done = self._post(
            "/_synapse/admin/v1/register",
            {
                "nonce": nonce,
                "username": localpart,
                "password": password,
                "admin": admin,
                "mac": mac.hexdigest(),
            },
        )
        return Account(
            done["user_id"], localpart, password, done["access_token"], done["device_id"]
        )

    def limit_messages(self, admin: Account, user_id: str, per_second: int, burst: int) -> None:
        """Throttle one user's sends (the admin API's per-user rate limit override)."""
        quoted = urllib.parse.quote(user_id, safe="")
        self._post(
            f"/_synapse/admin/v1/users/{quoted}/override_ratelimit",
            {"messages_per_second": per_second, "burst_count": burst},
            admin.access_token,
        )

    def pause(self) -> None:
        """SIGSTOP: the homeserver holds every connection open and answers nothing."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def stop(self, timeout: float = 20.0) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGCONT)
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
