"""Benchmark: the local model (SmolLM2-135M in-process), sequential vs batched sampling, and the default
main job (`culturealign`) as a user runs it.

    python bench/local_model_benchmark.py --data tests/data/goqa_paper_subset.csv [--questions 4]
        [--limit N] [--no-job] [overrides ...]

1. The default main job: the installed `culturealign` console script, once, response cache off (every
   sample generated), in a temporary folder: wall time, samples per second, CPU and peak RSS of the job.
2. The sampler alone, both ways on the same work: the main job's first `--questions` prompts (US,
   classification, `samples` each, the style's max_tokens) sent to the llama.cpp client one after another
   (model.n_parallel=0, create_chat_completion per sample) and batched (the configured model.n_parallel),
   each in a fresh process: wall time, samples per second, peak RSS.

Extra arguments are Hydra overrides for both (e.g. `model.n_threads_batch=1`, `samples=20`). The load
average of the machine is printed too: on a shared machine the figures move with it. Prints Markdown.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run_job(data: Path, limit: int | None, overrides: list[str]) -> dict:
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
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # only this child has finished so far
    summary = next(line for line in result.stdout.splitlines() if "Wasserstein similarity" in line)
    responses = int(summary.split(" responses")[0].rsplit(" ", 1)[1])
    return {
        "wall": wall,
        "samples": responses,
        "cpu": usage.ru_utime + usage.ru_stime,
        "rss_mb": usage.ru_maxrss / 1024,
        "summary": summary,
    }


def sample_only(data: Path, questions: int, mode: str, overrides: list[str]) -> dict:
    """In this process: the job's first prompts through the llama.cpp client, sequential or batched."""
    from culturealign import pipeline
    from culturealign.app.schema import compose_job
    from culturealign.models.model import Model

    extra = ["model.n_parallel=0"] if mode == "sequential" else []
    spec, _ = compose_job([f"dataset.path={data}", f"dataset.limit={questions}", *overrides, *extra])
    job = pipeline.prepare(spec)
    planned = pipeline.planned_prompts(job)
    config = pipeline.model_config(job)
    client = Model(spec.model, "model", concurrency=1).open()  # the wrapper, no cache: every sample generated
    _ = client.provider.llama  # load the model before the clock starts
    per_request = client.samples_per_request

    async def sample_all() -> list:
        out = []
        for item in planned:
            for start in range(0, len(item.sample_indices), per_request):
                out += await client.complete(item.prompt.messages, config, item.sample_indices[start : start + per_request])
        return out

    started = time.perf_counter()
    completions = asyncio.run(sample_all())
    wall = time.perf_counter() - started
    return {
        "mode": mode,
        "samples": len(completions),
        "wall": wall,
        "completion_tokens": sum(c.completion_tokens for c in completions),
        "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "n_parallel": client.provider.n_parallel,
        "threads": list(client.provider.n_threads),
    }


def sample_in_child(data: Path, questions: int, mode: str, overrides: list[str]) -> dict:
    command = [sys.executable, __file__, "--data", str(data), "--questions", str(questions), "--mode", mode, *overrides]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"{mode} sampling failed: {result.stderr.strip()[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def load() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="GlobalOpinionQA CSV (paper subset or full)")
    parser.add_argument("--limit", type=int, default=None, help="main job: first N questions only (default: all)")
    parser.add_argument("--questions", type=int, default=4, help="sampler comparison: first N questions")
    parser.add_argument("--no-job", action="store_true", help="skip the main job")
    parser.add_argument("--mode", choices=["sequential", "batched"], help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*", help="more Hydra overrides")
    args = parser.parse_args()
    if args.mode:  # child process of the sampler comparison
        print(json.dumps(sample_only(args.data.resolve(), args.questions, args.mode, args.overrides)))
        return

    rows = [("machine", f"{os.cpu_count()} cores, load average (1/5/15 min) {load()} at start")]
    if not args.no_job:
        job = run_job(args.data, args.limit, args.overrides)
        rows += [
            ("main job", f"`culturealign {' '.join(args.overrides)}`".replace(" `", "`") + " (cache off)"),
            ("main job: samples", f"{job['samples']:,}"),
            ("main job: wall time", f"{job['wall']:.1f} s"),
            ("main job: samples per second", f"{job['samples'] / job['wall']:.1f}"),
            ("main job: CPU", f"{job['cpu']:.1f} s"),
            ("main job: peak RSS", f"{job['rss_mb']:.0f} MB"),
            ("main job: result", job["summary"]),
        ]
    runs = [sample_in_child(args.data, args.questions, mode, args.overrides) for mode in ("sequential", "batched")]
    seq, bat = runs
    rows.append(("sampler: work", f"first {args.questions} questions of the main job, {seq['samples']} samples"))
    for run in runs:
        label = "sequential (n_parallel=0)" if run["mode"] == "sequential" else f"batched (n_parallel={run['n_parallel']})"
        rows.append(
            (
                f"sampler: {label}",
                f"{run['samples'] / run['wall']:.1f} samples/s ({run['wall']:.1f} s, "
                f"{run['completion_tokens']} completion tokens, peak RSS {run['rss_mb']:.0f} MB, "
                f"threads decode/batch {run['threads'][0]}/{run['threads'][1]})",
            )
        )
    rows.append(("sampler: speed-up", f"{seq['wall'] / bat['wall']:.1f}x"))
    rows.append(("machine at end", f"load average {load()}"))
    print("| measure | value |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    main()
