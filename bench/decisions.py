"""The decision-quality benchmark: a replayed day per seed and Zipf α, every policy, one table.

    .venv/bin/python -m bench.decisions                      # 5 seeds × α 0.9 and 1.2, 2 processes
    .venv/bin/python -m bench.decisions --seeds 0 --alphas 0.9 --png artifacts/bench-day.png
    .venv/bin/python -m bench.decisions --frontend warm  # the front-end kit's warm moves
    .venv/bin/python -m bench.decisions --aws memory     # the same decisions, in-memory AWS

Per (seed, α): the fixed warm pools 1..8 (the oracle's input, and the static baseline), then
each policy's replay through the real scheduled function under moto (or ``--aws memory``).
Prints a table per day, the mean table over all days, the checks of the benchmark's targets, the
median tick time, and last the line
``bench: cost_ratio=… avoidable_violation_min=… actions=… reversals=…`` for the predictive policy
with the curve. ``--frontend warm`` replays the days with the front-end kit's
warm moves (``sim.tier``), and says how many keys each change copied and how long that took.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import multiprocessing
import statistics
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bench import baselines, report
from bench.fixed_pools import replay_fixed
from bench.replay import AWS, BOOT_MINUTES, CAPACITY, MAX_MISS_RATE, Replay, Setup, replay
from bench.score import (
    MeanScore,
    Oracle,
    Run,
    Score,
    best_static,
    mean_scores,
    oracle,
    scale_ins_during,
    score,
)
from bench.workload import WARMUP_MINUTES
from sim.tier import FRONTENDS

PREDICTIVE = "predictive (curve)"
PREDICTIVE_BLIND = "predictive (no curve)"
RATIO = "ratio"
SEED = "seed rule"
HPA = "hpa-style"
TARGET = "target tracking"
STATIC = "best static"
# (name, the config's policy, a baseline rule's name, whether nodes publish the curve)
POLICY_RUNS: tuple[tuple[str, str, str | None, bool], ...] = (
    (PREDICTIVE, "predictive", None, True),
    (PREDICTIVE_BLIND, "predictive", None, False),
    (RATIO, "ratio", None, False),
    (SEED, "ratio", SEED, False),
    (HPA, "ratio", HPA, False),
    (TARGET, "ratio", TARGET, False),
)
ORDER = (PREDICTIVE, PREDICTIVE_BLIND, RATIO, SEED, HPA, TARGET, STATIC)


@dataclass(frozen=True)
class Task:
    seed: int
    alpha: float
    name: str  # a POLICY_RUNS name, or "fixed" for the fixed pools
    hashing: str = "consistent"
    gap: bool = True
    mean_gets: int | None = None
    minutes: int | None = None
    frontend: str = "cold"
    aws: AWS = "moto"  # where the replay's AWS lives: moto, or memory (sim.memory_aws)


@dataclass(frozen=True)
class Day:
    """One (seed, α): the oracle, the fixed pools and each policy's run."""

    seed: int
    alpha: float
    oracle: Oracle
    fixed: Mapping[int, Sequence[tuple[int, int]]]
    runs: Mapping[str, Run]
    tick_ms: Mapping[str, float]
    gap_minutes: tuple[int, ...]
    replay_seconds: Mapping[str, float] = field(default_factory=dict)  # wall time of each day's replay
    frontend: str = "cold"

    def scores(self) -> list[Score]:
        runs = {**self.runs, STATIC: best_static(self.fixed, self.oracle, MAX_MISS_RATE)}
        return [
            score(_renamed(runs[name], name), self.oracle, MAX_MISS_RATE) for name in ORDER if name in runs
        ]


def _renamed(run: Run, name: str) -> Run:
    if run.name == name:
        return run
    return Run(name, run.sizes, run.gets, run.misses, run.actions, {**run.extra, "size": run.name})


def _setup(task: Task, curve: bool) -> Setup:
    kwargs: dict[str, Any] = {}
    if task.minutes is not None:
        kwargs["minutes"] = task.minutes
    return Setup(
        task.seed, task.alpha, curve, task.hashing, task.gap, task.mean_gets, frontend=task.frontend, **kwargs
    )


