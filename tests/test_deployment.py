"""Deployment files: nginx.conf works for real in front of a backend; Dockerfile and compose agree.

nginx runs on a temporary copy of nginx.conf where only what needs a container or root changes
(devstack/nginx.py): the upstreams `api:8000` and `events:8002` become the local echo backend,
gunicorn or the event-stream server, `listen 80` becomes a free loopback port, and pid/temp
paths go into a temporary prefix directory.
"""
import http.client
import json
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

from devstack.nginx import nginx_cmd, nginx_in_front_of, write_config
from devstack.slow_clients import SlowClients

REPO = Path(__file__).resolve().parents[1]
DEADLINE_S = 10


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
def gateway(prefix, start_server, tmp_path):
    """nginx in front of the real gunicorn (2 workers x 8 threads), as in production."""
    base = start_server(GUNICORN_WORKERS="2")
    upstream_port = int(base.rsplit(":", 1)[1])
    gunicorn_log = tmp_path / f"gunicorn-{upstream_port}.log"  # where start_server logs
    assert gunicorn_log.exists(), sorted(tmp_path.iterdir())
    with nginx_in_front_of(prefix, upstream_port) as running:
        yield {**running, "gunicorn_log": gunicorn_log}


def test_analysis_event_streams_go_to_the_event_server_and_pass_unbuffered(
        prefix, start_events_server, securetoken):
    from integrations.firebase import firestore_client

    firestore_client().collection("analysisJobs").document("job-nginx").set({
        "jobId": "job-nginx", "participants": ["alice", "bob"], "status": "queued",
        "progress": 0, "seq": 1, "message": "Queued.", "recordingId": "rec-nginx"})
    events = start_events_server()
    backend = ThreadingHTTPServer(("127.0.0.1", 0), EchoHandler)  # stands in for gunicorn
    backend.daemon_threads = True
    threading.Thread(target=backend.serve_forever, kwargs={"poll_interval": 0.05},
                     daemon=True).start()
    try:
        with nginx_in_front_of(prefix, backend.server_address[1],
                               int(events.rsplit(":", 1)[1])) as running:
            status, _, body = call(running["port"], "GET", "/api/analysis/job-nginx")
            assert status == 200 and json.loads(body)["path"] == "/api/analysis/job-nginx"
            conn = http.client.HTTPConnection("127.0.0.1", running["port"], timeout=DEADLINE_S)
            try:
                conn.request("GET", "/api/analysis/job-nginx/events", headers={
                    "Authorization": f"Bearer {securetoken.mint('alice')}"})
                resp = conn.getresponse()
                assert resp.status == 200
                assert resp.getheader("Content-Type").startswith("text/event-stream")
                seen = b""
                while b"event: progress" not in seen:  # the job stays queued: no end
                    line = resp.readline()
                    assert line, seen
                    seen += line
                assert b"retry: 3000" in seen and b"id: 1" in seen
            finally:
                conn.close()
    finally:
        backend.shutdown()
        backend.server_close()


def call(port, method, path, headers=None, body=None, *, source="127.0.0.1"):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=DEADLINE_S,
                                      source_address=(source, 0))
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp, resp.read()
    finally:
        conn.close()


def test_nginx_accepts_the_production_config(prefix):
    conf = write_config(prefix, free_port(), free_port())
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
    assert re.search(r'(?m)^  events:\s*$', compose)
    assert 'command: ["python", "-m", "config.events"]' in compose
    assert "shm_size" in compose
    # gunicorn is never exposed without nginx: nginx is the only service that publishes a port.
    services = re.split(r"(?m)^\S", compose.split("\nservices:\n", 1)[1], maxsplit=1)[0]
    blocks = dict(re.findall(r"(?ms)^  ([\w-]+):[ \t]*\n(.*?)(?=^  [\w-]+:[ \t]*$|\Z)", services))
    assert "api" in blocks and "nginx" in blocks, list(blocks)
    assert [name for name, text in blocks.items() if "ports:" in text] == ["nginx"], list(blocks)
    assert compose.count("ports:") == 1  # none in a shared anchor either


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


