"""`python -m config.events`: the event-stream server, uvicorn serving Django's ASGI
application (config/asgi.py). nginx routes `GET /api/analysis/<job>/events` here and
everything else to gunicorn; an open stream is a coroutine on the event loop instead of a
gunicorn thread (BENCHMARKS.md, "200 event streams": why).

Every value can be changed from the environment, like config/gunicorn.conf.py.
"""
import os

import uvicorn


def main() -> None:
    host, _, port = os.environ.get("EVENTS_BIND", "127.0.0.1:8002").rpartition(":")
    uvicorn.run(
        "config.asgi:application",
        host=host or "127.0.0.1",
        port=int(port),
        workers=int(os.environ.get("EVENTS_WORKERS", "1")),
        lifespan="off",  # Django's ASGI application speaks no lifespan protocol
        # The app logs one JSON line per request itself (Django's logging, config/logging.py).
        access_log=False,
        log_config=None,
        log_level=os.environ.get("GUNICORN_LOG_LEVEL", "info"),
        proxy_headers=True,
        forwarded_allow_ips=os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1"),
        # Longer than nginx's upstream keepalive_timeout (4 s), as for gunicorn.
        timeout_keep_alive=int(os.environ.get("GUNICORN_KEEPALIVE", "5")),
        # Open streams do not end by themselves within a stop: cut them after this (clients
        # reconnect with Last-Event-ID).
        timeout_graceful_shutdown=int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "20")),
        server_header=False,
    )


if __name__ == "__main__":
    main()
