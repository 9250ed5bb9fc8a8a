"""Structured JSON logs, one object a line, to stdout and a rotating `logs/api.log`.

Stdlib loggers (Django, gunicorn, google libraries) go through the same JSON formatter, so
ops read one format. Request-scoped values (request id, uid, call id) are bound with
`structlog.contextvars` and appear on every line of that request.
"""

import logging
import logging.config
from pathlib import Path

import structlog

_SHARED_PROCESSORS = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]


def build_logging_config(*, log_dir: Path, level: str, max_bytes: int, backups: int) -> None:
    """Configure stdlib logging and structlog; safe to call more than once."""
    log_dir.mkdir(parents=True, exist_ok=True)
    formatter = {
        "()": structlog.stdlib.ProcessorFormatter,
        "processors": [
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(ensure_ascii=False),
        ],
        "foreign_pre_chain": _SHARED_PROCESSORS,
    }
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "formatters": {"json": formatter},
            "handlers": {
                "stdout": {
                    "class": "logging.StreamHandler",
                    "stream": "ext://sys.stdout",
                    "formatter": "json",
                },
                # Several gunicorn workers append to one file: this handler locks around
                # writes and rotation, which the stdlib RotatingFileHandler does not.
                "file": {
                    "class": "concurrent_log_handler.ConcurrentRotatingFileHandler",
                    "filename": str(log_dir / "api.log"),
                    "maxBytes": max_bytes,
                    "backupCount": backups,
                    "formatter": "json",
                    "use_gzip": False,
                },
            },
            "root": {"handlers": ["stdout", "file"], "level": level},
            "loggers": {
                # 4xx are in the request line already; keep Django's 5xx reports, which
                # carry the traceback of anything that escapes the API's own handler.
                "django.request": {"level": "ERROR", "propagate": True},
                "django.server": {"level": "WARNING", "propagate": True},
                "urllib3": {"level": "WARNING"},
                "google": {"level": "WARNING"},
                "grpc": {"level": "WARNING"},
            },
        }
    )
    structlog.configure(
        processors=[
            *_SHARED_PROCESSORS,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
