"""Recording sessions: start, stop, auto-stop and crash recovery.

One hook connects the recorder to the rest of Memharbor (set it on the service object):
`on_stopped(session)` is called once per finished recording, with the `Session` whose
`path` is the complete WebM and whose `result` is the stop answer (`session.recovered`:
a previous recorder process crashed during this recording and this one marked it stopped
at start-up). The media pipeline (remux, WAV, upload, Firestore) belongs here. A stop
waits for it (sync hooks run in a worker thread) and a dict it returns is merged into the
stop answer; for recovered recordings it runs in the background. The default does
nothing; `python -m recorder` sets `pipeline`. While the hook runs the session is listed
with status `processing`; a stop given a `wait` answers `processing` when it is not
finished by then (the work goes on).

What Agora does to a session's connection: its token is renewed through the API
(`recorder.tokens`) when the SDK says it will expire, and the session ends with
`stopReason: call_over` when the API says the call is over; RECONNECTING keeps recording
(silence); DISCONNECTED for any reason but our own leave ends the session with the SDK's
reason as `stopReason` (`UID_BANNED`, `NETWORK_ERROR`, ...); a crashed renderer ends its
sessions with `renderer_crashed`. Each is stored with what it recorded.
"""

from __future__ import annotations

import asyncio
import hmac
import inspect
import json
import logging
import re
import secrets
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from playwright.async_api import Page

from core.clock import iso, utc_now
from integrations.agora import NAME_RULE, channel_valid

from . import tokens
from .browser import BrowserPool
from .config import Settings
from .errors import (
    AgoraJoinTimeout,
    AgoraNotConfigured,
    BadRequest,
    RecorderBusy,
    RecorderError,
    SessionNotFound,
    ShuttingDown,
    StartFailed,
)
from .sink import ChunkSink, probe_duration_ms, unfinished_sidecars

log = logging.getLogger(__name__)

FIXTURE_RE = re.compile(r"^(/fixtures/[A-Za-z0-9_\-.]+|https?://(127\.0\.0\.1|localhost)(:\d+)?/\S*)$")
STOP_TIMEOUT_SECONDS = 30
TOKEN_ATTEMPTS, TOKEN_RETRY_SECONDS = 3, 5  # the SDK warns 30 s before the token expires
_REASON_RE = re.compile(r"[^A-Za-z0-9_]")
FINISHED_KEPT = 1000


@dataclass(eq=False)
class Session:
    sid: str
    channel: str
    uid: int
    call_id: str | None
    source: str
    sink: ChunkSink
    key: str = field(repr=False, default="")
    started_mono: float = field(default_factory=time.monotonic)
    page: Page | None = field(default=None, repr=False)
    state: str = "starting"
    remote_users: int = 0
    last_presence: float = field(default_factory=time.monotonic)
    stop_reason: str | None = None
    result: dict | None = None
    recovered: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)
    stopping: asyncio.Task | None = field(default=None, repr=False)

    @property
    def path(self) -> Path:
        return self.sink.path

    @property
    def filename(self) -> str:
        return self.sink.path.name

    @property
    def is_agora(self) -> bool:
        return self.source == "agora"

    def summary(self) -> dict:
        meta = self.sink.meta
        return {"sid": self.sid, "channel": self.channel, "uid": self.uid,
                "callId": self.call_id, "source": self.source, "filename": self.filename,
                "status": self.state, "startedAt": meta["startedAt"], "chunks": meta["chunks"],
                "bytes": meta["bytes"], "remoteUsers": self.remote_users}


