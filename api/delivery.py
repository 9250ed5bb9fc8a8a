"""Serving a recording's bytes to an app or an admin: HTTP Range (RFC 9110 §14).

With credentials that can sign, the answer is a redirect to a short-lived signed Storage
URL: Storage serves the bytes and the ranges itself and no worker is held. Otherwise (the
emulator; ADC without a key) the bytes are proxied here, a chunk at a time, with full
Range support: single ranges (`0-0`, `500-`, `-500`), several ranges as
`multipart/byteranges`, 416 when none is satisfiable, `If-Range` against the ETag.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from email.utils import format_datetime

import structlog
from django.conf import settings
from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseRedirect,
    StreamingHttpResponse,
)
from django.utils.http import content_disposition_header

from api.errors import error_response
from core.errors import NotFound
from library.lookups import MediaFile
from media import storage

log = structlog.get_logger("api.delivery")

MAX_RANGES = 16  # more (after merging) is served whole: RFC 9110 §14.2 lets us ignore it

ByteRange = tuple[int, int]  # first and last byte, inclusive


class Unsatisfiable(Exception):
    pass


_RANGE_SPEC = re.compile(r"([0-9]*)-([0-9]*)")  # ASCII digits: str.isdigit() takes "²"
_FAR = 10**18  # any longer number is past every representation (and int() refuses 4300+)


def _offset(digits: str) -> int:
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) <= 18 else _FAR


def byte_ranges(header: str | None, size: int) -> list[ByteRange] | None:
    """The ranges of a `Range` header for a representation of `size` bytes, sorted and
    merged; None to send the whole representation (no header, another unit, a syntax
    error, too many ranges). Raises Unsatisfiable when no range overlaps the bytes."""
    if not header:
        return None
    unit, _, specs = header.partition("=")
    if unit.strip(" \t").lower() != "bytes" or not specs.strip(" \t"):
        return None
    wanted = []
    for spec in specs.split(","):
        matched = _RANGE_SPEC.fullmatch(spec.strip(" \t"))
        if not matched or not (matched[1] or matched[2]):
            return None  # malformed: ignore the whole header
        first, last = matched[1], matched[2]
        if not first:  # suffix: the last N bytes
            length = _offset(last)
            if length > 0 and size > 0:
                wanted.append((max(size - length, 0), size - 1))
            continue
        start = _offset(first)
        end = _offset(last) if last else size - 1
        if last and end < start:
            return None
        if start < size:
            wanted.append((start, min(end, size - 1)))
    if not wanted:
        raise Unsatisfiable()
    merged: list[ByteRange] = []
    for start, end in sorted(wanted):
        if merged and start <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged if len(merged) <= MAX_RANGES else None


def playback_start(request: HttpRequest) -> bool:
    """Whether this request starts a playback (no Range, or one from byte 0), not one of
    the many range requests a player makes while it plays: the access log counts these."""
    header = (request.headers.get("Range") or "").replace(" ", "")
    return not header or header.startswith("bytes=0-")


def media_response(request: HttpRequest, media: MediaFile, *, attachment: bool,
                   bucket=None) -> HttpResponse:
    """The answer to GET /stream (inline) or /download (attachment) for `media`."""
    disposition = content_disposition_header(True, media.filename) if attachment else None
    try:
        signed = storage.recording_signed_url(
            object_name=media.object_name, bucket=bucket,
            ttl_seconds=settings.STORAGE_STREAM_URL_TTL_SECONDS, disposition=disposition)
        if signed:
            redirect = HttpResponseRedirect(signed)
            redirect["Cache-Control"] = "private, no-store"
            return redirect
        stored = storage.recording_stat(object_name=media.object_name, bucket=bucket)
    except storage.StorageError as exc:
        if exc.code == "storage_not_found":
            raise NotFound("The recording's file is missing from Storage.",
                           code="recording_file_missing") from exc
        raise storage.unavailable(exc, "Storage is unavailable") from exc
    return _proxied(request, media, stored, attachment=attachment, bucket=bucket)


def _proxied(request: HttpRequest, media: MediaFile, stored: storage.StoredObject, *,
             attachment: bool, bucket) -> HttpResponse:
    size = stored.size
    etag = f'"{stored.md5 or stored.generation}"'
    headers = {"Accept-Ranges": "bytes", "ETag": etag, "Cache-Control": "private, no-cache",
               "Content-Disposition": content_disposition_header(attachment, media.filename)}
    if stored.updated:
        headers["Last-Modified"] = format_datetime(stored.updated, usegmt=True)
    if_range = request.headers.get("If-Range")
    range_header = request.headers.get("Range")
    if if_range and if_range.strip() not in (etag, headers.get("Last-Modified")):
        range_header = None  # the client's copy is another version: send it all
    try:
        ranges = byte_ranges(range_header, size)
    except Unsatisfiable:
        return error_response(http_status=416, code="range_not_satisfiable",
                              message=f"No requested range overlaps the {size} bytes.",
                              headers={**headers, "Content-Range": f"bytes */{size}"})
    chunks = _chunk_reader(stored, bucket)
    if ranges is None:
        response = StreamingHttpResponse(chunks(0, size - 1) if size else iter(()),
                                         content_type=media.content_type)
        response["Content-Length"] = str(size)
    elif len(ranges) == 1:
        (start, end), = ranges
        response = StreamingHttpResponse(chunks(start, end), status=206,
                                         content_type=media.content_type)
        response["Content-Range"] = f"bytes {start}-{end}/{size}"
        response["Content-Length"] = str(end - start + 1)
    else:
        boundary = uuid.uuid4().hex
        heads = [(f"\r\n--{boundary}\r\nContent-Type: {media.content_type}\r\n"
                  f"Content-Range: bytes {start}-{end}/{size}\r\n\r\n").encode()
                 for start, end in ranges]
        tail = f"\r\n--{boundary}--\r\n".encode()

        def parts() -> Iterator[bytes]:
            for head, (start, end) in zip(heads, ranges, strict=True):
                yield head
                yield from chunks(start, end)
            yield tail

        response = StreamingHttpResponse(
            parts(), status=206, content_type=f"multipart/byteranges; boundary={boundary}")
        response["Content-Length"] = str(sum(map(len, heads)) + len(tail)
                                         + sum(end - start + 1 for start, end in ranges))
    return _with(response, headers)


def _chunk_reader(stored: storage.StoredObject, bucket):
    def chunks(start: int, end: int) -> Iterator[bytes]:
        try:
            yield from storage.recording_chunks(stored=stored, start=start, end=end,
                                                bucket=bucket)
        except storage.StorageError as exc:
            # The status line is gone already: cut the response short, which the client
            # sees as an incomplete body (Content-Length was promised).
            log.warning("recording_stream_broken", object_name=stored.object_name,
                        error=str(exc))
            raise
    return chunks


def _with(response: HttpResponse, headers: dict) -> HttpResponse:
    for name, value in headers.items():
        response[name] = value
    return response
