"""`python manage.py sweep_calls [--every SECONDS] [--timeout SECONDS]`

Runs the sweep (`ops/sweep.py`): pending calls past the ring timeout become missed (and the
receivers' phones are told), recordings of ended calls stop, failed uploads are retried.
Once, for cron; or in a loop with --every, for a container. SIGTERM/SIGINT end the loop
after the sweep in progress.
"""

import json
import signal
import threading

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from ops.sweep import sweep_run


class Command(BaseCommand):
    help = "Run the sweep: ring timeouts, recordings of ended calls, failed uploads."

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
            report = sweep_run(timeout_seconds=timeout)
            self.stdout.write(f"swept: {report.updated_count} call(s) moved to missed; "
                              + json.dumps(report.parts, sort_keys=True))
            if report.failed and not every:
                raise CommandError("sweep parts failed: " + ", ".join(report.failed))
            if report.failed:
                self.stderr.write(f"sweep parts failed: {', '.join(report.failed)}; "
                                  f"retrying in {every} s")
            if not every or stop.wait(every):
                return