def run_task(task: Task) -> tuple[Task, Any, float]:
    """One unit of work for a worker process: a policy's replay, or the fixed pools."""
    began = time.perf_counter()
    if task.name == "fixed":
        workload = _setup(task, curve=False).workload()
        minutes = range(task.minutes) if task.minutes is not None else None
        fixed = replay_fixed(workload, range(1, 9), capacity=CAPACITY, hashing=task.hashing, minutes=minutes)
        scored = {size: list(per_minute[WARMUP_MINUTES:]) for size, per_minute in fixed.items()}
        return task, scored, time.perf_counter() - began
    _, policy, rule, curve = next(entry for entry in POLICY_RUNS if entry[0] == task.name)
    outcome: Replay = replay(
        _setup(task, curve),
        task.name,
        policy=policy,
        baseline=baselines.BASELINES[rule] if rule else None,
        aws_in=task.aws,
    )
    return task, (outcome.run, outcome.median_tick_ms), time.perf_counter() - began


# What a task's result depends on: a cached result is reused only while these are unchanged.
FIXED_SOURCES = ("bench/fixed_pools.py", "bench/workload.py", "sim/hashring.py", "sim/lru.py", "frontend_kit")
REPLAY_SOURCES = (
    "app.py",
    ".chalice/config.json",
    "bench/replay.py",
    "bench/baselines.py",
    "bench/workload.py",
    "chalicelib",
    "sim",
    "frontend_kit",
    "node_agent",
    "local_stack/scheduler.py",
)
PROJECT = Path(__file__).resolve().parent.parent


def task_key(task: Task) -> str:
    """A name for ``task``'s result that changes with the task and with the code it runs."""
    fixed = task.name == "fixed"
    if fixed:  # the fixed pools know neither the front-end, the metrics gap nor AWS
        task = replace(task, frontend="cold", gap=True, aws="moto")
    digest = hashlib.sha256(repr(task).encode())
    for source in FIXED_SOURCES if fixed else REPLAY_SOURCES:
        path = PROJECT / source
        for file in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            digest.update(str(file.relative_to(PROJECT)).encode() + b"\0" + file.read_bytes())
    slug = task.name.replace(" ", "-").replace("(", "").replace(")", "")
    return f"{slug}-s{task.seed}-a{task.alpha}-{task.frontend}-{digest.hexdigest()[:16]}"


def _result_to_data(task: Task, result: Any, seconds: float) -> dict[str, Any]:
    if task.name == "fixed":
        return {
            "fixed": {str(size): list(map(list, rows)) for size, rows in result.items()},
            "seconds": seconds,
        }
    run, tick_ms = result
    return {"run": _run_to_data(run), "tick_ms": tick_ms, "seconds": seconds}


def _result_from_data(task: Task, data: Mapping[str, Any]) -> tuple[Any, float]:
    if task.name == "fixed":
        return {int(size): [tuple(row) for row in rows] for size, rows in data["fixed"].items()}, data[
            "seconds"
        ]
    return (_run_from_data(task.name, data["run"]), data["tick_ms"]), data["seconds"]


def evaluate(tasks: Sequence[Task], jobs: int, log: Any = None, cache: Path | None = None) -> list[Day]:
    """Run every task (in ``jobs`` processes) and gather them into days; progress to ``log`` (stderr).

    With ``cache``, a task whose result is there (same task, same code: ``task_key``) is not run
    again, and each finished task's result is written there at once.
    """
    log = sys.stderr if log is None else log  # the stderr of the call, not of the import
    results: dict[Task, Any] = {}
    took: dict[Task, float] = {}
    to_run = list(tasks)
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        for task in tasks:
            stored = cache / f"{task_key(task)}.json"
            if stored.exists():
                results[task], took[task] = _result_from_data(task, json.loads(stored.read_text()))
                print(f"  {task.name:22} seed {task.seed} α {task.alpha}: cached", file=log, flush=True)
        to_run = [task for task in tasks if task not in results]
    with contextlib.ExitStack() as stack:
        finished: Iterator[tuple[Task, Any, float]] = map(run_task, to_run)
        if jobs > 1 and len(to_run) > 1:
            pool = stack.enter_context(multiprocessing.get_context("spawn").Pool(jobs))
            finished = pool.imap_unordered(run_task, to_run)
        for task, result, seconds in finished:
            results[task], took[task] = result, seconds
            if cache is not None:
                data = _result_to_data(task, result, seconds)
                (cache / f"{task_key(task)}.json").write_text(json.dumps(data, separators=(",", ":")))
            print(f"  {task.name:22} seed {task.seed} α {task.alpha}: {seconds:6.1f} s", file=log, flush=True)
    days = []
    frontend = tasks[0].frontend if tasks else "cold"
    for seed, alpha in dict.fromkeys((task.seed, task.alpha) for task in tasks):
        mine = {
            task.name: result for task, result in results.items() if (task.seed, task.alpha) == (seed, alpha)
        }
        fixed = mine.pop("fixed")
        gap = Setup(seed, alpha).workload().gap_minutes
        days.append(
            Day(
                seed,
                alpha,
                oracle(fixed, MAX_MISS_RATE, BOOT_MINUTES),
                fixed,
                {name: run for name, (run, _) in mine.items()},
                {name: ms for name, (_, ms) in mine.items()},
                tuple(minute - WARMUP_MINUTES for minute in gap),
                {
                    task.name: seconds
                    for task, seconds in took.items()
                    if (task.seed, task.alpha) == (seed, alpha) and task.name != "fixed"
                },
                frontend,
            )
        )
    return days


