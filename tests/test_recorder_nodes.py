"""Several recorder nodes (RECORDER_NODES): two real `python -m recorder` processes register
in Firestore `recorderNodes`, the API places each new session on the healthy node with the
most free capacity and sends stop/status/retry to the node holding the session."""

from __future__ import annotations

import json
import signal

import pytest

from devstack.emulators import wait_until
from integrations.firebase import firestore_client
from recorder_bridge import client as recorder_client
from tests.conftest import post_json
from tests.helpers import invite, storage_down


def _node(node_id: str) -> dict:
    return firestore_client().collection("recorderNodes").document(node_id).get().to_dict() or {}


@pytest.fixture
def two_nodes(start_recorder, settings, tmp_path):
    """node-a (capacity 1) and node-b (capacity 2), each with its own recordings directory,
    and the API placing sessions over the registered nodes only."""
    nodes = {}
    for node_id, capacity in (("node-a", 1), ("node-b", 2)):
        nodes[node_id] = start_recorder(RECORDINGS_DIR=str(tmp_path / node_id),
                                        RECORDER_NODE_ID=node_id,
                                        RECORDER_MAX_SESSIONS=str(capacity),
                                        RECORDER_HEARTBEAT_SECONDS="0.5")
    for node_id, recorder in nodes.items():
        wait_until(lambda n=node_id, r=recorder: _node(n).get("url") == r.base, timeout=30,
                   what=f"{node_id} registered")
    settings.DEBUG = True  # tone sources: Agora cannot be reached from here
    settings.RECORDER_SERVICE_URL = ""
    settings.RECORDER_NODES = True
    settings.RECORDER_HEARTBEAT_SECONDS = 0.5
    settings.RECORDER_SECRET = start_recorder.secret
    recorder_client._http.cache_clear()
    yield nodes
    recorder_client._http.cache_clear()


def _start(as_user, n: int):
    call = invite(as_user, group_id=f"group{n}", caller_id=f"caller{n}", receiver_id=f"elder{n}")
    response = as_user(f"caller{n}").post("/api/recording/start", {
        "channel": call["channelName"], "source": "tone:440"})
    return call, response


def _on(node, sid: str) -> bool:
    return any(s["sid"] == sid for s in node.call("GET", "/sessions")[1]["sessions"])


def _counted(node_id: str, sessions: int) -> None:
    wait_until(lambda: _node(node_id).get("sessions") == sessions, timeout=30,
               what=f"{node_id}'s heartbeat counting {sessions} session(s)")


def test_sessions_go_to_the_node_with_most_room_and_are_stopped_where_they_are(
        as_user, two_nodes):
    a, b = two_nodes["node-a"], two_nodes["node-b"]

    _, first = _start(as_user, 1)
    assert first.status_code == 200, first.content
    assert _on(b, first.json()["sid"])  # 2 free on b, 1 on a
    _counted("node-b", 1)
    _, second = _start(as_user, 2)
    assert second.status_code == 200, second.content
    assert _on(a, second.json()["sid"])  # 1 free each: the first node id
    _counted("node-a", 1)
    _, third = _start(as_user, 3)
    assert third.status_code == 200, third.content
    assert _on(b, third.json()["sid"])
    _counted("node-b", 2)

    _, fourth = _start(as_user, 4)
    assert fourth.status_code == 503, fourth.content
    assert fourth.json()["error"]["code"] == "recorder_busy"

    listed = as_user("root", admin=True).get("/api/recording/status").json()["sessions"]
    assert sorted(s["sid"] for s in listed) == sorted(
        r.json()["sid"] for r in (first, second, third))

    stopped = as_user("caller2").post("/api/recording/stop", {"sid": second.json()["sid"]})
    assert stopped.status_code == 200, stopped.content
    assert stopped.json()["firebase"]["firestoreId"] == second.json()["sid"]
    document = firestore_client().collection("recordings").document(second.json()["sid"]).get()
    assert (document.get("status"), document.get("recorderNode")) == ("completed", "node-a")
    by_channel = as_user("caller3").post("/api/recording/stop",
                                         {"channel": third.json()["channel"]})
    assert by_channel.status_code == 200, by_channel.content
    assert by_channel.json()["sid"] == third.json()["sid"]
    _counted("node-a", 0)

    _, fifth = _start(as_user, 5)  # room again on node-a
    assert fifth.status_code == 200, fifth.content
    assert _on(a, fifth.json()["sid"])


