"""Benchmark: the default main job (`culturealign`, SmolLM2-135M in-process) as a user runs it.

    python bench/local_model_benchmark.py --data /path/to/global_opinions.csv [--limit 10] [overrides ...]

Runs the installed `culturealign` console script once with the response cache off (so every sample is
generated), in a temporary folder, and reports wall time, samples per second, client CPU and peak RSS
of the job process, and the job's own summary line. Extra arguments are Hydra overrides
(e.g. `model.n_threads=2`, `samples=20`). Prints a Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run_job(data: Path, limit: int | None, overrides: list[str]) -> tuple[float, str]:
    command = [str(Path(sys.executable).with_name("culturealign")), "cache.enabled=false", *overrides]
    if limit:
        command.append(f"dataset.limit={limit}")
    env = {**os.environ, "CULTUREALIGN_DATASET": str(data.resolve()), "OPENAI_API_KEY": ""}
    with tempfile.TemporaryDirectory() as workdir:
        started = time.perf_counter()
        result = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"culturealign failed: {result.stderr.strip().splitlines()[-1:]}")
    summary = next(line for line in result.stdout.splitlines() if "Wasserstein similarity" in line)
    return wall, summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="GlobalOpinionQA CSV (paper subset or full)")
    parser.add_argument("--limit", type=int, default=None, help="first N questions only (default: all 72)")
    parser.add_argument("overrides", nargs="*", help="more Hydra overrides")
    args = parser.parse_args()
    wall, summary = run_job(args.data, args.limit, args.overrides)
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    responses = int(summary.split(" responses")[0].rsplit(" ", 1)[1])
    rows = [
        ("job", f"`culturealign {' '.join(args.overrides)}`".replace(" `", "`") + " (cache off)"),
        ("samples generated", f"{responses:,}"),
        ("wall time", f"{wall:.1f} s"),
        ("samples per second", f"{responses / wall:.1f}"),
        ("client CPU", f"{usage.ru_utime + usage.ru_stime:.1f} s"),
        ("peak RSS", f"{usage.ru_maxrss / 1024:.0f} MB"),
        ("result", summary),
    ]
    print("| measure | value |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    main()
