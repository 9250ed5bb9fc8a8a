"""Settings for the test run: production-like (debug off, Firebase auth) with throwaway
secrets generated for this run. Emulator hosts and the certificate URL are filled in by
the session fixtures in conftest.py once those servers are up."""

import os
import secrets
import tempfile

_TEST_ENV = {
    "MEMHARBOR_DEBUG": "0",
    "MEMHARBOR_SECRET_KEY": secrets.token_urlsafe(32),
    "AGORA_APP_ID": secrets.token_hex(16),
    "AGORA_APP_CERT": secrets.token_hex(16),
    "AUTH_MODE": "firebase",
    "OPS_API_KEY": secrets.token_urlsafe(24),
    "FIREBASE_USE_EMULATOR": "true",
    "FIREBASE_PROJECT_ID": "demo-memharbor-test",
    "FIREBASE_STORAGE_BUCKET": "demo-memharbor-test.appspot.com",
    "LOG_DIR": tempfile.mkdtemp(prefix="memharbor-test-logs-"),
    "RECORDINGS_DIR": tempfile.mkdtemp(prefix="memharbor-test-recordings-"),
    # This process talks to Firestore over gRPC while it starts servers (fork + exec with a
    # preexec hook): gRPC's fork handlers then run in the child and can abort it before
    # exec ("epoll_wait ... Bad file descriptor", exit -6). Read when grpc is imported,
    # which the settings below do.
    "GRPC_ENABLE_FORK_SUPPORT": "false",
}
# The test run's values win over a developer's .env.
os.environ.update(_TEST_ENV)

from config.settings import *  # noqa: E402,F401,F403
