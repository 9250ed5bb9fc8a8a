"""A stand-in for Firebase Cloud Messaging HTTP v1 and for Google's OAuth 2.0 token endpoint,
speaking their wire protocol on loopback so the server's real FCM client (google-auth's
service-account credentials + `AuthorizedSession`) runs unchanged against it. Production and
tests differ only in `FCM_BASE_URL` and the service account's `token_uri`.

    fake = FakeFCM(project_id="demo-memharbor-test").start()
    info = fake.service_account_info()          # a Google service-account JSON, as a dict
    # POST {fake.base_url}/token                               (jwt-bearer grant)
    # POST {fake.base_url}/v1/projects/<project>/messages:send (Bearer <access token>)
    fake.unregistered.add("tok")                # 404 NOT_FOUND, FcmError UNREGISTERED
    fake.fail_with["tok"] = [(503, "UNAVAILABLE", 1)]   # answered once, then consumed
    fake.stop()

Error bodies follow Google's shape, `{"error": {"code", "message", "status", "details"?}}`;
where Google adds an FCM reason it is a detail `{"@type": FCM_ERROR_TYPE, "errorCode": ...}`.
As with the real API, not every 400 carries one (a non-string data value only has a
`google.rpc.BadRequest` detail; an oversized payload has no detail): classify by the FcmError
`errorCode` when present, else by `error.status`.
"""

from __future__ import annotations

import json
import re
import secrets
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, quote

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

FCM_SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
# google-auth always puts Google's own token endpoint in `aud`, whatever `token_uri` says.
GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"
_ACCEPTED_AUDIENCES = {GOOGLE_TOKEN_URI, "https://www.googleapis.com/oauth2/v4/token",
                       "https://accounts.google.com/o/oauth2/token"}
FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
BAD_REQUEST_TYPE = "type.googleapis.com/google.rpc.BadRequest"
ERROR_INFO_TYPE = "type.googleapis.com/google.rpc.ErrorInfo"
ACCESS_TOKEN_LIFETIME = 3599
MAX_ASSERTION_LIFETIME = 3600
CLOCK_SKEW = 300
MAX_DATA_BYTES = 4096  # keys + values of `data`, UTF-8
MAX_TOPIC_DATA_BYTES = 2048
MAX_TTL_SECONDS = 2_419_200  # 4 weeks
ANDROID_PRIORITIES = {"NORMAL", "HIGH", "normal", "high"}

_SEND_PATH = re.compile(r"/v1/projects/([^/]+)/messages:send")
_DURATION = re.compile(r"(-?)(\d+)(?:\.(\d{1,9}))?s")
_TOPIC = re.compile(r"(?:/topics/)?[a-zA-Z0-9\-_.~%]+")
_REQUEST_FIELDS = {"message", "validate_only", "validateOnly"}
_MESSAGE_FIELDS = {"name", "data", "notification", "android", "webpush", "apns", "fcm_options",
                   "fcmOptions", "token", "topic", "condition"}
_TARGETS = ("token", "topic", "condition")

_STATUS = {  # HTTP status -> (google.rpc status, Google's usual message)
    400: ("INVALID_ARGUMENT", "Request contains an invalid argument."),
    401: ("UNAUTHENTICATED", "Request had invalid authentication credentials. Expected OAuth 2 "
          "access token, login cookie or other valid authentication credential. See "
          "https://developers.google.com/identity/sign-in/web/devconsole-project."),
    403: ("PERMISSION_DENIED", "The caller does not have permission"),
    404: ("NOT_FOUND", "Requested entity was not found."),
    429: ("RESOURCE_EXHAUSTED", "Quota exceeded for sending messages."),
    500: ("INTERNAL", "Internal error encountered."),
    503: ("UNAVAILABLE", "The service is currently unavailable."),
}


def google_error(status: int, message: str | None = None, *, fcm_code: str | None = None,
                 details: list | None = None) -> dict:
    """Google's error body; `fcm_code` adds the FcmError detail."""
    name, default = _STATUS.get(status, ("UNKNOWN", "Unknown error."))
    error = {"code": status, "message": message or default, "status": name}
    extra = [{"@type": FCM_ERROR_TYPE, "errorCode": fcm_code}] if fcm_code else []
    extra += details or []
    if extra:
        error["details"] = extra
    return {"error": error}


