"""Ray's chain of 1,000 tasks, each taking the one before's result: the
peer of dwa's `chain` benchmark (#16, target 3). A local Ray on this
machine's CPUs; the clock runs from the first submission to the last result
(Ray keeps results in memory: no durability, unlike dwa's chain).
Prints a `BENCH chain.ray.seconds=` line for scripts/bench.sh's summary."""

import os
import time

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import ray  # noqa: E402

STEPS = 1_000


@ray.remote
def step(x):
    return x


def main() -> None:
    # "local": a cluster of its own, never one this machine already runs.
    ray.init(address="local", include_dashboard=False, log_to_driver=False, logging_level="error")
    # Warm: a worker process up, the function exported.
    ray.get(step.remote(0))
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        ref = step.remote(1)
        for _ in range(STEPS - 1):
            ref = step.remote(ref)
        ray.get(ref)
        best = min(best, time.perf_counter() - start)
    print(f"{'chain (1,000 sequential) [ray]':<34} {STEPS} tasks: {best:.2f} s (best of 3)")
    print(f"BENCH chain.ray.seconds={best:.4f}")
    ray.shutdown()


if __name__ == "__main__":
    main()
