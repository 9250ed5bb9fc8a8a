"""A production-like server for benchmarks, on free loopback ports, stopped on exit.

Firestore + Storage emulators, a fake securetoken certificate server (real RS256 Firebase
ID tokens), and gunicorn with config/gunicorn.conf.py and debug off.
"""

from __future__ import annotations

import contextlib
import os
import platform
import secrets
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from devstack.emulators import Emulators, _http_ok, free_port, spawn, stop, wait_until
from tests.fakes.firebase_auth import FakeSecureToken

ROOT = Path(__file__).resolve().parent.parent
PROJECT_ID = "demo-memharbor-bench"


@dataclass
class Stack:
    base: str
    securetoken: FakeSecureToken
    emulators: Emulators
    env: dict
    ops_key: str
    gunicorn: subprocess.Popen
    workdir: Path

    @property
    def gunicorn_log(self) -> Path:
        return self.workdir / "gunicorn.log"


@contextlib.contextmanager
def bench_stack(**env_overrides):
    """Yield a running Stack; everything it started is stopped when the block ends."""
    workdir = Path(tempfile.mkdtemp(prefix="memharbor-bench-"))
    emulators = Emulators(project_id=PROJECT_ID, bucket=f"{PROJECT_ID}.appspot.com",
                          log_dir=workdir, rules=ROOT / "firestore.rules")
    securetoken = FakeSecureToken(PROJECT_ID)
    gunicorn = None
    try:
        emulators.start()
        securetoken.start()
        port = free_port()
        ops_key = secrets.token_urlsafe(16)
        env = {**os.environ, **emulators.env(),
               "MEMHARBOR_DEBUG": "0", "AUTH_MODE": "firebase",
               "MEMHARBOR_SECRET_KEY": secrets.token_urlsafe(32),
               "AGORA_APP_ID": secrets.token_hex(16), "AGORA_APP_CERT": secrets.token_hex(16),
               "FIREBASE_AUTH_CERT_URL": securetoken.url, "OPS_API_KEY": ops_key,
               "GUNICORN_BIND": f"127.0.0.1:{port}", "LOG_DIR": str(workdir),
               "LOG_LEVEL": "WARNING", **env_overrides}
        env.pop("DJANGO_SETTINGS_MODULE", None)
        gunicorn = spawn([sys.executable, "-m", "gunicorn", "-c", "config/gunicorn.conf.py",
                          "config.wsgi:application"], log_path=workdir / "gunicorn.log",
                         env=env)
        base = f"http://127.0.0.1:{port}"
        wait_until(lambda: _http_ok(f"{base}/api/health/live"), timeout=60, what="gunicorn",
                   proc=gunicorn, log_path=workdir / "gunicorn.log")
        yield Stack(base=base, securetoken=securetoken, emulators=emulators, env=env,
                    ops_key=ops_key, gunicorn=gunicorn, workdir=workdir)
    finally:
        stop(gunicorn)
        securetoken.stop()
        emulators.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def machine_info() -> dict:
    """What this machine and software stack are, for BENCHMARKS.md."""
    import django
    import gunicorn

    cpu, mem_gib = "unknown CPU", 0.0
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem_gib = int(Path("/proc/meminfo").read_text().split()[1]) / 1024 / 1024
    return {"nproc": os.cpu_count(), "cpu": cpu, "mem": f"{mem_gib:.1f} GiB",
            "python": platform.python_version(), "django": django.get_version(),
            "gunicorn": gunicorn.__version__, "os": platform.platform(terse=True)}


def machine() -> str:
    """One line describing this machine, for BENCHMARKS.md."""
    info = machine_info()
    return f"{info['nproc']} cores ({info['cpu']}), {info['mem']}, Python {info['python']}"
