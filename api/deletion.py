"""Deleting recordings: one (DELETE /api/recordings/<id>) and every recording of a user
(DELETE /api/users/<uid>/recordings)."""

from __future__ import annotations

from django.http import HttpRequest
from ninja import Router
from ninja.responses import Status
from pydantic import Field

from api.audit import audit
from api.auth import user_auth
from api.library import RecordingId, Uid
from api.schemas import Out, Timestamp, answers
from library import deletion


class DeletedOut(Out):
    success: bool
    recordingId: str
    status: str = Field(description="deleted (200), or deleting (202: Storage failed; "
                                    "never served, the sweep finishes it)")
    deletedAt: Timestamp | None = None
    deletedBy: str | None = None


class UserDeletedOut(Out):
    success: bool
    uid: str
    deleted: int
    deleting: int = Field(description="Storage failed for these; the sweep finishes them")
    skipped: int = Field(description="Still uploading or processing: not deleted")
    analysisJobsDeleted: int


recordings_router = Router(tags=["recording library"], auth=user_auth)
users_router = Router(tags=["recording library"], auth=user_auth)


@recordings_router.delete("/{recording_id}",
                          **answers({200: DeletedOut, 202: DeletedOut}, 400, 401, 403, 404, 409,
                                    503),
                          summary="Delete a recording (a participant or an admin)")
def delete_recording(request: HttpRequest, recording_id: RecordingId):
    status, answer = deletion.recording_delete(principal=request.principal,
                                               recording_id=recording_id)
    audit(request, "delete", recording_id, detail={"status": answer["status"]})
    return Status(status, answer)


@users_router.delete("/{uid}/recordings", **answers(UserDeletedOut, 400, 401, 403, 503),
                     summary="Delete every recording of a user's calls (the user or an admin)")
def delete_user_recordings(request: HttpRequest, uid: Uid):
    answer = deletion.user_recordings_delete(principal=request.principal, uid=uid)
    audit(request, "delete_user_recordings", uid,
          detail={key: answer[key] for key in ("deleted", "deleting", "skipped",
                                               "analysisJobsDeleted")})
    return answer
