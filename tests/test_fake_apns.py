"""The APNs fake answers a real HTTP/2 client over verified TLS the way Apple does."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import ssl
import threading
import time

import h2.connection
import h2.events
import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.fakes.apns import FakeAPNs

pytestmark = pytest.mark.pure  # no emulators needed

TEAM, KID, BUNDLE = "TEAM123456", "KEY1234567", "com.memharbor.app"
DEVICE, OTHER = "ab" * 32, "cd" * 32
APNS_ID = "123E4567-E89B-12D3-A456-426614174000"
KEY = ec.generate_private_key(ec.SECP256R1())
BODY = b'{"type":"incoming_call","callId":"c1"}'


def provider_token(key=KEY, iat=None) -> str:
    claims = {"iss": TEAM, "iat": int(time.time()) if iat is None else iat}
    return jwt.encode(claims, key, algorithm="ES256", headers={"kid": KID})


def apple_headers(token: str, **extra) -> dict:
    return {"authorization": f"bearer {token}", "apns-topic": f"{BUNDLE}.voip",
            "apns-push-type": "voip", "apns-priority": "10", "apns-expiration": "0", **extra}


@pytest.fixture
def fake():
    pem = KEY.public_key().public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    before = set(threading.enumerate())
    server = FakeAPNs(team_id=TEAM, key_id=KID, public_key_pem=pem, bundle_id=BUNDLE).start()
    server.tls = ssl.create_default_context(cafile=server.ca_file)
    yield server
    server.stop()
    assert not [t for t in set(threading.enumerate()) - before if t.name.startswith("fake-apns")]


@pytest.fixture
def push(fake):
    """`push(device, headers=None, body=BODY)` -> httpx response; one shared h2 connection."""
    client, token = httpx.Client(http2=True, verify=fake.tls, timeout=20), provider_token()
    yield lambda device=DEVICE, headers=None, body=BODY: client.post(
        f"{fake.base_url}/3/device/{device}", content=body,
        headers=apple_headers(token) if headers is None else headers)
    client.close()


def test_a_valid_voip_push_is_answered_with_headers_only_and_its_apns_id(fake):
    fake.tls.set_alpn_protocols(["h2"])  # a hand-driven h2 client sees every frame's event
    with socket.create_connection(("127.0.0.1", fake.port), timeout=10) as raw, \
            fake.tls.wrap_socket(raw, server_hostname="localhost") as sock:
        conn = h2.connection.H2Connection()
        conn.initiate_connection()
        conn.send_headers(1, [(":method", "POST"), (":scheme", "https"), (":authority", "x"),
                              (":path", f"/3/device/{DEVICE}"),
                              *apple_headers(provider_token(), **{"apns-id": APNS_ID}).items()])
        conn.send_data(1, BODY, end_stream=True)
        sock.sendall(conn.data_to_send())
        events = []
        while not any(isinstance(e, h2.events.StreamEnded) for e in events):
            data = sock.recv(65536)
            assert data, "the fake closed the connection mid-stream"
            events += [e for e in conn.receive_data(data) if hasattr(e, "stream_id")]
    response = next(e for e in events if isinstance(e, h2.events.ResponseReceived))
    assert dict(response.headers) == {b":status": b"200", b"apns-id": APNS_ID.encode()}
    assert response.stream_ended is not None           # END_STREAM on the HEADERS frame
    assert not any(isinstance(e, h2.events.DataReceived) for e in events)
    assert fake.requests[0].payload == json.loads(BODY)


def test_one_connection_carries_many_pushes_and_apple_invents_missing_ids(fake, push):
    answers = [push() for _ in range(3)]
    assert [(a.status_code, a.http_version, a.content) for a in answers] == \
        [(200, "HTTP/2", b"")] * 3
    assert len({a.headers["apns-id"] for a in answers}) == 3
    assert answers[0].headers["apns-id"].isupper()
    assert fake.connections == 1 and len(fake.jwts) == 1
    assert fake.requests[0].headers["apns-topic"] == f"{BUNDLE}.voip"


def test_provider_tokens_must_be_present_fresh_and_signed_by_the_teams_key(push):
    stranger = ec.generate_private_key(ec.SECP256R1())
    forged = push(headers=apple_headers(provider_token(key=stranger)))
    assert (forged.status_code, forged.json()) == (403, {"reason": "InvalidProviderToken"})
    anonymous = {k: v for k, v in apple_headers("").items() if k != "authorization"}
    assert push(headers=anonymous).json() == {"reason": "MissingProviderToken"}
    old = push(headers=apple_headers(provider_token(iat=int(time.time()) - 3700)))
    assert (old.status_code, old.json()) == (403, {"reason": "ExpiredProviderToken"})


def test_a_voip_push_needs_the_voip_topic_and_apples_header_values(push):
    token = provider_token()
    for bad, reason in [({"apns-topic": BUNDLE}, "DeviceTokenNotForTopic"),
                        ({"apns-push-type": "ring"}, "InvalidPushType"),
                        ({"apns-priority": "7"}, "BadPriority"),
                        ({"apns-expiration": "soon"}, "BadExpirationDate"),
                        ({"apns-id": "not-a-uuid"}, "BadMessageId")]:
        answer = push(headers=apple_headers(token, **bad))
        assert (answer.status_code, answer.json(), answer.headers["content-type"]) == \
            (400, {"reason": reason}, "application/json")


def test_unregistered_bad_and_failing_devices_are_answered_like_apple(fake, push):
    fake.unregistered.add(OTHER)
    gone = push(OTHER)
    assert gone.status_code == 410 and gone.json()["reason"] == "Unregistered"
    assert abs(gone.json()["timestamp"] - time.time() * 1000) < 60_000
    fake.bad_tokens.add(DEVICE)
    assert push(DEVICE).json() == push("not-hex").json() == {"reason": "BadDeviceToken"}
    fake.fail_with[OTHER] = [500, 503]                  # transient failures come first
    fake.unregistered.clear()
    assert [push(OTHER).status_code for _ in range(3)] == [500, 503, 200]


def test_a_voip_payload_may_be_5120_bytes_but_not_5121(push):
    def body(size):
        return b'{"x":"' + b"a" * (size - 8) + b'"}'
    assert push(body=body(5120)).status_code == 200
    assert push(body=body(5121)).json() == {"reason": "PayloadTooLarge"}
    assert push(body=body(1_000_000)).status_code == 413  # flow control kept the window open


def test_an_expired_token_is_renewed_once_but_faster_updates_are_refused(fake, push):
    fake.expire_next()
    assert push().json() == {"reason": "ExpiredProviderToken"}
    assert push(headers=apple_headers(provider_token())).status_code == 200
    third = push(headers=apple_headers(provider_token()))
    assert (third.status_code, third.json()) == (429, {"reason": "TooManyProviderTokenUpdates"})
    assert len(fake.jwts) == 1 and fake.connections == 1


def test_a_slow_device_does_not_hold_up_another_stream_on_the_connection(fake):
    # asyncio, not threads: httpx's sync HTTP/2 lets one blocked reader starve the others
    fake.delay[OTHER] = 3.0

    async def story():
        async with httpx.AsyncClient(http2=True, verify=fake.tls, timeout=20) as client:
            headers = apple_headers(provider_token())

            def send(device):
                return client.post(f"{fake.base_url}/3/device/{device}", headers=headers,
                                   content=BODY)
            assert (await send(DEVICE)).status_code == 200  # the connection is up, h2 known
            slow = asyncio.create_task(send(OTHER))
            while not fake.waiting:
                await asyncio.sleep(0.01)
            assert (await send(DEVICE)).status_code == 200
            assert not slow.done() and fake.waiting == 1, "the quick push waited for the slow"
            assert (await slow).status_code == 200

    asyncio.run(asyncio.wait_for(story(), timeout=30))
    assert [r.token for r in fake.requests] == [DEVICE, DEVICE, OTHER]
    assert fake.connections == 1


def test_tls_is_verified_against_the_fakes_ca_only(fake):
    with pytest.raises(httpx.ConnectError):
        httpx.post(f"{fake.base_url}/3/device/{DEVICE}", verify=True, timeout=10)


def test_goaway_makes_the_client_open_a_new_connection(fake, push):
    assert push().status_code == 200
    fake.goaway()
    with contextlib.suppress(httpx.TransportError):    # the client may race the GOAWAY once
        push()
    assert push().status_code == 200 and fake.connections == 2


def test_regular_pushes_go_to_the_bundle_topic_and_voip_only_to_the_voip_topic(push):
    token = provider_token()
    background = json.dumps({"aps": {"content-available": 1}, "type": "x"}).encode()
    for push_type, topic, status in [("alert", BUNDLE, 200), ("background", BUNDLE, 200),
                                     ("alert", f"{BUNDLE}.voip", 400),
                                     ("background", f"{BUNDLE}.voip", 400),
                                     ("voip", BUNDLE, 400), ("alert", "com.other.app", 400)]:
        headers = apple_headers(token, **{"apns-push-type": push_type, "apns-topic": topic,
                                          "apns-priority": "5"})
        assert push(headers=headers, body=background).status_code == status, (push_type, topic)


def test_pushes_apple_or_ios_would_punish_are_recorded_as_violations(fake, push):
    fake.voip_types = {"incoming_call"}
    token = provider_token()

    def send(push_type, priority, body):
        headers = apple_headers(token, **{"apns-push-type": push_type, "apns-priority": priority,
                                          "apns-topic": BUNDLE + (".voip" if push_type == "voip"
                                                                  else "")})
        assert push(headers=headers, body=json.dumps(body).encode()).status_code == 200

    silent = {"aps": {"content-available": 1}, "type": "call_cancelled"}
    send("voip", "10", {"type": "incoming_call"})
    send("background", "5", silent)
    send("alert", "10", {"aps": {"alert": {"title": "Missed call"}}, "type": "call_missed"})
    assert fake.violations == []
    send("voip", "10", {"type": "call_cancelled"})
    send("background", "10", silent)
    send("background", "5", {"aps": {}, "type": "call_cancelled"})
    send("background", "5", {"aps": {"content-available": 1, "sound": "default"}})
    send("alert", "10", {"aps": {}, "type": "call_missed"})
    assert [v.split(" (token")[0] for v in fake.violations] == [
        "VoIP push of type 'call_cancelled': iOS kills an app that does not report a VoIP push "
        "to CallKit as an incoming call",
        "background push without apns-priority 5",
        "background push without aps.content-available 1",
        "background push with an alert, sound or badge",
        "alert push without aps.alert"]
    assert [r.violation is not None for r in fake.requests] == [False] * 3 + [True] * 5
