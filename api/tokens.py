"""POST /api/token: an Agora RTC token for a channel, shaped as the seed's clients expect."""

from __future__ import annotations

from typing import Literal

from django.conf import settings
from django.http import HttpRequest
from ninja import Router, Schema
from pydantic import Field, StrictInt, field_validator, model_validator

from api.auth import user_auth
from api.schemas import answers
from calls.services import call_token_check
from integrations import agora
from integrations.agora import ACCOUNT_MAX_BYTES, CHANNEL_MAX_BYTES, agora_name

router = Router(tags=["token"], auth=user_auth)

MAX_EXPIRE_SECONDS = 86400


class TokenIn(Schema):
    channel: str
    uid: StrictInt | None = Field(None, ge=0, le=2**32 - 1)
    user_account: str | None = None
    role: Literal["publisher", "subscriber"] = "subscriber"
    expire: StrictInt = Field(MAX_EXPIRE_SECONDS, ge=1, le=MAX_EXPIRE_SECONDS)
    version: Literal["007", "006"] | None = None

    @field_validator("channel")
    @classmethod
    def _channel(cls, value: str) -> str:
        return agora_name(value, what="channel", max_bytes=CHANNEL_MAX_BYTES)

    @field_validator("user_account")
    @classmethod
    def _account(cls, value: str | None) -> str | None:
        return None if value is None else agora_name(value, what="user_account", max_bytes=ACCOUNT_MAX_BYTES)

    @model_validator(mode="after")
    def _exactly_one_identity(self):
        if (self.uid is None) == (self.user_account is None):
            raise ValueError("send exactly one of uid or user_account")
        return self


class TokenOut(Schema):
    token: str = Field(description="Agora RTC token (AccessToken2 '007...' or '006...')")
    expire_at: int = Field(description="Unix time (seconds) when the token expires")
    expire_in: int = Field(description="Seconds from now until it expires")


@router.post("", **answers(TokenOut, 400, 401, 403, 409, 503), summary="Issue an Agora RTC token")
def token_issue(request: HttpRequest, payload: TokenIn):
    user = payload.uid if payload.uid is not None else payload.user_account
    call_token_check(principal=request.principal, channel=payload.channel, agora_user=user)
    built = agora.rtc_token_build(
        app_id=settings.AGORA_APP_ID,
        app_certificate=settings.AGORA_APP_CERT,
        channel=payload.channel,
        user=user,
        role=payload.role,
        expire_seconds=payload.expire,
        version=payload.version or settings.AGORA_TOKEN_VERSION,
    )
    return TokenOut(token=built.token, expire_at=built.expire_at, expire_in=built.expire_in)
