"""The recorder in an Agora channel: real headless Chromium running the recorder's page with
a fake Agora Web SDK (tests/fakes/agora_sdk.js, loaded through RECORDER_AGORA_SDK_PATH)
whose remote users publish real WebAudio tones. The test reaches the session's page over
Chromium's DevTools port (RECORDER_DEVTOOLS_PORT) and moves the channel from there; what
it checks is the WAV the recorder stored, decoded and analysed with an FFT."""

from __future__ import annotations

import base64
import io
import threading
import urllib.request
import wave
import zlib
from pathlib import Path

import numpy as np
import pytest
from agoraiotools.AccessToken2 import AccessToken as AccessToken2
from agoraiotools.AccessToken2 import ServiceRtc
from django.conf import settings
from playwright.sync_api import sync_playwright

from devstack.emulators import free_port, wait_until
from integrations.firebase import firestore_client
from recorder_bridge import client as recorder_client
from tests.conftest import post_json
from tests.helpers import invite

FAKE_SDK = Path(__file__).parent / "fakes" / "agora_sdk.js"
RATE = 16000
PRESENT, ABSENT = 0.03, 0.01  # a tone's amplitude (full scale 1.0); the fake's tones are 0.3
EDGE = 0.5  # seconds around a change in the channel where either is allowed


# -- the channel, seen from the test ------------------------------------------------------

class FakeChannel:
    """The fake SDK in one session's page, driven over DevTools (`window.__fakeAgora`)."""

    def __init__(self, page):
        self.page = page

    def __call__(self, method: str, *args):
        return self.page.evaluate(f"args => window.__fakeAgora.{method}(...args)", list(args))

    def at(self, method: str, *args) -> float:
        """Do `method` in the channel; answers when it happened, in seconds since the
        recorder's join resolved (the page starts recording right after it)."""
        return self.page.evaluate(
            f"args => window.__fakeAgora.sinceJoin(window.__fakeAgora.{method}(...args))",
            list(args))

    def state(self) -> dict:
        return self("state")


class Browser:
    """The recorder's Chromium, reached over its DevTools port."""

    def __init__(self, port: int):
        self.port = port
        self._pw = sync_playwright().start()
        self._browser = None

    def channel(self, name: str) -> FakeChannel:
        """The page whose fake client is joining (or joined) channel `name`."""
        found: list = []

        def look() -> bool:
            # A connection sees the pages that exist when it is made: connect again.
            if self._browser is not None:
                self._browser.close()
            self._browser = self._pw.chromium.connect_over_cdp(f"http://127.0.0.1:{self.port}")
            for context in self._browser.contexts:
                for page in context.pages:
                    try:
                        joining = page.evaluate(
                            "() => window.__fakeAgora && window.__fakeAgora.joining")
                    except Exception:
                        continue
                    if joining and joining["channel"] == name:
                        found.append(page)
                        return True
            return False

        wait_until(look, timeout=30, what=f"a recorder page joining {name}")
        return FakeChannel(found[0])

    def close(self) -> None:
        if self._browser is not None:
            self._browser.close()  # disconnects; the recorder's browser keeps running
        self._pw.stop()


class Started:
    """A POST /sessions running in a thread (it answers once the fake lets the join finish)."""

    def __init__(self, request):
        self.answer = None
        self._thread = threading.Thread(target=lambda: setattr(self, "answer", request()))
        self._thread.start()

    def result(self) -> tuple[int, dict]:
        self._thread.join(timeout=60)
        assert self.answer is not None, "the session start did not answer within 60 s"
        return self.answer


@pytest.fixture
def agora_recorder(start_recorder):
    """`agora_recorder(**env)` -> (recorder, browser): a recorder whose page loads the fake
    SDK, and its Chromium over DevTools."""
    opened: list[Browser] = []

    def start(**env):
        port = free_port()
        recorder = start_recorder(**{"RECORDER_AGORA_SDK_PATH": str(FAKE_SDK),
                                     "RECORDER_DEVTOOLS_PORT": str(port),
                                     "RECORDER_MAX_IDLE_SECONDS": "60", **env})
        browser = Browser(port)
        opened.append(browser)
        return recorder, browser

    yield start
    for browser in opened:
        browser.close()


def start_session(recorder, browser, channel: str, *, before_join=(), call_id=None):
    """Start an Agora session on `channel`; `before_join` = [(uid, hz)] are in the channel
    and publishing when the recorder joins. Returns (the 201 body, the FakeChannel)."""
    pending = Started(lambda: recorder.call("POST", "/sessions", {
        "channel": channel, "uid": settings.RECORDER_UID, "token": "007-join-token",
        "callId": call_id, "source": "agora"}))
    fake = browser.channel(channel)
    for uid, hz in before_join:
        fake("publish", uid, hz)
    fake("admit")
    status, started = pending.result()
    assert status == 201, started
    return started, fake


