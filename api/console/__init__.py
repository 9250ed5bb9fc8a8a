"""The ops console at /ops/: server-rendered pages over the same services as the API."""