def parse_start(body: Any) -> dict:
    """Validate a POST /sessions body; raises BadRequest with the first problem."""
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    channel = body.get("channel")
    if not channel_valid(channel):
        raise BadRequest(f"channel must be 1-64 bytes of {NAME_RULE} (Agora's rule)")
    source = body.get("source") or "agora"
    if not isinstance(source, str):
        raise BadRequest("source must be a string")
    if source.startswith("tone:"):
        try:
            hz = float(source[5:])
        except ValueError:
            hz = 0.0
        if not 20 <= hz <= 20000:
            raise BadRequest("a tone source is tone:<hz> with 20 <= hz <= 20000")
    elif source != "agora" and not FIXTURE_RE.match(source):
        raise BadRequest("source must be agora, tone:<hz>, /fixtures/<name> or a loopback URL")
    uid = body.get("uid", None if source == "agora" else 0)
    if isinstance(uid, str) and uid.isdigit():
        uid = int(uid)
    if isinstance(uid, bool) or not isinstance(uid, int) or not 0 <= uid <= 2**32 - 1:
        raise BadRequest("uid must be an integer from 0 to 4294967295")
    token = body.get("token")
    if token is not None and not isinstance(token, str):
        raise BadRequest("token must be a string or null")
    call_id = body.get("callId", body.get("call_id"))
    if call_id is not None and not isinstance(call_id, str):
        raise BadRequest("callId must be a string or null")
    return {"channel": channel, "uid": uid, "token": token or None, "call_id": call_id,
            "source": source}


