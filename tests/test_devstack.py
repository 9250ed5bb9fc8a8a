"""`make run`'s stack: starts with no .env, answers the README's curl lines, and Ctrl-C
leaves no process and no listening port behind."""

from __future__ import annotations

import io
import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import wave

import pytest

from devstack.emulators import free_port, port_free


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _children_of(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def _post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={
        "Authorization": "Bearer dev:alice", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def _stack_env(tmp_path) -> tuple[dict, dict]:
    """(ports, environment) for `python -m devstack` on free ports, with no .env values."""
    ports = {"FIRESTORE_PORT": free_port(), "STORAGE_PORT": free_port(), "API": free_port(),
             "RECORDER_PORT": free_port(), "ANALYZER_PORT": free_port(), "EVENTS": free_port()}
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MEMHARBOR_", "AGORA_", "FIREBASE_", "FIRESTORE_", "STORAGE_",
                                "AUTH_MODE", "OPS_API_KEY", "DJANGO_SETTINGS_MODULE"))}
    env.update(FIRESTORE_PORT=str(ports["FIRESTORE_PORT"]), STORAGE_PORT=str(ports["STORAGE_PORT"]),
               GUNICORN_BIND=f"127.0.0.1:{ports['API']}", LOG_DIR=str(tmp_path),
               EVENTS_BIND=f"127.0.0.1:{ports['EVENTS']}",
               RECORDER_PORT=str(ports["RECORDER_PORT"]),
               ANALYZER_PORT=str(ports["ANALYZER_PORT"]),
               RECORDINGS_DIR=str(tmp_path / "recordings"))
    return ports, env


def test_run_starts_everything_and_sigint_stops_everything(tmp_path):
    ports, env = _stack_env(tmp_path)
    proc = subprocess.Popen([sys.executable, "-m", "devstack"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL)
    output = []
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            output.append(line)
            if "ready; Ctrl-C stops everything" in line:
                break
        text = "".join(output)
        assert "ready" in text, text
        assert "local development defaults in use" in text and "DEV AUTH IS ON" in text
        base = f"http://127.0.0.1:{ports['API']}"
        try:
            with urllib.request.urlopen(f"{base}/api/health", timeout=10) as response:
                health = json.load(response)
        except urllib.error.HTTPError as exc:
            raise AssertionError(exc.read().decode()) from None
        assert health["status"] == "ok" and health["recorder"]["status"] == "ok"
        # The README's lines: invite as alice (dev auth), then a token for that channel.
        invite = _post(f"{base}/api/call/invite", {
            "group_id": "group1", "caller_id": "alice", "receiver_id": "bob"})
        assert invite["success"] and invite["channelName"].startswith("group1_alice_bob_")
        token = _post(f"{base}/api/token", {"channel": invite["channelName"], "uid": 12345})
        assert token["token"].startswith("007")
        # The event-stream server: the same app (dev auth, JSON errors) for the events path.
        try:
            urllib.request.urlopen(urllib.request.Request(
                f"http://127.0.0.1:{ports['EVENTS']}/api/analysis/nope/events",
                headers={"Authorization": "Bearer dev:alice"}), timeout=10)
            raise AssertionError("an unknown job's events answered 2xx")
        except urllib.error.HTTPError as exc:
            assert exc.code == 404
            assert json.load(exc)["error"]["code"] == "analysis_not_found"
        children = _children_of(proc.pid)
        assert len(children) >= 6  # java, fake-gcs-server, recorder, analyzer, gunicorn, events

        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, rest
        assert "stopped" in rest
        for port in ports.values():
            assert not _listening(port), f"port {port} still listening"
        assert not [pid for pid in children if _alive(pid)]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=30)


def test_demo_stores_a_16_khz_mono_wav_and_stops(tmp_path):
    ports, env = _stack_env(tmp_path)
    proc = subprocess.Popen([sys.executable, "-m", "devstack", "demo"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            stdin=subprocess.DEVNULL)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout] + [lines.put("")],
                     daemon=True).start()
    output = []
    try:
        deadline = time.monotonic() + 420  # emulators, Chromium, the analyzer, a 5 s call
        url = None
        while url is None and time.monotonic() < deadline:
            try:
                line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                break
            if not line:
                break
            output.append(line)
            if "stored WAV: " in line:
                url = line.split("stored WAV: ", 1)[1].strip()
        assert url and url.startswith("http"), "".join(output)
        # The demo stops its stack (and Storage with it) once it has printed the URL: hold
        # it still while the WAV is fetched, then let it finish.
        os.kill(proc.pid, signal.SIGSTOP)
        try:
            with urllib.request.urlopen(url, timeout=30) as response:
                stored = response.read()
        finally:
            os.kill(proc.pid, signal.SIGCONT)
        assert proc.wait(timeout=120) == 0
        while (line := lines.get(timeout=30)) != "":
            output.append(line)
        rest = "".join(output)
        with wave.open(io.BytesIO(stored)) as wav:
            assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (16000, 1, 2)
            frames = wav.getnframes()
        printed_ms = int(re.search(r"duration (\d+) ms", rest).group(1))
        assert frames > 0 and frames / 16 == pytest.approx(printed_ms, abs=1)
        assert "stopped" in rest
        for port in ports.values():
            assert not _listening(port), f"port {port} still listening"
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
            proc.kill()  # its children die with it (PR_SET_PDEATHSIG)
            proc.wait(timeout=30)


def _time_wait_on_a_port() -> int:
    """A port whose server closed a connection first and then stopped: the closed
    connection stays in TIME_WAIT on that port for up to a minute."""
    with socket.socket() as server:
        # as every server of the stack does (gunicorn, aiohttp, the JVM, Go)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port), timeout=5)
        accepted, _ = server.accept()
        accepted.close()  # the server side closes first: it is the one left in TIME_WAIT
        client.recv(1)  # sees the close
        client.close()
    return port


def test_a_port_in_time_wait_is_free_for_the_next_make_run():
    port = _time_wait_on_a_port()
    with socket.socket() as plain:  # what the check did: a bind without SO_REUSEADDR
        try:
            plain.bind(("127.0.0.1", port))
        except OSError:
            pass
        else:
            raise AssertionError("no TIME_WAIT on the port: the test proves nothing")
    assert port_free(port)


def test_a_port_something_listens_on_is_in_use():
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", 0))
        server.listen()
        assert not port_free(server.getsockname()[1])
