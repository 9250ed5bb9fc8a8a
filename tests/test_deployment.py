"""Deployment files: nginx.conf works for real in front of a backend; Dockerfile and compose agree.

nginx runs on a temporary copy of nginx.conf where only what needs a container or root changes:
the upstream `api:8000` (resolved at config-test time) becomes the local echo backend, `listen 80`
becomes a free loopback port, and pid/temp paths go into a temporary prefix directory.
"""
import contextlib
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


@contextlib.contextmanager
def nginx_in_front_of(prefix: Path, upstream_port: int):
    """nginx with the project's config on a loopback port, in front of `upstream_port`."""
    port, proc = free_port(), None
    access_log, error_log = prefix / "stdout.log", prefix / "stderr.log"
    try:
        conf = write_test_config(prefix, upstream_port, port)
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
        yield {"port": port, "access_log": access_log, "error_log": error_log}
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=DEADLINE_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=DEADLINE_S)


@pytest.fixture
def proxy(prefix):
    """nginx in front of the echo backend."""
    backend = ThreadingHTTPServer(("127.0.0.1", 0), EchoHandler)
    backend.daemon_threads = True
    threading.Thread(target=backend.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        with nginx_in_front_of(prefix, backend.server_address[1]) as running:
            yield running
    finally:
        backend.shutdown()
        backend.server_close()


@pytest.fixture
def gateway(prefix, start_server):
    """nginx in front of the real gunicorn (2 workers x 8 threads), as in production."""
    base = start_server(GUNICORN_WORKERS="2")
    with nginx_in_front_of(prefix, int(base.rsplit(":", 1)[1])) as running:
        yield running


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


def test_token_burst_from_one_client_is_refused_with_json_429_but_others_pass(proxy):
    noisy = {"CF-Connecting-IP": "198.51.100.3", "Content-Type": "application/json"}
    statuses = []
    for _ in range(200):  # 10r/s with burst 20: the first 21 pass, then a 429 comes
        status, resp, body = call(proxy["port"], "POST", "/api/token", noisy, b"{}")
        statuses.append(status)
        if status == 429:
            break
    assert statuses[-1] == 429 and set(statuses[:-1]) == {200}, statuses
    assert len(statuses) > 21, statuses  # the burst of 20 is allowed
    assert resp.getheader("Content-Type").startswith("application/json")
    assert resp.getheader("Retry-After") == "1"
    assert json.loads(body) == {"success": False, "error": {
        "code": "rate_limited", "message": "Too many requests; retry shortly."}}
    other = {"CF-Connecting-IP": "198.51.100.4", "Content-Type": "application/json"}
    assert call(proxy["port"], "POST", "/api/token", other, b"{}")[0] == 200


def test_an_api_that_is_down_is_a_json_502_not_nginxs_html_page(prefix):
    with nginx_in_front_of(prefix, free_port()) as down:  # nothing listens upstream
        status, resp, body = call(down["port"], "GET", "/api/recording/list",
                                  {"X-Request-ID": "req-down"})
    assert status == 502  # nginx keeps its status; the body is the API's error shape
    assert resp.getheader("Content-Type").startswith("application/json")
    assert (resp.getheader("Retry-After"), resp.getheader("X-Request-ID")) == ("5", "req-down")
    assert json.loads(body)["error"]["code"] == "upstream_unavailable"


def test_body_over_200_mb_is_refused_with_json_413_before_it_is_sent(proxy):
    conn = http.client.HTTPConnection("127.0.0.1", proxy["port"], timeout=DEADLINE_S)
    try:
        conn.putrequest("POST", "/api/recordings/upload")
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


# --- nginx absorbs bad and slow clients in front of the real gunicorn ---------------------


def raw(port: int, request: bytes, *, timeout: float = DEADLINE_S) -> tuple[int, dict, bytes]:
    """Send `request` as bytes and read one answer: (status, headers, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
        if headers.get("Transfer-Encoding") == "chunked":
            while not body.endswith(b"0\r\n\r\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                body += chunk
            decoded, rest = b"", body
            while rest:
                size, _, rest = rest.partition(b"\r\n")
                n = int(size, 16)
                if n == 0:
                    break
                decoded, rest = decoded + rest[:n], rest[n + 2:]
            return int(lines[0].split()[1]), headers, decoded
        length = int(headers.get("Content-Length", 0))
        while len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
        return int(lines[0].split()[1]), headers, body


BAD_REQUESTS = {
    "a 1 MB header": b"GET /api/health/live HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * (1 << 20)
                     + b"\r\n\r\n",
    "200 headers": b"GET /api/nowhere HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                   + b"".join(b"X-H%d: v\r\n" % i for i in range(200)) + b"\r\n",
    "a 9 KB URL": b"GET /api/" + b"a" * 9000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    "NUL in the path": b"GET /api/he\x00alth HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    "raw UTF-8 in the path": "GET /api/건강 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode(),
    "Content-Length: abc": b"POST /api/token HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: abc\r\n\r\n",
    "Content-Length and chunked": b"POST /api/token HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\n"
                                  b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
}


@pytest.mark.parametrize("what", list(BAD_REQUESTS))
def test_every_error_reaches_the_client_as_json_through_nginx(gateway, what):
    status, headers, body = raw(gateway["port"], BAD_REQUESTS[what])
    assert 400 <= status < 500, (status, body[:200])
    assert headers.get("Content-Type", "").startswith("application/json"), (status, body[:200])
    assert "code" in json.loads(body)["error"]


def test_a_client_that_sends_a_whole_8_mb_json_body_first_still_hears_the_413(gateway):
    conn = http.client.HTTPConnection("127.0.0.1", gateway["port"], timeout=60)
    try:  # http.client sends the whole body before it reads anything
        conn.request("POST", "/api/token", body=b'{"pad": "' + b"a" * (8 << 20) + b'"}',
                     headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        assert response.status == 413
        assert json.loads(response.read())["error"]["code"] == "payload_too_large"
    finally:
        conn.close()


def test_200_slow_clients_for_30_s_leave_normal_requests_served(gateway):
    """Slowloris: 200 connections dribble their headers and 20 their bodies, a byte a
    second, for 30 s. A normal client keeps being served (gunicorn never sees a request
    before nginx has all of it), and nginx drops the slow headers at client_header_timeout.
    A body that keeps trickling stays with nginx (client_body_timeout is between reads),
    never with gunicorn; limit_conn bounds how many one client may hold."""
    port, closed = gateway["port"], set()
    slow_headers = [socket.create_connection(("127.0.0.1", port), timeout=DEADLINE_S)
                    for _ in range(200)]
    for sock in slow_headers:
        sock.sendall(b"GET /api/health/live HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
    slow_bodies = []
    for i in range(20):
        sock = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE_S)
        sock.sendall(b"POST /api/token HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
                     b"application/json\r\nCF-Connecting-IP: 203.0.113.%d\r\n"
                     b"Content-Length: 1000\r\n\r\n{" % i)
        slow_bodies.append(sock)
    everyone = slow_headers + slow_bodies
    for sock in everyone:
        sock.setblocking(False)
    served, began = [], time.monotonic()
    try:
        while time.monotonic() - began < 30:
            for i, sock in enumerate(everyone):
                if i in closed:
                    continue
                try:
                    if sock.recv(65536) == b"":
                        closed.add(i)
                        continue
                except BlockingIOError:
                    pass
                except OSError:
                    closed.add(i)
                    continue
                try:
                    sock.send(b"a")
                except OSError:
                    closed.add(i)
            started = time.monotonic()
            status, _, _ = raw(port, b"GET /api/health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                     b"Connection: close\r\n\r\n")
            served.append(status)
            time.sleep(max(0.0, 1.0 - (time.monotonic() - started)))
    finally:
        for sock in everyone:
            sock.close()
    assert len(served) >= 20 and set(served) == {200}, served
    # nginx closed every one of them (client_header_timeout), none reached gunicorn
    assert closed >= set(range(200)), f"{200 - len(closed & set(range(200)))} slow headers left"


def test_one_client_holds_at_most_50_connections(gateway):
    held, refused = [], 0
    try:
        for _ in range(60):
            sock = socket.create_connection(("127.0.0.1", gateway["port"]), timeout=DEADLINE_S)
            held.append(sock)
            sock.sendall(b"POST /api/token HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
                         b"application/json\r\nCF-Connecting-IP: 198.51.100.77\r\n"
                         b"Content-Length: 1000\r\n\r\n{")
        for sock in held:
            sock.settimeout(0.5)
            try:
                answer = sock.recv(65536)
            except OSError:
                continue
            if answer.startswith(b"HTTP/1.1 429"):
                assert b'"rate_limited"' in answer, answer
                refused += 1
        # Meanwhile another client is served as usual.
        other = (b"GET /api/health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                 b"CF-Connecting-IP: 198.51.100.78\r\nConnection: close\r\n\r\n")
        assert raw(gateway["port"], other)[0] == 200
    finally:
        for sock in held:
            sock.close()
    assert refused >= 10
