"""A stand-in for Apple's APNs provider API that speaks the real wire protocol: HTTP/2 over
TLS (ALPN "h2" only) with a throwaway CA, `POST /3/device/<token>`, ES256 provider JWTs, and
Apple's statuses and `{"reason": ...}` bodies. The server's real APNs client talks to it
exactly as to Apple; only the base URL and the CA file differ.

    fake = FakeAPNs(team_id=..., key_id=..., public_key_pem=..., bundle_id=...).start()
    httpx.Client(http2=True, verify=fake.ca_file).post(f"{fake.base_url}/3/device/{token}", ...)
    fake.stop()

Like Apple: 200 is a HEADERS frame (`:status`, `apns-id`) with END_STREAM and no DATA frame;
errors are HEADERS then one DATA frame with the JSON body. Tests steer it with `unregistered`,
`bad_tokens`, `fail_with`, `delay` and `expire_next()`, and read `requests`, `connections`
and `jwts`.

Beyond what Apple refuses outright, it records in `violations` what Apple or iOS would
silently punish (the push is answered 200, then dropped or the app killed): a background
push without priority 5 or without `content-available: 1` (or with an alert, sound or badge),
an alert push without an alert, and, with `voip_types`, a VoIP push whose payload `type` is
not one of them (iOS kills an app that does not report a VoIP push to CallKit as a call).
Test suites fail a test that leaves a violation.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import re
import select
import shutil
import socket
import ssl
import tempfile
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

TOKEN_MAX_AGE = 3600          # Apple rejects provider tokens whose iat is older than an hour
TOKEN_MIN_REFRESH = 20 * 60   # ...and a connection changing its token more often than this
PAYLOAD_LIMIT = 4096          # bytes, every push type but VoIP
VOIP_PAYLOAD_LIMIT = 5120
COLLAPSE_ID_LIMIT = 64        # bytes
MAX_CONCURRENT_STREAMS = 1000

# apns-push-type -> the topic Apple expects, as a suffix of the bundle ID
PUSH_TYPE_TOPIC_SUFFIX = {
    "alert": "", "background": "", "mdm": "", "widgets": ".push-type.widgets",
    "voip": ".voip", "complication": ".complication", "fileprovider": ".pushkit.fileprovider",
    "location": ".location-query", "liveactivity": ".push-type.liveactivity",
    "pushtotalk": ".voip-ptt", "controls": ".push-type.controls",
}
# default reasons for `fail_with` statuses given without one
REASONS = {429: "TooManyRequests", 500: "InternalServerError", 503: "ServiceUnavailable",
           403: "Forbidden", 410: "Unregistered", 413: "PayloadTooLarge"}
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_TOKEN = re.compile(r"[0-9a-fA-F]{64,200}")
_PATH = re.compile(r"/3/device/([^/?]*)")
_APPLE_HEADERS = ("authorization", "apns-topic", "apns-push-type", "apns-priority",
                  "apns-expiration", "apns-id", "apns-collapse-id")


@dataclass
class PushRecord:
    """One answered request."""
    connection: int            # 1-based index of the TLS connection it came on
    token: str                 # device token from the path
    headers: dict              # lowercase names, no pseudo-headers
    payload: dict | None       # the JSON body if it parsed as an object
    jwt: str | None            # the provider token after "bearer "
    status: int
    reason: str | None         # None on 200
    apns_id: str               # the apns-id answered
    method: str = "POST"
    path: str = ""
    stream_id: int = 0
    violation: str | None = None  # what Apple/iOS would punish although it answered 200


class _Reject(Exception):
    def __init__(self, status: int, reason: str):
        super().__init__(f"{status} {reason}")
        self.status, self.reason = status, reason


def _write_pki(directory: str) -> tuple[str, str, str]:
    """A CA and a server certificate for 127.0.0.1/localhost signed by it. Returns paths of
    (ca.pem, server.pem, server.key)."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Memharbor fake APNs CA")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                       key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, key_cert_sign=True, crl_sign=True,
                                       encipher_only=False, decipher_only=False), critical=True)
          .add_extension(ca_ski, critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
                critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=False, crl_sign=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = tuple(os.path.join(directory, name) for name in ("ca.pem", "server.pem", "server.key"))
    pem = serialization.Encoding.PEM
    with open(paths[0], "wb") as f:
        f.write(ca.public_bytes(pem))
    with open(paths[1], "wb") as f:
        f.write(cert.public_bytes(pem))
    with open(paths[2], "wb") as f:
        f.write(key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    return paths  # type: ignore[return-value]


def _shutdown(sock: ssl.SSLSocket) -> None:
    """Wake a thread blocked on `sock` from another thread: shut the TCP socket down under
    TLS (SSLSocket.shutdown would tear the TLS object out from under that thread)."""
    try:
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:
        pass


class _Connection:
    """One TLS+h2 connection, served by one thread. Only that thread touches the socket and
    the H2Connection's output; delayed answers are queued to it and wake it through a pipe."""

    def __init__(self, fake: FakeAPNs, sock: ssl.SSLSocket, index: int):
        self.fake, self.sock, self.index = fake, sock, index
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=False, header_encoding="utf-8", validate_inbound_headers=True))
        self.streams: dict[int, dict] = {}         # stream id -> {"headers", "body"}
        self.outgoing: dict[int, bytes] = {}       # stream id -> body waiting for window
        self.ready: deque = deque()                # delayed answers, queued by timers
        self.ready_lock = threading.Lock()
        self.wake_r, self.wake_w = socket.socketpair()
        self.closing = False
        self.goaway_reason: str | None = None
        # provider-token state, as Apple keeps it per connection
        self.current_jwt: str | None = None
        self.current_iat: int | None = None
        self.token_expired = False
        self.seen_jwts: set[str] = set()

    # -- thread body -----------------------------------------------------------------------
    def serve(self) -> None:
        try:
            self.h2.initiate_connection()
            self.h2.update_settings({h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS:
                                     MAX_CONCURRENT_STREAMS})
            self._flush()
            while not self.closing and not self.fake._stopping.is_set():
                if self.goaway_reason:
                    self._goaway(self.goaway_reason)
                    return
                if self.sock.pending():
                    readable = [self.sock]
                else:
                    readable, _, _ = select.select([self.sock, self.wake_r], [], [], 0.25)
                if self.wake_r in readable:
                    self.wake_r.recv(4096)
                if self.sock in readable:
                    try:
                        data = self.sock.recv(65536)
                    except (TimeoutError, ssl.SSLWantReadError):
                        data = None
                    if data == b"":
                        break
                    if data:
                        self._handle(self.h2.receive_data(data))
                self._send_ready()
                self._flush()
            if self.fake._stopping.is_set() and not self.closing:
                self._goaway("Shutdown")
        except h2.exceptions.ProtocolError:  # e.g. an uppercase header name
            try:
                self._flush()  # the GOAWAY(PROTOCOL_ERROR) h2 queued itself
            except OSError:
                pass
        except (OSError, ssl.SSLError):
            pass
        finally:
            self._close()

    def _close(self) -> None:
        for s in (self.sock, self.wake_r, self.wake_w):
            try:
                s.close()
            except OSError:
                pass

    def _goaway(self, reason: str) -> None:
        debug = json.dumps({"reason": reason}, separators=(",", ":")).encode()
        self.h2.close_connection(additional_data=debug)
        self._flush()

    def wake(self) -> None:
        try:
            self.wake_w.send(b"x")
        except OSError:
            pass

    def _flush(self) -> None:
        out = self.h2.data_to_send()
        if out:
            self.sock.sendall(out)

    # -- h2 events -------------------------------------------------------------------------
    def _handle(self, events) -> None:
        for event in events:
            if isinstance(event, h2.events.RequestReceived):
                self.streams[event.stream_id] = {"headers": event.headers, "body": bytearray()}
            elif isinstance(event, h2.events.DataReceived):
                stream = self.streams.get(event.stream_id)
                if stream is not None:
                    stream["body"] += event.data
                self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                stream = self.streams.pop(event.stream_id, None)
                if stream is not None:
                    self._answer(event.stream_id, stream["headers"], bytes(stream["body"]))
            elif isinstance(event, h2.events.StreamReset):
                self.streams.pop(event.stream_id, None)
                self.outgoing.pop(event.stream_id, None)
            elif isinstance(event, h2.events.WindowUpdated):
                self._send_pending()
            elif isinstance(event, h2.events.ConnectionTerminated):
                self.closing = True
            # PingReceived: h2 queues the PING ACK itself; SettingsAcknowledged etc.: nothing

    def _answer(self, stream_id: int, headers: list, body: bytes) -> None:
        status, reason, extra, apns_id, record = self.fake._decide(self, stream_id, headers, body)
        response = [(":status", str(status)), ("apns-id", apns_id)]
        data = b""
        if status != 200:
            response.append(("content-type", "application/json"))
            data = json.dumps({"reason": reason, **extra}, separators=(",", ":")).encode()
        delay = self.fake.delay.get(record.token, 0) if record.token else 0
        if delay > 0:
            with self.fake._lock:
                self.fake.waiting += 1
            timer = threading.Timer(delay, self._queue, (stream_id, response, data, record))
            timer.daemon = True
            self.fake._timers.append(timer)
            timer.start()
        else:
            self._respond(stream_id, response, data, record)

    def _queue(self, stream_id, response, data, record) -> None:
        with self.ready_lock:
            self.ready.append((stream_id, response, data, record))
        self.wake()

    def _send_ready(self) -> None:
        while True:
            with self.ready_lock:
                if not self.ready:
                    return
                item = self.ready.popleft()
            self._respond(*item)
            with self.fake._lock:
                self.fake.waiting -= 1

    def _respond(self, stream_id: int, response: list, data: bytes, record: PushRecord) -> None:
        try:
            # 200: HEADERS with END_STREAM and no DATA frame at all, like Apple
            self.h2.send_headers(stream_id, response, end_stream=not data)
            if data:
                self.outgoing[stream_id] = data
                self._send_pending()
        except h2.exceptions.StreamClosedError:
            self.outgoing.pop(stream_id, None)  # the client reset the stream meanwhile
        self.fake._record(record)

    def _send_pending(self) -> None:
        for stream_id, data in list(self.outgoing.items()):
            try:
                window = min(self.h2.local_flow_control_window(stream_id),
                             self.h2.max_outbound_frame_size)
            except h2.exceptions.StreamClosedError:
                self.outgoing.pop(stream_id, None)
                continue
            if window >= len(data):
                # the whole body in one DATA frame with END_STREAM
                self.h2.send_data(stream_id, data, end_stream=True)
                del self.outgoing[stream_id]
            elif window > 0:
                self.h2.send_data(stream_id, data[:window])
                self.outgoing[stream_id] = data[window:]


