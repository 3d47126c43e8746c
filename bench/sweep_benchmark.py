"""Benchmark: the paper's sweep through culturealign against the fake OpenAI-compatible server.

    python bench/sweep_benchmark.py --scale 0.05 --latency 0.2 --concurrency 64

Starts `tests/fake_openai.py` as a subprocess on 127.0.0.1 with a fixed per-request latency, then runs
`culturealign --multirun` (the installed console script, as a user does) over 4 countries x 3 styles of
the paper's 72 questions with round(100 x scale) samples and the judge. Reports wall time, requests
sent (the server's count), requests per second, client CPU seconds per request, client peak RSS, the
time of the same sweep re-run on its cache, the server-bound limit (requests x latency / concurrency),
and a naive sequential loop with the plain OpenAI SDK (one request at a time, every free-text answer
judged, no cache), which is timed on a sample of requests and extrapolated to the whole workload.
Prints a Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
COUNTRIES = ("us", "china", "japan", "india")
STYLES = ("classification", "cot", "scenarios")
PAPER_QUESTIONS, PAPER_SAMPLES = 72, 100


@dataclass
class Measured:
    wall_s: float
    cpu_s: float
    peak_rss_mb: float
    requests: int


class FakeServer:
    """tests/fake_openai.py in its own process; its request count is read when it stops."""

    def __init__(self, latency: float, port: int = 0):
        command = [sys.executable, str(REPO / "tests" / "fake_openai.py"), "--port", str(port), "--latency", str(latency)]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        ready = self.process.stdout.readline().split()
        if not ready or ready[0] != "READY":
            raise RuntimeError(f"fake server did not start: {ready}")
        self.base_url = ready[1]
        self.port = int(self.base_url.rsplit(":", 1)[1].split("/")[0])

    def stop(self) -> int:
        self.process.terminate()
        stats = json.loads(self.process.stdout.readlines()[-1])
        self.process.wait()
        return stats["requests"]


def children_usage() -> tuple[float, float]:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def run_sweep(args, server: FakeServer, workdir: Path, name: str) -> Measured:
    """One `culturealign --multirun` of the whole grid; CPU and RSS are the CLI's (reaped before the server)."""
    overrides = [
        "--multirun",
        "model=openai-compatible",
        f"model.base_url={server.base_url}",
        f"dataset.path={args.data}",
        f"country={','.join(COUNTRIES)}",
        f"style={','.join(STYLES)}",
        f"samples={args.samples}",
        f"concurrency={args.concurrency}",
        f"model.n_per_request={args.n_per_request}",
        f"cache.url={workdir / 'cache.sqlite'}",
        f"mlflow.tracking_uri=sqlite:///{workdir / 'mlruns' / 'mlflow.db'}",
        f"hydra.sweep.dir={workdir / name}",
        *args.extra,
    ]
    command = [str(Path(sys.executable).with_name("culturealign")), *overrides]
    cpu_before, _ = children_usage()
    start = time.perf_counter()
    with open(workdir / f"{name}.log", "w") as log:
        done = subprocess.run(command, cwd=workdir, stdout=log, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - start
    cpu_after, peak = children_usage()
    if done.returncode != 0:
        raise SystemExit(f"sweep failed, see {workdir / name}.log")
    return Measured(wall, cpu_after - cpu_before, peak, server.stop())


def naive_loop(args, latency: float) -> tuple[float, int]:
    """(seconds per request, requests timed): one request at a time with the plain SDK, like a script that
    loops over jobs, questions and samples and judges each free-text answer right away."""
    import openai
    from omegaconf import OmegaConf

    from culturealign.app import schema
    from culturealign.dataset import read_questions, select_questions
    from culturealign.extraction import parse_judge_output
    from culturealign.prompts import judge_prompt, options_prompt, scenario_prompt

    countries = [schema.load_country(name) for name in COUNTRIES]
    questions = select_questions(read_questions(args.data), countries, 2, None)
    instructions = {s: OmegaConf.load(schema.conf_dir() / "style" / f"{s}.yaml").get("instruction") for s in STYLES}
    templates = list(OmegaConf.load(schema.conf_dir() / "scenarios" / "paper.yaml").templates)
    server = FakeServer(latency)
    client = openai.OpenAI(base_url=server.base_url, api_key="not-needed", max_retries=6)
    sent, start = 0, time.perf_counter()

    def ask(prompt: str, temperature: float) -> str:
        nonlocal sent
        sent += 1
        reply = client.chat.completions.create(model="default", messages=[{"role": "user", "content": prompt}],
                                               temperature=temperature)
        return reply.choices[0].message.content or ""

    for index in range(args.naive_requests):
        country, style = countries[index % 4], STYLES[(index // 4) % 3]
        question = questions[index % len(questions)]
        if style == "scenarios":
            prompt = scenario_prompt(country.name, question.text, templates[index % len(templates)])
        else:
            prompt = options_prompt(country.name, question.text, question.options, instructions[style])
        answer = ask(prompt, 0.7)
        if style != "classification":
            parse_judge_output(ask(judge_prompt(question.text, question.options, answer), 0.0), 2)
        if sent >= args.naive_requests:
            break
    elapsed = time.perf_counter() - start
    client.close()
    server.stop()
    return elapsed / sent, sent


def report(args, first: Measured, again: Measured, naive_per_request: float, naive_timed: int) -> str:
    jobs = len(COUNTRIES) * len(STYLES)
    answers = PAPER_QUESTIONS * len(COUNTRIES) * len(STYLES) * args.samples
    naive_requests = answers + answers * 2 // 3  # every CoT and scenario answer judged, no dedupe, no cache
    server_bound = first.requests * args.latency / args.concurrency
    naive_total = naive_requests * naive_per_request
    rows = [
        ("workload", f"{jobs} jobs = 72 questions x 4 countries x 3 styles x {args.samples} samples, judge included"),
        ("latency / concurrency / n_per_request", f"{args.latency} s / {args.concurrency} / {args.n_per_request}"),
        ("requests sent (server count)", f"{first.requests:,} (naive loop: {naive_requests:,})"),
        ("wall time, first run", f"{first.wall_s:.1f} s"),
        ("server-bound limit (requests x latency / concurrency)", f"{server_bound:.1f} s"),
        ("requests per second", f"{first.requests / first.wall_s:.1f}"),
        ("client CPU per request", f"{1000 * first.cpu_s / max(first.requests, 1):.2f} ms ({first.cpu_s:.1f} s total)"),
        ("client peak RSS", f"{first.peak_rss_mb:.0f} MB"),
        ("cached re-run: wall time / requests", f"{again.wall_s:.1f} s / {again.requests}"),
        ("naive sequential loop, measured", f"{1000 * naive_per_request:.0f} ms per request over {naive_timed} requests"),
        ("naive sequential loop, EXTRAPOLATED", f"{naive_total:,.0f} s ({naive_total / 3600:.1f} h) for {naive_requests:,} requests"),
        ("speed-up over the naive loop", f"{naive_total / first.wall_s:.0f}x"),
    ]
    lines = ["| measure | value |", "|---|---|"] + [f"| {name} | {value} |" for name, value in rows]
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the paper's 100 samples")
    parser.add_argument("--latency", type=float, default=0.2, help="seconds the fake server takes per request")
    parser.add_argument("--concurrency", type=int, default=64, help="requests in flight per job")
    parser.add_argument("--n-per-request", type=int, default=1, help="samples per request (the fake server honours n)")
    parser.add_argument("--naive-requests", type=int, default=60, help="requests timed for the naive loop")
    default_data = REPO / "tests" / "data" / "goqa_paper_subset.csv"
    parser.add_argument("--data", type=Path, default=default_data, help="GlobalOpinionQA CSV (paper subset or full)")
    parser.add_argument("extra", nargs="*", help="more Hydra overrides, e.g. hydra/launcher=joblib")
    args = parser.parse_args(argv)
    args.samples = max(1, round(PAPER_SAMPLES * args.scale))
    args.data = args.data.resolve()
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="culturealign-bench-") as tmp:
        workdir = Path(tmp)
        server = FakeServer(args.latency)
        port = server.port
        first = run_sweep(args, server, workdir, "first")
        # the same port: the endpoint URL is part of every cache key
        again = run_sweep(args, FakeServer(args.latency, port), workdir, "again")
    naive_per_request, naive_timed = naive_loop(args, args.latency)
    print(report(args, first, again, naive_per_request, naive_timed))


if __name__ == "__main__":
    main()
