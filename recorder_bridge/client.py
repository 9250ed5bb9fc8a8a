"""HTTP client for the recorder service (`python -m recorder`), with the shared secret in
`X-Recorder-Secret`; the one transport to it, over one recorder or several nodes
(`placement`). Not reaching any is RecorderUnavailable (503 recorder_unavailable).

Over several nodes each operation goes where it belongs: a new session to the node with the
most room (the next one when a node answers `recorder_busy`), a session's own paths to the
node holding it, the session list merged from all, the retry of one recording to the node
that recorded it (its `recorderNode`), the sweep's retries to the node holding each failed
recording (`recorder_bridge.services`); a node that does not answer is skipped where the
others can answer for it (the session list, a retry of unknown origin)."""

from __future__ import annotations

import re
from functools import lru_cache

import httpx
import structlog
from django.conf import settings

from core.errors import AppError, RecorderBusy, RecorderUnavailable
from recorder_bridge import placement

log = structlog.get_logger("recordings")

_SESSION_PATH = re.compile(r"^/sessions/[^/]+(/.*)?$")


@lru_cache(maxsize=64)
def _http(base_url: str) -> httpx.Client:
    return httpx.Client(base_url=base_url, headers={"X-Recorder-Secret": settings.RECORDER_SECRET})


def _request(base_url: str, method: str, path: str, *, json: dict | None,
             timeout: float) -> dict:
    """One recorder's JSON answer. Its own 4xx errors keep their code and status; its 5xx
    become 502 with its code."""
    try:
        response = _http(base_url).request(method, path, json=json, timeout=timeout)
    except httpx.HTTPError as exc:
        raise RecorderUnavailable(
            f"The recorder service cannot be reached ({type(exc).__name__}).") from None
    try:
        body = response.json()
    except ValueError:
        raise RecorderUnavailable(
            f"The recorder answered {response.status_code} without JSON.") from None
    if response.status_code >= 400:
        error = body.get("error") or {}
        status = response.status_code if response.status_code < 500 else 502
        raise AppError(error.get("message") or "The recorder refused the request.",
                       code=error.get("code") or "recorder_error", http_status=status)
    return body


def recorder_call(method: str, path: str, *, json: dict | None = None,
                  timeout: float = 10.0) -> dict:
    """The recorder's JSON answer to `method path` (see the module docstring for where it
    goes over several nodes)."""
    if method == "POST" and path == "/sessions":
        return _start(json=json, timeout=timeout)
    urls = placement.recorder_urls()
    if len(urls) == 1:
        return _request(urls[0], method, path, json=json, timeout=timeout)
    if method == "GET" and path == "/sessions":
        return {"sessions": [session for answer in _on_each(urls, method, path, json=json,
                                                            timeout=timeout)
                             for session in answer["sessions"]]}
    if path == "/recordings/retry":
        holder = placement.recorder_url_of_recording((json or {}).get("sid"))
        if holder:
            return _request(holder, method, path, json=json, timeout=timeout)
        return {"retrying": sum(int(answer.get("retrying") or 0)
                                for answer in _on_each(urls, method, path, json=json,
                                                       timeout=timeout))}
    if _SESSION_PATH.match(path):
        not_found: AppError | None = None
        unreachable: AppError | None = None
        for url in urls:
            try:
                return _request(url, method, path, json=json, timeout=timeout)
            except RecorderUnavailable as exc:
                unreachable = exc
            except AppError as exc:
                if exc.code != "session_not_found":
                    raise
                not_found = exc
        raise not_found or unreachable
    return _request(urls[0], method, path, json=json, timeout=timeout)


def _on_each(urls: list[str], method: str, path: str, *, json: dict | None,
             timeout: float) -> list[dict]:
    """The answers of the nodes that answer; an unreachable node is skipped (and logged).
    RecorderUnavailable when none answers."""
    answers, unreachable = [], None
    for url in urls:
        try:
            answers.append(_request(url, method, path, json=json, timeout=timeout))
        except RecorderUnavailable as exc:
            log.warning("recorder_node_unreachable", url=url)
            unreachable = exc
    if unreachable is not None and not answers:
        raise unreachable
    return answers


def recorder_call_at(url: str, method: str, path: str, *, json: dict | None = None,
                     timeout: float = 10.0) -> dict:
    """`method path` on the one recorder at `url` (a node placement chose)."""
    return _request(url, method, path, json=json, timeout=timeout)


def _start(*, json: dict | None, timeout: float) -> dict:
    last: AppError = RecorderBusy()
    for url in placement.recorder_urls_for_new_session():
        try:
            return _request(url, "POST", "/sessions", json=json, timeout=timeout)
        except RecorderUnavailable as exc:  # a node that died since its last heartbeat
            last = exc
        except AppError as exc:
            if exc.code != "recorder_busy":
                raise
            last = RecorderBusy()
    raise last
