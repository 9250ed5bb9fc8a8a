"""A stand-in for an analysis server speaking Memharbor's protocol: it takes
`POST /jobs` only with a valid Standard Webhooks signature, answers as told (202, 429,
400, or is not running at all), then, for an accepted job, fetches `audio_url` and posts
signed callbacks to `callback_url`: progress 10, progress 50, completed with a result
(summary, metrics, language, transcriber, transcript).

`stepwise=True` holds each callback until the test calls `step()`, so a test can watch a
progress stream one change at a time without timing anything.
"""

from __future__ import annotations

import base64
import json
import os
import queue
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

RESULT = {
    "summary": "엄마가 오늘 병원에 다녀오셨다고 하셨어요.",
    "metrics": {"speechRatio": 0.62, "wordsPerMinute": 88.5, "pauseCount": 4},
    "language": "ko",
    "transcriber": "vosk-model-small-ko-0.22",
    "transcript": {"text": "오늘 병원에 다녀왔어",
                   "segments": [{"start": 0.0, "end": 1.4, "text": "오늘 병원에"},
                                {"start": 1.4, "end": 2.2, "text": "다녀왔어"}]},
}


def new_secret() -> str:
    return "whsec_" + base64.b64encode(os.urandom(32)).decode()


def sign(body: str, secrets: list[str], *, msg_id: str | None = None,
         at: datetime | None = None) -> dict[str, str]:
    """Standard Webhooks headers for `body`, one signature per secret."""
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    at = at or datetime.now(UTC)
    signatures = " ".join(Webhook(secret).sign(msg_id, at, body) for secret in secrets)
    return {"webhook-id": msg_id, "webhook-timestamp": str(int(at.timestamp())),
            "webhook-signature": signatures, "Content-Type": "application/json"}


@dataclass
class Delivery:
    event: dict
    status: int
    answer: dict | None


@dataclass
class Job:
    payload: dict
    audio_status: int | None = None
    audio: bytes = b""
    deliveries: list[Delivery] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)


class FakeAnalysisServer:
    """`answer`: "accept" (202), "busy" (429), "broken" (503), "refuse" (400 with
    `refusal`), or "hang" (no answer until the server stops: the client's timeout)."""

    def __init__(self, secret: str):
        self.secret = secret
        self.callback_secrets = [secret]  # what callbacks are signed with
        self.answer = "accept"
        self.refusal = "language 'xx' is not supported"
        self.stepwise = False
        self.jobs: list[Job] = []
        self.unsigned_posts = 0
        self._steps: queue.Queue = queue.Queue()
        self._stopping = threading.Event()
        self._started = False
        # Bound now but not listening until start(): connections are refused ("down")
        # and no other server can be given this port meanwhile.
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler(),
                                           bind_and_activate=False)
        self._server.daemon_threads = True
        self._server.server_bind()
        self.port = self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def step(self) -> None:
        """Let the next held callback go (stepwise mode)."""
        self._steps.put(None)

    def start(self) -> FakeAnalysisServer:
        self._server.server_activate()
        self._started = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _json(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path != "/jobs":
                    return self._json(404, {"error": "no such endpoint"})
                try:
                    payload = Webhook(fake.secret).verify(body, dict(self.headers.items()))
                except WebhookVerificationError as exc:
                    fake.unsigned_posts += 1
                    return self._json(401, {"error": f"bad signature: {exc}"})
                if fake.answer == "busy":
                    return self._json(429, {"error": "busy, retry later"})
                if fake.answer == "broken":
                    return self._json(503, {"error": "model not loaded"})
                if fake.answer == "hang":
                    fake._stopping.wait(60)
                    return None
                if fake.answer == "refuse":
                    return self._json(400, {"error": fake.refusal})
                job = Job(payload)
                fake.jobs.append(job)
                threading.Thread(target=fake._run, args=(job,), daemon=True).start()
                return self._json(202, {"accepted": True, "engine": "fake-analyzer/1"})

        return Handler

    def stop(self) -> None:
        self._stopping.set()
        if self._started:
            self._server.shutdown()
            self._started = False
        self._server.server_close()
        for _ in range(10):
            self._steps.put(None)  # release held jobs

    def post(self, job: Job, event: dict) -> Delivery:
        body = json.dumps({"job_id": job.payload["job_id"], **event}, ensure_ascii=False)
        response = requests.post(job.payload["callback_url"], data=body.encode(),
                                 headers=sign(body, self.callback_secrets), timeout=30)
        try:
            answer = response.json()
        except ValueError:
            answer = None
        delivery = Delivery(event, response.status_code, answer)
        job.deliveries.append(delivery)
        return delivery

    def _run(self, job: Job) -> None:
        try:
            audio = requests.get(job.payload["audio_url"], timeout=30)
            job.audio_status, job.audio = audio.status_code, audio.content
            for event in ({"type": "progress", "progress": 10, "message": "음성 분석 중"},
                          {"type": "progress", "progress": 50, "message": "전사 중"},
                          {"type": "completed", "progress": 100, "message": "분석 완료",
                           "result": RESULT}):
                if self.stepwise:
                    self._steps.get(timeout=60)
                self.post(job, event)
        finally:
            job.done.set()
