"""Helpers for ASGI tests: uvicorn on 127.0.0.1 in a thread, concurrent asyncio clients.

Import from test modules in this directory (``from asgi_servers import ...``).
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import httpx
import uvicorn
from servers import prodlens_attributes


@contextmanager
def serve_asgi(app: Any, start_timeout: float = 10.0, max_header_bytes: int = 16 * 1024
               ) -> Iterator[str]:
    """Serve ``app`` with uvicorn (one event loop, h11) on a free 127.0.0.1 port in a thread;
    yields the base URL. The socket is bound before the thread starts (no port race).
    ``max_header_bytes`` raises h11's limit on a request head (hostile-input tests)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="off", loop="asyncio",
                            http="h11", ws="none", access_log=False,
                            h11_max_incomplete_event_size=max_header_bytes)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + start_timeout
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise AssertionError("uvicorn did not start")
            time.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


async def _gather(base: str, requests: Sequence[tuple[str, Mapping[str, str]]],
                  timeout: float) -> list[tuple[int, Any]]:
    limits = httpx.Limits(max_connections=len(requests) or 1)
    async with httpx.AsyncClient(base_url=base, timeout=timeout, limits=limits) as client:
        async def one(path: str, headers: Mapping[str, str]) -> tuple[int, Any]:
            response = await client.get(path, headers=dict(headers))
            try:
                return response.status_code, response.json()
            except ValueError:
                return response.status_code, response.text

        return list(await asyncio.gather(*(one(p, h) for p, h in requests)))


def get_concurrently(base: str, requests: Sequence[tuple[str, Mapping[str, str]]],
                     timeout: float = 20.0) -> list[tuple[int, Any]]:
    """GET every (path, headers) at once from one asyncio client (a connection each), so the
    server interleaves them on its event loop; returns (status, JSON or text) in order."""
    return asyncio.run(_gather(base, requests, timeout))


async def websocket_session(app: Any, path: str, headers: Mapping[str, str],
                            timeout: float = 10.0) -> list[dict[str, Any]]:
    """Drive one websocket connection through ``app`` directly over ASGI (no client library is
    installed): connect, then collect what the app sends until it closes."""
    scope = {
        "type": "websocket", "asgi": {"version": "3.0"}, "http_version": "1.1",
        "scheme": "ws", "path": path, "raw_path": path.encode(), "query_string": b"",
        "root_path": "", "server": ("127.0.0.1", 80), "client": ("127.0.0.1", 5000),
        "subprotocols": [],
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
    }
    incoming: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    await incoming.put({"type": "websocket.connect"})
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return await incoming.get()

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        if message["type"] == "websocket.close":
            await incoming.put({"type": "websocket.disconnect", "code": 1000})

    await asyncio.wait_for(app(scope, receive, send), timeout)
    return sent


async def lifespan_startup(app: Any, timeout: float = 10.0) -> list[dict[str, Any]]:
    """Run the ASGI lifespan protocol through ``app``: startup then shutdown; returns what the
    app sent."""
    incoming: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    for event in ("lifespan.startup", "lifespan.shutdown"):
        await incoming.put({"type": event})
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    await asyncio.wait_for(app(scope, incoming.get, send), timeout)
    return sent


def raw_get(base: str, target: str, headers: Mapping[str, str | bytes],
            timeout: float = 10.0) -> int:
    """One HTTP/1.1 GET written byte for byte on a socket (no client-side validation or size
    limit, so hostile requests reach the server as sent); returns the status code."""
    host, port = base.removeprefix("http://").rsplit(":", 1)
    lines = [f"GET {target} HTTP/1.1".encode(), f"Host: {host}".encode()]
    for name, value in headers.items():
        lines.append(name.encode() + b": " + (value if isinstance(value, bytes)
                                                else value.encode("latin-1")))
    lines.append(b"Connection: close")
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(b"\r\n".join(lines) + b"\r\n\r\n")
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return int(received.split(b" ", 2)[1])


#: Every source kind, tight limits: nothing over them may land on a span.
BAD_ENV = {
    "PRODLENS_CUSTOMER_FROM": "jwt:sub,cookie:sid,header:x-customer-id,baggage",
    "PRODLENS_COHORT_PLAN_FROM": "jwt:org.plan,cookie:plan,query:plan,baggage",
    "PRODLENS_MAX_VALUE_LENGTH": "32",
    "PRODLENS_MAX_COHORTS": "4",
}


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


#: (case, request target, headers): hostile requests that must be served normally.
HOSTILE_REQUESTS: list[tuple[str, str, dict[str, str]]] = [
    ("jwt-two-parts", "/", {"Authorization": "Bearer abc.def"}),
    ("jwt-bad-base64", "/", {"Authorization": "Bearer a.@@@.c"}),
    ("jwt-non-json", "/", {"Authorization": f"Bearer a.{b64(b'{not json')}.c"}),
    ("jwt-deep-json", "/", {"Authorization": f"Bearer a.{b64(b'[' * 3000 + b']' * 3000)}.c"}),
    ("jwt-huge", "/", {"Authorization": "Bearer a." + "A" * 150_000 + ".c"}),
    ("jwt-long-claims", "/", {"Authorization": "Bearer a." + b64(json.dumps(
        {"sub": "x" * 4000, "org": {"plan": "p" * 2000}}).encode()) + ".c"}),
    ("cookie-100k", "/", {"Cookie": "junk=" + "z" * 100_000 + "; sid=late"}),
    ("cookie-many", "/", {"Cookie": "; ".join(f"c{i}=v" for i in range(12_000))}),
    ("header-long", "/", {"X-Customer-Id": "c" * 50_000}),
    ("baggage-thousands", "/", {"baggage": ",".join(f"k{i}=v{i}" for i in range(5000))}),
    ("baggage-prodlens-thousands", "/", {"baggage": ",".join(
        f"prodlens.cohort.c{i}=v" for i in range(3000))}),
    ("baggage-bad-encoding", "/", {"baggage": "prodlens.customer=%ZZ%ff,prodlens.cohort.plan=%E2"}),
    ("query-huge", "/?plan=" + "p" * 60_000 + "&" * 30_000, {}),
]


def check_bounded(spans: list[Any]) -> None:
    assert len(spans) == 1
    tags = prodlens_attributes(spans[0].attributes)
    assert sum(1 for k in tags if k.startswith("prodlens.cohort.")) <= 4
    for value in tags.values():
        assert isinstance(value, str) and len(value) <= 32


__all__ = [
    "BAD_ENV",
    "HOSTILE_REQUESTS",
    "check_bounded",
    "get_concurrently", "lifespan_startup", "raw_get", "serve_asgi", "websocket_session"]
