"""Standard Webhooks (https://www.standardwebhooks.com) both ways, with the
`standardwebhooks` library: our POST /jobs to the analysis server is signed, its callbacks
to us are verified, and the job-scoped audio URL carries an HMAC of the job id.

`ANALYSIS_WEBHOOK_SECRET` holds one `whsec_<base64>` secret, or several separated by
spaces while a secret is rotated: requests are signed with each (the headers then carry
several space-separated signatures) and a callback verifies if any secret matches any of
its signatures. Timestamps more than 5 minutes off are refused by the library.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import json
import uuid
from datetime import datetime

from django.conf import settings
from standardwebhooks.webhooks import Webhook, WebhookVerificationError


class SignatureInvalid(Exception):
    pass


def _secrets() -> list[Webhook]:
    return [Webhook(secret) for secret in settings.ANALYSIS_WEBHOOK_SECRET.split()]


def signed_headers(body: str, *, now: datetime, msg_id: str | None = None) -> dict[str, str]:
    """The three Standard Webhooks headers for `body` (the exact bytes sent, as text)."""
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    signatures = [hook.sign(msg_id=msg_id, timestamp=now, data=body) for hook in _secrets()]
    return {"webhook-id": msg_id, "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": " ".join(signatures)}


def signed_json(payload: dict, *, now: datetime) -> tuple[str, dict[str, str]]:
    body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
    return body, {**signed_headers(body, now=now), "Content-Type": "application/json"}


def verify(body: bytes, headers: dict[str, str]) -> None:
    """Returns when `body` carries a valid signature by one of our secrets, made within
    5 minutes of now; raises SignatureInvalid otherwise."""
    hooks = _secrets()
    if not hooks:
        raise SignatureInvalid("ANALYSIS_WEBHOOK_SECRET is not set: no callback verifies.")
    reason = "no signature"
    for hook in hooks:
        try:
            hook.verify(body, headers, json_parse=False)
            return
        except WebhookVerificationError as exc:
            reason = str(exc)
        except (ValueError, binascii.Error) as exc:  # a malformed signature, or not UTF-8
            raise SignatureInvalid(f"Malformed webhook signature or body ({exc}).") from exc
    raise SignatureInvalid(reason)


def _audio_token(secret: str, job_id: str) -> str:
    key = hashlib.sha256(f"audio:{secret}".encode()).digest()  # not the signing key itself
    return hmac.new(key, job_id.encode(), hashlib.sha256).hexdigest()


def audio_token(job_id: str) -> str:
    """The token of a job's own audio URL: hex HMAC-SHA256 of the job id (newest secret
    first in ANALYSIS_WEBHOOK_SECRET)."""
    return _audio_token(settings.ANALYSIS_WEBHOOK_SECRET.split()[0], job_id)


def audio_token_valid(job_id: str, token: str) -> bool:
    return any(hmac.compare_digest(_audio_token(secret, job_id).encode(), token.encode())
               for secret in settings.ANALYSIS_WEBHOOK_SECRET.split())
