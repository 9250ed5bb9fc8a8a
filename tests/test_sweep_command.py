"""`manage.py sweep_calls`, as cron (once) and as a container loop (--every)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import timedelta

from django.core.management import call_command

from calls.services import _call_document
from core.clock import utc_now
from integrations.firebase import firestore_client


def _ringing_call(call_id: str, *, age_seconds: int) -> None:
    doc = _call_document(call_id=call_id, channel=f"g_{call_id}_r_1", group_id="g",
                         caller_id=call_id, receiver_id="r", caller_name="c",
                         group_name_snapshot="", receiver_name_snapshot="", idempotency_key=None,
                         now=utc_now() - timedelta(seconds=age_seconds))
    firestore_client().collection("calls").document(call_id).set(doc)


def _status(call_id: str) -> str:
    return firestore_client().collection("calls").document(call_id).get().get("status")


def test_one_sweep_moves_the_expired_calls(capsys):
    _ringing_call("old", age_seconds=120)
    _ringing_call("new", age_seconds=5)
    call_command("sweep_calls")
    assert "1 call(s) moved to missed" in capsys.readouterr().out
    assert (_status("old"), _status("new")) == ("missed", "pending")


def test_the_loop_keeps_sweeping_and_stops_on_sigterm(tmp_path):
    _ringing_call("old", age_seconds=120)
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings", "LOG_DIR": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "manage.py", "sweep_calls", "--every", "0.2"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while _status("old") != "missed" and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _status("old") == "missed"
        _ringing_call("later", age_seconds=120)  # a call that expires while the loop runs
        while _status("later") != "missed" and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _status("later") == "missed"
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
