"""Measure the rate of verified 3-hop task synthesis on generated worlds of 1k, 10k and 100k entities.

Each world size runs in its own child process, pinned to one CPU core where the
platform allows, so that its peak memory is its own. A child generates the world with
``generate_world(size, seed=0)``, builds the synthesis indexes (typed adjacency and the
BM25 index over every document), then synthesizes ``--tasks`` tasks with the target
``{"hops": {"3": 1.0}}`` and the default shapes and checks, ``--repeats`` times with
different spec seeds. The rate counts verified tasks kept per second of synthesis; it
leaves out world generation and indexing, which are reported on their own. The goal is
at least 1,000 tasks/s at 100k entities.

Usage::

    python benchmarks/synthesis_speed.py --out benchmarks/results/synthesis_speed.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from machine import describe_machine, write_result

GOAL_TASKS_PER_S = 1000
GOAL_SIZE = 100_000


def rss_mib() -> float:
    """Return this process's resident memory in MiB (Linux /proc), or its peak where /proc is missing."""
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return peak_rss_mib()


def peak_rss_mib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def measure_size(size: int, tasks: int, repeats: int) -> dict:
    """Generate one world, index it and time synthesis; runs inside the child process."""
    from erlgym.redsearch.synthesis import SynthesisSpec, synthesis_indexes, synthesize
    from erlgym.redsearch.world import generate_world

    started = time.perf_counter()
    graph = generate_world(size, seed=0)
    generate_s = time.perf_counter() - started
    rss_graph = rss_mib()

    started = time.perf_counter()
    synthesis_indexes(graph)
    index_s = time.perf_counter() - started
    rss_indexed = rss_mib()

    runs = []
    for repeat in range(repeats):
        spec = SynthesisSpec(count=tasks, seed=repeat, targets={"hops": {"3": 1.0}})
        task_set = synthesize(graph, spec)
        summary = task_set.summary
        runs.append({
            "seed": repeat,
            "tasks": summary["tasks"],
            "seconds": summary["seconds"],
            "tasks_per_s": summary["tasks_per_s"],
            "attempts": summary["attempts"],
            "rejections": summary["rejections"],
            "shapes": summary["shapes"],
            "documents": summary["achieved"]["marginals"]["documents"],
        })
    best = max(runs, key=lambda run: run["tasks_per_s"])
    return {
        "entities": graph.num_entities,
        "facts": graph.num_facts,
        "documents": len(graph.documents),
        "generate_world_s": round(generate_s, 2),
        "index_s": round(index_s, 2),
        "tasks_per_s": best["tasks_per_s"],
        "runs": runs,
        "rss_after_world_mib": round(rss_graph, 1),
        "rss_after_index_mib": round(rss_indexed, 1),
        "peak_rss_mib": round(peak_rss_mib(), 1),
    }


def run_child(size: int, tasks: int, repeats: int) -> dict:
    command = [sys.executable, __file__, "--child", str(size), "--tasks", str(tasks), "--repeats", str(repeats)]
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"benchmark child for {size} entities failed:\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000],
                        help="World sizes in entities.")
    parser.add_argument("--tasks", type=int, default=2000, help="Tasks per synthesis run.")
    parser.add_argument("--repeats", type=int, default=2, help="Synthesis runs per size; the best rate is reported.")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/synthesis_speed.json"),
                        help="JSON file to write.")
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child is not None:
        if hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
        print(json.dumps(measure_size(args.child, args.tasks, args.repeats)))
        return

    sizes = {}
    for size in args.sizes:
        sizes[str(size)] = run_child(size, args.tasks, args.repeats)
        print(f"{size:>7} entities: {sizes[str(size)]['tasks_per_s']:.0f} tasks/s, "
              f"peak RSS {sizes[str(size)]['peak_rss_mib']:.0f} MiB", flush=True)
    goal = sizes.get(str(GOAL_SIZE), {}).get("tasks_per_s")
    result = {
        "benchmark": "verified 3-hop task synthesis rate on generated worlds, one CPU core",
        "command": (f"python benchmarks/synthesis_speed.py --sizes {' '.join(map(str, args.sizes))} "
                    f"--tasks {args.tasks} --repeats {args.repeats}"),
        "tasks": args.tasks,
        "repeats": args.repeats,
        "sizes": sizes,
        "goal_tasks_per_s_at_100k": GOAL_TASKS_PER_S,
        "goal_met": None if goal is None else goal >= GOAL_TASKS_PER_S,
        "machine": describe_machine("numpy", "networkx", "bm25s"),
    }
    write_result(result, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
