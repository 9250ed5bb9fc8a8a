"""The analyzer's HTTP API (aiohttp): `POST /jobs` (signed per Standard Webhooks) and
`GET /health`. Every error body is `{"success": false, "error": {"code", "message"}}`."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from aiohttp import web
from standardwebhooks import Webhook

from .errors import InvalidJson, InvalidSignature, QueueFull, RequestRefused, ShuttingDown
from .jobs import JobQueue, job_from_request

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024
RETRY_AFTER_S = 30  # what a 429 asks the API to wait


@dataclass
class Service:
    queue: JobQueue
    webhook: Webhook | None  # None only with ANALYZER_ALLOW_NO_SECRET=1
    transcriber: str         # the model's name, or "none"
    stopping: bool = False


SERVICE = web.AppKey("service", Service)


@web.middleware
async def json_errors(request: web.Request, handler):
    try:
        return await handler(request)
    except RequestRefused as exc:
        headers = {"Retry-After": str(RETRY_AFTER_S)} if isinstance(exc, QueueFull) else None
        return web.json_response(exc.as_json(), status=exc.status, headers=headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = {404: "not_found", 405: "method_not_allowed",
                413: "payload_too_large"}.get(exc.status, "http_error")
        return web.json_response({"success": False,
                                  "error": {"code": code, "message": exc.reason}},
                                 status=exc.status)
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return web.json_response({"success": False, "error": {
            "code": "internal_error", "message": "internal error"}}, status=500)


async def jobs_create(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    body = await request.read()
    if service.webhook is not None:
        try:
            service.webhook.verify(body, dict(request.headers), json_parse=False)
        except Exception as exc:  # the library raises several types on malformed headers
            raise InvalidSignature("missing or invalid webhook-id / webhook-timestamp / "
                                   "webhook-signature") from exc
    try:
        payload = json.loads(body)
    except ValueError as exc:
        raise InvalidJson("the body is not JSON") from exc
    job = job_from_request(payload)
    if service.stopping:
        raise ShuttingDown("the analyzer is shutting down")
    status = service.queue.submit(job)
    log.info("job %s: POST /jobs answered %s", job.job_id, status)
    return web.json_response({"job_id": job.job_id, "status": status}, status=202)


async def health(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    queued, running = service.queue.counts()
    return web.json_response({"status": "stopping" if service.stopping else "ok",
                              "queued": queued, "running": running,
                              "transcriber": service.transcriber})


def build_app(service: Service) -> web.Application:
    app = web.Application(middlewares=[json_errors], client_max_size=MAX_BODY_BYTES)
    app[SERVICE] = service
    app.router.add_post("/jobs", jobs_create)
    app.router.add_get("/health", health)
    return app