def checks(days: Sequence[Day]) -> list[tuple[bool, str]]:
    """The benchmark's targets, each with whether this run met it."""
    all_scores = [day.scores() for day in days]
    mean = {
        name: mean_scores([s for scores in all_scores for s in scores if s.name == name], name)
        for name in ORDER
    }
    scored_minutes = statistics.mean(len(day.oracle.sizes) for day in days)
    churn = statistics.mean(day.oracle.churn_changes for day in days)
    best = mean[PREDICTIVE]
    gap_ins = sum(
        scale_ins_during(day.runs[PREDICTIVE], day.gap_minutes) for day in days if PREDICTIVE in day.runs
    )
    out = [
        (best.cost_ratio <= 1.10, f"predictive (curve): cost ÷ lower bound {best.cost_ratio:.2f} ≤ 1.10"),
        (
            best.avoidable_violation_min <= 0.02 * scored_minutes,
            f"predictive (curve): avoidable violations {best.avoidable_violation_min:.1f} min ≤ 2 % of "
            f"{scored_minutes:.0f} = {0.02 * scored_minutes:.1f}",
        ),
        (
            best.changes <= 1.5 * churn,
            f"predictive (curve): changes {best.changes:.1f} ≤ 1.5 × churn-aware {churn:.1f}",
        ),
        (best.reversals == 0, f"predictive (curve): reversals {best.reversals:.1f} = 0"),
        (gap_ins == 0, f"predictive (curve): scale-ins during the metrics gap {gap_ins} = 0"),
    ]
    blind = mean[PREDICTIVE_BLIND]
    if days and days[0].frontend == "warm":
        out.extend(warm_checks(all_scores, best, blind, churn))
    for name in (RATIO, SEED, HPA, TARGET, STATIC):
        other = mean[name]
        both = (
            blind.cost_ratio < other.cost_ratio
            and blind.avoidable_violation_min < other.avoidable_violation_min
        )
        out.append(
            (
                both,
                f"predictive (no curve) beats {name} on cost "
                f"({blind.cost_ratio:.2f} < {other.cost_ratio:.2f}) "
                f"and violations ({blind.avoidable_violation_min:.1f} < {other.avoidable_violation_min:.1f})",
            )
        )
    ratio, seed = mean[RATIO], mean[SEED]
    out.append(
        (
            ratio.avoidable_violation_min < seed.avoidable_violation_min and ratio.changes < seed.changes,
            f"ratio beats the seed rule on violations ({ratio.avoidable_violation_min:.1f} < "
            f"{seed.avoidable_violation_min:.1f}) and changes ({ratio.changes:.1f} < {seed.changes:.1f})",
        )
    )
    return out


