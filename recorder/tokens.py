"""The recorder's next Agora token, from the API (`POST RECORDER_API_URL/api/recording/token`
with the shared secret in `X-Recorder-Secret`). The API answers 410 `call_not_active` once
the call on the channel is over: that is `CallOver`, and the session ends."""

from __future__ import annotations

import aiohttp

TIMEOUT_SECONDS = 10


class CallOver(Exception):
    """The API builds no more tokens for this channel: its call is over."""


class TokenUnavailable(Exception):
    """The API could not be asked, or refused for another reason (the message says)."""


async def token_fetch(*, api_url: str, secret: str | None, channel: str, uid: int) -> str:
    headers = {"X-Recorder-Secret": secret} if secret else {}
    try:
        async with aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=TIMEOUT_SECONDS)) as http, http.post(
                f"{api_url}/api/recording/token", json={"channel": channel, "uid": uid},
                headers=headers) as response:
            try:
                body = await response.json(content_type=None)
            except ValueError:
                body = {}
            status = response.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise TokenUnavailable(f"the API cannot be reached ({type(exc).__name__})") from None
    error = (body or {}).get("error") or {}
    if status == 410:
        raise CallOver(error.get("message") or "the call is over")
    if status != 200 or not isinstance(body.get("token"), str):
        raise TokenUnavailable(f"the API answered {status} {error.get('code') or ''}".strip())
    return body["token"]
