"""The project's nginx.conf, run for real on loopback in front of a local backend.

nginx runs on a temporary copy of nginx.conf where only what needs a container or root changes:
the upstreams `api:8000` and `events:8002` (resolved at config-test time) become local ports,
`listen 80` becomes a free loopback port, and pid/temp paths go into a temporary prefix directory.
Every other line, limits and timeouts included, is the production file's.
Used by tests/test_deployment.py and bench/slow_clients.py.
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEADLINE_S = 10


class NginxMissing(RuntimeError):
    pass


def nginx_binary() -> str:
    found = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None)
    if not found:
        raise NginxMissing("nginx is not installed: `apt-get install nginx-light` (or `nginx`); "
                           "`make test` installs it")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(prefix: Path, upstream_port: int, listen_port: int,
                 events_port: int | None = None) -> Path:
    """The config with gunicorn at `upstream_port` and the event-stream server at
    `events_port` (`upstream_port` when None)."""
    text = (REPO / "nginx.conf").read_text()
    temp_paths = "".join(f"    {kind}_temp_path {prefix}/{kind};\n"
                         for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    for pattern, new in ((r"server api:8000;", f"server 127.0.0.1:{upstream_port};"),
                         (r"server events:8002;",
                          f"server 127.0.0.1:{events_port or upstream_port};"),
                         (r"listen 80 default_server;", f"listen 127.0.0.1:{listen_port} default_server;"),
                         (r"(?m)^http \{\n", "http {\n" + temp_paths)):
        text, count = re.subn(pattern, lambda _m, new=new: new, text)
        assert count == 1, f"nginx.conf no longer has exactly one {pattern!r}; update devstack/nginx.py"
    path = prefix / "nginx.conf"
    path.write_text(text)
    return path


def nginx_cmd(prefix: Path, conf: Path, *extra: str, globals_: str = "") -> list:
    return [nginx_binary(), "-p", f"{prefix}/", "-c", str(conf), "-e", "stderr",
            "-g", f"pid {prefix}/nginx.pid;{globals_}", *extra]


@contextlib.contextmanager
def nginx_in_front_of(prefix: Path, upstream_port: int, events_port: int | None = None):
    """nginx with the project's config on a loopback port, in front of `upstream_port` (and
    of `events_port` for the event streams, `upstream_port` when None).
    `prefix` must be a directory nginx's workers can read (0755 when run as root)."""
    port, proc = free_port(), None
    access_log, error_log = prefix / "stdout.log", prefix / "stderr.log"
    try:
        conf = write_config(prefix, upstream_port, port, events_port)
        with open(access_log, "wb") as out, open(error_log, "wb") as err:
            proc = subprocess.Popen(nginx_cmd(prefix, conf, globals_=" daemon off;"),
                                    stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + DEADLINE_S
        while True:
            assert proc.poll() is None, f"nginx exited: {error_log.read_text()}"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, f"nginx not listening: {error_log.read_text()}"
                time.sleep(0.05)
        yield {"port": port, "access_log": access_log, "error_log": error_log}
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=DEADLINE_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=DEADLINE_S)