def wait_chunks(recorder, started: dict, at_least: int) -> None:
    wait_until(lambda: recorder.sidecar(started["filename"])["chunks"] >= at_least, timeout=60,
               what=f"{at_least} chunks on disk")


def chunks(recorder, started: dict) -> int:
    return recorder.sidecar(started["filename"])["chunks"]


def stored_document(sid: str, *, reason: str) -> dict:
    """The recording document once it is completed; its stopReason must be `reason`."""
    ref = firestore_client().collection("recordings").document(sid)
    wait_until(lambda: (ref.get().to_dict() or {}).get("status") == "completed", timeout=90,
               what=f"recording {sid} stored")
    document = ref.get().to_dict()
    assert document["stopReason"] == reason
    assert document["format"] == "wav"
    return document


def wav_samples(url: str) -> np.ndarray:
    with urllib.request.urlopen(url, timeout=30) as response:
        data = response.read()
    with wave.open(io.BytesIO(data)) as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (RATE, 1, 2)
        frames = wav.readframes(wav.getnframes())
    return np.frombuffer(frames, dtype="<i2").astype(np.float64) / 32768.0


def amplitude(samples: np.ndarray, hz: float, start: float, end: float) -> float:
    """The amplitude of the `hz` component of samples[start:end] s (a Hann-windowed FFT,
    the peak within ±15 Hz; a full-scale sine is 1.0)."""
    window = samples[int(start * RATE):int(end * RATE)]
    assert len(window) >= RATE // 4, f"window {start:.2f}-{end:.2f} s is too short"
    hann = np.hanning(len(window))
    spectrum = np.abs(np.fft.rfft(window * hann)) * 2 / hann.sum()
    freqs = np.fft.rfftfreq(len(window), 1 / RATE)
    return float(spectrum[(freqs > hz - 15) & (freqs < hz + 15)].max())


def tone_timeline(samples: np.ndarray, hz: float, step: float = 0.25) -> list[tuple[float, float]]:
    """[(centre second, amplitude)] over 0.5 s windows every `step`."""
    duration = len(samples) / RATE
    return [(t + 0.25, amplitude(samples, hz, t, t + 0.5))
            for t in np.arange(0, duration - 0.5, step)]


def tone_changes(samples: np.ndarray, hz: float) -> list[float]:
    """The seconds at which `hz` starts or stops being heard: where its amplitude over
    0.25 s windows (every 0.05 s) crosses half the fake's tone level (0.3)."""
    duration, times, heard = len(samples) / RATE, [], []
    for start in np.arange(0, duration - 0.25, 0.05):
        times.append(start + 0.125)
        heard.append(amplitude(samples, hz, start, start + 0.25) > 0.15)
    return [round(float(t), 2) for t, a, b in zip(times[1:], heard, heard[1:], strict=False)
            if a != b]


def assert_tone(samples, hz, *, on: list[tuple[float, float]], off: list[tuple[float, float]]):
    """`hz` is heard throughout each `on` span and not at all in each `off` span (seconds
    of the recording; EDGE is left out at each end of a span)."""
    timeline = tone_timeline(samples, hz)
    for spans, heard in ((on, True), (off, False)):
        for start, end in spans:
            inside = [(t, a) for t, a in timeline if start + EDGE <= t - 0.25 and t + 0.25 <= end - EDGE]
            assert inside, f"no window inside {start:.2f}-{end:.2f} s"
            wrong = [(round(t, 2), round(a, 4)) for t, a in inside
                     if (a < PRESENT if heard else a > ABSENT)]
            assert not wrong, (f"{hz} Hz should be {'heard' if heard else 'silent'} in "
                               f"{start:.2f}-{end:.2f} s; windows (s, amplitude): {wrong}")


# -- mixing: who is heard, and when ---------------------------------------------------------

