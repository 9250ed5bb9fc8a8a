"""Every endpoint but health needs a verified caller; each way a token can be wrong is a 401."""

from __future__ import annotations

import pytest
from django.test import override_settings

from tests.conftest import post_json

pytestmark = pytest.mark.usefixtures("any_channel")

TOKEN_BODY = {"channel": "c", "uid": 1}


def _token_request(client, authorization: str | None):
    headers = {"Authorization": authorization} if authorization is not None else {}
    return post_json(client, "/api/token", TOKEN_BODY, headers)


def test_a_valid_firebase_id_token_is_accepted(client, securetoken):
    response = _token_request(client, f"Bearer {securetoken.mint('alice')}")
    assert response.status_code == 200, response.content


@pytest.mark.parametrize("authorization, code", [
    (None, "unauthenticated"),
    ("", "unauthenticated"),
    ("Basic YWxpY2U6c2VjcmV0", "invalid_authorization_header"),
    ("Bearer", "invalid_authorization_header"),
    ("Bearer not-a-jwt", "invalid_token"),
])
def test_missing_or_malformed_credentials_are_401(client, authorization, code):
    response = _token_request(client, authorization)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == code


@pytest.mark.parametrize("breakage, code, words", [
    ({"expires_in": -60, "issued_ago": 3600}, "token_expired", "expired"),
    ({"audience": "someone-elses-project"}, "invalid_token", "aud"),
    ({"issuer": "https://securetoken.google.com/someone-elses-project"}, "invalid_token", "iss"),
    ({"wrong_key": True}, "invalid_token", "signature"),
])
def test_a_broken_id_token_is_401_with_the_reason(client, securetoken, breakage, code, words):
    response = _token_request(client, f"Bearer {securetoken.mint('alice', **breakage)}")
    assert response.status_code == 401
    error = response.json()["error"]
    assert error["code"] == code
    assert words in error["message"].lower()


def test_a_token_from_the_future_is_refused(client, securetoken):
    response = _token_request(client, f"Bearer {securetoken.mint('alice', issued_ago=-3600)}")
    assert response.status_code == 401


def test_dev_tokens_are_refused_outside_development_mode(client):
    response = _token_request(client, "Bearer dev:alice")
    assert response.status_code == 401
    assert "development mode" in response.json()["error"]["message"]


def test_dev_tokens_need_debug_too(client):
    with override_settings(AUTH_MODE="dev", DEBUG=False):
        assert _token_request(client, "Bearer dev:alice").status_code == 401


@override_settings(AUTH_MODE="dev", DEBUG=True)
def test_dev_tokens_work_in_development_mode(client):
    assert _token_request(client, "Bearer dev:alice").status_code == 200
    assert _token_request(client, "Bearer dev:alice:admin").status_code == 200
    bad = _token_request(client, "Bearer dev:")
    assert bad.status_code == 401 and bad.json()["error"]["code"] == "invalid_token"


def test_certificates_are_fetched_once_not_per_request(client, securetoken):
    token = f"Bearer {securetoken.mint('alice')}"
    before = securetoken.requests
    for _ in range(5):
        assert _token_request(client, token).status_code == 200
    assert securetoken.requests - before <= 1


def test_unreachable_certificates_are_503_not_401(client, securetoken):
    from firebase_admin import auth

    from api.auth import verified_tokens
    from integrations.firebase import firebase_app

    securetoken.available = False
    # Forget the certificates firebase-admin cached (by HTTP caching rules) so it must refetch.
    session = auth._get_client(firebase_app())._token_verifier.request.session
    session.get_adapter(securetoken.url).cache.data.clear()
    verified_tokens.clear()
    response = _token_request(client, f"Bearer {securetoken.mint('alice')}")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "auth_unavailable"
