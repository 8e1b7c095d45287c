"""`python -m bench.echo_server --port N`: the ws-echo baseline. One WebSocket route that sends back every
text frame, under the uvicorn settings `agentplane serve` uses, with no database and no parsing.

It shows what this machine's Python socket stack can do at best, so a record can say how close the full
path (auth, JSON, Postgres, routing) comes to it. We do not add an echo route to the app itself: the
baseline must stay the same while app/ changes."""

from __future__ import annotations

import argparse
import sys

import uvicorn
from fastapi import FastAPI, WebSocket, WebSocketDisconnect

app = FastAPI()


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@app.websocket("/ws/echo")
async def echo(websocket: WebSocket) -> None:
    await websocket.accept()
    try:
        while True:
            await websocket.send_text(await websocket.receive_text())
    except WebSocketDisconnect:
        return


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.echo_server")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    # The same knobs as agentplane.cli.cmd_serve: auto loop/http (uvloop, httptools when installed),
    # no per-message deflate, the same frame size cap, no access log.
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=args.port,
        log_config=None,
        log_level="warning",
        ws_max_size=16 * 1024 * 1024,
        ws_per_message_deflate=False,
        timeout_graceful_shutdown=5,
    )
    uvicorn.Server(config).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