def test_a_node_that_shuts_down_leaves_and_none_healthy_is_recorder_unavailable(
        as_user, two_nodes):
    a, b = two_nodes["node-a"], two_nodes["node-b"]
    a.proc.send_signal(signal.SIGTERM)  # a clean shutdown deregisters
    assert a.proc.wait(timeout=60) == 0
    assert _node("node-a") == {}

    _, placed = _start(as_user, 1)
    assert placed.status_code == 200, placed.content
    assert _on(b, placed.json()["sid"])

    b.kill_hard()  # a crash: its document stays, its heartbeat goes stale
    assert _node("node-b")["nodeId"] == "node-b"
    admin = as_user("root", admin=True)
    wait_until(lambda: "No recorder node is healthy" in admin.get("/api/recording/status")
               .json().get("error", {}).get("message", ""), timeout=30,
               what="node-b's heartbeat going stale")

    _, refused = _start(as_user, 2)
    assert refused.status_code == 503, refused.content
    assert refused.json()["error"]["code"] == "recorder_unavailable"


def test_a_failed_upload_is_retried_by_the_node_that_recorded_it(
        as_user, start_recorder, settings, tmp_path):
    a = start_recorder(RECORDINGS_DIR=str(tmp_path / "node-a"), RECORDER_NODE_ID="node-a",
                       RECORDER_MAX_SESSIONS="2", RECORDER_HEARTBEAT_SECONDS="0.5",
                       **storage_down())
    b = start_recorder(RECORDINGS_DIR=str(tmp_path / "node-b"), RECORDER_NODE_ID="node-b",
                       RECORDER_MAX_SESSIONS="1", RECORDER_HEARTBEAT_SECONDS="0.5")
    for node_id, recorder in (("node-a", a), ("node-b", b)):
        wait_until(lambda n=node_id, r=recorder: _node(n).get("url") == r.base, timeout=30,
                   what=f"{node_id} registered")
    settings.DEBUG, settings.RECORDER_SERVICE_URL, settings.RECORDER_NODES = True, "", True
    settings.RECORDER_HEARTBEAT_SECONDS = 60  # node-b stays "healthy" after it dies below
    settings.RECORDER_SECRET = start_recorder.secret
    recorder_client._http.cache_clear()

    _, started = _start(as_user, 1)
    assert started.status_code == 200, started.content
    sid, filename = started.json()["sid"], started.json()["filename"]
    assert _on(a, sid)  # more room on node-a, whose Storage is down
    sidecar = tmp_path / "node-a" / filename.replace(".webm", ".json")
    wait_until(lambda: json.loads(sidecar.read_text())["chunks"] >= 2, timeout=30,
               what="two chunks on node-a")
    stopped = as_user("caller1").post("/api/recording/stop", {"sid": sid})
    assert (stopped.status_code, stopped.json()["status"]) == (200, "failed"), stopped.content
    document = firestore_client().collection("recordings").document(sid)
    assert (document.get().get("status"), document.get().get("recorderNode")) == (
        "failed", "node-a")
    b.kill_hard()  # asking every node would now fail on node-b

    retried = as_user("caller1").post(f"/api/recordings/{sid}/retry-upload", {})

    assert retried.status_code == 202, retried.content
    wait_until(lambda: json.loads(sidecar.read_text())["retryCount"] == 2, timeout=60,
               what="node-a retrying the upload (Storage still down there)")
    recorder_client._http.cache_clear()


def test_health_reports_each_node_and_the_free_capacity(as_user, client, two_nodes, settings):
    a, b = two_nodes["node-a"], two_nodes["node-b"]
    _, placed = _start(as_user, 1)
    assert placed.status_code == 200, placed.content
    _counted("node-b", 1)

    response = client.get("/api/health")
    assert response.status_code == 200
    recorder = response.json()["recorder"]
    assert (recorder["status"], recorder["capacity"], recorder["sessions"],
            recorder["freeCapacity"]) == ("ok", 3, 1, 2)
    listed = {node["nodeId"]: node for node in recorder["nodes"]}
    assert [(n["url"], n["status"], n["healthy"], n["capacity"], n["sessions"], n["free"],
             n["browser"]) for n in (listed["node-a"], listed["node-b"])] == [
        (a.base, "ok", True, 1, 0, 1, "up"), (b.base, "ok", True, 2, 1, 1, "up")]
    assert all(0 <= node["heartbeatAgeSeconds"] < 30 for node in listed.values())
    assert a.secret not in response.content.decode()

    a.kill_hard()
    settings.RECORDER_HEARTBEAT_SECONDS = 60  # its last heartbeat still counts as fresh
    recorder = client.get("/api/health").json()["recorder"]
    dead = next(node for node in recorder["nodes"] if node["nodeId"] == "node-a")
    assert (dead["status"], dead["healthy"], dead["error"]) == ("down", True, "ConnectError")
    assert (recorder["status"], recorder["freeCapacity"]) == ("ok", 1)

    settings.RECORDER_HEARTBEAT_SECONDS = 0.5
    wait_until(lambda: [n["status"] for n in client.get("/api/health").json()["recorder"]
                        ["nodes"]] == ["stale", "ok"], timeout=30, what="node-a going stale")
    b.kill_hard()
    wait_until(lambda: client.get("/api/health").json()["recorder"]["status"] == "down",
               timeout=30, what="no node left")
    body = client.get("/api/health").json()
    assert (body["status"], body["recorder"]["error"], body["recorder"]["freeCapacity"]) == (
        "ok", "no_healthy_node", 0)


