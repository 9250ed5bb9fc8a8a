"""Deployment files: nginx.conf works for real in front of a backend; Dockerfile and compose agree.

nginx runs on a temporary copy of nginx.conf where only what needs a container or root changes:
the upstream `api:8000` (resolved at config-test time) becomes the local echo backend, `listen 80`
becomes a free loopback port, and pid/temp paths go into a temporary prefix directory.
"""
import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DEADLINE_S = 10


def nginx_binary() -> str:
    found = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None)
    if not found:
        pytest.fail("nginx is not installed: `apt-get install nginx-light` (or `nginx`); "
                    "`make test` installs it")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_test_config(prefix: Path, upstream_port: int, listen_port: int) -> Path:
    text = (REPO / "nginx.conf").read_text()
    temp_paths = "".join(f"    {kind}_temp_path {prefix}/{kind};\n"
                         for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    for pattern, new in ((r"server api:8000;", f"server 127.0.0.1:{upstream_port};"),
                         (r"listen 80 default_server;", f"listen 127.0.0.1:{listen_port} default_server;"),
                         (r"(?m)^http \{\n", "http {\n" + temp_paths)):
        text, count = re.subn(pattern, lambda _m, new=new: new, text)
        assert count == 1, f"nginx.conf no longer has exactly one {pattern!r}; update this test"
    path = prefix / "nginx.conf"
    path.write_text(text)
    return path


def nginx_cmd(prefix: Path, conf: Path, *extra: str, globals_: str = "") -> list:
    return [nginx_binary(), "-p", f"{prefix}/", "-c", str(conf), "-e", "stderr",
            "-g", f"pid {prefix}/nginx.pid;{globals_}", *extra]


@pytest.fixture
def prefix():
    path = Path(tempfile.mkdtemp(prefix="memharbor-nginx-"))
    path.chmod(0o755)  # when run as root, nginx workers run as `nobody`
    yield path
    shutil.rmtree(path, ignore_errors=True)


class EchoHandler(BaseHTTPRequestHandler):
    """Answers every request with the request line and headers it received, as JSON."""
    protocol_version = "HTTP/1.1"

    def _echo(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        body = json.dumps({"method": self.command, "path": self.path,
                           "headers": {k.lower(): v for k, v in self.headers.items()}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _echo

    def log_message(self, *args):
        pass


@pytest.fixture
def proxy(prefix):
    """nginx with the project's config on a loopback port, in front of the echo backend."""
    backend = ThreadingHTTPServer(("127.0.0.1", 0), EchoHandler)
    backend.daemon_threads = True
    threading.Thread(target=backend.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    port, proc = free_port(), None
    access_log, error_log = prefix / "stdout.log", prefix / "stderr.log"
    try:
        conf = write_test_config(prefix, backend.server_address[1], port)
        with open(access_log, "wb") as out, open(error_log, "wb") as err:
            proc = subprocess.Popen(nginx_cmd(prefix, conf, globals_=" daemon off;"),
                                    stdout=out, stderr=err)
        deadline = time.monotonic() + DEADLINE_S
        while True:
            assert proc.poll() is None, f"nginx exited: {error_log.read_text()}"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, f"nginx not listening: {error_log.read_text()}"
                time.sleep(0.05)
        yield {"port": port, "access_log": access_log}
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=DEADLINE_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=DEADLINE_S)
        backend.shutdown()
        backend.server_close()


def call(port, method, path, headers=None, body=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=DEADLINE_S)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp, resp.read()
    finally:
        conn.close()


def test_nginx_accepts_the_production_config(prefix):
    conf = write_test_config(prefix, free_port(), free_port())
    result = subprocess.run(nginx_cmd(prefix, conf, "-t"), capture_output=True, text=True,
                            timeout=DEADLINE_S)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "syntax is ok" in output and "test is successful" in output, output


def test_app_sees_cloudflare_client_ip_protocol_and_request_id(proxy):
    status, resp, body = call(proxy["port"], "GET", "/api/call/status/abc", headers={
        "CF-Connecting-IP": "203.0.113.7", "X-Forwarded-Proto": "https", "X-Request-ID": "req-42"})
    assert status == 200
    seen = json.loads(body)["headers"]
    assert seen["x-forwarded-for"] == "203.0.113.7"
    assert seen["x-real-ip"] == "203.0.113.7"
    assert seen["x-forwarded-proto"] == "https"
    assert seen["x-request-id"] == "req-42"
    assert "connection" not in seen  # HTTP/1.1 keepalive to gunicorn
    assert resp.getheader("X-Request-ID") == "req-42"


def test_request_without_id_gets_a_generated_one(proxy):
    _, resp, body = call(proxy["port"], "GET", "/api/recording/list")
    generated = json.loads(body)["headers"]["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", generated)
    assert resp.getheader("X-Request-ID") == generated


def test_invite_burst_from_one_client_is_refused_with_json_429_but_others_pass(proxy):
    noisy = {"CF-Connecting-IP": "198.51.100.1", "Content-Type": "application/json"}
    statuses = []
    for _ in range(50):  # 2r/s with burst 5: a 429 comes after about 6 quick requests
        status, resp, body = call(proxy["port"], "POST", "/api/call/invite", noisy, b"{}")
        statuses.append(status)
        if status == 429:
            break
    assert statuses[0] == 200 and statuses[-1] == 429, statuses
    assert resp.getheader("Content-Type").startswith("application/json")
    assert json.loads(body)["error"]["code"] == "rate_limited"
    other = {"CF-Connecting-IP": "198.51.100.2", "Content-Type": "application/json"}
    assert call(proxy["port"], "POST", "/api/call/invite", other, b"{}")[0] == 200


def test_body_over_200_mb_is_refused_with_json_413_before_it_is_sent(proxy):
    conn = http.client.HTTPConnection("127.0.0.1", proxy["port"], timeout=DEADLINE_S)
    try:
        conn.putrequest("POST", "/api/recording/upload")
        conn.putheader("Content-Length", str(200 * 1024 * 1024 + 1))
        conn.endheaders()  # announce the size, send no body: nginx must refuse up front
        resp = conn.getresponse()
        assert resp.status == 413
        assert json.loads(resp.read())["error"]["code"] == "payload_too_large"
    finally:
        conn.close()


def test_access_log_is_json_and_skips_the_liveness_probe(proxy):
    assert call(proxy["port"], "GET", "/api/health/live")[0] == 200
    call(proxy["port"], "GET", "/api/health", {"X-Request-ID": "log-probe"})
    deadline = time.monotonic() + DEADLINE_S
    while True:  # nginx writes the log line just after the response is sent
        entries = [json.loads(line) for line in proxy["access_log"].read_text().splitlines()]
        if any(e["request_id"] == "log-probe" for e in entries):
            break
        assert time.monotonic() < deadline, entries
        time.sleep(0.05)
    assert all(e["uri"] != "/api/health/live" for e in entries), entries


def test_image_runs_gunicorn_with_its_config_as_a_non_root_user():
    dockerfile = (REPO / "Dockerfile").read_text()
    cmd = re.findall(r"(?m)^CMD .*$", dockerfile)[-1]
    assert "config/gunicorn.conf.py" in cmd and "config.wsgi:application" in cmd
    users = re.findall(r"(?m)^USER\s+(\S+)", dockerfile)
    assert users and users[-1] not in ("root", "0"), users
    assert "/api/health/live" in dockerfile


def test_compose_runs_api_recorder_and_nginx_behind_loopback_only():
    compose = (REPO / "docker-compose.prod.yml").read_text()
    for service in ("api", "recorder", "nginx"):
        assert re.search(rf"(?m)^  {service}:\s*$", compose), service
    assert "RECORDER_SERVICE_URL: http://recorder:3100" in compose
    assert "./nginx.conf:/etc/nginx/nginx.conf:ro" in compose
    assert '"127.0.0.1:8001:80"' in compose
    assert "shm_size" in compose
