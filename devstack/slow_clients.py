"""Slow clients (slowloris) against a local server, for tests/test_deployment.py and
bench/slow_clients.py: connections that send their headers one byte a second, and
connections that declare a request body and never send it.

Each connection carries `X-Request-ID: <tag>-h<i>` (headers) or `<tag>-b<i>` (bodies) in
its first bytes, so a server's logs show whether any of them ever reached it. Loopback only:
the caller gives the port on 127.0.0.1 and the local source address.
"""
from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field


@dataclass
class SlowConnection:
    kind: str                 # "headers" (one header byte a second) or "body" (never sent)
    request_id: str
    sock: socket.socket
    opened_at: float
    answer: bytes = b""       # whatever the server sent back (an error page, or nothing)
    closed_at: float | None = None  # when the server closed or reset it (monotonic)

    @property
    def open(self) -> bool:
        return self.closed_at is None

    @property
    def held_for(self) -> float | None:
        return None if self.closed_at is None else self.closed_at - self.opened_at


@dataclass
class SlowClients:
    """`tick()` about once a second: every header connection sends one more byte, and every
    connection is checked for an answer or a close from the server."""
    port: int
    headers: int = 140
    bodies: int = 60
    source: str = "127.0.0.1"
    tag: str = "slowloris"
    header_path: str = "/api/health/live"
    body_path: str = "/api/call/answer"  # not /api/token: nginx rate-limits that (limit_req)
    connections: list[SlowConnection] = field(default_factory=list)

    def open(self) -> SlowClients:
        for kind, count in (("headers", self.headers), ("body", self.bodies)):
            for i in range(count):
                request_id = f"{self.tag}-{kind[0]}{i}"
                sock = socket.create_connection(("127.0.0.1", self.port), timeout=10,
                                                source_address=(self.source, 0))
                if kind == "headers":
                    first = (f"GET {self.header_path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                             f"X-Request-ID: {request_id}\r\nX-Slow: ")
                else:
                    first = (f"POST {self.body_path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                             f"X-Request-ID: {request_id}\r\nContent-Type: application/json\r\n"
                             f"Content-Length: 1000\r\n\r\n")
                sock.sendall(first.encode())
                sock.setblocking(False)
                self.connections.append(SlowConnection(kind, request_id, sock, time.monotonic()))
        return self

    def tick(self) -> None:
        now = time.monotonic()
        for conn in self.connections:
            if not conn.open:
                continue
            try:
                while True:
                    data = conn.sock.recv(65536)
                    if not data:
                        conn.closed_at = now
                        break
                    conn.answer += data
            except BlockingIOError:
                pass
            except OSError:
                conn.closed_at = now
            if conn.open and conn.kind == "headers":
                try:
                    conn.sock.send(b"a")
                except BlockingIOError:
                    pass
                except OSError:
                    conn.closed_at = now

    def still_open(self, kind: str | None = None) -> list[SlowConnection]:
        return [c for c in self.connections if c.open and kind in (None, c.kind)]

    def close(self) -> None:
        for conn in self.connections:
            conn.sock.close()