def test_two_users_already_publishing_are_both_in_the_stored_wav(agora_recorder):
    recorder, browser = agora_recorder()
    started, fake = start_session(recorder, browser, "g1_alice_bob_1",
                                  before_join=[(101, 440), (202, 660)])
    state = fake.state()
    assert state["joinArgs"]["role"] == "audience"
    assert (state["joinArgs"]["uid"], state["joinArgs"]["token"]) == (settings.RECORDER_UID,
                                                                       "007-join-token")
    wait_until(lambda: all(u["subscribed"] for u in fake.state()["remoteUsers"])
               and len(fake.state()["remoteUsers"]) == 2, timeout=30,
               what="both users subscribed (user-published for tracks already there)")
    wait_until(lambda: recorder.call("GET", "/sessions")[1]["sessions"][0]["remoteUsers"] == 2,
               timeout=30, what="the recorder counting two users")
    wait_chunks(recorder, started, 4)

    status, stopped = recorder.call("POST", f"/sessions/{started['sid']}/stop")

    assert status == 200, stopped
    assert stopped["stopReason"] == "requested"
    document = stored_document(started["sid"], reason="requested")
    samples = wav_samples(document["url"])
    end = len(samples) / RATE
    assert end >= 3
    assert_tone(samples, 440, on=[(0, end)], off=[])
    assert_tone(samples, 660, on=[(0, end)], off=[])
    assert amplitude(samples, 550, 0.5, end - 0.5) < ABSENT  # two tones, not noise


def test_a_user_who_publishes_later_is_heard_from_then_on(agora_recorder):
    recorder, browser = agora_recorder()
    started, fake = start_session(recorder, browser, "g1_alice_bob_2",
                                  before_join=[(101, 440)])
    wait_chunks(recorder, started, 4)  # ~4 s in

    joined_at = fake.at("publish", 202, 660)
    wait_chunks(recorder, started, chunks(recorder, started) + 3)
    recorder.call("POST", f"/sessions/{started['sid']}/stop")

    assert 3 <= joined_at <= 6
    samples = wav_samples(stored_document(started["sid"], reason="requested")["url"])
    end = len(samples) / RATE
    assert_tone(samples, 440, on=[(0, end)], off=[])
    assert_tone(samples, 660, on=[(joined_at, end)], off=[(0, joined_at)])
    assert tone_changes(samples, 660) == [pytest.approx(joined_at, abs=EDGE)]
    assert tone_changes(samples, 440) == []


def test_a_user_who_unpublishes_and_republishes_is_silent_in_between(agora_recorder):
    recorder, browser = agora_recorder()
    started, fake = start_session(recorder, browser, "g1_alice_bob_3",
                                  before_join=[(101, 440), (202, 660)])
    wait_chunks(recorder, started, 3)

    muted_at = fake.at("unpublish", 101)
    wait_chunks(recorder, started, chunks(recorder, started) + 3)
    back_at = fake.at("publish", 101, 440)
    wait_chunks(recorder, started, chunks(recorder, started) + 3)
    recorder.call("POST", f"/sessions/{started['sid']}/stop")

    samples = wav_samples(stored_document(started["sid"], reason="requested")["url"])
    end = len(samples) / RATE
    assert_tone(samples, 440, on=[(0, muted_at), (back_at, end)], off=[(muted_at, back_at)])
    assert tone_changes(samples, 440) == [pytest.approx(muted_at, abs=EDGE),
                                          pytest.approx(back_at, abs=EDGE)]
    assert_tone(samples, 660, on=[(0, end)], off=[])


def test_a_user_who_leaves_and_rejoins_with_the_same_uid_is_heard_again(agora_recorder):
    recorder, browser = agora_recorder()
    started, fake = start_session(recorder, browser, "g1_alice_bob_4",
                                  before_join=[(101, 440), (202, 660)])
    wait_chunks(recorder, started, 3)

    left_at = fake.at("leave", 101)
    wait_until(lambda: recorder.call("GET", "/sessions")[1]["sessions"][0]["remoteUsers"] == 1,
               timeout=30, what="the recorder counting one user after user-left")
    wait_chunks(recorder, started, chunks(recorder, started) + 3)
    rejoined_at = fake.at("publish", 101, 440)
    wait_until(lambda: recorder.call("GET", "/sessions")[1]["sessions"][0]["remoteUsers"] == 2,
               timeout=30, what="the recorder counting two users after user-joined")
    wait_chunks(recorder, started, chunks(recorder, started) + 3)
    recorder.call("POST", f"/sessions/{started['sid']}/stop")

    samples = wav_samples(stored_document(started["sid"], reason="requested")["url"])
    end = len(samples) / RATE
    assert_tone(samples, 440, on=[(0, left_at), (rejoined_at, end)], off=[(left_at, rejoined_at)])
    assert tone_changes(samples, 440) == [pytest.approx(left_at, abs=EDGE),
                                          pytest.approx(rejoined_at, abs=EDGE)]
    assert_tone(samples, 660, on=[(0, end)], off=[])


# -- how a session ends by itself ---------------------------------------------------------