class RecorderService:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.page_base_url = f"http://127.0.0.1:{settings.port}"
        self.pool = BrowserPool(executable_path=settings.chromium_path,
                                per_context=settings.sessions_per_context,
                                on_disconnected=self._browser_lost,
                                devtools_port=settings.devtools_port,
                                extra_args=settings.chromium_extra_args)
        self._sessions: dict[str, Session] = {}
        self._processing: dict[str, Session] = {}  # stopped, its media pipeline running
        self._finished: dict[str, dict] = {}
        self._tasks: set[asyncio.Task] = set()
        self._watchdog: asyncio.Task | None = None
        self._closing = False

    # -- hooks ---------------------------------------------------------------------------

    def on_stopped(self, session: Session) -> None:
        """Called once per finished recording (see the module docstring). Default: no-op."""

    # -- life cycle ----------------------------------------------------------------------

    async def open(self) -> None:
        """Recover what a crashed recorder left, launch the browser, start the watchdog."""
        self.settings.recordings_dir.mkdir(parents=True, exist_ok=True)
        await self.recover()
        await self.pool.ensure_browser()
        self._watchdog = asyncio.create_task(self._watch())

    async def close(self) -> None:
        """Stop every session cleanly (flushing its last chunk), then close the browser."""
        self._closing = True
        await asyncio.gather(*(self.session_stop(sid=sid, reason="shutdown")
                               for sid in [*self._sessions, *self._processing]),
                             return_exceptions=True)
        if self._watchdog:
            self._watchdog.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=STOP_TIMEOUT_SECONDS)
        await self.pool.close()

    def spawn(self, coro) -> None:
        """Run `coro` in the background, kept referenced until it ends."""
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- start ---------------------------------------------------------------------------

    async def session_start(self, *, channel: str, uid: int, token: str | None,
                            call_id: str | None, source: str) -> Session:
        if self._closing:
            raise ShuttingDown("the recorder is shutting down")
        if source == "agora" and not self.settings.agora_app_id:
            raise AgoraNotConfigured("AGORA_APP_ID is not set on the recorder")
        if len(self._sessions) >= self.settings.max_sessions:
            raise RecorderBusy(f"this recorder records {self.settings.max_sessions} sessions "
                               "already (RECORDER_MAX_SESSIONS)")
        sid = str(uuid.uuid4())
        sink = await asyncio.to_thread(
            ChunkSink.create, self.settings.recordings_dir, channel=channel,
            started_at=utc_now(),
            meta={"sid": sid, "channel": channel, "uid": uid, "callId": call_id,
                  "source": source, "nodeId": self.settings.node_id})
        session = Session(sid=sid, channel=channel, uid=uid, call_id=call_id, source=source,
                          sink=sink, key=secrets.token_urlsafe(32))
        self._sessions[sid] = session
        try:
            session.page = await self.pool.new_page()
            session.page.on("crash", lambda _p: self._page_lost(session, "renderer_crashed"))
            session.page.on("console", lambda m: log.debug("page %s: %s", sid[:8], m.text))
            await session.page.goto(f"{self.page_base_url}/page")
            config = {"sid": sid, "key": session.key, "source": source, "channel": channel,
                      "uid": uid, "token": token, "appId": self.settings.agora_app_id,
                      "joinTimeoutMs": int(self.settings.join_timeout_seconds * 1000),
                      "audioBitsPerSecond": self.settings.audio_bits_per_second,
                      "timesliceMs": self.settings.timeslice_ms,
                      "sampleRate": self.settings.audio_sample_rate or None,
                      "latencyHint": self.settings.audio_latency}
            answer = await asyncio.wait_for(
                session.page.evaluate("cfg => window.recorderStart(cfg)", config),
                timeout=self.settings.join_timeout_seconds + 15)
        except TimeoutError:
            await self._abandon(session)
            raise StartFailed("the recorder page did not answer") from None
        except RecorderError:
            await self._abandon(session)
            raise
        except Exception as exc:
            await self._abandon(session)
            # The detail goes to the log only: it can name the browser's files.
            log.warning("session %s: the recorder page failed: %s", sid, exc)
            raise StartFailed(f"the recorder page failed ({type(exc).__name__})") from exc
        if not answer.get("ok"):
            await self._abandon(session)
            error = answer.get("error") or {}
            if error.get("code") == "agora_join_timeout":
                raise AgoraJoinTimeout(error.get("message") or "joining the channel timed out")
            raise StartFailed(error.get("message") or "the page could not start recording",
                              code=error.get("code") or None)
        session.state = "recording"
        session.started_mono = session.last_presence = time.monotonic()
        log.info("recording %s channel=%s source=%s file=%s", sid, channel, source,
                 session.filename)
        return session

    async def _abandon(self, session: Session) -> None:
        """Undo a start that failed: no page, no session, no empty file left behind."""
        self._sessions.pop(session.sid, None)
        if session.page is not None:
            await self.pool.close_page(session.page)
            session.page = None
        async with session.lock:
            if session.sink.meta["bytes"] == 0:
                await asyncio.to_thread(session.sink.discard)
            else:
                await asyncio.to_thread(session.sink.mark, "failed")

    # -- stop ----------------------------------------------------------------------------

    async def session_stop(self, *, sid: str, reason: str = "requested",
                           wait: float | None = None) -> dict:
        """Stop a session and answer its result; stopping a stopped session answers the
        same result again (clients retry). With `wait` (seconds), a stop not finished by
        then answers the session with status `processing` and goes on in the background."""
        if sid in self._finished:
            return self._finished[sid]
        session = self._sessions.get(sid) or self._processing.get(sid)
        if session is None:
            raise SessionNotFound(f"no recording session {sid}")
        if session.stopping is None:
            session.stopping = asyncio.create_task(self._finish(session, reason))
        try:
            return await asyncio.wait_for(asyncio.shield(session.stopping), timeout=wait)
        except TimeoutError:
            log.info("stop of %s still processing after %ss; answering processing",
                     session.sid, wait)
            return {**self._result(session), "status": "processing"}

    async def _finish(self, session: Session, reason: str, *, page_alive: bool = True) -> dict:
        session.state, session.stop_reason = "stopping", reason
        async with session.lock:
            await asyncio.to_thread(session.sink.mark, "stopping")
        page_answer: dict = {}
        if session.page is not None:
            if page_alive:
                try:
                    page_answer = await asyncio.wait_for(
                        session.page.evaluate("() => window.recorderStop()"),
                        timeout=STOP_TIMEOUT_SECONDS) or {}
                except Exception as exc:
                    log.warning("session %s: the page did not stop cleanly: %s", session.sid, exc)
            await self.pool.close_page(session.page)
            session.page = None
        duration_ms = await asyncio.to_thread(probe_duration_ms, session.path)
        if duration_ms is None:
            duration_ms = page_answer.get("recordedMs")
        async with session.lock:
            await asyncio.to_thread(session.sink.mark, "stopped", stoppedAt=iso(utc_now()),
                                    durationMs=duration_ms, stopReason=reason)
        session.result = self._result(session)
        # Off the recording sessions (its room is free), listed as processing until the
        # hook is done.
        session.state = "processing"
        self._processing[session.sid] = session
        self._sessions.pop(session.sid, None)
        log.info("stopped %s reason=%s bytes=%s durationMs=%s", session.sid, reason,
                 session.result["bytes"], duration_ms)
        # The stop answer carries what the media pipeline made of the file (the seed's
        # `filename`, `format`, `duration`, `firebase`), so it waits for the hook.
        processed = await self._call_on_stopped(session)  # logs its failures, never raises
        if isinstance(processed, dict):
            session.result = {**session.result, **processed}
        session.state = "stopped"
        self._finished[session.sid] = session.result
        self._processing.pop(session.sid, None)
        while len(self._finished) > FINISHED_KEPT:
            self._finished.pop(next(iter(self._finished)))
        return session.result

    @staticmethod
    def _result(session: Session) -> dict:
        meta = session.sink.meta
        return {"sid": session.sid, "channel": session.channel, "uid": session.uid,
                "callId": session.call_id, "filename": session.filename,
                "bytes": meta["bytes"], "chunks": meta["chunks"],
                "durationMs": meta.get("durationMs"), "stopReason": meta.get("stopReason"),
                "recovered": session.recovered, "status": "stopped"}

    async def _call_on_stopped(self, session: Session):
        try:
            if inspect.iscoroutinefunction(self.on_stopped):
                return await self.on_stopped(session)
            return await asyncio.to_thread(self.on_stopped, session)
        except Exception:
            log.exception("on_stopped failed for %s", session.sid)
            return None

    # -- what the page tells us ----------------------------------------------------------

    def _session_for_page(self, sid: str, key: str) -> Session:
        session = self._sessions.get(sid)
        if session is None or not hmac.compare_digest(session.key.encode(), key.encode()):
            raise SessionNotFound(f"no recording session {sid}")
        return session

    async def chunk_receive(self, *, sid: str, key: str, seq: int, data: bytes) -> str:
        session = self._session_for_page(sid, key)
        async with session.lock:
            return await asyncio.to_thread(session.sink.append, seq, data)

    async def page_event(self, *, sid: str, key: str, event: dict) -> None:
        session = self._session_for_page(sid, key)
        kind = event.get("type")
        if kind == "users":
            session.remote_users = int(event.get("count") or 0)
            session.last_presence = time.monotonic()
        elif kind == "token-will-expire":
            self.spawn(self._token_renew(session))
        elif kind == "connection-state":
            self._connection_changed(session, event)
        elif kind in ("token-expired", "source-ended", "recorder-error"):
            log.warning("session %s: %s %s", sid, kind, event.get("message", ""))
            self.spawn(self.stop_quietly(session.sid, kind.replace("-", "_")))
        else:
            log.info("session %s: %s", sid, json.dumps(event)[:300])

    def _connection_changed(self, session: Session, event: dict) -> None:
        state, reason = event.get("state"), event.get("reason")
        if state == "RECONNECTING":
            log.warning("session %s: Agora connection lost, reconnecting; recording silence "
                        "meanwhile", session.sid)
        elif state == "CONNECTED" and event.get("previous") == "RECONNECTING":
            log.info("session %s: Agora connection back", session.sid)
        elif (state == "DISCONNECTED" and reason != "LEAVE" and session.state == "recording"
              and session.stopping is None):  # not our own leave (a failed join's has no reason)
            reason = _REASON_RE.sub("", str(reason or ""))[:40] or "disconnected"
            log.warning("session %s: Agora disconnected (%s); storing what was recorded",
                        session.sid, reason)
            self.spawn(self.stop_quietly(session.sid, reason))
        else:
            log.info("session %s: connection %s (%s)", session.sid, state, reason)

    async def _token_renew(self, session: Session) -> None:
        """Ask the API for the session's next token and hand it to the page's client; a call
        that is over stops the session (`call_over`). When the API cannot be asked, the
        token expires and `token-privilege-did-expire` stops the session."""
        if not self.settings.api_url:
            log.warning("session %s: its token expires soon and RECORDER_API_URL is not set",
                        session.sid)
            return
        for attempt in range(1, TOKEN_ATTEMPTS + 1):
            try:
                token = await tokens.token_fetch(api_url=self.settings.api_url,
                                                 secret=self.settings.secret,
                                                 channel=session.channel, uid=session.uid)
                break
            except tokens.CallOver:
                log.info("session %s: the call on %s is over; stopping", session.sid,
                         session.channel)
                await self.stop_quietly(session.sid, "call_over")
                return
            except tokens.TokenUnavailable as exc:
                log.warning("session %s: no fresh token (attempt %d): %s", session.sid,
                            attempt, exc)
                if attempt < TOKEN_ATTEMPTS:
                    await asyncio.sleep(TOKEN_RETRY_SECONDS)
        else:
            return
        if session.page is None or session.stopping is not None:
            return
        try:
            await session.page.evaluate("t => window.recorderRenewToken(t)", token)
            log.info("session %s: token renewed", session.sid)
        except Exception as exc:
            log.warning("session %s: renewing the token failed: %s", session.sid, exc)

    async def stop_quietly(self, sid: str, reason: str) -> None:
        try:
            await self.session_stop(sid=sid, reason=reason)
        except SessionNotFound:
            pass
        except Exception:
            log.exception("auto-stop of %s failed", sid)

    def _page_lost(self, session: Session, reason: str) -> None:
        if session.stopping is None and session.state == "recording":
            log.error("session %s: %s; keeping what was recorded", session.sid, reason)
            session.stopping = asyncio.ensure_future(
                self._finish(session, reason, page_alive=False))

    def _browser_lost(self) -> None:
        for session in list(self._sessions.values()):
            self._page_lost(session, "browser_crashed")

    # -- auto-stop -----------------------------------------------------------------------

    async def _watch(self) -> None:
        """Once a second: stop sessions past the maximum duration, and Agora sessions that
        nobody has been in for RECORDER_MAX_IDLE_SECONDS."""
        while True:
            await asyncio.sleep(1)
            now = time.monotonic()
            for session in list(self._sessions.values()):
                reason = self.auto_stop_reason(session, now=now)
                if reason:
                    self.spawn(self.stop_quietly(session.sid, reason))

    def auto_stop_reason(self, session: Session, *, now: float) -> str | None:
        """"max_duration", "idle" (Agora only: local sources have nobody to wait for) or None."""
        if session.state != "recording" or session.stopping is not None:
            return None
        if now - session.started_mono >= self.settings.max_seconds:
            return "max_duration"
        if (session.is_agora and session.remote_users == 0
                and now - session.last_presence >= self.settings.max_idle_seconds):
            return "idle"
        return None

    # -- queries -------------------------------------------------------------------------

    def sessions_active(self) -> list[dict]:
        """Sessions recording (or starting, or stopping their page): what uses a browser."""
        return [s.summary() for s in self._sessions.values()]

    def sessions_listed(self) -> list[dict]:
        """What GET /sessions answers: the active sessions, then those still processing."""
        return [s.summary() for s in (*self._sessions.values(), *self._processing.values())]

    def session_get(self, *, sid: str) -> dict:
        if sid in self._finished:
            return self._finished[sid]
        session = self._sessions.get(sid) or self._processing.get(sid)
        if session is not None:
            return session.summary()
        raise SessionNotFound(f"no recording session {sid}")

    # -- crash recovery ------------------------------------------------------------------

    async def recover(self) -> None:
        """Mark recordings a crashed recorder left unfinished as stopped (the WebM it left
        decodes; at most the last slice is lost) and hand them to `on_stopped`."""
        for sidecar in unfinished_sidecars(self.settings.recordings_dir):
            meta = json.loads(sidecar.read_text(encoding="utf-8"))
            webm = sidecar.with_suffix(".webm")
            size = webm.stat().st_size if webm.exists() else 0
            sink = ChunkSink(path=webm, meta=meta, next_seq=meta.get("chunks", 0))
            duration_ms = await asyncio.to_thread(probe_duration_ms, webm)
            await asyncio.to_thread(sink.mark, "stopped", bytes=size, durationMs=duration_ms,
                                    stopReason="recovered", recovered=True,
                                    stoppedAt=iso(utc_now()))
            session = Session(sid=meta.get("sid") or sidecar.stem, channel=meta.get("channel", ""),
                              uid=meta.get("uid") or 0, call_id=meta.get("callId"),
                              source=meta.get("source", ""), sink=sink, state="stopped",
                              stop_reason="recovered", recovered=True)
            session.result = self._result(session)
            self._finished[session.sid] = session.result
            log.warning("recovered unfinished recording %s (%s bytes)", webm.name, size)
            self.spawn(self._call_on_stopped(session))
