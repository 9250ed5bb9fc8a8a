"""The console's Django session engine: sessions kept in Firestore, `consoleSessions/{id}`.

Signed-cookie sessions could not be ended: a copied cookie stayed valid after sign-out
until it expired. Here the cookie holds only the session key; signing out deletes the
document, and ops can end every session by deleting the collection. The document id is the
key's SHA-256, so a read of the database yields no usable cookie. `expireAt` is there for a
Firestore TTL policy; an expired document is refused on load whether or not TTL removed it.
Written by the server only; firestore.rules' default deny keeps the apps out.

Shaped like Django's own engines (django.contrib.sessions.backends.cache).
"""

from __future__ import annotations

import hashlib

from django.contrib.sessions.backends.base import CreateError, SessionBase
from google.api_core.exceptions import AlreadyExists
from google.cloud.firestore import FieldFilter

from core.clock import utc_now
from integrations.firebase import firestore_client

SESSIONS = "consoleSessions"


def _document(session_key: str):
    digest = hashlib.sha256(session_key.encode()).hexdigest()
    return firestore_client().collection(SESSIONS).document(digest)


class SessionStore(SessionBase):
    def load(self) -> dict:
        snapshot = _document(self.session_key).get() if self.session_key else None
        if snapshot is None or not snapshot.exists or snapshot.get("expireAt") <= utc_now():
            self._session_key = None
            return {}
        return self.decode(snapshot.get("data"))

    def exists(self, session_key: str) -> bool:
        return _document(session_key).get().exists

    def create(self) -> None:
        while True:
            self._session_key = self._get_new_session_key()
            try:
                self.save(must_create=True)
            except CreateError:
                continue  # a key collision: draw again
            self.modified = True
            return

    def save(self, must_create: bool = False) -> None:
        if self.session_key is None:
            return self.create()
        record = {"data": self.encode(self._get_session(no_load=must_create)),
                  "expireAt": self.get_expiry_date(), "updatedAt": utc_now()}
        document = _document(self.session_key)
        if not must_create:
            document.set(record)
            return
        try:
            document.create(record)
        except AlreadyExists:
            raise CreateError from None

    def delete(self, session_key: str | None = None) -> None:
        session_key = session_key or self.session_key
        if session_key:
            _document(session_key).delete()

    @classmethod
    def clear_expired(cls) -> None:
        expired = (firestore_client().collection(SESSIONS)
                   .where(filter=FieldFilter("expireAt", "<", utc_now())).limit(500).stream())
        for snapshot in expired:
            snapshot.reference.delete()
