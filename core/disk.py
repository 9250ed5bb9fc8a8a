"""Disk used by a directory of recordings and the space left where it lives."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def disk_usage(directory: Path, *, recursive: bool = False) -> dict:
    """`{"recordingsBytes", "freeBytes"}`: bytes of the files in `directory` (its
    subdirectories too if `recursive`) and free bytes on its filesystem. A directory not
    made yet holds 0 bytes; files removed while counting are not counted."""
    used = 0
    if directory.is_dir():
        for root, dirs, files in os.walk(directory):
            for name in files:
                try:
                    used += os.stat(os.path.join(root, name), follow_symlinks=False).st_size
                except FileNotFoundError:
                    pass
            if not recursive:
                dirs.clear()
    existing = directory
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    return {"recordingsBytes": used, "freeBytes": shutil.disk_usage(existing).free}