def fcm_error_code(body) -> str | None:
    """The FcmError `errorCode` of an error body, if it has one."""
    for detail in ((body or {}).get("error") or {}).get("details") or []:
        if isinstance(detail, dict) and detail.get("@type") == FCM_ERROR_TYPE:
            return detail.get("errorCode")
    return None


def _bad_request(field_path: str, description: str, *, message: str | None = None,
                 fcm_code: str | None = None) -> tuple[int, dict]:
    violation = {"@type": BAD_REQUEST_TYPE,
                 "fieldViolations": [{"field": field_path, "description": description}]}
    return 400, google_error(400, message or description, fcm_code=fcm_code, details=[violation])


@dataclass
class SentMessage:
    """One request to messages:send and what the fake answered."""
    token: str | None            # message.token (None for topic/condition or unparsable bodies)
    message: dict | None         # the `message` object as sent
    access_token: str | None     # the Bearer token presented
    status: int                  # HTTP status answered
    headers: dict[str, str]      # request headers
    response: dict = field(default_factory=dict)
    validate_only: bool = False
    note: str = ""               # why the fake answered as it did (for failing tests)


@dataclass
class TokenRequest:
    """One request to the token endpoint."""
    claims: dict | None          # the assertion's claims, when its signature verified
    status: int
    response: dict = field(default_factory=dict)


