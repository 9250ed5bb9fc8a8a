"""The request side of the access log: the client's address as nginx forwards it, and
the request id, handed to `ops.audit`."""

from __future__ import annotations

from django.http import HttpRequest

from ops.audit import audit_record


def client_ip(request: HttpRequest) -> str | None:
    """X-Forwarded-For as nginx sets it (one value: the client address it resolved from
    CF-Connecting-IP of a trusted peer; nginx passes a client's own CF-Connecting-IP
    through unchanged, so it comes second), else CF-Connecting-IP, else the peer."""
    for header in ("X-Forwarded-For", "CF-Connecting-IP"):
        value = request.headers.get(header, "").split(",")[0].strip()
        if value:
            return value[:64]
    return request.META.get("REMOTE_ADDR")


def audit(request: HttpRequest, action: str, target: str | None, *, uid: str | None = None,
          outcome: str = "ok", detail: dict | None = None) -> None:
    principal = getattr(request, "principal", None)
    audit_record(uid=uid or (principal.uid if principal else None), action=action,
                 target=target, ip=client_ip(request),
                 request_id=getattr(request, "request_id", None), outcome=outcome,
                 detail=detail)
