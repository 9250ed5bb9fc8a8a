"""The sweep (cron, `sweep_calls`, `POST /api/call/timeout/sweep`): every periodic job that
keeps calls and recordings honest, each run on its own and reported on its own.

- calls: pending calls past the ring timeout become missed (and the receivers are told);
- callsEnded: calls a presence rule ends (both left, one lost, caller gone, never joined,
  too long; calls/presence.py);
- recordingsOfEndedCalls: recorder sessions still recording a call that is final stop;
- recorderRetries: the recorder retries recordings whose upload failed;
- uploads: interrupted uploads fail, failed ones are retried, abandoned files removed;
- analysis: completed recordings get jobs (ANALYSIS_AUTO), due jobs are dispatched to the
  analysis server, jobs without news for ANALYSIS_STALE_SECONDS fail.

A part that fails does not stop the others; its report says `{"error": ...}`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import structlog

from analysis.services import analysis_sweep
from calls.services import calls_settle_expired, calls_settle_presence
from core.clock import utc_now
from core.errors import AppError
from library.retries import uploads_retry_due
from recorder_bridge.services import recordings_retry_failed, recordings_stop_of_final_calls

log = structlog.get_logger("ops.sweep")


@dataclass
class SweepReport:
    updated_count: int = 0  # calls moved to missed (the seed's `updatedCount`)
    parts: dict = field(default_factory=dict)

    @property
    def failed(self) -> list[str]:
        return [name for name, part in self.parts.items() if "error" in part]


def _run(name: str, job) -> dict:
    try:
        return job()
    except AppError as exc:
        log.warning("sweep_part_failed", part=name, error=exc.code, message=exc.message)
        return {"error": exc.code, "message": exc.message}
    except Exception as exc:  # one part's crash must not hide the others' work
        log.exception("sweep_part_crashed", part=name)
        return {"error": "internal_error", "message": type(exc).__name__}


def sweep_run(*, timeout_seconds: int, now: datetime | None = None) -> SweepReport:
    """Run every part of the sweep once and report each."""
    now = now or utc_now()
    report = SweepReport()
    calls = _run("calls", lambda: {"updated": calls_settle_expired(
        timeout_seconds=timeout_seconds, now=now)})
    report.updated_count = int(calls.get("updated") or 0)
    report.parts = {
        "calls": calls,
        "callsEnded": _run("callsEnded", lambda: {"ended": calls_settle_presence(now=now)}),
        "recordingsOfEndedCalls": _run("recordingsOfEndedCalls", recordings_stop_of_final_calls),
        "recorderRetries": _run("recorderRetries", recordings_retry_failed),
        "uploads": _run("uploads", lambda: uploads_retry_due(now=now)),
        "analysis": _run("analysis", lambda: analysis_sweep(now=now)),
    }
    return report