def warm_checks(
    all_scores: Sequence[Sequence[Score]], best: MeanScore, blind: MeanScore, churn: float
) -> list[tuple[bool, str]]:
    """The targets with the front-end kit's warm moves: tighter, since no key moves cold."""
    worst = {
        name: max((s.reversals for scores in all_scores for s in scores if s.name == name), default=0)
        for name in (PREDICTIVE, PREDICTIVE_BLIND)
    }
    return [
        (
            best.cost_ratio <= 1.03,
            f"warm, predictive (curve): cost ÷ lower bound {best.cost_ratio:.3f} ≤ 1.03",
        ),
        (
            best.avoidable_violation_min <= 3,
            f"warm, predictive (curve): avoidable violations {best.avoidable_violation_min:.1f} min ≤ 3",
        ),
        (
            best.changes <= 1.2 * churn,
            f"warm, predictive (curve): changes {best.changes:.1f} ≤ 1.2 × churn-aware {churn:.1f}",
        ),
        (
            worst[PREDICTIVE] == 0,
            f"warm, predictive (curve): most reversals in a day {worst[PREDICTIVE]} = 0",
        ),
        (
            blind.avoidable_violation_min <= 6,
            f"warm, predictive (no curve): avoidable violations {blind.avoidable_violation_min:.1f} min ≤ 6",
        ),
        (
            worst[PREDICTIVE_BLIND] == 0,
            f"warm, predictive (no curve): most reversals in a day {worst[PREDICTIVE_BLIND]} = 0",
        ),
    ]


def _oracle_means(days: Sequence[Day]) -> str:
    """The oracles' own figures, averaged: a mean day has no schedule of its own to tabulate."""
    mean = statistics.mean
    return (
        f"oracle: lower bound {mean(d.oracle.lower_bound for d in days):.0f} node-minutes a day, "
        f"{mean(d.oracle.changes for d in days):.1f} size changes; churn-aware oracle: "
        f"{mean(d.oracle.churn_cost / d.oracle.lower_bound for d in days):.2f} × the lower bound, "
        f"{mean(d.oracle.churn_changes for d in days):.1f} changes"
    )


def save(days: Sequence[Day], path: Path) -> None:
    """Every day's fixed pools and runs, so that the tables can be printed again without replaying."""
    data = [
        {
            "seed": day.seed,
            "alpha": day.alpha,
            "fixed": {str(size): list(map(list, rows)) for size, rows in day.fixed.items()},
            "runs": {name: _run_to_data(run) for name, run in day.runs.items()},
            "tick_ms": dict(day.tick_ms),
            "gap_minutes": list(day.gap_minutes),
            "replay_seconds": dict(day.replay_seconds),
            "frontend": day.frontend,
        }
        for day in days
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, separators=(",", ":")))


def _run_to_data(run: Run) -> dict[str, Any]:
    return {
        "sizes": list(run.sizes),
        "gets": list(run.gets),
        "misses": list(run.misses),
        "actions": list(map(list, run.actions)),
        "moves": list(map(list, run.extra.get("moves", ()))),
    }


def _run_from_data(name: str, run: Mapping[str, Any]) -> Run:
    moves = {"moves": tuple(map(tuple, run["moves"]))} if run.get("moves") else {}
    return Run(name, run["sizes"], run["gets"], run["misses"], [tuple(a) for a in run["actions"]], moves)


def load(path: Path) -> list[Day]:
    days = []
    for item in json.loads(path.read_text()):
        fixed = {int(size): [tuple(row) for row in rows] for size, rows in item["fixed"].items()}
        runs = {name: _run_from_data(name, run) for name, run in item["runs"].items()}
        days.append(
            Day(
                item["seed"],
                item["alpha"],
                oracle(fixed, MAX_MISS_RATE, BOOT_MINUTES),
                fixed,
                runs,
                item["tick_ms"],
                tuple(item["gap_minutes"]),
                item.get("replay_seconds", {}),
                item.get("frontend", "cold"),
            )
        )
    return days


