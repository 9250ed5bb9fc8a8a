"""The recorder bot's Agora tokens: the first one it joins with and the ones it renews with,
each for RECORDER_TOKEN_SECONDS, for uid RECORDER_UID as an audience member, and only while
a call on the channel is active."""

from __future__ import annotations

import structlog
from django.conf import settings

from calls import store as call_store
from core.errors import CallNotActive, Forbidden
from integrations.agora import RtcToken, rtc_token_build

log = structlog.get_logger("recordings")


def recorder_token_build(*, channel: str) -> RtcToken:
    """A subscriber token for the bot on `channel`, valid RECORDER_TOKEN_SECONDS."""
    return rtc_token_build(app_id=settings.AGORA_APP_ID,
                           app_certificate=settings.AGORA_APP_CERT, channel=channel,
                           user=settings.RECORDER_UID, role="subscriber",
                           expire_seconds=settings.RECORDER_TOKEN_SECONDS,
                           version=settings.AGORA_TOKEN_VERSION)


def recorder_token_renew(*, channel: str, uid: int) -> dict:
    """The recorder's next token (it asks ~30 s before its token expires). A channel whose
    call is over gets none (410 call_not_active: the recorder stops that session)."""
    if uid != settings.RECORDER_UID:
        raise Forbidden("Renewed tokens are for the recorder's uid only.", code="wrong_uid")
    if not call_store.calls_on_channel(channel, limit=1):
        log.info("recorder_token_refused", channel=channel)
        raise CallNotActive()
    token = recorder_token_build(channel=channel)
    log.info("recorder_token_renewed", channel=channel, expire_in=token.expire_in)
    return {"token": token.token, "expire_at": token.expire_at, "expire_in": token.expire_in}
