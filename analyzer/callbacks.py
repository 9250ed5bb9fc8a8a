"""Webhooks to a job's `callback_url`, signed per Standard Webhooks.

Each message gets its own `webhook-id`; a retry of the same message keeps that id (so the
receiver can drop duplicates) and is signed again with a fresh `webhook-timestamp`.
5xx answers and connection errors are retried with backoff; a 4xx answer is final and
means the receiver does not want this job any more (`CallbackRejected`).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from datetime import UTC, datetime

import httpx
from standardwebhooks import Webhook

log = logging.getLogger(__name__)

RETRY_DELAYS_S = (0.5, 1.0, 2.0)  # so at most four attempts per message
TIMEOUT = httpx.Timeout(10.0)


class CallbackRejected(Exception):
    """The receiver answered 4xx (or another final status): stop reporting this job."""

    def __init__(self, status: int):
        super().__init__(f"the callback URL answered {status}")
        self.status = status


def webhook_body(*, job_id: str, type: str, progress: int, message: str,
                 result: dict | None = None) -> dict:
    return {"job_id": job_id, "type": type, "progress": progress, "message": message,
            "result": result}


class CallbackSender:
    """Delivers webhooks over one pooled httpx client (one sender per worker thread)."""

    def __init__(self, *, secret: str | None, client: httpx.Client | None = None) -> None:
        self._webhook = Webhook(secret) if secret else None
        self._client = client or httpx.Client(timeout=TIMEOUT)

    def close(self) -> None:
        self._client.close()

    def deliver(self, url: str, body: dict) -> bool:
        """POST `body` to `url`; True once a 2xx answer came, False when every attempt failed
        with 5xx or a connection error. Raises CallbackRejected on any other status."""
        msg_id = f"msg_{uuid.uuid4().hex}"
        data = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
        last = "no attempt"
        for attempt, delay in enumerate((*RETRY_DELAYS_S, None)):
            try:
                response = self._client.post(url, content=data.encode(),
                                             headers=self._headers(msg_id, data))
            except httpx.HTTPError as exc:
                last = f"{type(exc).__name__}: {exc}"
            else:
                if 200 <= response.status_code < 300:
                    return True
                if response.status_code < 500:
                    raise CallbackRejected(response.status_code)
                last = f"HTTP {response.status_code}"
            if delay is None:
                break
            log.info("callback %s for job %s failed (%s), attempt %d; retrying in %.1f s",
                     body.get("type"), body.get("job_id"), last, attempt + 1, delay)
            time.sleep(delay)
        log.warning("callback %s for job %s not delivered to %s: %s", body.get("type"),
                    body.get("job_id"), url.split("?", 1)[0], last)
        return False

    def _headers(self, msg_id: str, data: str) -> dict:
        now = datetime.now(UTC)
        headers = {"content-type": "application/json", "webhook-id": msg_id,
                   "webhook-timestamp": str(int(now.timestamp()))}
        if self._webhook is not None:
            headers["webhook-signature"] = self._webhook.sign(msg_id, now, data)
        return headers
