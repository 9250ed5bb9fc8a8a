"""The console's pages: Now, Calls, a call's detail, Recordings, the access log; sign-in
and sign-out; the small JSON the Now page polls; playback through the API's delivery.

Every page runs the same services the API runs, as an admin principal from the session;
every form is CSRF-protected (`csrf_protect` on each view: the API stays token-based).
"""

from __future__ import annotations

from datetime import datetime

from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_protect
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from api import delivery
from api.audit import audit, client_ip
from api.calls import call_public
from api.console.session import (
    console_page,
    limiter,
    principal_from_credential,
    session_principal,
    session_sign_in,
)
from api.health import readiness
from calls import listing
from calls.reviews import call_review, call_reviews
from calls.services import call_status_get
from calls.states import Status as CallStatus
from core.clock import iso, utc_now
from core.errors import AppError, ValidationFailed
from library import admin, deletion, lookups, retries
from library.analysis_jobs import analysis_counts, analysis_transcript, recording_analysis
from library.times import day_or_time, instant_parse
from ops.audit import ACTIONS, audit_entries
from ops.sweep import sweep_run
from recordings import store as recording_store
from recordings.states import STATUSES

PAGE = 50
# Everything the pages use is served by the app; playback may redirect to signed Storage URLs.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "media-src 'self' https:; connect-src 'self'; frame-ancestors 'none'; "
       "form-action 'self'; base-uri 'none'; object-src 'none'")


def _page(request: HttpRequest, template: str, context: dict, status: int = 200):
    response = render(request, f"console/{template}", {
        "principal": getattr(request, "principal", None), **context}, status=status)
    response["Cache-Control"] = "no-store"
    response["Content-Security-Policy"] = CSP
    response.console_page = True  # HTML on purpose, errors too (api.middleware)
    return response


def _failure(request: HttpRequest, exc: AppError) -> HttpResponse:
    return _page(request, "error.html", {"error": exc}, status=exc.status)


def _safe_next(value: str | None) -> str:
    if value and value.startswith("/ops/") and not value.startswith("//"):
        return value
    return reverse("console:now")


def _day(value: str, *, field: str, end: bool = False) -> datetime | None:
    return day_or_time(value, field=field, end=end) if value else None


# --- sign-in -------------------------------------------------------------------------------

@csrf_protect
@never_cache
@require_http_methods(["GET", "POST"])
def sign_in(request: HttpRequest):
    next_url = _safe_next(request.POST.get("next") or request.GET.get("next"))
    if request.method == "GET":
        if session_principal(request):
            return HttpResponseRedirect(next_url)
        return _page(request, "sign_in.html", {"next": next_url})
    ip = client_ip(request) or "unknown"
    try:
        limiter.check(ip)
        principal = principal_from_credential(request.POST.get("credential", ""))
    except AppError as exc:
        if exc.status != 429:
            limiter.failed(ip)
        audit(request, "console_sign_in_failed", None, uid=None, outcome=exc.code)
        return _page(request, "sign_in.html", {"next": next_url, "error": exc},
                     status=exc.status)
    session_sign_in(request, principal)
    request.principal = principal
    audit(request, "console_sign_in", principal.uid, detail={"via": principal.via})
    return HttpResponseRedirect(next_url)


@csrf_protect
@require_POST
def sign_out(request: HttpRequest):
    principal = session_principal(request)
    if principal:
        request.principal = principal
        audit(request, "console_sign_out", principal.uid)
    request.session.flush()
    return HttpResponseRedirect(reverse("console:sign_in"))


# --- Now -------------------------------------------------------------------------------------

def _active_entry(call: dict) -> dict:
    presence = call.get("presence") or {}
    return {"callId": call["callId"], "status": call["status"],
            "callerId": call.get("callerId"), "receiverId": call.get("receiverId"),
            "callerName": call.get("callerName"), "groupId": call.get("groupId"),
            "createdAt": iso(call.get("createdAt")), "answeredAt": iso(call.get("answeredAt")),
            "inChannel": sorted(uid for uid, seen in presence.items()
                                if (seen or {}).get("inChannel"))}


def _start_of_today() -> datetime:
    return utc_now().replace(hour=0, minute=0, second=0, microsecond=0)


def _now_state() -> dict:
    return {"at": iso(utc_now()),
            "active": [_active_entry(call) for call in listing.calls_active()],
            "today": listing.calls_tally(since=_start_of_today())}


@csrf_protect
@require_GET
@console_page
def now(request: HttpRequest):
    state = _now_state()
    library = admin.recordings_upload_status()
    analysis = analysis_counts(("queued", "processing", "failed"))
    return _page(request, "now.html", {"state": state, "library": library,
                                       "analysis": analysis, "health": readiness(),
                                       "retention": deletion.retention_state()})


@csrf_protect
@require_POST
@console_page
def sweep(request: HttpRequest):
    report = sweep_run(timeout_seconds=settings.CALL_RING_TIMEOUT_SECONDS)
    audit(request, "sweep", None, detail={"failed": report.failed})
    return _page(request, "sweep.html", {"parts": report.parts, "failed": report.failed})


