"""Real emulators, started once per test session on free ports and wiped between tests."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from django.conf import settings
from django.test import Client
from google.cloud import storage
from google.oauth2 import service_account
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings

from api.auth import verified_tokens
from calls.services import _token_members
from devstack.emulators import Emulators, _http_ok, free_port, spawn, stop, wait_until
from push import services as push_services
from recorder_bridge import client as recorder_client
from tests.fakes.apns import FakeAPNs
from tests.fakes.fcm import FakeFCM
from tests.fakes.firebase_auth import FakeSecureToken
from tests.helpers import queries_checked_against_the_index_file

# Property tests: no wall-clock deadline, no example database in the work tree, and the
# autouse per-test fixtures below are fine to share between a test's examples.
hypothesis_settings.register_profile(
    "memharbor", deadline=None, database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture])
hypothesis_settings.load_profile("memharbor")


@pytest.fixture(scope="session")
def emulators(tmp_path_factory):
    stack = Emulators(project_id=settings.FIREBASE_PROJECT_ID,
                      bucket=settings.FIREBASE_STORAGE_BUCKET,
                      log_dir=tmp_path_factory.mktemp("emulator-logs"),
                      rules=Path(settings.BASE_DIR) / "firestore.rules").start()
    for name, value in stack.env().items():
        os.environ[name] = value
    settings.FIRESTORE_EMULATOR_HOST = stack.firestore_host
    settings.FIREBASE_STORAGE_EMULATOR_HOST = stack.storage_url
    yield stack
    stack.stop()


@pytest.fixture(scope="session")
def securetoken():
    fake = FakeSecureToken(settings.FIREBASE_PROJECT_ID).start()
    settings.FIREBASE_AUTH_CERT_URL = fake.url
    os.environ["FIREBASE_AUTH_CERT_URL"] = fake.url
    yield fake
    fake.stop()


APNS_TEAM, APNS_KEY_ID, APNS_BUNDLE = "TEAM123456", "KEY1234567", "org.memharbor.app"


def _use_settings(**values) -> None:
    """Set for the whole session: Django settings and (for child servers) the environment."""
    for name, value in values.items():
        setattr(settings, name, value)
        os.environ[name] = str(value)


@pytest.fixture(scope="session")
def apns():
    """Fake APNs (HTTP/2 + TLS, throwaway CA), with the server configured to use it."""
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    fake = FakeAPNs(team_id=APNS_TEAM, key_id=APNS_KEY_ID, bundle_id=APNS_BUNDLE,
                    voip_types={"incoming_call"}, public_key_pem=key.public_key().public_bytes(
                        serialization.Encoding.PEM,
                        serialization.PublicFormat.SubjectPublicKeyInfo)).start()
    _use_settings(APNS_TEAM_ID=APNS_TEAM, APNS_KEY_ID=APNS_KEY_ID, APNS_BUNDLE_ID=APNS_BUNDLE,
                  APNS_KEY_CONTENT=pem.replace("\n", "\\n"), APNS_BASE_URL=fake.base_url,
                  APNS_CA_FILE=fake.ca_file)
    yield fake
    fake.stop()


@pytest.fixture(scope="session")
def fcm():
    """Fake FCM v1 and its OAuth token endpoint, with the server configured to use them."""
    fake = FakeFCM(project_id=settings.FIREBASE_PROJECT_ID).start()
    _use_settings(FCM_SERVICE_ACCOUNT_JSON=json.dumps(fake.service_account_info()),
                  FCM_BASE_URL=fake.base_url, FCM_PROJECT_ID=settings.FIREBASE_PROJECT_ID)
    yield fake
    fake.stop()


@pytest.fixture(scope="session")
def query_index_gaps():
    """Queries sent by this process that firestore.indexes.json has no index for (the
    emulator runs them; production Firestore would refuse them)."""
    with queries_checked_against_the_index_file() as gaps:
        yield gaps


@pytest.fixture
def stack(emulators, securetoken, apns, fcm, query_index_gaps):
    """Every test of the server starts with empty Firestore, Storage and uploads directory,
    quiet fakes and no caches, and fails if it made the server send a push Apple or iOS
    would punish (a VoIP push that is not an incoming call, a background push at priority
    10, ...) or a query firestore.indexes.json has no index for."""
    query_index_gaps.clear()
    emulators.wipe()
    uploads = Path(settings.RECORDING_UPLOADS_DIR)
    shutil.rmtree(uploads, ignore_errors=True)
    Path(settings.FILE_UPLOAD_TEMP_DIR).mkdir(parents=True, exist_ok=True)
    verified_tokens.clear()
    _token_members.clear()
    recorder_client._http.cache_clear()
    securetoken.available = True
    apns.reset()
    fcm.reset()
    push_services.apns_client.cache_clear()
    push_services.fcm_client.cache_clear()
    yield
    recorder_client._http.cache_clear()
    assert not apns.violations, "pushes Apple/iOS would punish:\n" + "\n".join(apns.violations)
    assert not query_index_gaps, ("queries without their index in firestore.indexes.json:\n"
                                  + "\n".join(sorted(set(query_index_gaps))))


@pytest.fixture(autouse=True)
def fresh_state(request):
    """The server's tests get `stack`; tests of pure code (marked `pure`) run without the
    emulators, the fakes or Java."""
    if request.node.get_closest_marker("pure") is None:
        request.getfixturevalue("stack")
    yield


@pytest.fixture
def firestore_reads(monkeypatch) -> Counter:
    """Documents this process reads from Firestore, as {(collection, id): times}; counted
    where the client library makes a snapshot of every document a get or query returns."""
    from google.cloud.firestore_v1.base_document import DocumentSnapshot

    reads: Counter = Counter()
    original = DocumentSnapshot.__init__

    def counting(self, reference, *args, **kwargs):
        original(self, reference, *args, **kwargs)
        if reference is not None and kwargs.get("exists", args[1] if len(args) > 1 else True):
            reads[(reference.parent.id, reference.id)] += 1

    monkeypatch.setattr(DocumentSnapshot, "__init__", counting)
    return reads


@pytest.fixture
def client() -> Client:
    return Client(raise_request_exception=False)


@pytest.fixture
def bearer(securetoken):
    """`bearer("alice")` -> headers carrying a valid Firebase ID token for alice."""

    def make(uid: str, *, admin: bool = False) -> dict:
        return {"Authorization": f"Bearer {securetoken.mint(uid, admin=admin)}"}

    return make


@pytest.fixture
def as_user(client, bearer):
    """`as_user("bob").post("/api/call/answer", {...})` / `.get(path)`."""

    class User:
        def __init__(self, uid: str, admin: bool = False):
            self.headers = bearer(uid, admin=admin)

        def post(self, path: str, body, headers: dict | None = None):
            return post_json(client, path, body, {**self.headers, **(headers or {})})

        def get(self, path: str):
            return client.get(path, headers=self.headers)

    return User


def post_json(client: Client, path: str, body, headers: dict | None = None):
    data = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return client.post(path, data=data, content_type="application/json",
                       headers=headers or {})


def api_log_lines() -> list[dict]:
    path = Path(settings.LOG_DIR) / "api.log"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _serve(argv: list[str], bind_variable: str, env_overrides: dict, started: list,
           tmp_path: Path) -> str:
    bind = env_overrides.pop(bind_variable, None) or f"127.0.0.1:{free_port()}"
    port = int(bind.rsplit(":", 1)[1])
    env = {**os.environ, bind_variable: bind, "GUNICORN_WORKERS": "1",
           "DJANGO_SETTINGS_MODULE": "config.settings", **env_overrides}
    log = tmp_path / f"{argv[1].replace('.', '-')}-{port}.log"
    proc = spawn([sys.executable, *argv], log_path=log, env=env)
    started.append(proc)
    base = f"http://127.0.0.1:{port}"
    wait_until(lambda: _http_ok(f"{base}/api/health/live"), timeout=30, what=argv[1],
               proc=proc, log_path=log)
    return base


@pytest.fixture
def start_server(emulators, securetoken, tmp_path):
    """`start_server(**env)` -> base URL of a real gunicorn (config/gunicorn.conf.py) on a
    free loopback port, configured like the test settings plus `env`; stopped after."""
    started: list = []
    yield lambda **env: _serve(["-m", "gunicorn", "-c", "config/gunicorn.conf.py",
                                "config.wsgi:application"], "GUNICORN_BIND", env, started,
                               tmp_path)
    for proc in started:
        stop(proc)


@pytest.fixture
def start_events_server(emulators, securetoken, tmp_path):
    """`start_events_server(**env)` -> base URL of the event-stream server nginx routes
    `/api/analysis/<job>/events` to (`python -m config.events`: uvicorn, Django's ASGI
    application) on a free loopback port, configured like `start_server`; stopped after.
    `.procs`: the processes started."""
    class Start:
        def __init__(self) -> None:
            self.procs: list = []  # what was started, for tests that look at the process

        def __call__(self, **env) -> str:
            return _serve(["-m", "config.events"], "EVENTS_BIND", env, self.procs, tmp_path)

    start = Start()
    yield start
    for proc in start.procs:
        stop(proc)


@pytest.fixture
def any_channel(settings):
    """Tokens for any channel (TOKEN_CHANNEL_POLICY=authenticated), for tests about auth,
    errors and token building rather than about who may join a call."""
    settings.TOKEN_CHANNEL_POLICY = "authenticated"


@pytest.fixture
def signing_bucket():
    """The default bucket through a client holding a throwaway service-account key."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    credentials = service_account.Credentials.from_service_account_info({
        "type": "service_account", "project_id": settings.FIREBASE_PROJECT_ID,
        "private_key_id": "throwaway", "private_key": pem,
        "client_email": "recorder@demo-memharbor-test.iam.gserviceaccount.com",
        "token_uri": "http://127.0.0.1:9/token",  # never asked: signing is local
    })
    client = storage.Client(project=settings.FIREBASE_PROJECT_ID, credentials=credentials)
    return client.bucket(settings.FIREBASE_STORAGE_BUCKET)


