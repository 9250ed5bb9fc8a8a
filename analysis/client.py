"""The one transport to the analysis server: a signed POST of a job (`POST /jobs`).

Outcomes, as the dispatch rule needs them: accepted (2xx); transient (429, 5xx, a
timeout, a refused or broken connection: try again later); refused (any other answer:
the job fails with the server's message).
"""

from __future__ import annotations

from dataclasses import dataclass

import requests
from django.conf import settings

from analysis.signing import signed_json
from core.clock import utc_now


@dataclass(frozen=True)
class Outcome:
    kind: str  # accepted | transient | refused
    status: int | None  # HTTP status, None when no answer came
    message: str
    engine: str | None = None  # what the server says it runs, if it says


def _message(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:500] or response.reason
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):
            error = error.get("message") or error.get("code")
        text = error or body.get("message") or body.get("detail")
        if text:
            return str(text)[:500]
    return str(body)[:500]


def job_post(payload: dict, *, timeout: float) -> Outcome:
    """POST `payload` to `{ANALYSIS_SERVER_URL}/jobs`, signed per Standard Webhooks."""
    body, headers = signed_json(payload, now=utc_now())
    url = settings.ANALYSIS_SERVER_URL.rstrip("/") + "/jobs"
    try:
        response = requests.post(url, data=body.encode(), headers=headers, timeout=timeout,
                                 allow_redirects=False)
    except requests.Timeout:
        return Outcome("transient", None, f"The analysis server did not answer in {timeout} s.")
    except requests.RequestException as exc:
        return Outcome("transient", None, f"The analysis server cannot be reached "
                                          f"({type(exc).__name__}).")
    if 200 <= response.status_code < 300:
        engine = None
        try:
            answer = response.json()
            engine = answer.get("engine") if isinstance(answer, dict) else None
        except ValueError:
            pass
        return Outcome("accepted", response.status_code, "Accepted by the analysis server.",
                       engine=str(engine)[:200] if engine else None)
    kind = "transient" if response.status_code == 429 or response.status_code >= 500 else \
        "refused"
    return Outcome(kind, response.status_code, _message(response))
