"""The Memharbor recorder bot: a separate process (`python -m recorder`) that records calls.

One headless Chromium, one page per recording session; the page records (Agora channel,
tone or fixture) with MediaRecorder and POSTs WebM chunks back here, where they are
appended to `RECORDINGS_DIR/<channel>_<timestamp>.webm` beside a JSON sidecar.
"""
