"""POST /api/token: an Agora RTC token for a channel, shaped as the seed's clients expect."""

from __future__ import annotations

import re
from typing import Literal

from django.conf import settings
from django.http import HttpRequest
from ninja import Router, Schema
from pydantic import Field, StrictInt, field_validator, model_validator

from api.auth import user_auth
from calls.services import call_token_check
from integrations import agora

router = Router(tags=["token"], auth=user_auth)

MAX_EXPIRE_SECONDS = 86400
# Agora's channel-name alphabet: letters, digits, space and these punctuation marks.
_AGORA_NAME = re.compile(r"^[A-Za-z0-9 !#$%&()+\-:;<=.>?@\[\]^_{|}~,]+$")


def agora_name(value: str, *, what: str, max_bytes: int) -> str:
    """`value` if it is a valid Agora channel / account name, else ValueError saying why."""
    size = len(value.encode("utf-8"))
    if not 1 <= size <= max_bytes:
        raise ValueError(f"{what} must be 1 to {max_bytes} bytes long (got {size})")
    if not _AGORA_NAME.match(value):
        raise ValueError(
            f"{what} may contain only letters, digits, space and !#$%&()+-:;<=.>?@[]^_{{|}}~,"
        )
    return value


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
        return agora_name(value, what="channel", max_bytes=64)

    @field_validator("user_account")
    @classmethod
    def _account(cls, value: str | None) -> str | None:
        return None if value is None else agora_name(value, what="user_account", max_bytes=255)

    @model_validator(mode="after")
    def _exactly_one_identity(self):
        if (self.uid is None) == (self.user_account is None):
            raise ValueError("send exactly one of uid or user_account")
        return self


class TokenOut(Schema):
    token: str
    expire_at: int
    expire_in: int


@router.post("", response=TokenOut, summary="Issue an Agora RTC token")
def token_issue(request: HttpRequest, payload: TokenIn):
    call_token_check(principal=request.principal, channel=payload.channel)
    built = agora.rtc_token_build(
        app_id=settings.AGORA_APP_ID,
        app_certificate=settings.AGORA_APP_CERT,
        channel=payload.channel,
        user=payload.uid if payload.uid is not None else payload.user_account,
        role=payload.role,
        expire_seconds=payload.expire,
        version=payload.version or settings.AGORA_TOKEN_VERSION,
    )
    return TokenOut(token=built.token, expire_at=built.expire_at, expire_in=built.expire_in)
