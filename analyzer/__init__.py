"""The built-in analysis server, its own process (`python -m analyzer`).

It takes analysis jobs over HTTP (`POST /jobs`, signed per Standard Webhooks), downloads the
recording, measures it with ffmpeg, transcribes it with Vosk, and reports progress and the
result to the job's callback URL as signed webhooks. The protocol is in README.md.

Like the recorder, it imports no Django and none of the API's packages: the standard
library, aiohttp, httpx, standardwebhooks, vosk and `media.audio` only.
"""