class FakeFCM:
    """FCM HTTP v1 + OAuth token endpoint for `project_id`, on 127.0.0.1 (free port)."""

    def __init__(self, *, project_id: str):
        self.project_id = project_id
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.private_key_id = secrets.token_hex(20)
        self.client_email = f"memharbor-test@{project_id}.iam.gserviceaccount.com"
        self.client_id = str(secrets.randbelow(9 * 10**20) + 10**20)
        # switches
        self.unregistered: set[str] = set()
        self.invalid: set[str] = set()
        self.fail_with: dict[str, list[tuple[int, str | None, float | None]]] = {}
        self.delay: dict[str, float] = {}
        # records
        self.messages: list[SentMessage] = []
        self.access_tokens_issued: list[str] = []
        self.token_requests: list[TokenRequest] = []
        self._valid_tokens: dict[str, set[str]] = {}  # access token -> its scopes
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.1}, daemon=True,
                                        name="fake-fcm")

    # lifecycle ---------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}"

    @property
    def token_uri(self) -> str:
        return f"{self.base_url}/token"

    def start(self) -> FakeFCM:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:  # idle keep-alive connections end now, not at their timeout
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._thread.join(timeout=5)

    def __enter__(self) -> FakeFCM:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # helpers for tests ---------------------------------------------------------------------

    def service_account_info(self) -> dict:
        """A service-account JSON (as a dict) whose key this fake trusts."""
        pem = self.key.private_bytes(serialization.Encoding.PEM,
                                     serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()).decode()
        return {
            "type": "service_account",
            "project_id": self.project_id,
            "private_key_id": self.private_key_id,
            "private_key": pem,
            "client_email": self.client_email,
            "client_id": self.client_id,
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": self.token_uri,
            "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
            "client_x509_cert_url": "https://www.googleapis.com/robot/v1/metadata/x509/"
                                    + quote(self.client_email, safe=""),
            "universe_domain": "googleapis.com",
        }

    def revoke_access_tokens(self) -> None:
        """Every access token issued so far now gets 401 UNAUTHENTICATED."""
        with self._lock:
            self._valid_tokens.clear()

    def reset(self) -> None:
        """Forget records and switches (issued tokens stay valid)."""
        with self._lock:
            self.messages.clear()
            self.access_tokens_issued.clear()
            self.token_requests.clear()
            self.unregistered.clear()
            self.invalid.clear()
            self.fail_with.clear()
            self.delay.clear()

    def sent_to(self, token: str) -> list[SentMessage]:
        with self._lock:
            return [m for m in self.messages if m.token == token]

    # token endpoint ------------------------------------------------------------------------

    def _token(self, headers, raw: bytes) -> tuple[int, dict, dict]:
        claims = None
        status, body = self._grant(headers, raw)
        if status == 200:
            claims = body.pop("_claims")
        with self._lock:
            self.token_requests.append(TokenRequest(claims, status, body))
        return status, body, {"Cache-Control": "no-cache, no-store, max-age=0, must-revalidate",
                              "Pragma": "no-cache"}

    def _grant(self, headers, raw: bytes) -> tuple[int, dict]:
        def refuse(error: str, description: str) -> tuple[int, dict]:
            return 400, {"error": error, "error_description": description}

        ctype = (headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if ctype != "application/x-www-form-urlencoded":
            return refuse("invalid_request", "Bad Request")
        form = dict(parse_qsl(raw.decode("utf-8", "replace")))
        grant_type = form.get("grant_type", "")
        if grant_type != JWT_BEARER_GRANT:
            return refuse("unsupported_grant_type", f"Invalid grant_type: {grant_type}")
        assertion = form.get("assertion")
        if not assertion:
            return refuse("invalid_request", "Missing required parameter: assertion")
        try:
            header = jwt.get_unverified_header(assertion)
        except jwt.PyJWTError:
            return refuse("invalid_grant", "Invalid JWT: Malformed token.")
        if header.get("alg") != "RS256" or header.get("kid") != self.private_key_id:
            return refuse("invalid_grant", "Invalid JWT Signature.")
        try:
            claims = jwt.decode(assertion, self.key.public_key(), algorithms=["RS256"],
                                options={"verify_aud": False, "verify_exp": False,
                                         "verify_iat": False, "verify_nbf": False})
        except jwt.InvalidSignatureError:
            return refuse("invalid_grant", "Invalid JWT Signature.")
        except jwt.PyJWTError as exc:
            return refuse("invalid_grant", f"Invalid JWT: {exc}")
        if claims.get("iss") != self.client_email:
            return refuse("invalid_grant", "Invalid grant: account not found")
        if claims.get("aud") not in _ACCEPTED_AUDIENCES | {self.token_uri}:
            return refuse("invalid_grant", "Invalid JWT: Failed audience check.")
        iat, exp, now = claims.get("iat"), claims.get("exp"), time.time()
        if (not isinstance(iat, int) or not isinstance(exp, int) or exp <= iat
                or exp - iat > MAX_ASSERTION_LIFETIME or exp < now - CLOCK_SKEW
                or iat > now + CLOCK_SKEW):
            return refuse("invalid_grant", "Invalid JWT: Token must be a short-lived token "
                          "(60 minutes) and in a reasonable timeframe. Check your iat and exp "
                          "values in the JWT claim.")
        scopes = set(str(claims.get("scope") or "").split())
        if not scopes:
            return refuse("invalid_scope", "Invalid OAuth scope or ID token audience provided.")
        access_token = "ya29.fake-" + secrets.token_urlsafe(48)
        with self._lock:
            self._valid_tokens[access_token] = scopes
            self.access_tokens_issued.append(access_token)
        return 200, {"access_token": access_token, "expires_in": ACCESS_TOKEN_LIFETIME,
                     "token_type": "Bearer", "_claims": claims}

    # messages:send -------------------------------------------------------------------------

    def _send(self, project: str, headers, raw: bytes) -> tuple[int, dict, dict]:
        auth = headers.get("Authorization") or ""
        access_token = auth[7:].strip() if auth[:7].lower() == "bearer " else None
        record = SentMessage(token=None, message=None, access_token=access_token, status=0,
                             headers=dict(headers.items()))
        status, body, extra = self._answer(project, access_token, raw, record)
        record.status, record.response = status, body
        with self._lock:
            self.messages.append(record)
        return status, body, extra

    def _answer(self, project, access_token, raw, record) -> tuple[int, dict, dict]:
        with self._lock:
            scopes = self._valid_tokens.get(access_token) if access_token else None
        if scopes is None:
            record.note = "access token missing, unknown or revoked"
            return 401, google_error(401), {
                "WWW-Authenticate": 'Bearer realm="https://accounts.google.com/", '
                                    'error="invalid_token"'}
        if not scopes & {FCM_SCOPE, CLOUD_PLATFORM_SCOPE}:
            record.note = f"access token scopes {sorted(scopes)} do not allow FCM"
            return 403, google_error(403, "Request had insufficient authentication scopes.",
                                     details=[{"@type": ERROR_INFO_TYPE,
                                               "reason": "ACCESS_TOKEN_SCOPE_INSUFFICIENT",
                                               "domain": "googleapis.com"}]), {}
        if project != self.project_id:
            record.note = f"project {project!r} is not {self.project_id!r}"
            return 403, google_error(
                403, "Permission 'cloudmessaging.messages.create' denied on resource "
                f"'//cloudresourcemanager.googleapis.com/projects/{project}' "
                "(or it may not exist).",
                details=[{"@type": ERROR_INFO_TYPE, "reason": "IAM_PERMISSION_DENIED",
                          "domain": "cloudresourcemanager.googleapis.com",
                          "metadata": {"permission": "cloudmessaging.messages.create",
                                       "resource": f"projects/{project}"}}]), {}
        try:
            request = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            record.note = "body is not JSON"
            return (*_bad_request("", f"Invalid JSON payload received. {exc}"), {})
        if isinstance(request, dict) and isinstance(request.get("message"), dict):
            record.message = request["message"]
            token = record.message.get("token")
            record.token = token if isinstance(token, str) else None
            record.validate_only = request.get("validate_only",
                                               request.get("validateOnly")) is True
        token = record.token

        pause = self.delay.get(token) if token is not None else None
        if pause:
            self._stopping.wait(pause)
        with self._lock:
            planned = self.fail_with.get(token) if token is not None else None
            failure = planned.pop(0) if planned else None
        if failure:
            status, fcm_code, retry_after = failure
            record.note = f"fail_with {failure}"
            extra = {"Retry-After": str(int(retry_after))} if retry_after is not None else {}
            return status, google_error(status, fcm_code=fcm_code), extra

        problem = self._validate(request)
        if problem:
            (status, body), record.note = problem
            return status, body, {}
        if token in self.unregistered:
            record.note = "token is in .unregistered"
            return 404, google_error(404, fcm_code="UNREGISTERED"), {}
        if token in self.invalid:
            record.note = "token is in .invalid"
            return 400, google_error(
                400, "The registration token is not a valid FCM registration token",
                fcm_code="INVALID_ARGUMENT"), {}
        record.note = "validated only" if record.validate_only else "sent"
        message_id = ("fake_message_id" if record.validate_only
                      else f"0:{int(time.time() * 1000)}%{secrets.token_hex(8)}")
        return 200, {"name": f"projects/{self.project_id}/messages/{message_id}"}, {}

    def _validate(self, request) -> tuple[tuple[int, dict], str] | None:
        """What the real API would refuse in this body, as ((status, body), note)."""
        def unknown(name, where):
            text = (f'Invalid JSON payload received. Unknown name "{name}" at \'{where}\': '
                    "Cannot find field.")
            return _bad_request(where, text), f"unknown field {where}.{name}"

        if not isinstance(request, dict):
            return _bad_request("", "Invalid JSON payload received. Expected an object."), \
                "body is not an object"
        for name in request:
            if name not in _REQUEST_FIELDS:
                return unknown(name, "")
        validate_only = request.get("validate_only", request.get("validateOnly", False))
        if not isinstance(validate_only, bool):
            return _bad_request("validate_only", "Invalid value at 'validate_only' (TYPE_BOOL), "
                                + json.dumps(validate_only)), "validate_only is not a bool"
        message = request.get("message")
        if not isinstance(message, dict):
            return _bad_request("message", "Recipient of the message is not set.",
                                fcm_code="INVALID_ARGUMENT"), "no message object"
        for name in message:
            if name not in _MESSAGE_FIELDS:
                return unknown(name, "message")
        targets = [t for t in _TARGETS if t in message]
        if not targets:
            return _bad_request("message", "Recipient of the message is not set.",
                                fcm_code="INVALID_ARGUMENT"), "no token/topic/condition"
        if len(targets) > 1:
            text = (f"Invalid JSON payload received. Oneof field 'target' is already set. "
                    f"Cannot set '{targets[1]}'")
            return _bad_request("message", text), f"several targets {targets}"
        target = targets[0]
        value = message[target]
        if not isinstance(value, str):
            return _bad_request(f"message.{target}", f"Invalid value at 'message.{target}' "
                                f"(TYPE_STRING), {json.dumps(value)}"), f"{target} not a string"
        if target == "token" and not value:
            return _bad_request("message.token", "Invalid registration token",
                                message=_STATUS[400][1], fcm_code="INVALID_ARGUMENT"), \
                "empty registration token"
        if target == "topic" and not _TOPIC.fullmatch(value):
            return _bad_request("message.topic", "Invalid topic name",
                                message=_STATUS[400][1], fcm_code="INVALID_ARGUMENT"), \
                "bad topic name"

        problem = _check_string_map(message, "data", "message.data")
        if problem:
            return problem
        data = message.get("data") or {}
        for key in data:
            if key in ("from", "gcm") or key.lower().startswith("google"):
                return _bad_request("message.data", f"Invalid data payload key: {key}",
                                    message=_STATUS[400][1], fcm_code="INVALID_ARGUMENT"), \
                    f"reserved data key {key!r}"
        size = sum(len(k.encode()) + len(v.encode()) for k, v in data.items())
        limit = MAX_TOPIC_DATA_BYTES if target == "topic" else MAX_DATA_BYTES
        if size > limit:
            return (400, google_error(400)), f"data payload {size} bytes > {limit}"

        android = message.get("android")
        if android is not None:
            if not isinstance(android, dict):
                return _bad_request("message.android", "Invalid value at 'message.android' "
                                    f"(type.googleapis.com/google.firebase.fcm.v1.AndroidConfig),"
                                    f" {json.dumps(android)}"), "android is not an object"
            problem = _check_string_map(android, "data", "message.android.data")
            if problem:
                return problem
            priority = android.get("priority")
            if priority is not None and priority not in ANDROID_PRIORITIES:
                return _bad_request("message.android.priority",
                                    "Invalid value at 'message.android.priority' (type.googleapis"
                                    ".com/google.firebase.fcm.v1.AndroidMessagePriority), "
                                    + json.dumps(priority)), f"android.priority {priority!r}"
            ttl = android.get("ttl")
            if ttl is not None:
                match = _DURATION.fullmatch(ttl) if isinstance(ttl, str) else None
                if not match:
                    return _bad_request("message.android.ttl",
                                        "Invalid value at 'message.android.ttl' (type.googleapis"
                                        ".com/google.protobuf.Duration), " + json.dumps(ttl)), \
                        f"android.ttl {ttl!r} is not a duration like '60s'"
                seconds = float(ttl[:-1])
                if seconds < 0 or seconds > MAX_TTL_SECONDS:
                    return _bad_request("message.android.ttl",
                                        "TTL must be between 0 and 2419200 seconds (4 weeks)",
                                        message=_STATUS[400][1], fcm_code="INVALID_ARGUMENT"), \
                        f"android.ttl {ttl!r} out of range"
        return None


def _check_string_map(parent: dict, name: str, path: str):
    value = parent.get(name)
    if value is None:
        return None
    if not isinstance(value, dict):
        return _bad_request(path, f"Invalid value at '{path}' (type.googleapis.com/"
                            f"google.protobuf.Struct), {json.dumps(value)}"), f"{path} not a map"
    for index, (key, item) in enumerate(value.items()):
        if not isinstance(item, str):
            field_path = f"{path}[{index}].value"
            return _bad_request(field_path, f"Invalid value at '{field_path}' (TYPE_STRING), "
                                f"{json.dumps(item)}"), f"{path}[{key!r}] is not a string"
    return None


def _handler_for(fake: FakeFCM):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = 30  # an idle keep-alive connection is closed after this

        def setup(self):
            super().setup()
            with fake._lock:
                fake._connections.add(self.connection)

        def finish(self):
            with fake._lock:
                fake._connections.discard(self.connection)
            super().finish()

        def do_POST(self):  # noqa: N802 - http.server's naming
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            path = self.path.split("?", 1)[0]
            send = _SEND_PATH.fullmatch(path)
            if path == "/token":
                answer = fake._token(self.headers, raw)
            elif send:
                answer = fake._send(send.group(1), self.headers, raw)
            else:
                answer = (404, google_error(404), {})
            if fake._stopping.is_set():  # stopped mid-request (e.g. during a delay): hang up
                self.close_connection = True
                return
            self._reply(*answer)

        def do_GET(self):  # noqa: N802
            self._reply(404, google_error(404), {})

        def _reply(self, status: int, body: dict, extra: dict):
            data = json.dumps(body, indent=2).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=UTF-8")
            self.send_header("Content-Length", str(len(data)))
            for name, value in extra.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    return Handler
