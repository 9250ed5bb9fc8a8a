"""A stand-in for Google's securetoken service: a throwaway RSA key, its X.509 certificate
served on loopback in Google's format (`{kid: PEM}`), and RS256 Firebase ID tokens signed
with it. The server under test verifies them with firebase-admin exactly as in production;
only the certificate URL differs.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID


def _key_and_cert() -> tuple[rsa.RSAPrivateKey, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "securetoken.test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=2))
        .sign(key, hashes.SHA256())
    )
    return key, cert.public_bytes(serialization.Encoding.PEM).decode()


class FakeSecureToken:
    """Serves signing certificates and mints ID tokens for `project_id`."""

    def __init__(self, project_id: str):
        self.project_id = project_id
        self.kid = uuid.uuid4().hex
        self.key, cert_pem = _key_and_cert()
        self.other_key, _ = _key_and_cert()  # for tokens with a signature that cannot verify
        self.certs = {self.kid: cert_pem}
        self.requests = 0
        self.available = True
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's naming
                fake.requests += 1
                if not fake.available:
                    self.send_error(503)
                    return
                body = json.dumps(fake.certs).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Cache-Control", "public, max-age=3600")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}/securetoken-certs"

    def start(self) -> FakeSecureToken:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def mint(self, uid: str, *, admin: bool = False, expires_in: int = 3600,
             issued_ago: int = 0, audience: str | None = None, issuer: str | None = None,
             wrong_key: bool = False, extra: dict | None = None) -> str:
        """A Firebase ID token for `uid`; the keyword arguments break it in chosen ways."""
        now = int(time.time()) - issued_ago
        claims = {
            "iss": issuer or f"https://securetoken.google.com/{self.project_id}",
            "aud": audience or self.project_id,
            "auth_time": now,
            "user_id": uid,
            "sub": uid,
            "iat": now,
            "exp": now + expires_in,
            "firebase": {"identities": {}, "sign_in_provider": "custom"},
            **({"admin": True} if admin else {}),
            **(extra or {}),
        }
        key = self.other_key if wrong_key else self.key
        return jwt.encode(claims, key, algorithm="RS256", headers={"kid": self.kid})
