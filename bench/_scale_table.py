"""The Markdown table of bench/scale.py."""

from __future__ import annotations

import math
import os
import statistics


def median_of(runs: list[dict], *path: str) -> float:
    values = []
    for r in runs:
        v = r
        for key in path:
            v = v.get(key, float("nan")) if isinstance(v, dict) else float("nan")
        values.append(float(v))
    return statistics.median(values) if values else float("nan")


def counts(runs: list[dict], key: str) -> str:
    """ "lost / duplicates / stuck" summed over the runs ("-" when a run has no such phase)."""
    if not all(isinstance(r.get(key), dict) and "lost" in r[key] for r in runs):
        return "-"
    return " / ".join(str(sum(int(r[key][k]) for r in runs)) for k in ("lost", "duplicates", "stuck"))


def print_table(args, columns, results, load_before, load_after) -> None:
    print(
        f"\nlevels {args.levels} concurrent stages, {args.runs} run(s) (median), {args.seconds:g} s windows, agents {args.agent_seconds:g} s;"
        f" load average (1/5/15 min) before {load_before[0]:.2f}/{load_before[1]:.2f}/{load_before[2]:.2f},"
        f" after {load_after[0]:.2f}/{load_after[1]:.2f}/{load_after[2]:.2f}; {os.cpu_count()} cores\n"
    )
    print("| figure | " + " | ".join(label for label, _, _ in columns) + " |")
    print("|---|" + "---|" * len(columns))
    rows = [
        ("idle: transactions/s", ("idle", "xacts"), 1),
        ("idle: new connections/s", ("idle", "sessions"), 1),
        ("idle: TAC-X CPU (% of a core)", ("idle", "cpu"), 100),
        ("idle: TAC-X PSS (MB)", ("idle", "pss"), 1),
    ]
    for level in args.levels:
        for rate in args.rates:
            key, at = f"L{level}_r{rate:g}", f"{level} stages, {rate:g} lines/s"
            rows += [
                (f"{at}: TAC-X PSS added per running stage (MB)", (key, "pss_per_stage_mb"), 1),
                (f"{at}: TAC-X CPU per running stage (% of a core)", (key, "cpu_per_stage_pct"), 1),
                (f"{at}: TAC-X PSS, all processes (MB)", (key, "pss_total_mb"), 1),
                (f"{at}: TAC-X CPU per line (ms)", (key, "cpu_ms_per_line"), 1),
                (f"{at}: transactions per line", (key, "xacts_per_line"), 1),
                (f"{at}: stage hand-off p95 (s)", (key, "handoff_p95"), 1),
                (f"{at}: live line -> websocket p95 (ms)", (key, "live_p95_ms"), 1),
                (f"{at}: lost results / duplicate runs / stuck stages", (key,), 0),
            ]
    if args.drain:
        rows += [
            ("drain: tasks/min", ("drain", "tasks_per_min"), 1),
            ("drain: lost / duplicates / stuck", ("drain",), 0),
            ("drain: queued -> started p50 (s)", ("drain", "queued_to_start_p50"), 1),
            ("drain: queued -> started p95 (s)", ("drain", "queued_to_start_p95"), 1),
        ]
    if args.fault:
        rows += [
            (f"fault: kill -9 of a host with {args.fault} attempts: re-run exactly once", ("fault", "rerun_exactly_once"), 1),
            ("fault: lost / duplicates / stuck", ("fault",), 0),
            ("fault: seconds until all finished", ("fault", "recovered_seconds"), 1),
        ]
    for title, path, scale in rows:
        cells = []
        for label, _, _ in columns:
            if scale == 0:  # the three counts, summed over runs
                cells.append(counts(results[label], path[0]))
            else:
                value = scale * median_of(results[label], *path)
                cells.append("-" if math.isnan(value) else f"{value:.2f}")
        print(f"| {title} | " + " | ".join(cells) + " |")
    print(
        "\nWhere the PSS of the largest level goes (MB, by program): "
        + "; ".join(
            f"{label}: {results[label][0].get(f'L{max(args.levels)}_r{args.rates[0]:g}', {}).get('pss_by_program')}"
            for label, _, _ in columns
        )
    )
