"""Human reviews of a call (POST /api/calls/<call_id>/review)."""

from __future__ import annotations

from django.http import HttpRequest
from ninja import Router, Schema
from pydantic import AliasChoices, Field

from api.audit import audit
from api.auth import user_auth
from api.calls import CallId, call_public
from api.schemas import Out, Timestamp, answers
from calls.reviews import call_review

router = Router(tags=["reviews"], auth=user_auth)


class ReviewIn(Schema):
    humanSummary: str | None = Field(
        None, validation_alias=AliasChoices("humanSummary", "human_summary"),
        description="at most 2000 characters")
    humanKeywords: list[str] | None = Field(
        None, validation_alias=AliasChoices("humanKeywords", "human_keywords"),
        description="at most 20 keywords of at most 50 characters")
    humanNotes: str | None = Field(
        None, validation_alias=AliasChoices("humanNotes", "human_notes"),
        description="at most 5000 characters")


class ReviewOut(Out):
    success: bool
    callId: str
    reviewId: str
    changed: list[str] = Field(description="The fields this review changed")
    humanSummary: str | None = None
    humanKeywords: list[str] | None = None
    humanNotes: str | None = None
    reviewCount: int
    lastReviewAt: Timestamp | None = None


def review_answer(review: dict, call: dict) -> dict:
    fields = ("humanSummary", "humanKeywords", "humanNotes", "reviewCount", "lastReviewAt")
    public = call_public(call)
    return {"success": True, "callId": call["callId"], "reviewId": review["reviewId"],
            "changed": sorted(review["changes"]), **{key: public.get(key) for key in fields}}


@router.post("/{call_id}/review", **answers(ReviewOut, 400, 401, 403, 404, 503),
             summary="Review a call (a participant or an admin)")
def review(request: HttpRequest, call_id: CallId, payload: ReviewIn):
    kept, call = call_review(principal=request.principal, call_id=call_id,
                             summary=payload.humanSummary, keywords=payload.humanKeywords,
                             notes=payload.humanNotes)
    audit(request, "review", call_id, detail={"reviewId": kept["reviewId"],
                                              "changed": sorted(kept["changes"])})
    return review_answer(kept, call)
