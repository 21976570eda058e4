"""An edge service with no prodlens or OpenTelemetry code, run under ``opentelemetry-instrument``:
``/call?client=NAME&url=URL`` fetches URL with that HTTP client and answers with the body it got;
``/context`` answers with the baggage in the OpenTelemetry context. ``edge_app.py flask`` serves
with werkzeug (WSGI), ``edge_app.py fastapi PORT`` with uvicorn (ASGI); both on 127.0.0.1."""

from __future__ import annotations

import asyncio
import signal
import sys
from typing import Any

import aiohttp
import httpx
import requests
import urllib3
from opentelemetry import baggage


def get_requests(url: str) -> str:
    return requests.get(url, timeout=5).text


def get_urllib3(url: str) -> str:
    return urllib3.PoolManager().request("GET", url, timeout=5).data.decode()


def get_httpx(url: str) -> str:
    with httpx.Client() as client:
        return client.get(url, timeout=5).text


async def get_httpx_async(url: str) -> str:
    async with httpx.AsyncClient() as client:
        return (await client.get(url, timeout=5)).text


async def get_aiohttp(url: str) -> str:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return await response.text()


SYNC = {"requests": get_requests, "urllib3": get_urllib3, "httpx": get_httpx}
ASYNC = {"httpx_async": get_httpx_async, "aiohttp": get_aiohttp}


def flask_main() -> None:
    from flask import Flask, request
    from werkzeug.serving import make_server

    app = Flask(__name__)

    @app.route("/call")
    def call() -> Any:
        client, url = request.args["client"], request.args["url"]
        if client in SYNC:
            return SYNC[client](url)
        return asyncio.run(ASYNC[client](url))

    @app.route("/context")
    def context() -> Any:
        return dict(baggage.get_all())

    server = make_server("127.0.0.1", 0, app, threaded=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print("READY", server.server_port, flush=True)
    server.serve_forever(poll_interval=0.05)


def fastapi_main(port: int) -> None:
    import uvicorn
    from fastapi import FastAPI
    from fastapi.responses import PlainTextResponse

    app = FastAPI()

    @app.get("/call")
    async def call(client: str, url: str) -> Any:
        if client in SYNC:
            return PlainTextResponse(SYNC[client](url))
        return PlainTextResponse(await ASYNC[client](url))

    @app.get("/context")
    async def context() -> Any:
        return dict(baggage.get_all())

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")


if __name__ == "__main__":
    if sys.argv[1] == "flask":
        flask_main()
    else:
        fastapi_main(int(sys.argv[2]))
