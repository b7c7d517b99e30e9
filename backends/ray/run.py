"""Starts Ray (a local head, or joins RAY_ADDRESS) and serves the backend on
Ray Serve until SIGTERM or SIGINT, then shuts Serve and Ray down cleanly
(a background `serve run` ignores SIGINT):

    python -m backends.ray.run [--host 127.0.0.1] [--port 8000] [--num-cpus 2]

The first line printed is `dwa ray backend listening on http://HOST:PORT`.
With a cluster already up (`ray start --head`), `serve run
backends.ray.serve:deployment` from the repository root works too.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m backends.ray.run")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--num-cpus", type=int, default=None)
    args = parser.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # Serve kills an HTTP proxy that is not ready within 5 s three times in
    # a row; on a loaded machine (two cores, a build running) it can take
    # longer to start. Give it a minute.
    os.environ.setdefault("RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S", "60")

    import ray
    from ray import serve

    # Replicas import shared.tasks and backends: put the repository on their path.
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    for k in ("RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S", "DWA_WORK_DIR", "DWA_DATA_DIR", "DWA_RAY_NUM_GPUS", "DWA_BACKEND_TOKEN", "DWA_SYNC_LIMIT_S",
              "OPENAI_BASE_URL", "OPENAI_API_KEY", "ELEVENLABS_BASE_URL", "ELEVENLABS_API_KEY"):
        if k in os.environ:
            env[k] = os.environ[k]
    ray.init(address=os.environ.get("RAY_ADDRESS"), num_cpus=args.num_cpus, include_dashboard=False,
             log_to_driver=False, runtime_env={"env_vars": env})
    serve.start(http_options={"host": args.host, "port": args.port})
    from backends.ray.serve import deployment

    serve.run(deployment, blocking=False)
    # Ray may have swapped sys.stdout for its own logger: write to the real one.
    sys.__stdout__.write(f"dwa ray backend listening on http://{args.host}:{args.port}\n")
    sys.__stdout__.flush()

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    # Ignore further signals while shutting down: a second SIGTERM must not
    # cut the shutdown short and leave Ray's processes behind.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)
    sys.__stderr__.write("dwa ray backend: stopping Serve and Ray\n")
    serve.shutdown()
    ray.shutdown()
    sys.__stderr__.write("dwa ray backend: stopped\n")


if __name__ == "__main__":
    main()