# The normal client of the slowloris test: another loopback address than the attackers', so
# another key for `limit_conn ... $binary_remote_addr` (nginx is the only server here; it
# listens on 127.0.0.1, the client socket binds 127.0.0.2, all of 127/8 is loopback).
NORMAL_CLIENT = "127.0.0.2"
SLOW_HEADERS, SLOW_BODIES, PER_CLIENT = 140, 60, 50  # PER_CLIENT: nginx.conf's limit_conn
ATTACK_S = 30  # > client_header_timeout (15 s) and client_body_timeout (20 s) in nginx.conf


def test_200_slow_clients_for_30_s_are_held_and_dropped_by_nginx_never_by_gunicorn(
        gateway, bearer):
    """Slowloris through nginx.conf in front of the real gunicorn (2 x 8 threads). From one
    address, 140 connections send their headers one byte a second and 60 declare a body
    they never send, for 30 s. A normal client on another address keeps being served
    (liveness and an authenticated request), also while every slow connection is held.
    nginx refuses what is over `limit_conn` (50 per client address) with its JSON 429
    and times the rest out itself (client_header_timeout, client_body_timeout: a 408 in its
    access log and the connection closed); gunicorn never sees any of them."""
    port, user = gateway["port"], bearer("alice")
    slow = SlowClients(port, headers=SLOW_HEADERS, bodies=SLOW_BODIES).open()
    served = []  # (liveness status, authenticated status, slow connections held meanwhile)
    try:
        began = time.monotonic()
        while time.monotonic() - began < ATTACK_S:
            started = time.monotonic()
            slow.tick()
            held = sum(1 for c in slow.still_open() if not c.answer)
            live = call(port, "GET", "/api/health/live", source=NORMAL_CLIENT)
            mine = call(port, "GET", "/api/users/alice/has-recording",
                        {**user, "X-Request-ID": f"normal-{len(served)}"}, source=NORMAL_CLIENT)
            served.append((live[0], mine[0], held))
            assert json.loads(mine[2])["hasRecording"] is False, mine[2]
            time.sleep(max(0.0, 1.0 - (time.monotonic() - started)))
        slow.tick()
    finally:
        slow.close()

    assert served and all(s[:2] == (200, 200) for s in served), served

    bodies = [c for c in slow.connections if c.kind == "body"]
    refused = [c for c in bodies if c.answer.startswith(b"HTTP/1.1 429 ")]
    assert len(refused) == SLOW_BODIES - PER_CLIENT, [c.answer[:40] for c in bodies]
    for c in refused:
        head, _, body = c.answer.partition(b"\r\n\r\n")
        assert b"Content-Type: application/json" in head, head
        assert json.loads(body)["error"]["code"] == "rate_limited", body
    timed_out = [c for c in slow.connections if c not in refused]
    assert not [c.request_id for c in timed_out if c.open], "nginx left slow connections open"
    assert all(c.answer == b"" or c.answer.startswith(b"HTTP/1.1 408 ")
               for c in timed_out), {c.request_id: c.answer[:60] for c in timed_out if c.answer}

    logged = [json.loads(line) for line in gateway["access_log"].read_text().splitlines()]
    nginx_408 = {e["request_id"] for e in logged if e["status"] == 408}
    assert {c.request_id for c in timed_out} <= nginx_408, sorted(
        {c.request_id for c in timed_out} - nginx_408)[:10]
    gunicorn_log = gateway["gunicorn_log"].read_text()
    assert f"normal-{len(served) - 1}" in gunicorn_log  # the app logs each request's id ...
    assert "slowloris" not in gunicorn_log  # ... and no slow request ever reached it
    # The normal client was also served while every admitted slow connection was held.
    full_strength = SLOW_HEADERS + PER_CLIENT
    assert any(s[2] == full_strength for s in served), (full_strength, served)


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
