"""Cost of dwa's Redis scripts per single-step task, without a host.

Drives create -> lease -> complete in batches (as the hosts' batchers do)
against the Redis on --port, and prints either the scripts' own run time
per task (from SLOWLOG; noisy on a shared machine) or nothing, when run
under `callgrind.sh`, which counts redis-server's instructions instead
(deterministic: the way to compare two versions of the scripts).

    python bench/redis/scripts.py --port 6379 [--tasks 20000] [--dir host/dwa-store/src/redis]
"""

import argparse
import json
import os
import time
import uuid

import redis


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--tasks", type=int, default=20000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--dir", default=os.path.join(os.path.dirname(__file__), "../../host/dwa-store/src/redis"))
    ap.add_argument("--quiet", action="store_true", help="no SLOWLOG timing (under callgrind)")
    a = ap.parse_args()
    r = redis.Redis(port=a.port)
    r.flushall()
    lib = open(os.path.join(a.dir, "lib.lua")).read()
    scripts = {
        n: r.register_script(lib + "\n" + open(os.path.join(a.dir, f"{n}.lua")).read())
        for n in ["create", "lease", "complete"]
    }
    if not a.quiet:
        r.config_set("slowlog-log-slower-than", 0)
        r.config_set("slowlog-max-len", 1000)
    spec = json.dumps({"spec": {"type": "builtin.echo", "payload": {"n": 1}}})
    spent = {"create": 0, "lease": 0, "complete": 0}
    done = 0

    def run(name: str, args: list) -> list:
        if not a.quiet:
            r.slowlog_reset()
        out = scripts[name](args=args)
        if not a.quiet:
            spent[name] += sum(
                e["duration"] for e in r.slowlog_get(10) if e["command"][:7].upper() == b"EVALSHA"
            )
        return out

    for _ in range(a.tasks // a.batch):
        now = str(int(time.time() * 1000))
        args = ["dwa", now, str(a.batch)]
        for _ in range(a.batch):
            # As create.lua reads them: id, type, queue, pipeline, created, spec,
            # idempotency key, body hash, expires, effects, run at, steps; then
            # per step key, task, queue, priority, waiting, dependants.
            args += [str(uuid.uuid4()), "builtin.echo", "default", "0", now, spec, "", "", "0", "", now, "1"]
            args += ["0", "builtin.echo", "default", "0", "0", ""]
        run("create", args)
        # lib.lua's reply(): the jobs list is flat, four values a job.
        flat = run("lease", ["dwa", now, "default", str(a.batch), "30000"])[1]
        jobs = [flat[i : i + 4] for i in range(0, len(flat), 4)]
        args = ["dwa", now, "30000", str(len(jobs))]
        for _queue, job, _attempt, token in jobs:
            args += [job.decode(), token.decode(), '{"n":1}', ""]
        run("complete", args)
        done += len(jobs)
    if not a.quiet and done:
        per = {k: round(v / done, 1) for k, v in spent.items()}
        print(f"{done} tasks; script time per task (µs): {per}, total {round(sum(spent.values()) / done, 1)}")


if __name__ == "__main__":
    main()
