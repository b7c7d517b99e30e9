"""Serves the backend on Ray Serve until SIGTERM or SIGINT:

    python -m backends.ray.run [--address auto|HOST:PORT] [--config FILE]
                               [--host 127.0.0.1] [--port 8000] [--num-cpus N]

Without `--address` (or RAY_ADDRESS) it starts a single-node Ray of its own
and stops it on exit. With one (`ray start --head` / `ray up` made the
cluster; `auto` finds the one on this machine) it deploys the application
`dwa` there and on exit deletes just that application and its job table,
leaving the cluster up. `--config` (or DWA_RAY_CONFIG) names the
deployments file (backends/ray/deployments.toml); it is checked before Ray
starts. The first line printed is `dwa ray backend listening on http://HOST:PORT`.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: The Serve application's name (its job table is named after it).
APP = "dwa"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m backends.ray.run")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--num-cpus", type=int, default=None)
    parser.add_argument("--address", default=os.environ.get("RAY_ADDRESS") or None,
                        help="a running cluster to join (auto: the one on this machine)")
    parser.add_argument("--config", default=None, help="the deployments file (default: DWA_RAY_CONFIG, "
                        "else backends/ray/deployments.toml)")
    args = parser.parse_args()
    from backends.ray import config

    try:
        cfg = config.load(args.config)
    except config.ConfigError as e:
        parser.exit(2, f"dwa ray backend: {e}\n")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # Serve kills an HTTP proxy that is not ready within 5 s three times in
    # a row; on a loaded machine (two cores, a build running) it can take
    # longer to start. Give it a minute.
    os.environ.setdefault("RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S", "60")

    attached = bool(args.address)
    if attached and "RAY_AUTH_MODE" not in os.environ and (Path.home() / ".ray" / "auth_token").exists():
        # `ray start` turns token authentication on by default and keeps the
        # token there, but a driver joining its cluster only sends it when
        # told to (Ray 2.60), and Ray reads it once, on import.
        os.environ["RAY_AUTH_MODE"] = "token"

    import ray
    from ray import serve

    # Replicas import shared.tasks and backends: put the repository on their path.
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    # On a cluster this process joined, replicas see the node's environment,
    # not this one's: hand them every DWA_* setting and the tasks' API keys.
    for k, v in os.environ.items():
        if k.startswith("DWA_") or k in ("RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S", "OPENAI_BASE_URL", "OPENAI_API_KEY",
                                         "ELEVENLABS_BASE_URL", "ELEVENLABS_API_KEY"):
            env[k] = v
    if attached:
        ray.init(address=args.address, log_to_driver=False, runtime_env={"env_vars": env})
    else:
        # "local": a new cluster, even when this machine runs another.
        ray.init(address="local", num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": env})
    serve.start(http_options={"host": args.host, "port": args.port})
    from backends.ray.serve import build

    try:
        app = build(cfg)
    except config.ConfigError as e:
        sys.__stderr__.write(f"dwa ray backend: {e}\n")
        stop_ray(attached)
        sys.exit(2)
    serve.run(app, name=APP, route_prefix="/", blocking=False)
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
    stop_ray(attached)
    sys.__stderr__.write("dwa ray backend: stopped\n")


def stop_ray(attached: bool) -> None:
    """Stops what this process started: on a cluster it joined, the
    application and its job table; else Serve and Ray."""
    import ray
    from ray import serve

    from backends.ray.jobs import NAMESPACE, table_name

    if attached:
        sys.__stderr__.write(f"dwa ray backend: deleting the application {APP!r}\n")
        serve.delete(APP)
        try:
            ray.kill(ray.get_actor(table_name(APP), namespace=NAMESPACE))
        except ValueError:
            pass  # no job was ever submitted
    else:
        sys.__stderr__.write("dwa ray backend: stopping Serve and Ray\n")
        serve.shutdown()
    ray.shutdown()


if __name__ == "__main__":
    main()