@require_GET
@console_page
def now_json(request: HttpRequest):
    response = JsonResponse(_now_state())
    response["Cache-Control"] = "no-store"
    return response


# --- calls -------------------------------------------------------------------------------------

@csrf_protect
@require_GET
@console_page
def calls(request: HttpRequest):
    filters = {key: request.GET.get(key, "").strip()
               for key in ("status", "date_from", "date_to", "user", "group")}
    error, page = None, None
    try:
        if filters["status"] and filters["status"] not in {s.value for s in CallStatus}:
            raise ValidationFailed(f"status: not one of {', '.join(s.value for s in CallStatus)}")
        page = listing.calls_page(
            status=filters["status"] or None, created_from=_day(filters["date_from"], field="date_from"),
            created_to=_day(filters["date_to"], field="date_to", end=True), user=filters["user"] or None,
            group=filters["group"] or None, limit=PAGE, cursor=request.GET.get("cursor"))
    except ValidationFailed as exc:
        error = exc
    except listing.BadCursor:
        error = ValidationFailed("The page cursor names no call.")
    rows = [call_public(call) for call in page.items] if page else []
    more = None
    if page and page.next_token:
        query = request.GET.copy()
        query["cursor"] = page.next_token
        more = "?" + query.urlencode()
    return _page(request, "calls.html", {"filters": filters, "calls": rows, "more": more,
                                         "error": error,
                                         "statuses": [s.value for s in CallStatus]},
                 status=error.status if error else 200)


def call_timeline(call: dict) -> list[dict]:
    """The call's story, oldest first: invite, the ring on each device, answer, who joined
    and left the channel, the end and its reason."""
    events = [{"at": call.get("createdAt"), "kind": "invite",
               "text": f"{call.get('callerId')} invited {call.get('receiverId')}"}]
    for device, outcome in sorted((call.get("pushDevices") or {}).items()):
        outcome = outcome or {}
        rang = "rang" if outcome.get("sent") else f"not rung ({outcome.get('error') or '?'})"
        events.append({"at": call.get("createdAt"), "kind": "push",
                       "text": f"push to {device} ({outcome.get('platform') or '?'}): {rang}"})
    if not call.get("pushDevices") and call.get("pushError"):
        events.append({"at": call.get("createdAt"), "kind": "push",
                       "text": f"no device rang: {call['pushError']}"})
    if call.get("answeredAt"):
        events.append({"at": call["answeredAt"], "kind": "answer",
                       "text": f"{call.get('receiverId')} answered"})
    for uid, seen in sorted((call.get("presence") or {}).items()):
        seen = seen or {}
        if seen.get("joinedAt"):
            events.append({"at": seen["joinedAt"], "kind": "join",
                           "text": f"{uid} joined the channel"})
        if seen.get("leftAt"):
            reason = f" ({seen['leaveReason']})" if seen.get("leaveReason") else ""
            events.append({"at": seen["leftAt"], "kind": "leave",
                           "text": f"{uid} left the channel{reason}"})
    if call.get("endedAt"):
        by = f" by {call['endedBy']}" if call.get("endedBy") else ""
        events.append({"at": call["endedAt"], "kind": "end",
                       "text": f"{call['status']}{by}: {call.get('endReason') or 'no reason'}",
                       "endReason": call.get("endReason")})
    order = {"invite": 0, "push": 1}
    events.sort(key=lambda e: (iso(e["at"]) or "", order.get(e["kind"], 2)))
    return [{**event, "at": iso(event["at"])} for event in events]


def _strip(transcript: dict | None, duration_ms: int | None) -> list[dict]:
    """Speech segments as percentages of the recording, for the SVG strip."""
    if not transcript or not transcript["segments"]:
        return []
    total = (duration_ms or 0) / 1000 or max(s["end"] for s in transcript["segments"]) or 1
    return [{"x": round(100 * s["start"] / total, 3),
             "w": round(max(100 * (s["end"] - s["start"]) / total, 0.3), 3),
             "start": s["start"]} for s in transcript["segments"]]


@csrf_protect
@require_GET
@console_page
def call_detail(request: HttpRequest, call_id: str):
    try:
        call = call_status_get(principal=request.principal, call_id=call_id)
    except AppError as exc:
        return _failure(request, exc)
    recordings = []
    for recording in recording_store.recordings_find([("callId", "==", call_id)], limit=20):
        transcript = None
        if recording["status"] == "completed":
            transcript = analysis_transcript(recording_analysis(recording))
        recordings.append({"doc": recording, "transcript": transcript,
                           "strip": _strip(transcript, recording.get("duration"))})
    return _page(request, "call.html", {
        "call": call_public(call), "timeline": call_timeline(call), "recordings": recordings,
        "reviews": [{**r, "at": iso(r.get("at"))} for r in call_reviews(call_id)],
        "saved": request.GET.get("saved")})