def test_a_join_that_never_finishes_times_out_and_leaves_nothing(agora_recorder):
    recorder, browser = agora_recorder(RECORDER_JOIN_TIMEOUT_SECONDS="2")
    pending = Started(lambda: recorder.call("POST", "/sessions", {
        "channel": "g1_alice_bob_0", "uid": settings.RECORDER_UID, "source": "agora"}))
    browser.channel("g1_alice_bob_0")  # joining; never admitted

    status, answer = pending.result()

    assert (status, answer["error"]["code"]) == (504, "agora_join_timeout")
    assert recorder.call("GET", "/sessions") == (200, {"sessions": []})
    assert list(recorder.recordings.iterdir()) == []


def test_a_channel_everyone_left_stops_as_idle_and_is_stored(agora_recorder):
    recorder, browser = agora_recorder(RECORDER_MAX_IDLE_SECONDS="2")
    started, fake = start_session(recorder, browser, "g1_alice_bob_5",
                                  before_join=[(101, 440), (202, 660)])
    wait_chunks(recorder, started, 2)

    fake("leave", 101)
    left_at = fake.at("leave", 202)

    wait_until(lambda: recorder.call("GET", f"/sessions/{started['sid']}")[1]["status"]
               == "stopped", timeout=60, what="the idle auto-stop")
    assert recorder.call("GET", f"/sessions/{started['sid']}")[1]["stopReason"] == "idle"
    samples = wav_samples(stored_document(started["sid"], reason="idle")["url"])
    # The empty channel's silence is recorded until the idle stop (RECORDER_MAX_IDLE_SECONDS).
    assert tone_changes(samples, 440) == [pytest.approx(left_at, abs=EDGE)]
    assert len(samples) / RATE >= left_at + 2 - EDGE


def test_a_uid_banned_disconnect_ends_the_session_with_that_reason(agora_recorder):
    recorder, browser = agora_recorder()
    started, fake = start_session(recorder, browser, "g1_alice_bob_6",
                                  before_join=[(101, 440)])
    wait_chunks(recorder, started, 3)

    fake("disconnect", "UID_BANNED")

    wait_until(lambda: recorder.call("GET", f"/sessions/{started['sid']}")[1]["status"]
               == "stopped", timeout=60, what="the stop after UID_BANNED")
    samples = wav_samples(stored_document(started["sid"], reason="UID_BANNED")["url"])
    end = len(samples) / RATE
    assert end >= 2
    assert_tone(samples, 440, on=[(0, end - 0.5)], off=[])


def test_reconnecting_keeps_recording_through_the_gap(agora_recorder):
    recorder, browser = agora_recorder()
    started, fake = start_session(recorder, browser, "g1_alice_bob_7",
                                  before_join=[(101, 440)])
    wait_chunks(recorder, started, 2)

    lost_at = fake.at("reconnecting")
    wait_chunks(recorder, started, chunks(recorder, started) + 3)
    assert recorder.call("GET", f"/sessions/{started['sid']}")[1]["status"] == "recording"
    back_at = fake.at("reconnected")
    wait_chunks(recorder, started, chunks(recorder, started) + 3)
    status, stopped = recorder.call("POST", f"/sessions/{started['sid']}/stop")

    assert (status, stopped["stopReason"]) == (200, "requested")
    samples = wav_samples(stored_document(started["sid"], reason="requested")["url"])
    # The gap is in the recording as silence, where it happened.
    assert tone_changes(samples, 440) == [pytest.approx(lost_at, abs=EDGE),
                                          pytest.approx(back_at, abs=EDGE)]
    assert "reconnecting; recording silence" in recorder.log.read_text()


def test_a_crashed_renderer_is_stored_with_what_it_recorded(agora_recorder):
    recorder, browser = agora_recorder()
    started, fake = start_session(recorder, browser, "g1_alice_bob_8",
                                  before_join=[(101, 440)])
    wait_chunks(recorder, started, 3)

    try:
        fake.page.goto("chrome://crash", timeout=5000)
    except Exception:
        pass  # the navigation dies with the renderer

    wait_until(lambda: recorder.call("GET", f"/sessions/{started['sid']}")[1]["status"]
               == "stopped", timeout=60, what="the stop after the renderer crashed")
    samples = wav_samples(stored_document(started["sid"], reason="renderer_crashed")["url"])
    assert len(samples) / RATE >= 2


# -- token renewal ----------------------------------------------------------------------------

def _inflate_007(token: str) -> bytes:
    assert token.startswith("007")
    return zlib.decompress(base64.b64decode(token[3:]))


