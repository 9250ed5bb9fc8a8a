"""gunicorn settings: gthread workers (sync SDKs; a long-lived stream holds one thread).

Every value can be changed from the environment without editing this file.
"""
import os

bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
worker_class = "gthread"
workers = int(os.environ.get("GUNICORN_WORKERS", "2"))
threads = int(os.environ.get("GUNICORN_THREADS", "8"))
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "60"))
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "20"))
keepalive = int(os.environ.get("GUNICORN_KEEPALIVE", "5"))
# Recycle workers now and then so slow leaks in third-party SDKs cannot accumulate.
max_requests = int(os.environ.get("GUNICORN_MAX_REQUESTS", "10000"))
max_requests_jitter = 1000
# Import the app before forking: one settings check, fast worker start. Clients that hold
# sockets or threads (Firestore, APNs) are created lazily in each worker, never here.
preload_app = True
# The app logs one JSON line per request itself; gunicorn's access log would repeat it.
accesslog = None
errorlog = "-"
loglevel = os.environ.get("GUNICORN_LOG_LEVEL", "info")
# nginx's limits are the tighter ones (nginx.conf `large_client_header_buffers 4 8k`), so a
# client hears nginx's JSON error, never gunicorn's HTML one: gunicorn's own request-line,
# header-size and header-count limits sit above what nginx lets through.
limit_request_line = 8190
limit_request_field_size = 8190
limit_request_fields = 1000
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")
proc_name = "memharbor"
# gunicorn 27's control socket would be one more thing left behind in $HOME.
control_socket_disable = True
