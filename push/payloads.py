"""What the phones receive. The apps read these keys (the seed's incoming_call payload);
every value is a string, as FCM data messages require. On iOS the same keys sit beside
`aps` in regular pushes; a VoIP push carries them alone."""

from __future__ import annotations

INCOMING_CALL = "incoming_call"
CALL_CANCELLED = "call_cancelled"
CALL_MISSED = "call_missed"
CALL_ENDED = "call_ended"
CALL_ANSWERED_ELSEWHERE = "call_answered_elsewhere"
CALL_DECLINED_ELSEWHERE = "call_declined_elsewhere"

MISSED_CALL_TITLE = "Missed call"


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


def apns_alert(data: dict[str, str]) -> dict:
    """A visible missed-call notification, threaded per caller."""
    return {"aps": {"alert": {"title": MISSED_CALL_TITLE, "body": data["callerName"]},
                    "sound": "default", "thread-id": data["callerID"]}, **data}


def apns_background(data: dict[str, str]) -> dict:
    """A silent push that wakes the app to update its UI (stop ringing, hang up)."""
    return {"aps": {"content-available": 1}, **data}
