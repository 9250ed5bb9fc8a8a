"""ASGI entry point for the event-stream server (`python -m config.events`, uvicorn):
`config.asgi:application`, the same Django application as config/wsgi.py."""
import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
application = get_asgi_application()
