"""iOS pushes (VoIP, alert, background) over APNs' HTTP/2 provider API.

One HTTP/2 connection per process, re-created after a fork. It is driven by an
`httpx.AsyncClient` on one event-loop thread that the request threads hand their pushes to:
httpx's sync HTTP/2 client lets a thread waiting for a late answer hold the connection's
read lock, so one slow device would delay every other thread's push (a test proves they
are independent now). one ES256 provider JWT, renewed after 40 minutes (Apple rejects
tokens older than 60 and refreshes more often than every 20), and once when Apple says
ExpiredProviderToken. 429 and 5xx get one retry after a short backoff.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import ssl
import threading
import time
import uuid
from dataclasses import dataclass

import httpx
import jwt
import structlog

log = structlog.get_logger("push.apns")

PRODUCTION_URL = "https://api.push.apple.com"
SANDBOX_URL = "https://api.sandbox.push.apple.com"
JWT_RENEW_AFTER_SECONDS = 40 * 60
# Not DeviceTokenNotForTopic: it also means our own topic (bundle id) is misconfigured.
_DEAD_REASONS = {"BadDeviceToken", "Unregistered"}
_RETRY_BACKOFF_SECONDS = 0.3


@dataclass(frozen=True)
class ApnsResult:
    ok: bool
    status: int | None  # None: no answer (timeout, connection error)
    reason: str | None  # Apple's reason, or our own ("timeout", "connection_error")
    dead: bool = False  # the device token will never work again: remove it
    apns_id: str | None = None
    dead_since_ms: int | None = None  # 410: Apple's `timestamp`, when the token died


# push type -> (topic suffix, priority). Apple refuses priority 10 for background pushes.
PUSH_TYPES = {"voip": (".voip", "10"), "alert": ("", "10"), "background": ("", "5")}


class ApnsClient:
    """Sends pushes for one app (`bundle_id`); safe to share between threads."""

    def __init__(self, *, team_id: str, key_id: str, bundle_id: str, private_key_pem: str,
                 base_url: str, ca_file: str | None = None, timeout: float = 3.0,
                 clock=time.time):
        self.team_id, self.key_id, self.bundle_id = team_id, key_id, bundle_id
        self._key = private_key_pem
        self.base_url = base_url.rstrip("/")
        self._ca_file = ca_file
        self._timeout = timeout
        self._clock = clock
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: httpx.AsyncClient | None = None
        self._pid = 0
        self._jwt: str | None = None
        self._jwt_issued_at = 0.0
        self.jwts_minted = 0

    def _event_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or self._pid != os.getpid():
                # After a fork the parent's loop thread and connection are not ours.
                self._loop = asyncio.new_event_loop()
                self._client = None
                self._pid = os.getpid()
                threading.Thread(target=self._loop.run_forever, name="apns", daemon=True).start()
            return self._loop

    def _async_client(self) -> httpx.AsyncClient:
        # Only called on the loop thread, so no lock is needed.
        if self._client is None:
            verify = ssl.create_default_context(cafile=self._ca_file)  # None: system CAs
            # keepalive_expiry=None: httpx would drop the connection after 5 idle seconds
            # and the next ring would wait for a new TLS handshake; Apple asks providers
            # to keep it open (and says GOAWAY when it closes it).
            self._client = httpx.AsyncClient(
                http2=True, verify=verify, timeout=self._timeout,
                limits=httpx.Limits(max_connections=1, max_keepalive_connections=1,
                                    keepalive_expiry=None))
        return self._client

    def _provider_token(self, *, renew: bool = False) -> str:
        with self._lock:
            age = self._clock() - self._jwt_issued_at
            if self._jwt is None or age >= JWT_RENEW_AFTER_SECONDS or renew:
                issued_at = int(self._clock())
                self._jwt = jwt.encode({"iss": self.team_id, "iat": issued_at}, self._key,
                                       algorithm="ES256", headers={"kid": self.key_id})
                self._jwt_issued_at = issued_at
                self.jwts_minted += 1
            return self._jwt

    def send_voip(self, *, device_token: str, payload: dict, expiration: int) -> ApnsResult:
        """Send one VoIP push (topic `<bundle>.voip`); never raises."""
        return self.send(device_token=device_token, payload=payload, push_type="voip",
                         expiration=expiration)

    def send(self, *, device_token: str, payload: dict, push_type: str, expiration: int,
             collapse_id: str | None = None) -> ApnsResult:
        """Send one push of `push_type` (voip, alert, background) with Apple's topic and
        priority for it; never raises for a provider or network failure."""
        suffix, priority = PUSH_TYPES[push_type]
        headers = {
            "apns-push-type": push_type,
            "apns-topic": f"{self.bundle_id}{suffix}",
            "apns-priority": priority,
            "apns-expiration": str(expiration),
            "apns-id": str(uuid.uuid4()),
        }
        if collapse_id:
            headers["apns-collapse-id"] = collapse_id
        renewed = retried = False
        while True:
            result = self._post(device_token, payload, headers, renew=False)
            if result.reason == "ExpiredProviderToken" and not renewed:
                renewed = True
                self._provider_token(renew=True)
                continue
            if result.status is not None and (result.status == 429 or result.status >= 500) \
                    and not retried:
                retried = True
                time.sleep(_RETRY_BACKOFF_SECONDS)
                continue
            return result

    def _post(self, device_token, payload, apple_headers, *, renew: bool) -> ApnsResult:
        headers = {"authorization": f"bearer {self._provider_token(renew=renew)}",
                   **apple_headers}
        url = f"{self.base_url}/3/device/{device_token}"

        async def post():
            return await self._async_client().post(url, json=payload, headers=headers)

        try:
            response = asyncio.run_coroutine_threadsafe(post(), self._event_loop()).result(
                timeout=self._timeout + 5)
        except (httpx.TimeoutException, concurrent.futures.TimeoutError):
            return ApnsResult(ok=False, status=None, reason="timeout")
        except httpx.HTTPError as exc:
            log.warning("apns_connection_error", error=repr(exc))
            return ApnsResult(ok=False, status=None, reason="connection_error")
        if response.status_code == 200:
            return ApnsResult(ok=True, status=200, reason=None,
                              apns_id=response.headers.get("apns-id"))
        try:
            body = response.json()
        except ValueError:
            body = {}
        body = body if isinstance(body, dict) else {}
        reason = body.get("reason") or f"http_{response.status_code}"
        dead = response.status_code == 410 or (response.status_code == 400
                                               and reason in _DEAD_REASONS)
        timestamp = body.get("timestamp")
        return ApnsResult(ok=False, status=response.status_code, reason=reason, dead=dead,
                          apns_id=response.headers.get("apns-id"),
                          dead_since_ms=timestamp if isinstance(timestamp, int) else None)
