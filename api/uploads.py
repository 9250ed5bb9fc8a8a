"""Receiving a recording from an app: the multipart body goes straight to disk.

`RecordingUploadHandler` (settings.FILE_UPLOAD_HANDLERS) writes every uploaded file into
`FILE_UPLOAD_TEMP_DIR` (`RECORDING_UPLOADS_DIR/.incoming`) in Django's 64 KiB chunks while
computing its sha256 and counting its bytes, so no file is ever held in memory and a file over
`RECORDING_MAX_UPLOAD_MB` is refused as soon as it passes the limit. The file is a
`TemporaryUploadedFile`: Django deletes it when the request ends, so whatever goes wrong
nothing is left behind; the upload service hard-links it to a name of its own to keep it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from django.conf import settings
from django.core.files.uploadedfile import TemporaryUploadedFile
from django.core.files.uploadhandler import FileUploadHandler

from core.errors import PayloadTooLarge
from library.uploads import Received


def upload_limit_bytes() -> int:
    return int(settings.RECORDING_MAX_UPLOAD_MB) * 1024 * 1024


class ReceivedFile(TemporaryUploadedFile):
    """An uploaded file on disk with the `sha256` (hex) of its bytes."""

    sha256: str = ""

    def received(self) -> Received:
        """What the library needs of it (no Django classes below the web layer)."""
        return Received(path=Path(self.temporary_file_path()), sha256=self.sha256,
                        size=self.size, name=self.name)


class RecordingUploadHandler(FileUploadHandler):
    def new_file(self, *args, **kwargs) -> None:
        super().new_file(*args, **kwargs)
        # FILE_UPLOAD_TEMP_DIR is on the uploads volume: keeping the file is a link.
        Path(settings.FILE_UPLOAD_TEMP_DIR).mkdir(parents=True, exist_ok=True)
        self.file = ReceivedFile(self.file_name, self.content_type, 0, self.charset,
                                 self.content_type_extra)
        self.digest = hashlib.sha256()
        self.received = 0

    def receive_data_chunk(self, raw_data: bytes, start: int) -> None:
        self.received += len(raw_data)
        if self.received > upload_limit_bytes():
            self.file.close()  # deletes what was written
            raise PayloadTooLarge(
                f"The recording is larger than RECORDING_MAX_UPLOAD_MB "
                f"({settings.RECORDING_MAX_UPLOAD_MB} MB).", code="recording_too_large")
        self.digest.update(raw_data)
        self.file.write(raw_data)
        return None

    def file_complete(self, file_size: int) -> ReceivedFile:
        self.file.seek(0)
        self.file.size = file_size
        self.file.sha256 = self.digest.hexdigest()
        return self.file
