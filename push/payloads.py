"""What the phones receive. The apps read these keys (the seed's incoming_call payload);
every value is a string, as FCM data messages require."""

from __future__ import annotations

INCOMING_CALL = "incoming_call"
CALL_CANCELLED = "call_cancelled"
CALL_MISSED = "call_missed"
CALL_ENDED = "call_ended"


def call_payload(call: dict, push_type: str) -> dict[str, str]:
    return {
        "type": push_type,
        "callId": call["callId"],
        "channelName": call["channelName"],
        "callerName": call.get("callerName") or call["callerId"],
        "callerID": call["callerId"],
        "groupId": call["groupId"],
        "receiverId": call["receiverId"],
        "status": call["status"],
    }