def test_the_sweep_retries_on_each_node_and_reports_one_that_is_down(
        as_user, client, start_recorder, settings, tmp_path):
    down = storage_down()
    a = start_recorder(RECORDINGS_DIR=str(tmp_path / "node-a"), RECORDER_NODE_ID="node-a",
                       RECORDER_MAX_SESSIONS="1", RECORDER_HEARTBEAT_SECONDS="0.5", **down)
    b = start_recorder(RECORDINGS_DIR=str(tmp_path / "node-b"), RECORDER_NODE_ID="node-b",
                       RECORDER_MAX_SESSIONS="2", RECORDER_HEARTBEAT_SECONDS="0.5", **down)
    for node_id, recorder in (("node-a", a), ("node-b", b)):
        wait_until(lambda n=node_id, r=recorder: _node(n).get("url") == r.base, timeout=30,
                   what=f"{node_id} registered")
    settings.DEBUG, settings.RECORDER_SERVICE_URL, settings.RECORDER_NODES = True, "", True
    settings.RECORDER_SECRET = start_recorder.secret
    settings.RECORDER_HEARTBEAT_SECONDS = 0.5
    recorder_client._http.cache_clear()
    sidecars = {}
    for n, node_id, node in ((1, "node-b", b), (2, "node-a", a)):  # most room first
        _, started = _start(as_user, n)
        assert started.status_code == 200, started.content
        assert _on(node, started.json()["sid"])
        _counted(node_id, 1)
        sidecars[node_id] = (n, started.json()["sid"], tmp_path / node_id / started.json()[
            "filename"].replace(".webm", ".json"))
    for node_id, (n, sid, sidecar) in sidecars.items():
        wait_until(lambda s=sidecar: json.loads(s.read_text())["chunks"] >= 2, timeout=30,
                   what=f"two chunks on {node_id}")
        stopped = as_user(f"caller{n}").post("/api/recording/stop", {"sid": sid})
        assert stopped.json()["status"] == "failed", stopped.content
    sidecars = {node_id: sidecar for node_id, (_n, _sid, sidecar) in sidecars.items()}
    b.kill_hard()
    settings.RECORDER_HEARTBEAT_SECONDS = 60  # node-b looks healthy but does not answer

    response = post_json(client, "/api/call/timeout/sweep", {},
                         {"X-Ops-Key": settings.OPS_API_KEY})

    assert response.status_code == 200, response.content
    part = response.json()["report"]["recorderRetries"]
    assert "error" not in part, part
    assert part["retrying"] == 1
    assert part["nodes"]["node-a"] == {"retrying": 1}
    assert (part["nodes"]["node-b"]["error"], part["nodes"]["node-b"]["recordings"]) == (
        "recorder_unavailable", 1)
    wait_until(lambda: json.loads(sidecars["node-a"].read_text())["retryCount"] == 2,
               timeout=60, what="node-a retrying its upload (Storage still down there)")
    assert json.loads(sidecars["node-b"].read_text())["retryCount"] == 1
    recorder_client._http.cache_clear()


@pytest.mark.pure
def test_replicas_of_one_service_register_each_at_its_own_address(monkeypatch):
    import socket

    from recorder.config import Settings

    monkeypatch.setenv("RECORDER_ALLOW_NO_SECRET", "1")
    monkeypatch.setenv("RECORDER_HOST", "0.0.0.0")
    monkeypatch.setenv("RECORDER_NODE_ID", "auto")
    monkeypatch.setenv("RECORDER_NODE_URL", "http://{ip}:3100")
    monkeypatch.setattr(socket, "gethostname", lambda: "c0ffee123456")
    monkeypatch.setattr(socket, "gethostbyname",
                        lambda name: {"c0ffee123456": "172.18.0.7"}[name])
    settings = Settings.from_env()
    assert (settings.node_id, settings.node_url) == ("c0ffee123456-3100",
                                                     "http://172.18.0.7:3100")
    monkeypatch.setenv("RECORDER_NODE_URL", "http://{hostname}:3100/")
    assert Settings.from_env().node_url == "http://c0ffee123456:3100"
