"""The API's side of the analysis protocol, for testing the analyzer: one loopback HTTP
server that serves recordings (as Storage would, at signed-URL-like paths) and receives the
analyzer's webhooks, checking each with the Standard Webhooks library.

    fake = FakeAnalysisAPI(secret="whsec_...").start()
    url = fake.add_audio("call.wav", path)                  # Content-Length, in one go
    url = fake.add_audio("big.wav", path, chunked=True)     # no Content-Length
    url = fake.add_audio("slow.wav", path, trickle=True)    # 1 KiB per 50 ms until released
    fake.missing_url("gone.wav")                            # answers 404
    fake.callback_url("job-1")                              # POST here: recorded, verified
    fake.answers["job-1"] = [503, 503]                      # answered in turn, then 200
    fake.terminal("job-1", timeout=60)                      # the deliveries up to the end
    fake.release_trickles(); fake.stop()

`deliveries(job_id)` is every POST received for the job, in order, retries included
(`Delivery.verified` says whether the signature checked out).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from standardwebhooks import Webhook

TERMINAL_TYPES = ("completed", "failed")
TRICKLE_BYTES, TRICKLE_PAUSE_S = 1024, 0.05


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        # The analyzer drops connections it is done with (a size limit, a shutdown).
        if not isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            super().handle_error(request, client_address)


@dataclass(frozen=True)
class Delivery:
    msg_id: str
    headers: dict
    body: dict | None
    verified: bool
    answered: int
    seq: int  # arrival order over every job


class FakeAnalysisAPI:
    def __init__(self, *, secret: str) -> None:
        self.webhook = Webhook(secret)
        self.answers: dict[str, list[int]] = {}
        self._audio: dict[str, tuple[Path, bool, bool]] = {}
        self._deliveries: dict[str, list[Delivery]] = {}
        self._cond = threading.Condition()
        self._released = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.audio_requests = 0
        self._seq = 0

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> FakeAnalysisAPI:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                fake._serve_audio(self)

            def do_POST(self) -> None:
                fake._receive(self)

        self._server = _Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._released.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=10)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # --- recordings -----------------------------------------------------------------------

    def add_audio(self, name: str, path: Path, *, chunked: bool = False,
                  trickle: bool = False) -> str:
        self._audio[name] = (Path(path), chunked, trickle)
        return f"{self.base_url}/audio/{name}?X-Goog-Signature=throwaway"

    def missing_url(self, name: str) -> str:
        return f"{self.base_url}/audio/{name}"

    def release_trickles(self) -> None:
        self._released.set()

    def _serve_audio(self, handler: BaseHTTPRequestHandler) -> None:
        with self._cond:
            self.audio_requests += 1
        name = handler.path.split("?", 1)[0].removeprefix("/audio/")
        if name not in self._audio:
            _answer(handler, 404, b'{"error": "not found"}')
            return
        path, chunked, trickle = self._audio[name]
        data = path.read_bytes()
        handler.send_response(200)
        handler.send_header("Content-Type", "audio/wav")
        if chunked:
            handler.send_header("Transfer-Encoding", "chunked")
        else:
            handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        step = TRICKLE_BYTES if trickle else 64 * 1024
        try:
            for offset in range(0, len(data), step):
                piece = data[offset:offset + step]
                handler.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
                handler.wfile.flush()
                if trickle:
                    self._released.wait(TRICKLE_PAUSE_S)
            if chunked:
                handler.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the analyzer stopped reading (a size limit, a shutdown)

    # --- webhooks -------------------------------------------------------------------------

    def callback_url(self, job_id: str) -> str:
        return f"{self.base_url}/callbacks/{job_id}"

    def deliveries(self, job_id: str) -> list[Delivery]:
        with self._cond:
            return list(self._deliveries.get(job_id, []))

    def accepted(self, job_id: str) -> list[dict]:
        """The bodies of the deliveries answered 2xx, in order."""
        return [d.body for d in self.deliveries(job_id) if 200 <= d.answered < 300]

    def terminal(self, job_id: str, *, timeout: float) -> list[dict]:
        """Wait for the job's first accepted `completed`/`failed`; the accepted bodies."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not any(d.body and d.body.get("type") in TERMINAL_TYPES
                          and 200 <= d.answered < 300
                          for d in self._deliveries.get(job_id, [])):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no terminal webhook for {job_id} within "
                                         f"{timeout:.0f} s: {self._deliveries.get(job_id)}")
                self._cond.wait(left)
        return self.accepted(job_id)

    def _receive(self, handler: BaseHTTPRequestHandler) -> None:
        raw = handler.rfile.read(int(handler.headers.get("Content-Length", "0")))
        headers = {name.lower(): value for name, value in handler.headers.items()}
        job_id = handler.path.removeprefix("/callbacks/")
        try:
            body = self.webhook.verify(raw, headers)
            verified = True
        except Exception:
            body, verified = _json_or_none(raw), False
        with self._cond:
            planned = self.answers.get(job_id) or []
            status = planned.pop(0) if planned else (200 if verified else 401)
            self._seq += 1
            self._deliveries.setdefault(job_id, []).append(Delivery(
                msg_id=headers.get("webhook-id", ""), headers=headers, body=body,
                verified=verified, answered=status, seq=self._seq))
            self._cond.notify_all()
        _answer(handler, status, json.dumps({"ok": 200 <= status < 300}).encode())


def _answer(handler: BaseHTTPRequestHandler, status: int, body: bytes) -> None:
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def _json_or_none(raw: bytes):
    try:
        return json.loads(raw)
    except ValueError:
        return None
