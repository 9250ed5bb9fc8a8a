"""Where chunks land: one WebM file per session plus a JSON sidecar describing it.

Every chunk is appended in sequence order and fsync'd, and the sidecar is rewritten
atomically (temp file + rename) after it, so a crash loses at most the chunk in flight
(~1 s) and a restarted recorder knows what it was doing.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from core.clock import iso, utc_now

log = logging.getLogger(__name__)

# after "stopped" the media pipeline moves a recording to processing -> completed | failed
STATES = ("recording", "stopping", "stopped", "processing", "completed", "failed")


_UNSAFE_IN_FILE_NAMES = re.compile(r"[^A-Za-z0-9_\-=+@.]")


def recording_stem(channel: str, started_at: datetime) -> str:
    """`<channel>_<UTC YYYY-MM-DDTHH-MM-SS>` as in the seed's file names; characters of a
    channel name that do not belong in a file or object name (space, #, :, ...) become
    `-` (the document keeps the channel itself)."""
    safe = _UNSAFE_IN_FILE_NAMES.sub("-", channel).lstrip(".") or "channel"
    return f"{safe}_{started_at.strftime('%Y-%m-%dT%H-%M-%S')}"


def write_json_atomically(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=1, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


@dataclass
class ChunkSink:
    """The file and sidecar of one session. Not thread-safe: one writer at a time
    (the session's lock)."""

    path: Path
    meta: dict
    next_seq: int = 0
    gaps: list = field(default_factory=list)

    @classmethod
    def create(cls, directory: Path, *, channel: str, started_at: datetime, meta: dict) -> ChunkSink:
        """Claim a new `<channel>_<timestamp>.webm` (suffix `-2`, `-3`... if two sessions of
        one channel start in the same second) and write its sidecar."""
        directory.mkdir(parents=True, exist_ok=True)
        stem = recording_stem(channel, started_at)
        for attempt in range(1, 1000):
            name = stem if attempt == 1 else f"{stem}-{attempt}"
            path = directory / f"{name}.webm"
            try:
                os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
                break
            except FileExistsError:
                continue
        else:  # pragma: no cover - a thousand sessions of one channel in one second
            raise RuntimeError(f"no free file name for {stem}")
        sink = cls(path=path, meta={
            **meta, "filename": path.name, "startedAt": iso(started_at), "state": "recording",
            "chunks": 0, "bytes": 0, "lastChunkAt": None, "gaps": [],
        })
        sink.save()
        return sink

    @property
    def sidecar_path(self) -> Path:
        return self.path.with_suffix(".json")

    def save(self) -> None:
        write_json_atomically(self.sidecar_path, self.meta)

    def append(self, seq: int, data: bytes) -> str:
        """Append chunk `seq`. Returns "written", or "duplicate" for a chunk already written
        (a retried upload). A chunk after a gap is written too (the gap is noted): refusing
        it would lose everything after one failed upload."""
        if seq < self.next_seq:
            return "duplicate"
        if seq > self.next_seq:
            self.gaps.append([self.next_seq, seq - 1])
            self.meta["gaps"] = self.gaps
            log.warning("chunk gap %s..%s in %s", self.next_seq, seq - 1, self.path.name)
        with open(self.path, "ab") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        self.next_seq = seq + 1
        self.meta["chunks"] += 1
        self.meta["bytes"] += len(data)
        self.meta["lastChunkAt"] = iso(utc_now())
        self.save()
        return "written"

    def mark(self, state: str, **fields) -> None:
        assert state in STATES, state
        self.meta.update(fields, state=state)
        self.save()

    def discard(self) -> None:
        """Remove the file and sidecar of a session that never recorded anything."""
        for path in (self.path, self.sidecar_path):
            path.unlink(missing_ok=True)


def probe_duration_ms(path: Path) -> int | None:
    """Duration of the audio in `path` from an ffprobe packet scan (browser WebM has no
    duration header until remuxed); None when ffprobe is missing or finds nothing."""
    ffprobe = shutil.which("ffprobe")
    if not ffprobe or not path.exists() or path.stat().st_size == 0:
        return None
    try:
        out = subprocess.run(
            [ffprobe, "-v", "error", "-select_streams", "a:0", "-show_entries",
             "packet=pts_time,duration_time", "-of", "csv=p=0", str(path)],
            capture_output=True, text=True, timeout=300, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    first = end = None
    for line in out.splitlines():
        parts = [p for p in re.split(r"[,\s]+", line.strip()) if p]
        try:
            pts = float(parts[0])
            dur = float(parts[1]) if len(parts) > 1 else 0.0
        except (ValueError, IndexError):
            continue
        first = pts if first is None else min(first, pts)
        end = pts + dur if end is None else max(end, pts + dur)
    if first is None or end is None:
        return None
    return round((end - first) * 1000)


def unfinished_sidecars(directory: Path) -> list[Path]:
    """Sidecars a crashed recorder left in `recording` or `stopping` state."""
    found = []
    if not directory.is_dir():
        return found
    for path in sorted(directory.glob("*.json")):
        try:
            meta = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            log.warning("unreadable sidecar %s", path)
            continue
        if meta.get("state") in ("recording", "stopping"):
            found.append(path)
    return found