class FakeAPNs:
    """Apple's APNs provider API on https://127.0.0.1:<free port>, for one team, key and app.

    Checks, in order (first failure answers): method POST (405 MethodNotAllowed), path
    /3/device/<token> (404 BadPath, 400 MissingDeviceToken); provider token: `expire_next`,
    `authorization: bearer <jwt>` (403 MissingProviderToken), alg ES256 + kid + iss + int iat +
    signature (403 InvalidProviderToken), iat at most an hour old (403 ExpiredProviderToken),
    a connection presenting a new token less than 20 minutes (by iat) after its last new one,
    unless it was just told ExpiredProviderToken (429 TooManyProviderTokenUpdates; tokens it
    already used stay accepted while fresh); repeated apns-*
    headers (400 DuplicateHeaders); apns-topic present (400 MissingTopic); apns-push-type
    present and Apple's (400 InvalidPushType); topic characters (400 BadTopic); topic equal to
    bundle_id + the push type's suffix, ".voip" for voip (400 DeviceTokenNotForTopic for
    another topic of this app, TopicDisallowed for a foreign one); apns-priority 1/5/10 if
    given (400 BadPriority); apns-expiration digits if given (400 BadExpirationDate); apns-id a
    UUID if given (400 BadMessageId); apns-collapse-id <= 64 bytes (400 BadCollapseId); token
    64-200 hex and not in `bad_tokens` (400 BadDeviceToken); body non-empty (400
    PayloadEmpty), <= 5120 bytes for voip / 4096 otherwise (413 PayloadTooLarge), a JSON
    object (400 BadPayload, a reason Apple does not document); then `fail_with`, then
    `unregistered` (410 with "timestamp" in ms); else 200, with a `violation` recorded when
    the push breaks a delivery rule (see the module docstring).
    """

    def __init__(self, *, team_id: str, key_id: str, public_key_pem: bytes, bundle_id: str,
                 voip_types: set[str] | None = None):
        self.team_id, self.key_id, self.bundle_id = team_id, key_id, bundle_id
        # payload `type`s the app reports to CallKit as a call; None: not checked
        self.voip_types = voip_types
        self.public_key = serialization.load_pem_public_key(public_key_pem)
        # switches (cleared by reset())
        self.unregistered: set[str] = set()      # -> 410 Unregistered with timestamp
        self.bad_tokens: set[str] = set()        # -> 400 BadDeviceToken
        # token -> answers given first, one per request: a status (500, 503, 429, ...) or a
        # (status, reason) pair such as (400, "BadDeviceToken")
        self.fail_with: dict[str, list[int | tuple[int, str]]] = {}
        self.delay: dict[str, float] = {}        # token -> seconds before answering
        self._expire_next = 0
        # records (cleared by reset())
        self.requests: list[PushRecord] = []
        self.violations: list[str] = []
        self.connections = 0
        self.jwts: set[str] = set()
        self.waiting = 0  # requests received and held back by `delay`, not yet answered
        self.clock = time.time  # seconds since the epoch; replace to move the fake's clock
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._conns: list[_Connection] = []
        self._socks: list[ssl.SSLSocket] = []
        self._handshaking: set[ssl.SSLSocket] = set()
        self._timers: list[threading.Timer] = []
        self._listener: socket.socket | None = None
        self._dir: str | None = None
        self.port = 0
        self.ca_file = ""

    # -- lifecycle -------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def start(self) -> FakeAPNs:
        self._dir = tempfile.mkdtemp(prefix="fake-apns-")
        self.ca_file, cert, key = _write_pki(self._dir)
        self._ssl = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._ssl.minimum_version = ssl.TLSVersion.TLSv1_2
        self._ssl.load_cert_chain(cert, key)
        self._ssl.set_alpn_protocols(["h2"])
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self._listener.settimeout(0.2)
        self.port = self._listener.getsockname()[1]
        self._spawn(self._accept_loop, "fake-apns-accept")
        return self

    def stop(self) -> None:
        self._stopping.set()
        for timer in list(self._timers):
            timer.cancel()
        for conn in list(self._conns):
            conn.wake()
        with self._lock:
            handshaking = list(self._handshaking)
        for sock in handshaking:
            _shutdown(sock)
        deadline = time.monotonic() + 2
        for thread in list(self._threads):
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        # a thread still alive is in a TLS handshake or a write to a client that does not read
        for sock in list(self._socks):
            _shutdown(sock)
        for thread in list(self._threads):
            thread.join(timeout=2)
        if self._listener is not None:
            self._listener.close()
        if self._dir:
            shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> FakeAPNs:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _spawn(self, target, name, *args) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        with self._lock:
            self._threads.append(thread)
        thread.start()

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                raw, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._spawn(self._serve, "fake-apns-conn", raw)

    def _serve(self, raw: socket.socket) -> None:
        raw.settimeout(10)
        try:
            sock = self._ssl.wrap_socket(raw, server_side=True, do_handshake_on_connect=False)
        except (OSError, ssl.SSLError):
            raw.close()
            return
        with self._lock:
            self._socks.append(sock)
            self._handshaking.add(sock)
        try:
            sock.do_handshake()  # bounded by the timeout; stop() shuts the socket down
        except (OSError, ssl.SSLError):
            sock.close()
            return
        finally:
            with self._lock:
                self._handshaking.discard(sock)
        if sock.selected_alpn_protocol() != "h2":
            sock.close()
            return
        with self._lock:
            self.connections += 1
            conn = _Connection(self, sock, len(self._conns) + 1)
            self._conns.append(conn)
        conn.serve()

    # -- switches and records --------------------------------------------------------------
    def expire_next(self, n: int = 1) -> None:
        """The next `n` requests get 403 ExpiredProviderToken whatever their token."""
        with self._lock:
            self._expire_next += n

    def reset(self) -> None:
        """Forget records and switches; the server and its connections stay up."""
        with self._lock:
            self.requests.clear()
            self.violations.clear()
            self.jwts.clear()
            self.connections = 0
            self.unregistered.clear()
            self.bad_tokens.clear()
            self.fail_with.clear()
            self.delay.clear()
            self._expire_next = 0

    def goaway(self, reason: str = "Shutdown") -> None:
        """Close every open connection with a GOAWAY frame carrying `{"reason": reason}` as
        debug data, as Apple does when it drops a connection."""
        for conn in list(self._conns):
            conn.goaway_reason = reason
            conn.wake()

    def _record(self, record: PushRecord) -> None:
        with self._lock:
            self.requests.append(record)
            if record.violation:
                self.violations.append(f"{record.violation} (token {record.token[:12]}..., "
                                       f"payload {record.payload})")

    # -- Apple's checks --------------------------------------------------------------------
    def _decide(self, conn: _Connection, stream_id: int, raw_headers: list, body: bytes):
        pseudo = {k: v for k, v in raw_headers if k.startswith(":")}
        headers: dict[str, str] = {}
        duplicate = False
        for name, value in raw_headers:
            if name.startswith(":"):
                continue
            duplicate |= name in headers and name in _APPLE_HEADERS
            headers[name] = value
        method, path = pseudo.get(":method", ""), pseudo.get(":path", "")
        match = _PATH.fullmatch(path)
        token = match.group(1) if match else ""
        auth = headers.get("authorization", "")
        provider_jwt = auth[7:].strip() if auth[:7].lower() == "bearer " else (auth or None)
        payload = None
        try:
            parsed = json.loads(body) if body else None
            payload = parsed if isinstance(parsed, dict) else None
        except ValueError:
            pass
        request_id = headers.get("apns-id", "")
        apns_id = request_id if _UUID.fullmatch(request_id) else str(uuid.uuid4()).upper()
        status, reason, extra = 200, None, {}
        try:
            self._check(conn, method, match, token, headers, provider_jwt, body, duplicate)
        except _Reject as rejected:
            status, reason = rejected.status, rejected.reason
            if status == 410:
                extra = {"timestamp": int(self.clock() * 1000)}
        record = PushRecord(connection=conn.index, token=token, headers=headers,
                            payload=payload, jwt=provider_jwt, status=status, reason=reason,
                            apns_id=apns_id, method=method, path=path, stream_id=stream_id,
                            violation=self._violation(headers, payload) if status == 200
                            else None)
        return status, reason, extra, apns_id, record

    def _violation(self, headers: dict, payload: dict | None) -> str | None:
        """What a push Apple accepted will cost: dropped by APNs or the app killed by iOS."""
        push_type = headers.get("apns-push-type")
        aps = (payload or {}).get("aps")
        aps = aps if isinstance(aps, dict) else {}
        if push_type == "voip" and self.voip_types is not None \
                and (payload or {}).get("type") not in self.voip_types:
            return (f"VoIP push of type {(payload or {}).get('type')!r}: iOS kills an app "
                    "that does not report a VoIP push to CallKit as an incoming call")
        if push_type == "background":
            if headers.get("apns-priority") != "5":
                return "background push without apns-priority 5"
            if aps.get("content-available") != 1:
                return "background push without aps.content-available 1"
            if {"alert", "sound", "badge"} & set(aps):
                return "background push with an alert, sound or badge"
        if push_type == "alert" and not aps.get("alert"):
            return "alert push without aps.alert"
        return None

    def _check(self, conn, method, match, token, headers, provider_jwt, body, duplicate):
        if method != "POST":
            raise _Reject(405, "MethodNotAllowed")
        if not match:
            raise _Reject(404, "BadPath")
        if not token:
            raise _Reject(400, "MissingDeviceToken")
        self._check_provider_token(conn, provider_jwt)
        if duplicate:
            raise _Reject(400, "DuplicateHeaders")
        push_type, topic = headers.get("apns-push-type"), headers.get("apns-topic")
        if not topic:
            raise _Reject(400, "MissingTopic")
        if push_type not in PUSH_TYPE_TOPIC_SUFFIX:
            raise _Reject(400, "InvalidPushType")
        if not re.fullmatch(r"[A-Za-z0-9.\-]+", topic):
            raise _Reject(400, "BadTopic")
        if topic != self.bundle_id + PUSH_TYPE_TOPIC_SUFFIX[push_type]:
            ours = topic == self.bundle_id or topic.startswith(self.bundle_id + ".")
            raise _Reject(400, "DeviceTokenNotForTopic" if ours else "TopicDisallowed")
        if headers.get("apns-priority", "10") not in ("1", "5", "10"):
            raise _Reject(400, "BadPriority")
        if not re.fullmatch(r"\d+", headers.get("apns-expiration", "0")):
            raise _Reject(400, "BadExpirationDate")
        if "apns-id" in headers and not _UUID.fullmatch(headers["apns-id"]):
            raise _Reject(400, "BadMessageId")
        if len(headers.get("apns-collapse-id", "").encode()) > COLLAPSE_ID_LIMIT:
            raise _Reject(400, "BadCollapseId")
        if not _TOKEN.fullmatch(token) or token in self.bad_tokens:
            raise _Reject(400, "BadDeviceToken")
        if not body:
            raise _Reject(400, "PayloadEmpty")
        if len(body) > (VOIP_PAYLOAD_LIMIT if push_type == "voip" else PAYLOAD_LIMIT):
            raise _Reject(413, "PayloadTooLarge")
        try:
            if not isinstance(json.loads(body), dict):
                raise ValueError
        except ValueError:
            raise _Reject(400, "BadPayload") from None  # not in Apple's table; Apple drops it
        with self._lock:
            queued = self.fail_with.get(token)
            failure = queued.pop(0) if queued else None
        if isinstance(failure, tuple):
            raise _Reject(*failure)
        if failure is not None:
            raise _Reject(failure, REASONS.get(failure, "InternalServerError"))
        if token in self.unregistered:
            raise _Reject(410, "Unregistered")

    def _check_provider_token(self, conn: _Connection, provider_jwt: str | None) -> None:
        with self._lock:
            forced = self._expire_next > 0
            self._expire_next -= forced
        if forced:
            conn.token_expired = True
            raise _Reject(403, "ExpiredProviderToken")
        if not provider_jwt:
            raise _Reject(403, "MissingProviderToken")
        try:
            header = jwt.get_unverified_header(provider_jwt)
            if header.get("alg") != "ES256" or header.get("kid") != self.key_id:
                raise _Reject(403, "InvalidProviderToken")
            claims = jwt.decode(provider_jwt, self.public_key, algorithms=["ES256"],
                                options={"verify_iat": False, "verify_exp": False,
                                         "verify_nbf": False, "verify_aud": False})
        except jwt.PyJWTError:
            raise _Reject(403, "InvalidProviderToken") from None
        iat = claims.get("iat")
        if claims.get("iss") != self.team_id or not isinstance(iat, int):
            raise _Reject(403, "InvalidProviderToken")
        if self.clock() - iat > TOKEN_MAX_AGE:
            conn.token_expired = True
            raise _Reject(403, "ExpiredProviderToken")
        # Apple: a connection may change its token at most once every 20 minutes (judged by
        # iat, so tests can move the client's clock); a change after ExpiredProviderToken is
        # the expected renewal, and a token this connection already used is no change.
        if provider_jwt not in conn.seen_jwts:
            if conn.current_jwt is not None and not conn.token_expired \
                    and iat - conn.current_iat < TOKEN_MIN_REFRESH:
                raise _Reject(429, "TooManyProviderTokenUpdates")
            conn.seen_jwts.add(provider_jwt)
            conn.current_jwt, conn.current_iat, conn.token_expired = provider_jwt, iat, False
        with self._lock:
            self.jwts.add(provider_jwt)
