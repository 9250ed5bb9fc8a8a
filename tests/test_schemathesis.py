"""Schemathesis against the running server's own `/api/openapi.json` (gunicorn, dev auth):
every generated request, valid or not, gets an answer that is not a server error and whose
status the operation's OpenAPI declares."""

from __future__ import annotations

import httpx
import schemathesis
from django.conf import settings as django_settings
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import status_code_conformance

from tests.helpers import INVITE, NCS_SECRET

EXAMPLES = 4  # per operation and generation mode: under a minute for the whole API
CHECKS = [not_a_server_error, status_code_conformance]


def _use_known_ids(case, known: dict) -> None:
    """Put the ids of a real call where the case has fields of those names, so requests
    also reach the code behind "no such call" (the state machine's 200s and 409s)."""
    for fields in (case.path_parameters, case.query, case.body):
        if isinstance(fields, dict):
            for name in fields.keys() & known.keys():
                fields[name] = known[name]


def test_no_generated_request_gets_a_server_error_or_an_undocumented_status(start_server,
                                                                           start_recorder):
    recorder = start_recorder()  # the recording endpoints answer 503 without one
    base = start_server(MEMHARBOR_DEBUG="1", AUTH_MODE="dev", GUNICORN_WORKERS="2",
                        RECORDER_SERVICE_URL=recorder.base, RECORDER_SECRET=recorder.secret,
                        AGORA_NCS_SECRET=NCS_SECRET)  # else the Agora webhook is a 503
    ops_key = {"X-Ops-Key": django_settings.OPS_API_KEY}
    # An admin reaches every endpoint's checks (participant-only, ops-or-admin) rather than
    # stopping at 403; alice, the caller of a real call, reaches its state machine.
    admin = {"Authorization": "Bearer dev:fuzzer:admin", **ops_key}
    alice = {"Authorization": "Bearer dev:alice", **ops_key}
    call = httpx.post(f"{base}/api/call/invite", json=INVITE, headers=alice).json()
    known = {"call_id": call["callId"], "channel": call["channelName"], "uid": "alice"}

    schema = schemathesis.openapi.from_url(f"{base}/api/openapi.json")
    failures, operations = [], 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            @given(case=operation.as_strategy(generation_mode=mode), real=st.booleans())
            @settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None,
                      phases=[Phase.explicit, Phase.generate],
                      suppress_health_check=list(HealthCheck))
            def probe(case, real):
                if real:
                    _use_known_ids(case, known)
                case.call_and_validate(base_url=base, headers=alice if real else admin,
                                       timeout=30, checks=CHECKS)

            try:
                probe()
            except Unsatisfiable:  # negative mode: an operation without inputs to break
                assert mode == GenerationMode.NEGATIVE, operation.label
            except (Exception, FailureGroup) as exc:  # every operation's findings, reported
                failures.append(f"{operation.label} ({mode.value}): {exc}")
    assert operations >= 24
    assert not failures, f"{len(failures)} findings:\n\n" + "\n\n".join(failures)