@dataclass
class Recorder:
    base: str
    secret: str
    recordings: Path
    log: Path
    proc: subprocess.Popen

    def call(self, method: str, path: str, body=None, *, secret: str | None = "default"):
        """(status, JSON body) of one request; `secret=None` sends no secret."""
        headers = {"Content-Type": "application/json"}
        if secret is not None:
            headers["X-Recorder-Secret"] = self.secret if secret == "default" else secret
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base + path, data=data, method=method,
                                         headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def sidecar(self, filename: str) -> dict:
        return json.loads((self.recordings / filename).with_suffix(".json").read_text())

    def kill_hard(self) -> None:
        """SIGKILL the recorder and its Chromium (one process group): a crash."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)


@pytest.fixture
def start_recorder(tmp_path):
    """`start_recorder(**env)` -> a running recorder on a free loopback port with its own
    recordings directory and secret; every recorder started is stopped afterwards."""
    started: list[subprocess.Popen] = []
    recordings = tmp_path / "recordings"
    secret = secrets.token_urlsafe(24)

    def start(**env_overrides) -> Recorder:
        port = free_port()
        env = {**os.environ, "RECORDER_HOST": "127.0.0.1", "RECORDER_PORT": str(port),
               "RECORDER_SECRET": secret, "RECORDINGS_DIR": str(recordings),
               "PYTHONPATH": str(settings.BASE_DIR), **env_overrides}
        env.pop("RECORDER_ALLOW_NO_SECRET", None)
        log = tmp_path / f"recorder-{port}.log"
        proc = spawn([sys.executable, "-m", "recorder"], log_path=log, env=env)
        started.append(proc)
        base = f"http://127.0.0.1:{port}"
        wait_until(lambda: _http_ok(f"{base}/health"), timeout=60, what="recorder",
                   proc=proc, log_path=log)
        return Recorder(base=base, secret=secret, recordings=recordings, log=log, proc=proc)

    start.secret = secret  # for an API server the recorder talks back to
    try:
        yield start
    finally:
        for proc in started:
            stop(proc, grace=30)
