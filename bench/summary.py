"""#16's targets beside their peers, from the `BENCH key=value` lines one
`just bench` run printed (scripts/bench.sh passes the file). A key printed
more than once (the DAG and latency rounds) stands for the median of its
values, and a ratio for the median of its rounds' ratios."""

import math
import re
import statistics
import sys


def main(path: str) -> None:
    text = open(path, encoding="utf-8").read()
    f: dict[str, list[float]] = {}
    for k, v in re.findall(r"^BENCH ([\w.]+)=([\d.]+)$", text, re.M):
        f.setdefault(k, []).append(float(v))
    get = lambda k: statistics.median(f[k]) if k in f else math.nan  # noqa: E731

    def ratio(mine: str, peer: str) -> tuple[float, str]:
        """The median of the rounds' ratios, and their range when there are several."""
        pairs = [a / b for a, b in zip(f.get(mine, []), f.get(peer, []))]
        if not pairs:
            return math.nan, ""
        spread = f" ({min(pairs):.2f}-{max(pairs):.2f}, {len(pairs)} rounds)" if len(pairs) > 1 else ""
        return statistics.median(pairs), spread

    def row(target: str, figure: str, met: bool | None) -> None:
        verdict = "?" if met is None else ("met" if met else "NOT met")
        print(f"{target:<50} {figure:<72} {verdict}")

    def check(value: float, ok) -> bool | None:
        return None if math.isnan(value) else bool(ok(value))

    print(f"\n{'#16 target':<50} {'this run (peer)':<72} verdict")
    flows = get("flows.seconds")
    for store in ("embedded", "redis"):
        mine = get(f"dag.{store}.seconds")
        r, spread = ratio(f"dag.{store}.seconds", "flows.seconds")
        row(f"1 DAG over HTTP, {store}: <= 1/3 of flows", f"{mine:.2f} s / BullMQ flows {flows:.2f} s = {r:.2f}{spread}",
            check(r, lambda v: v <= 1 / 3))
    # The step's start (its span entered: the "first instruction",
    # BullMQ's processor start) decides; the figure after it is when the
    # step:start event was seen, after the task's creation was on disk.
    rounds = len(f.get("latency.embedded.p50_ms", []))
    of = f", medians of {rounds}" if rounds > 1 else ""
    p50, p99 = get("latency.embedded.p50_ms"), get("latency.embedded.p99_ms")
    seen = get("latency.embedded.seen_p50_ms")
    row("2 latency, embedded: p50 <= 1 ms", f"p50 {p50:.2f} ms, p99 {p99:.2f} ms (seen p50 {seen:.2f}){of}",
        check(p50, lambda v: v <= 1))
    p50, p99 = get("latency.redis.p50_ms"), get("latency.redis.p99_ms")
    bp50, bp99 = get("latency.bullmq.p50_ms"), get("latency.bullmq.p99_ms")
    row("2 latency, Redis: p50 <= BullMQ's, p99 <= 3 ms", f"p50 {p50:.2f} ms, p99 {p99:.2f} ms (BullMQ {bp50:.2f} / {bp99:.2f}){of}",
        check(p50, lambda v: v <= bp50 and p99 <= 3))
    chain, ray = get("chain.embedded.seconds"), get("chain.ray.seconds")
    # The 0.2 s is 7x Ray's chain on its machine: the ratio is what
    # survives a noisy machine, so it decides.
    row("3 chain of 1,000, embedded: >= 7x Ray (0.2 s)", f"{chain:.2f} s, Ray {ray:.2f} s: {ray / chain:.1f}x",
        check(ray / chain, lambda r: r >= 7))
    warm, cold = get("idle.warm.rss_mb"), get("idle.cold.peak_mb")
    row("4 idle, all plugins: <= 50 MB warm, <= 150 cold", f"warm {warm:.1f} MB, cold-start peak {cold:.1f} MB (bare {get('idle.bare.rss_mb'):.1f})",
        check(warm, lambda v: v <= 50 and cold <= 150))
    js, fresh = get("templates.js_filter_one_task.us"), get("templates.js_filter_new_task.us")
    row("5 JS template function: <= 300 µs", f"{js:.0f} µs in a task, {fresh:.0f} µs a new task each (Rust {get('templates.rust_filter.us'):.0f})",
        check(js, lambda v: v <= 300))
    plugin, native = get("transforms.resize_s.plugin"), get("transforms.resize_s.native")
    row("6 image.resize plugin: >= 0.5x native", f"{plugin * 1000:.0f} ms / native {native * 1000:.0f} ms = {native / plugin:.2f}x",
        check(native / plugin, lambda r: r >= 0.5))
    justfile = open("justfile", encoding="utf-8").read()
    release = re.search(r"^serve:.*\n\s+cargo run --release ", justfile, re.M) is not None
    row("7 just serve: an optimised host", "justfile: serve runs `cargo run --release`", release)


if __name__ == "__main__":
    main(sys.argv[1])
