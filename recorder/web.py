"""The recorder's HTTP API (aiohttp) and the files its pages load.

Django (recorder_bridge) calls the API with the shared secret in `X-Recorder-Secret`.
The recording pages never see that secret (the Agora SDK runs in them and talks to
Agora's hosts): their chunk and event uploads carry a per-session key instead, and the
page, its script and the SDK bundle are public static files.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from pathlib import Path

from aiohttp import web

from core.disk import disk_usage

from . import pipeline
from .errors import BadRequest, RecorderError, Unauthorized
from .sessions import RecorderService, parse_start

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
STATIC_DIR = HERE / "static"
SERVICE = web.AppKey("service", RecorderService)


def _service(request: web.Request) -> RecorderService:
    return request.app[SERVICE]


def _require_secret(request: web.Request) -> None:
    expected = _service(request).settings.secret
    if expected is None:  # RECORDER_ALLOW_NO_SECRET=1, local development only
        return
    given = request.headers.get("X-Recorder-Secret", "")
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise Unauthorized("missing or wrong X-Recorder-Secret")


@web.middleware
async def json_errors(request: web.Request, handler):
    try:
        return await handler(request)
    except RecorderError as exc:
        return web.json_response(exc.as_json(), status=exc.status)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = {404: "not_found", 405: "method_not_allowed",
                413: "payload_too_large"}.get(exc.status, "http_error")
        return web.json_response({"error": {"code": code, "message": exc.reason}},
                                 status=exc.status)
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return web.json_response({"error": {"code": "internal_error",
                                            "message": "internal error"}}, status=500)


async def health(request: web.Request) -> web.Response:
    service = _service(request)
    disk = await asyncio.to_thread(disk_usage, service.settings.recordings_dir)
    return web.json_response({"status": "ok", "browser": "up" if service.pool.up else "down",
                              "sessions": len(service.sessions_active()),
                              "capacity": service.settings.max_sessions,
                              "nodeId": service.settings.node_id,
                              "contexts": service.pool.context_count, "disk": disk})


async def sessions_create(request: web.Request) -> web.Response:
    _require_secret(request)
    try:
        body = await request.json()
    except ValueError:
        raise BadRequest("the body must be JSON") from None
    session = await _service(request).session_start(**parse_start(body))
    return web.json_response({"sid": session.sid, "channel": session.channel,
                              "uid": session.uid, "callId": session.call_id,
                              "filename": session.filename, "status": "recording"}, status=201)


async def sessions_list(request: web.Request) -> web.Response:
    _require_secret(request)
    return web.json_response({"sessions": _service(request).sessions_listed()})


async def session_detail(request: web.Request) -> web.Response:
    _require_secret(request)
    return web.json_response(_service(request).session_get(sid=request.match_info["sid"]))


async def session_stop(request: web.Request) -> web.Response:
    """Stop a session and answer when it is stored; with `{"wait": false}` answer 202 at
    once and finish in this process (the API's hang-up does not wait for it); with
    `{"wait": <seconds>}` answer when it is stored or, after that long, 202 with status
    `processing` while it goes on here."""
    _require_secret(request)
    body = {}
    if request.can_read_body:
        try:
            body = await request.json()
        except ValueError:
            raise BadRequest("the body must be JSON") from None
        if not isinstance(body, dict):
            raise BadRequest("the body must be a JSON object")
    service, sid = _service(request), request.match_info["sid"]
    reason = body.get("reason") if isinstance(body.get("reason"), str) else "requested"
    wait = body.get("wait", True)
    if wait is False:
        service.session_get(sid=sid)  # 404 for an unknown session
        service.spawn(service.stop_quietly(sid, reason[:40]))
        return web.json_response({"sid": sid, "status": "stopping"}, status=202)
    if wait is True:
        wait = None
    elif isinstance(wait, bool) or not isinstance(wait, (int, float)) or not wait > 0:
        raise BadRequest("wait must be true, false or a positive number of seconds")
    answer = await service.session_stop(sid=sid, reason=reason[:40], wait=wait)
    return web.json_response(answer, status=202 if answer["status"] == "processing" else 200)


async def chunk_upload(request: web.Request) -> web.Response:
    try:
        seq = int(request.match_info["seq"])
    except ValueError:
        raise BadRequest("seq must be an integer") from None
    outcome = await _service(request).chunk_receive(
        sid=request.match_info["sid"], key=request.headers.get("X-Session-Key", ""),
        seq=seq, data=await request.read())
    return web.json_response({"seq": seq, "outcome": outcome})


async def page_event(request: web.Request) -> web.Response:
    try:
        event = await request.json()
    except ValueError:
        raise BadRequest("the body must be JSON") from None
    if not isinstance(event, dict):
        raise BadRequest("an event is a JSON object")
    await _service(request).page_event(sid=request.match_info["sid"],
                                       key=request.headers.get("X-Session-Key", ""),
                                       event=event)
    return web.json_response({"ok": True})


async def page(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC_DIR / "page.html")


async def agora_bundle(request: web.Request) -> web.FileResponse:
    """The script the page loads as `AgoraRTC`: RECORDER_AGORA_SDK_PATH (default: the npm
    package's bundle)."""
    bundle = _service(request).settings.agora_sdk_path
    if bundle.is_file():
        return web.FileResponse(bundle, headers={"Cache-Control": "no-store"})
    raise RecorderError("the Agora Web SDK is not installed (npm ci --prefix recorder)",
                        code="agora_sdk_missing", status=500)


async def recordings_retry(request: web.Request) -> web.Response:
    """Retry the uploads that failed (the API's sweep without RECORDER_NODES), or only those
    named by `{"sid": ...}` (the API's retry-upload) or `{"sids": [...]}` (the sweep over
    several nodes, each sent the recordings it holds); answers at once with how many."""
    _require_secret(request)
    service = request.app[SERVICE]
    only: set | None = None
    if request.can_read_body:
        try:
            body = await request.json()
            only = ({body["sid"]} if body.get("sid") is not None
                    else set(body["sids"]) if body.get("sids") is not None else None)
        except (ValueError, AttributeError, TypeError):
            raise BadRequest("the body must be a JSON object like {\"sid\": \"...\"} or "
                             "{\"sids\": [...]}") from None
    failed = [item for item in
              pipeline.recordings_to_retry(service.settings.recordings_dir, states=("failed",))
              if only is None or item["sid"] in only]

    async def retry_all():
        for item in failed:
            await asyncio.to_thread(pipeline.recording_finish, **item)

    service.spawn(retry_all())
    return web.json_response({"retrying": len(failed)}, status=202)


def build_app(service: RecorderService, *, fixtures_dir: Path | None = None) -> web.Application:
    app = web.Application(middlewares=[json_errors], client_max_size=8 * 1024 * 1024)
    app[SERVICE] = service
    app.router.add_get("/health", health)
    app.router.add_post("/sessions", sessions_create)
    app.router.add_get("/sessions", sessions_list)
    app.router.add_get("/sessions/{sid}", session_detail)
    app.router.add_post("/sessions/{sid}/stop", session_stop)
    app.router.add_post("/sessions/{sid}/chunks/{seq}", chunk_upload)
    app.router.add_post("/sessions/{sid}/events", page_event)
    app.router.add_post("/recordings/retry", recordings_retry)
    app.router.add_get("/page", page)
    app.router.add_get("/vendor/AgoraRTC_N-production.js", agora_bundle)
    app.router.add_static("/static/", STATIC_DIR)
    if fixtures_dir is not None:
        app.router.add_static("/fixtures/", fixtures_dir)
    return app
