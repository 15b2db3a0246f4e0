"""Compare every value of two ``metrics/`` trees (e.g. the old and the new code's ``dvc repro`` on one machine).

    python bench/compare_metrics.py OLD_METRICS_DIR NEW_METRICS_DIR [--tolerance 0]

A restructuring must leave every result identical; timings, CPU seconds, file paths and resume notes cannot be and
are listed apart. Prints one line per file: identical, or each differing key with both values; files or keys on one
side only are named. Exits 1 when a result differs.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path
from typing import Any, Iterator

# keys whose values are run records, not results: wall / CPU time, latency, where a run resumed, file locations
RUN_RECORD = re.compile(r"(^|/)(cpu_s|wall_s|cpu_seconds|train_seconds|seconds_per_image|resume|resumed_from_step|"
                        r"model|files|latency_ms|latency_ms_[a-z0-9_]+|median_ms|p10_ms|p90_ms|mean_ms|"
                        r"throughput_per_s)(/|$)")


def flatten(value: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield from flatten(v, f"{prefix}/{k}" if prefix else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from flatten(v, f"{prefix}[{i}]")
    else:
        yield prefix, value


def same(a: Any, b: Any, tolerance: float) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        if math.isnan(a) and math.isnan(b):
            return True
        return abs(a - b) <= tolerance
    return a == b


def compare_file(old: Path, new: Path, tolerance: float) -> tuple[list[str], list[str]]:
    """``(result differences, run-record differences)`` as printable lines."""
    a, b = dict(flatten(json.loads(old.read_text()))), dict(flatten(json.loads(new.read_text())))
    results, records = [], []
    for key in sorted(set(a) | set(b)):
        bucket = records if RUN_RECORD.search(key) else results
        if key not in a or key not in b:
            bucket.append(f"  {key}: only in {'new' if key not in a else 'old'}")
        elif not same(a[key], b[key], tolerance):
            bucket.append(f"  {key}: {a[key]!r} -> {b[key]!r}")
    return results, records


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("old", type=Path)
    ap.add_argument("new", type=Path)
    ap.add_argument("--tolerance", type=float, default=0.0, help="absolute tolerance for floats (default 0: exact)")
    ap.add_argument("--records", action="store_true", help="also print the run-record differences")
    args = ap.parse_args()
    old_files = {p.relative_to(args.old) for p in args.old.rglob("*.json")}
    new_files = {p.relative_to(args.new) for p in args.new.rglob("*.json")}
    failed = False
    for rel in sorted(old_files | new_files):
        if rel not in old_files or rel not in new_files:
            print(f"{rel}: only in {'new' if rel not in old_files else 'old'}")
            continue
        results, records = compare_file(args.old / rel, args.new / rel, args.tolerance)
        n = sum(1 for _ in flatten(json.loads((args.new / rel).read_text())))
        status = "identical results" if not results else f"{len(results)} result(s) differ"
        print(f"{rel}: {status} ({n} values; {len(records)} run records differ)")
        for line in results + (records if args.records else []):
            print(line)
        failed |= bool(results)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