def moves_line(name: str, runs: Sequence[Run]) -> str | None:
    """Keys copied and copy time per change of the routing list, over ``runs``; None without moves."""
    moves = [move for run in runs for move in run.extra.get("moves", ())]
    if not moves:
        return None
    copied = [move[2] for move in moves]
    seconds = [move[3] for move in moves]
    left = sum(move[1] - move[2] for move in moves)
    return (
        f"warm moves, {name}: {len(moves) / len(runs):.1f} a day; "
        f"keys copied mean {statistics.mean(copied):.0f}, max {max(copied)}; "
        f"copy time mean {statistics.mean(seconds):.2f} s, max {max(seconds):.2f} s; "
        f"{left / len(runs):.1f} keys a day changed owner uncopied"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.decisions", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--alphas", type=float, nargs="+", default=[0.9, 1.2])
    parser.add_argument("--policies", nargs="+", default=[entry[0] for entry in POLICY_RUNS])
    parser.add_argument("--hashing", choices=("consistent", "modulo"), default="consistent")
    parser.add_argument("--no-gap", action="store_true", help="publish metrics through 20:00-20:10 too")
    parser.add_argument("--mean-gets", type=int, help="GETs a minute at the mean (default: the workload's)")
    parser.add_argument("--minutes", type=int, help="replay only the first N minutes (warm-up included)")
    parser.add_argument(
        "--frontend",
        choices=FRONTENDS,
        default="cold",
        help="cold: changed keys start cold where they land; warm: copied first, as the front-end kit does",
    )
    parser.add_argument(
        "--aws",
        choices=("moto", "memory"),
        default="moto",
        help="moto: the app's boto3 calls under mock_aws; memory: the same ticks on sim.memory_aws, "
        "about ten times faster, with the same decisions (a test holds them equal)",
    )
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument(
        "--png",
        type=lambda value: Path(value) if value else None,
        default=Path("artifacts/bench-day.png"),
        help="the figure of the first day ('' for none)",
    )
    parser.add_argument("--save", type=Path, help="write every day's figures to this JSON file")
    parser.add_argument("--load", type=Path, help="report the days saved in this JSON file; replay nothing")
    parser.add_argument(
        "--cache",
        type=Path,
        help="keep each replay's result in this folder and reuse it while the code is the same",
    )
    args = parser.parse_args(argv)
    common = {
        "hashing": args.hashing,
        "gap": not args.no_gap,
        "mean_gets": args.mean_gets,
        "minutes": args.minutes,
        "frontend": args.frontend,
        "aws": args.aws,
    }
    tasks = [
        Task(seed, alpha, name, **common)
        for seed in args.seeds
        for alpha in args.alphas
        for name in ("fixed", *args.policies)
    ]
    began = time.perf_counter()
    days = load(args.load) if args.load else evaluate(tasks, args.jobs, cache=args.cache)
    if args.save:
        save(days, args.save)
    frontend = days[0].frontend if days else args.frontend
    for day in days:
        print(f"\n### seed {day.seed}, α {day.alpha} ({args.hashing} hashing, {day.frontend} front-end)\n")
        print(report.table(day.scores(), oracle=day.oracle))
        for name in ORDER:
            line = moves_line(name, [day.runs[name]]) if name in day.runs else None
            if line:
                print(line)
    everything = [score for day in days for score in day.scores()]
    means = [
        mean_scores([s for s in everything if s.name == name], name)
        for name in ORDER
        if any(s.name == name for s in everything)
    ]
    seeds = sorted({day.seed for day in days})
    alphas = sorted({day.alpha for day in days})
    print(f"\n### mean over {len(days)} days (seeds {seeds}, α {alphas}, {frontend} front-end)\n")
    print(report.table(means, oracle_rows=False))
    for name in ORDER:
        line = moves_line(name, [day.runs[name] for day in days if name in day.runs])
        if line:
            print(line)
    print(f"\n{_oracle_means(days)}")
    if len(args.policies) == len(POLICY_RUNS):
        print()
        for met, text in checks(days):
            print(f"{'PASS' if met else 'FAIL'}  {text}")
    ticks = [ms for day in days for ms in day.tick_ms.values()]
    where = "as saved" if args.load else "in memory" if args.aws == "memory" else "under moto"
    print(f"\nmedian tick {where}: {statistics.median(ticks):.1f} ms (median of the runs' medians)")
    replays = [seconds for day in days for seconds in day.replay_seconds.values()]
    if replays:
        print(
            f"one day's replay through the scheduled function: median {statistics.median(replays):.0f} s, "
            f"longest {max(replays):.0f} s (run {args.jobs} at a time)"
        )
    if not args.load:
        print(f"wall time: {time.perf_counter() - began:.0f} s with {args.jobs} processes")
    if args.png and days:
        day = days[0]
        args.png.parent.mkdir(parents=True, exist_ok=True)
        shown = {name: day.runs[name] for name in (PREDICTIVE, RATIO, SEED) if name in day.runs}
        report.figure(
            args.png,
            shown,
            day.oracle,
            fixed=day.fixed,
            max_miss_rate=MAX_MISS_RATE,
            title=f"seed {day.seed}, α {day.alpha}: pool size and miss rate over the day",
            gap_minutes=day.gap_minutes,
        )
        print(f"figure: {args.png}")
    headline: Score | MeanScore | None = next(
        (s for s in means if s.name == PREDICTIVE), means[0] if means else None
    )
    if headline is not None:
        print(report.last_line(headline))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
