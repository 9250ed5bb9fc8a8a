"""The FCM fake answers google-auth's real client the way Google does."""

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.auth.exceptions import RefreshError
from google.auth.transport.requests import AuthorizedSession
from google.oauth2 import service_account

from tests.fakes.fcm import FakeFCM, fcm_error_code

pytestmark = pytest.mark.pure  # no emulators needed

PROJECT = "demo-memharbor-fcm"
SCOPES = ["https://www.googleapis.com/auth/firebase.messaging"]


@pytest.fixture(scope="module")
def fcm():
    with FakeFCM(project_id=PROJECT) as fake:
        yield fake


@pytest.fixture
def push(fcm):
    """`push(message)` -> the response to a messages:send, through the production client."""
    fcm.reset()
    credentials = service_account.Credentials.from_service_account_info(
        fcm.service_account_info(), scopes=SCOPES)
    session = AuthorizedSession(credentials)

    def send(message, project=PROJECT):
        return session.post(f"{fcm.base_url}/v1/projects/{project}/messages:send",
                            json={"message": message}, timeout=10)

    yield send
    session.close()


def ring(token, **data):
    return {"token": token, "data": {"type": "incoming_call", "callId": "c-1", **data},
            "android": {"priority": "HIGH", "ttl": "30s"}}


def test_invites_reach_the_phone_on_one_cached_access_token(fcm, push):
    answers = [push(ring("phone-a", callerName=name)) for name in ("Ann", "Bob", "Cy")]
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert all(a.json()["name"].startswith(f"projects/{PROJECT}/messages/") for a in answers)
    assert len(fcm.access_tokens_issued) == 1
    assert [m.access_token for m in fcm.messages] == fcm.access_tokens_issued * 3
    assert fcm.messages[2].message["data"]["callerName"] == "Cy"
    claims = fcm.token_requests[0].claims
    assert claims["iss"] == f"memharbor-test@{PROJECT}.iam.gserviceaccount.com"
    assert SCOPES[0] in claims["scope"].split()


def test_a_revoked_access_token_is_refreshed_and_the_push_still_goes_out(fcm, push):
    assert push(ring("phone-a")).status_code == 200
    fcm.revoke_access_tokens()
    assert push(ring("phone-a")).status_code == 200
    assert len(fcm.access_tokens_issued) == 2
    assert [m.status for m in fcm.messages] == [200, 401, 200]
    assert fcm.messages[-1].access_token == fcm.access_tokens_issued[1]


def test_a_phone_whose_app_was_removed_answers_unregistered(fcm, push):
    fcm.unregistered.add("gone-phone")
    answer = push(ring("gone-phone"))
    assert answer.status_code == 404
    assert answer.json() == {"error": {
        "code": 404, "message": "Requested entity was not found.", "status": "NOT_FOUND",
        "details": [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
                     "errorCode": "UNREGISTERED"}]}}


def test_an_overloaded_fcm_says_when_to_try_again_then_recovers(fcm, push):
    fcm.fail_with["busy-phone"] = [(503, "UNAVAILABLE", 1), (429, "QUOTA_EXCEEDED", None)]
    first, second, third = (push(ring("busy-phone")) for _ in range(3))
    assert (first.status_code, first.headers["Retry-After"]) == (503, "1")
    assert first.json()["error"]["status"] == "UNAVAILABLE"
    assert fcm_error_code(first.json()) == "UNAVAILABLE"
    assert second.status_code == 429 and "Retry-After" not in second.headers
    assert second.json()["error"]["status"] == "RESOURCE_EXHAUSTED"
    assert third.status_code == 200
    assert len(fcm.sent_to("busy-phone")) == 3  # google-auth does not retry a 503 by itself


def test_a_forged_service_account_key_gets_no_access_token(fcm):
    forged = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    info = fcm.service_account_info() | {"private_key": forged.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()).decode()}
    fcm.reset()
    session = AuthorizedSession(service_account.Credentials.from_service_account_info(
        info, scopes=SCOPES))
    with pytest.raises(RefreshError, match="invalid_grant"):
        session.post(f"{fcm.base_url}/v1/projects/{PROJECT}/messages:send",
                     json={"message": ring("phone-a")}, timeout=10)
    session.close()
    assert fcm.access_tokens_issued == [] and fcm.messages == []
    assert fcm.token_requests[0].response == {"error": "invalid_grant",
                                              "error_description": "Invalid JWT Signature."}


def test_a_number_in_the_data_payload_is_refused(fcm, push):
    answer = push(ring("phone-a", attempt=2))
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["status"] == "INVALID_ARGUMENT"
    assert error["details"][0]["fieldViolations"][0]["field"] == "message.data[2].value"


@pytest.mark.parametrize("message, project, status", [
    (ring("p") | {"android": {"priority": "URGENT"}}, PROJECT, 400),
    (ring("p") | {"android": {"ttl": "30"}}, PROJECT, 400),
    (ring("p") | {"topic": "calls"}, PROJECT, 400),
    (ring("p", blob="x" * 4096), PROJECT, 400),
    ({"data": {"type": "incoming_call"}}, PROJECT, 400),
    (ring("p"), "someone-elses-project", 403),
    (ring("p") | {"android": {"priority": "high", "ttl": "2.5s"}}, PROJECT, 200),
])
def test_messages_google_would_refuse_are_refused(fcm, push, message, project, status):
    answer = push(message, project=project)
    assert answer.status_code == status, fcm.messages[-1].note
    if status != 200:
        assert answer.json()["error"]["code"] == status
