"""Agora: RTC tokens, built with Agora's own Python package (`agoraiotools`), and THE
channel-name rule (which names Agora accepts, and how a call's channel is named).

Both token versions: AccessToken2 ("007", Agora's current one) and AccessToken ("006",
which older SDKs still accept). The builders in `agoraiotools` pick the issue time and the
salt themselves; we build the same token the same way but with those two values
injectable, so tests can compare against Agora's reference builders byte for byte.
"""

from __future__ import annotations

import re
import secrets
import time
from dataclasses import dataclass
from datetime import datetime

from agoraiotools.AccessToken import (
    AccessToken as AccessToken006,
)
from agoraiotools.AccessToken import (
    kJoinChannel,
    kPublishAudioStream,
    kPublishDataStream,
    kPublishVideoStream,
)
from agoraiotools.AccessToken2 import AccessToken as AccessToken2
from agoraiotools.AccessToken2 import ServiceRtc

# Agora's alphabet for channel names and user accounts: letters, digits, space and these.
_NAME = re.compile(r"^[A-Za-z0-9 !#$%&()+\-:;<=.>?@\[\]^_{|}~,]+$")
NAME_RULE = "letters, digits, space and !#$%&()+-:;<=.>?@[]^_{|}~,"
CHANNEL_MAX_BYTES = 64
ACCOUNT_MAX_BYTES = 255
# An id inside a call's channel name: the alphabet without "_" (the separator) and space.
_ID = re.compile(r"^[A-Za-z0-9!#$%&()+\-:;<=.>?@\[\]^{|}~,]{1,128}$")
ID_RULE = ("1 to 128 of letters, digits and !#$%&()+-:;<=.>?@[]^{|}~, "
           "(no '_' or space: it separates the parts of the channel name)")


def agora_name(value: str, *, what: str, max_bytes: int) -> str:
    """`value` if Agora accepts it as a channel name or user account, else ValueError
    saying why."""
    size = len(value.encode("utf-8"))
    if not 1 <= size <= max_bytes:
        raise ValueError(f"{what} must be 1 to {max_bytes} bytes long (got {size})")
    if not _NAME.match(value):
        raise ValueError(f"{what} may contain only {NAME_RULE}")
    return value


def channel_valid(value: object) -> bool:
    """Whether Agora accepts `value` as a channel name."""
    try:
        return isinstance(value, str) and bool(
            agora_name(value, what="channel", max_bytes=CHANNEL_MAX_BYTES))
    except ValueError:
        return False


def channel_id_valid(value: str) -> bool:
    """Whether `value` may be one of the ids a call's channel name is made of."""
    return bool(_ID.match(value))


def channel_name(*, group_id: str, caller_id: str, receiver_id: str, at: datetime) -> str:
    """`{groupId}_{callerId}_{receiverId}_{ms}` (the seed's format) when it fits Agora's 64
    bytes; otherwise each id is cut to the same prefix length so it does (Firebase uids
    are 28 characters: two of them plus a group id do not fit). The call document keeps
    the full ids; the channel is looked up, never parsed, to find its call."""
    ms = str(int(at.timestamp() * 1000))
    ids = [group_id, caller_id, receiver_id]
    name = "_".join([*ids, ms])
    if len(name.encode()) <= CHANNEL_MAX_BYTES:
        return name
    room = (CHANNEL_MAX_BYTES - len(ms) - 3) // 3
    return "_".join([*(part[:room] for part in ids), ms])


ROLES = ("publisher", "subscriber")
VERSIONS = ("007", "006")
# 006 tokens carry a message timestamp one day after issue, as Agora's builder sets it.
_MESSAGE_TS_OFFSET_006 = 24 * 3600


@dataclass(frozen=True)
class RtcToken:
    token: str
    expire_at: int  # unix seconds
    expire_in: int  # seconds


def rtc_token_build(
    *,
    app_id: str,
    app_certificate: str,
    channel: str,
    user: int | str,
    role: str,
    expire_seconds: int,
    version: str = "007",
    issued_at: int | None = None,
    salt: int | None = None,
) -> RtcToken:
    """An RTC token for `user` (an int uid, or a str user account) in `channel`.

    Both the token and the join/publish privileges expire `expire_seconds` after issue.
    A publisher may also publish audio, video and data streams; a subscriber only joins.
    """
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}")
    issued_at = int(time.time()) if issued_at is None else issued_at
    salt = secrets.SystemRandom().randint(1, 99999999) if salt is None else salt
    publisher = role == "publisher"
    if version == "007":
        token = _build_007(app_id, app_certificate, channel, user, publisher,
                           expire_seconds, issued_at, salt)
    elif version == "006":
        token = _build_006(app_id, app_certificate, channel, user, publisher,
                           expire_seconds, issued_at, salt)
    else:
        raise ValueError(f"version must be one of {VERSIONS}")
    if not token:
        # agoraiotools returns '' instead of raising when the app id or certificate is bad.
        raise RuntimeError("Agora refused to build a token: AGORA_APP_ID and AGORA_APP_CERT "
                           "must each be 32 hexadecimal characters")
    return RtcToken(token=token, expire_at=issued_at + expire_seconds, expire_in=expire_seconds)


def _build_007(app_id, app_certificate, channel, user, publisher, expire, issued_at, salt):
    # Mirrors agoraiotools.RtcTokenBuilder2.build_token_with_user_account.
    token = AccessToken2(app_id, app_certificate, issue_ts=issued_at, expire=expire)
    token._AccessToken__salt = salt  # the package offers no parameter for the salt
    service = ServiceRtc(channel, user)
    service.add_privilege(ServiceRtc.kPrivilegeJoinChannel, expire)
    if publisher:
        service.add_privilege(ServiceRtc.kPrivilegePublishAudioStream, expire)
        service.add_privilege(ServiceRtc.kPrivilegePublishVideoStream, expire)
        service.add_privilege(ServiceRtc.kPrivilegePublishDataStream, expire)
    token.add_service(service)
    return token.build()


def _build_006(app_id, app_certificate, channel, user, publisher, expire, issued_at, salt):
    # Mirrors agoraiotools.RtcTokenBuilder.buildTokenWithAccount (privileges are absolute).
    privilege_expires_at = issued_at + expire
    token = AccessToken006(app_id, app_certificate, channel, user)
    token.salt = salt
    token.ts = issued_at + _MESSAGE_TS_OFFSET_006
    token.addPrivilege(kJoinChannel, privilege_expires_at)
    if publisher:
        token.addPrivilege(kPublishAudioStream, privilege_expires_at)
        token.addPrivilege(kPublishVideoStream, privilege_expires_at)
        token.addPrivilege(kPublishDataStream, privilege_expires_at)
    return token.build()