def verified_rtc(token: str, *, channel: str, uid: int) -> AccessToken2:
    """The token parsed by Agora's reference AccessToken2, which rebuilds it (same salt,
    issue time and expiry) from our app id and certificate to the same content: the
    signature is right; and it grants `uid` only joining `channel`."""
    parsed = AccessToken2()
    assert parsed.from_string(token)
    rtc = parsed._AccessToken__service[ServiceRtc.kServiceType]
    assert rtc._ServiceRtc__channel_name == channel.encode()
    assert rtc._ServiceRtc__uid == str(uid).encode()
    assert set(rtc._Service__privileges) == {ServiceRtc.kPrivilegeJoinChannel}
    reference = AccessToken2(settings.AGORA_APP_ID, settings.AGORA_APP_CERT,
                             issue_ts=parsed._AccessToken__issue_ts,
                             expire=parsed._AccessToken__expire)
    reference._AccessToken__salt = parsed._AccessToken__salt
    service = ServiceRtc(channel, uid)
    for privilege, expire in rtc._Service__privileges.items():
        service.add_privilege(privilege, expire)
    reference.add_service(service)
    assert _inflate_007(reference.build()) == _inflate_007(token)
    return parsed


def test_the_recorder_renews_its_token_through_the_api_and_stops_when_the_call_is_over(
        as_user, start_server, start_recorder, agora_recorder, settings):
    call = invite(as_user)
    as_user("bob").post("/api/call/answer", {"call_id": call["callId"], "action": "accept"})
    api = start_server(RECORDER_SECRET=start_recorder.secret)
    recorder, browser = agora_recorder(RECORDER_API_URL=api)
    # The bot is sent in by the API (its first token), in a thread: the fake holds the join.
    settings.RECORDER_SERVICE_URL, settings.RECORDER_SECRET = recorder.base, recorder.secret
    recorder_client._http.cache_clear()
    pending = Started(lambda: as_user("alice").post("/api/recording/start",
                                                    {"channel": call["channelName"]}))
    fake = browser.channel(call["channelName"])
    fake("publish", 101, 440)
    fake("admit")
    response = pending.result()
    assert response.status_code == 200, response.content
    sid = response.json()["sid"]
    first = verified_rtc(fake.state()["joinArgs"]["token"], channel=call["channelName"],
                         uid=settings.RECORDER_UID)
    assert first._AccessToken__expire == settings.RECORDER_TOKEN_SECONDS == 3600
    # From here the API does not stop the session itself when the call ends.
    settings.RECORDER_SERVICE_URL = ""
    recorder_client._http.cache_clear()

    fake("expireSoon")
    wait_until(lambda: len(fake.state()["renewedTokens"]) == 1, timeout=30,
               what="the fake's renewToken receiving a fresh token")
    renewed = verified_rtc(fake.state()["renewedTokens"][0], channel=call["channelName"],
                           uid=settings.RECORDER_UID)
    assert renewed._AccessToken__expire == 3600
    assert recorder.call("GET", f"/sessions/{sid}")[1]["status"] == "recording"

    ended = as_user("alice").post("/api/call/end", {"call_id": call["callId"]})
    assert ended.status_code == 200, ended.content
    fake("expireSoon")

    wait_until(lambda: recorder.call("GET", f"/sessions/{sid}")[1]["status"] == "stopped",
               timeout=60, what="the stop after the API refused a token (410)")
    document = stored_document(sid, reason="call_over")
    assert (document["callId"], document["user1"], document["user2"]) == (
        call["callId"], "alice", "bob")


def test_the_token_endpoint_is_for_the_recorder_and_active_calls_only(client, as_user, settings):
    settings.RECORDER_SECRET = "s3cret-for-this-test"
    call = invite(as_user)
    body = {"channel": call["channelName"], "uid": settings.RECORDER_UID}
    for headers in ({}, {"X-Recorder-Secret": "wrong"}):
        response = post_json(client, "/api/recording/token", body, headers)
        assert response.status_code == 401, response.content
    secret = {"X-Recorder-Secret": "s3cret-for-this-test"}
    refused = post_json(client, "/api/recording/token", {**body, "uid": 7}, secret)
    assert refused.status_code == 403, refused.content

    response = post_json(client, "/api/recording/token", body, secret)
    assert response.status_code == 200, response.content
    verified_rtc(response.json()["token"], channel=call["channelName"], uid=settings.RECORDER_UID)
    assert response.json()["expire_in"] == 3600

    as_user("alice").post("/api/call/cancel", {"call_id": call["callId"]})
    response = post_json(client, "/api/recording/token", body, secret)
    assert response.status_code == 410, response.content
    assert response.json()["error"]["code"] == "call_not_active"
