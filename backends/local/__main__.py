"""The local backend, for development on one machine:

    python -m backends.local [--host 127.0.0.1] [--port 8000]

then start the host with `LOCAL_BACKEND_URL=http://127.0.0.1:8000`. `--port 0`
picks a free port; the first line printed says which.
"""

from __future__ import annotations

import argparse
import socket

import uvicorn

from backends.app import create_app


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m backends.local", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args()
    app = create_app()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    # Listen before saying so: connections wait in the backlog until uvicorn accepts.
    sock.listen(2048)
    host, port = sock.getsockname()[:2]
    # Tests and scripts read this line to find the port.
    print(f"dwa backend listening on http://{host}:{port}", flush=True)
    server = uvicorn.Server(uvicorn.Config(app, log_level=args.log_level, timeout_graceful_shutdown=5))
    server.run(sockets=[sock])


if __name__ == "__main__":
    main()
