"""`python manage.py sweep_calls [--every SECONDS] [--timeout SECONDS]`

Moves pending calls past the ring timeout to missed (and tells the receivers' phones).
Once, for cron; or in a loop with --every, for a container. SIGTERM/SIGINT end the loop
after the sweep in progress.
"""

import signal
import threading

from django.conf import settings
from django.core.management.base import BaseCommand

from calls.services import calls_sweep


class Command(BaseCommand):
    help = "Move pending calls past the ring timeout to missed."

    def add_arguments(self, parser):
        parser.add_argument("--every", type=float, default=0,
                            help="Sweep every N seconds until stopped (default: once).")
        parser.add_argument("--timeout", type=int, default=settings.CALL_RING_TIMEOUT_SECONDS,
                            help="Ring timeout in seconds (default CALL_RING_TIMEOUT_SECONDS).")

    def handle(self, *args, every: float, timeout: int, **options):
        stop = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
        while True:
            try:
                updated = calls_sweep(timeout_seconds=timeout)
                self.stdout.write(f"swept: {updated} call(s) moved to missed")
            except Exception as exc:  # a loop must survive a Firestore hiccup
                if not every:
                    raise
                self.stderr.write(f"sweep failed: {exc!r}; retrying in {every} s")
            if not every or stop.wait(every):
                return
