"""ASGI entry point for the event-stream server (`python -m config.events`, uvicorn):
`config.asgi:application`, the same Django application as config/wsgi.py.

One difference from `django.core.asgi.get_asgi_application()`: Django's handler gives each
request a thread of its own for its sync code (middleware, auth, the view) and keeps that
thread until the response has been sent, which for an event stream is its whole life: 200
open streams would be 200 parked threads. Here every request's sync code runs on one of
EVENTS_SYNC_THREADS (4) shared threads, picked in turn; each request still keeps to one
thread (asgiref's ThreadSensitiveContext with a one-thread executor), and the stream
itself runs on the event loop (analysis/stream.py, job_events_async).
"""
import itertools
import os
from concurrent.futures import ThreadPoolExecutor

import django
from asgiref.sync import ThreadSensitiveContext
from django.core.handlers.asgi import ASGIHandler

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")


class SharedThreadsASGIHandler(ASGIHandler):
    def __init__(self, threads: int) -> None:
        super().__init__()
        self._executors = itertools.cycle([
            ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"django-sync-{i}")
            for i in range(max(1, threads))])

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            raise ValueError(f"Django serves HTTP only, not {scope['type']}.")
        async with ThreadSensitiveContext(executor=next(self._executors)):
            await self.handle(scope, receive, send)


django.setup(set_prefix=False)
application = SharedThreadsASGIHandler(int(os.environ.get("EVENTS_SYNC_THREADS", "4")))
