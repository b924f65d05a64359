"""Time and memory of building knowledge graphs: generated worlds and a large triple import.

Measures ``generate_world`` at each ``--world-sizes`` entity count, and ``load_triples``
on a generated file of ``--triples`` random triples (with an ``entity2text.txt`` and a
``relation2text.txt``, written to a temporary folder). Each measurement runs in a fresh
Python process, so the peak memory of one does not carry into the next. Memory is the
peak resident set size of that process (``ru_maxrss``), and its growth over the size
right after the imports.

Usage::

    python benchmarks/graph_import.py --out benchmarks/results/graph_import.json
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import describe_machine, write_result

GOAL_MAX_WORLD_100K_S = 60.0
GOAL_MAX_IMPORT_300K_S = 60.0


def peak_rss_mib() -> float:
    """Peak resident set size of this process in MiB (Linux reports ``ru_maxrss`` in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure_world(num_entities: int, seed: int) -> dict:
    from erlgym.redsearch.world import generate_world

    baseline_mib = peak_rss_mib()
    start = time.perf_counter()
    graph = generate_world(num_entities, seed=seed)
    elapsed_s = time.perf_counter() - start
    peak_mib = peak_rss_mib()
    return {
        "num_entities": graph.num_entities,
        "num_facts": graph.num_facts,
        "num_sentences": sum(len(document.sentences) for document in graph.documents.values()),
        "seconds": round(elapsed_s, 2),
        "peak_rss_mib": round(peak_mib),
        "rss_growth_mib": round(peak_mib - baseline_mib),
    }


def write_triples(folder: Path, num_triples: int, num_entities: int, num_relations: int, seed: int) -> list[Path]:
    """Write ``train.tsv`` with random triples, ``entity2text.txt`` and ``relation2text.txt``."""
    rng = random.Random(seed)
    entity_ids = [f"{index:08d}" for index in range(num_entities)]
    relations = [f"_relation_{index}" for index in range(num_relations)]
    with open(folder / "train.tsv", "w", encoding="utf-8") as handle:
        for _ in range(num_triples):
            handle.write(f"{rng.choice(entity_ids)}\t{rng.choice(relations)}\t{rng.choice(entity_ids)}\n")
    with open(folder / "entity2text.txt", "w", encoding="utf-8") as handle:
        for entity_id in entity_ids:
            handle.write(f"{entity_id}\tentity {entity_id}, a generated entity with a short gloss\n")
    with open(folder / "relation2text.txt", "w", encoding="utf-8") as handle:
        for relation in relations:
            handle.write(f"{relation}\t{relation.strip('_').replace('_', ' ')}\n")
    return [folder / "train.tsv", folder / "entity2text.txt", folder / "relation2text.txt"]


def measure_import(folder: str) -> dict:
    from erlgym.redsearch.importers import load_triples

    folder_path = Path(folder)
    baseline_mib = peak_rss_mib()
    start = time.perf_counter()
    graph = load_triples(folder_path / "train.tsv", folder_path / "entity2text.txt",
                         folder_path / "relation2text.txt", name="benchmark")
    elapsed_s = time.perf_counter() - start
    peak_mib = peak_rss_mib()
    return {
        "triple_lines": graph.graph.graph["import_report"]["triple_lines"],
        "num_entities": graph.num_entities,
        "num_facts": graph.num_facts,
        "seconds": round(elapsed_s, 2),
        "peak_rss_mib": round(peak_mib),
        "rss_growth_mib": round(peak_mib - baseline_mib),
    }


def run_in_subprocess(*arguments: str) -> dict:
    """Run this script's ``--worker`` mode in a new interpreter and return the JSON it prints."""
    completed = subprocess.run([sys.executable, __file__, "--worker", *arguments],
                               check=True, stdout=subprocess.PIPE, text=True)
    return json.loads(completed.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, help="JSON file to write; prints to stdout when omitted")
    parser.add_argument("--world-sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000],
                        help="entity counts of the generated worlds")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated worlds and triples")
    parser.add_argument("--triples", type=int, default=300_000, help="triples in the generated import file")
    parser.add_argument("--triple-entities", type=int, default=100_000, help="distinct entity ids the triples draw from")
    parser.add_argument("--triple-relations", type=int, default=20, help="distinct relations the triples draw from")
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        kind, *values = args.worker
        result = measure_world(int(values[0]), int(values[1])) if kind == "world" else measure_import(values[0])
        print(json.dumps(result))
        return

    worlds = [run_in_subprocess("world", str(size), str(args.seed)) for size in args.world_sizes]
    with tempfile.TemporaryDirectory() as folder:
        write_triples(Path(folder), args.triples, args.triple_entities, args.triple_relations, args.seed)
        triple_import = run_in_subprocess("import", folder)
    result = {
        "benchmark": "generate_world and load_triples: wall time and peak memory",
        "command": "python benchmarks/graph_import.py " + " ".join(
            [f"--world-sizes {' '.join(map(str, args.world_sizes))}", f"--seed {args.seed}",
             f"--triples {args.triples}", f"--triple-entities {args.triple_entities}",
             f"--triple-relations {args.triple_relations}"]),
        "worlds": worlds,
        "triple_import": triple_import,
        "goal_max_world_100k_s": GOAL_MAX_WORLD_100K_S,
        "goal_max_import_300k_s": GOAL_MAX_IMPORT_300K_S,
        # Each goal applies to inputs up to its size: worlds of at most 100k entities, imports of at most 300k lines.
        "goal_met": (all(world["seconds"] <= GOAL_MAX_WORLD_100K_S
                         for world in worlds if world["num_entities"] <= 100_000)
                     and (triple_import["seconds"] <= GOAL_MAX_IMPORT_300K_S or args.triples > 300_000)),
        "machine": describe_machine("networkx"),
    }
    write_result(result, args.out)


if __name__ == "__main__":
    main()
