"""bench/summary.py: the verdicts `just bench` ends with (#16)."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def summary(tmp_path, monkeypatch, capsys, lines: list[str]) -> dict[str, str]:
    """The summary's rows for these BENCH lines, by the start of their target."""
    spec = importlib.util.spec_from_file_location("bench_summary", ROOT / "bench" / "summary.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    figures = tmp_path / "figures"
    figures.write_text("".join(f"BENCH {line}\n" for line in lines), encoding="utf-8")
    monkeypatch.chdir(ROOT)  # it reads the justfile
    module.main(str(figures))
    rows = capsys.readouterr().out.splitlines()
    return {target: next(r for r in rows if r.startswith(target))
            for target in ("1 DAG over HTTP, embedded", "2 latency, embedded")}


def test_a_ratio_measured_in_rounds_is_the_median_of_the_rounds_ratios(tmp_path, monkeypatch, capsys):
    # Each round pairs a dwa run with BullMQ's right after it. The ratio of
    # the medians, 0.70 / 2.10 = 0.33, would hide that two rounds of three
    # were over the line.
    rows = summary(tmp_path, monkeypatch, capsys, [
        "dag.embedded.seconds=0.50", "flows.seconds=1.40",  # 0.357
        "dag.embedded.seconds=0.70", "flows.seconds=2.20",  # 0.318
        "dag.embedded.seconds=0.80", "flows.seconds=2.10",  # 0.381
    ])
    assert "= 0.36 (0.32-0.38, 3 rounds)" in rows["1 DAG over HTTP, embedded"], rows["1 DAG over HTTP, embedded"]
    assert rows["1 DAG over HTTP, embedded"].endswith("NOT met")
    rows = summary(tmp_path, monkeypatch, capsys, [
        "dag.embedded.seconds=0.50", "flows.seconds=1.60",
        "dag.embedded.seconds=0.70", "flows.seconds=2.20",
        "dag.embedded.seconds=0.90", "flows.seconds=2.10",
    ])
    assert "= 0.32 (0.31-0.43, 3 rounds)" in rows["1 DAG over HTTP, embedded"], rows["1 DAG over HTTP, embedded"]
    assert rows["1 DAG over HTTP, embedded"].endswith(" met")


def test_latency_is_judged_on_the_median_step_start_of_the_rounds(tmp_path, monkeypatch, capsys):
    rows = summary(tmp_path, monkeypatch, capsys, [
        "latency.embedded.p50_ms=0.8", "latency.embedded.p99_ms=2",
        "latency.embedded.p50_ms=1.4", "latency.embedded.p99_ms=9",
        "latency.embedded.p50_ms=0.9", "latency.embedded.p99_ms=3",
        "latency.embedded.seen_p50_ms=1.2",
    ])
    assert "p50 0.90 ms, p99 3.00 ms (seen p50 1.20), medians of 3" in rows["2 latency, embedded"], rows["2 latency, embedded"]
    assert rows["2 latency, embedded"].endswith(" met")