@csrf_protect
@require_POST
@console_page
def call_review_post(request: HttpRequest, call_id: str):
    keywords = [k for k in request.POST.get("humanKeywords", "").split(",") if k.strip()]
    try:
        review, _ = call_review(principal=request.principal, call_id=call_id,
                                summary=request.POST.get("humanSummary", ""),
                                keywords=keywords, notes=request.POST.get("humanNotes", ""))
    except AppError as exc:
        return _failure(request, exc)
    audit(request, "review", call_id, detail={"reviewId": review["reviewId"],
                                              "changed": sorted(review["changes"]),
                                              "console": True})
    return HttpResponseRedirect(reverse("console:call", args=[call_id]) + "?saved=1")


# --- recordings ----------------------------------------------------------------------------------

@csrf_protect
@require_GET
@console_page
def recordings(request: HttpRequest):
    filters = {key: request.GET.get(key, "").strip()
               for key in ("date_from", "date_to", "group_id", "user_id", "status", "source")}
    error, listed = None, {"recordings": [], "total": 0, "nextPageToken": None}
    try:
        if filters["status"] and filters["status"] not in STATUSES:
            raise ValidationFailed(f"status: not one of {', '.join(STATUSES)}")
        listed = admin.recordings_admin_list(
            date_from=filters["date_from"] or None, date_to=filters["date_to"] or None,
            group_id=filters["group_id"] or None, user_id=filters["user_id"] or None,
            status=filters["status"] or None, source=filters["source"] or None, fmt=None,
            limit=PAGE, page_token=request.GET.get("cursor") or None)
    except ValidationFailed as exc:
        error = exc
    more = None
    if listed.get("nextPageToken"):
        query = request.GET.copy()
        query["cursor"] = listed["nextPageToken"]
        more = "?" + query.urlencode()
    return _page(request, "recordings.html", {
        "filters": filters, "listed": listed, "more": more, "error": error,
        "statuses": STATUSES, "done": request.GET.get("done")},
        status=error.status if error else 200)


def _media(request: HttpRequest, recording_id: str, *, attachment: bool) -> HttpResponse:
    variant = "original" if request.GET.get("file") == "original" else "wav"
    try:
        media = lookups.recording_media(principal=request.principal,
                                        recording_id=recording_id, variant=variant)
        response = delivery.media_response(request, media, attachment=attachment)
    except AppError as exc:
        return _failure(request, exc)
    if attachment or delivery.playback_start(request):
        audit(request, "download" if attachment else "stream", recording_id,
              detail={"file": variant, "console": True})
    return response


@require_GET
@console_page
def recording_stream(request: HttpRequest, recording_id: str):
    return _media(request, recording_id, attachment=False)


@require_GET
@console_page
def recording_download(request: HttpRequest, recording_id: str):
    return _media(request, recording_id, attachment=True)


def _back(request: HttpRequest, done: str) -> HttpResponseRedirect:
    back = _safe_next(request.POST.get("next") or reverse("console:recordings"))
    return HttpResponseRedirect(back + ("&" if "?" in back else "?") + f"done={done}")


def _recording_action(request: HttpRequest, recording_id: str, action: str, service,
                      done: str) -> HttpResponse:
    """Run a library service on a recording for the console user, log it, and go back to
    the page the form was on with `done` (formatted with the answer's status)."""
    try:
        _, answer = service(principal=request.principal, recording_id=recording_id)
    except AppError as exc:
        return _failure(request, exc)
    audit(request, action, recording_id, detail={"status": answer.get("status"),
                                                 "console": True})
    return _back(request, done.format(status=answer.get("status")))


@csrf_protect
@require_POST
@console_page
def recording_retry(request: HttpRequest, recording_id: str):
    return _recording_action(request, recording_id, "retry", retries.recording_retry,
                             "retried-{status}")


@csrf_protect
@require_POST
@console_page
def recording_delete(request: HttpRequest, recording_id: str):
    return _recording_action(request, recording_id, "delete", deletion.recording_delete,
                             "{status}")


# --- access log ----------------------------------------------------------------------------------

@csrf_protect
@require_GET
@console_page
def access_log(request: HttpRequest):
    action = request.GET.get("action") or None
    uid = (request.GET.get("uid") or "").strip() or None
    try:
        before = (instant_parse(request.GET["before"], field="before")
                  if request.GET.get("before") else None)
    except ValidationFailed as exc:
        return _failure(request, exc)
    entries = audit_entries(action=action if action in ACTIONS else None, uid=uid,
                            limit=PAGE, before=before)
    more = None
    if len(entries) == PAGE:
        query = request.GET.copy()
        query["before"] = iso(entries[-1]["at"])
        more = "?" + query.urlencode()
    return _page(request, "audit.html", {
        "entries": [{**e, "at": iso(e.get("at"))} for e in entries], "actions": ACTIONS,
        "action": action or "", "uid": uid or "", "more": more})
