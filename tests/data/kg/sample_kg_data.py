"""Draw the WN18RR and Re-DocRED samples in this folder from the full datasets.

WN18RR: a breadth-first search over the undirected triple graph (train, dev and test
together), starting at the head of the first line of ``train.tsv``. Each visited entity
adds at most ``--wn18rr-fanout`` of its unvisited neighbours, taken in an order
shuffled by ``random.Random(0)``, until ``--wn18rr-entities`` entities are visited, so
the sample is one connected component without being one hub's star. The sample keeps
every triple whose two entities were both visited, in its original file and line order,
the entity texts of the visited entities only, and ``relation2text.txt`` unchanged.

Re-DocRED: the first ``--redocred-documents`` documents of ``dev_revised.json``,
unchanged, and ``rel_info.json`` byte for byte.

Usage::

    python tests/data/kg/sample_kg_data.py --wn18rr DIR --redocred DIR --out tests/data/kg
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
from collections import defaultdict, deque
from pathlib import Path

WN18RR_SPLITS = ("train.tsv", "dev.tsv", "test.tsv")


def read_lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def sample_wn18rr(source: Path, out: Path, num_entities: int, fanout: int) -> dict[str, int]:
    """Write the WN18RR sample to ``out`` and return the number of lines of each file written."""
    lines = {split: read_lines(source / split) for split in WN18RR_SPLITS}
    neighbours: dict[str, set[str]] = defaultdict(set)
    for split in WN18RR_SPLITS:
        for line in lines[split]:
            head, _, tail = line.split("\t")
            neighbours[head].add(tail)
            neighbours[tail].add(head)

    rng = random.Random(0)
    start = lines["train.tsv"][0].split("\t")[0]
    visited = {start}
    queue = deque([start])
    while queue and len(visited) < num_entities:
        entity = queue.popleft()
        candidates = sorted(neighbours[entity] - visited)
        rng.shuffle(candidates)
        for neighbour in candidates[:fanout]:
            if len(visited) >= num_entities:
                break
            visited.add(neighbour)
            queue.append(neighbour)

    out.mkdir(parents=True, exist_ok=True)
    counts = {}
    for split in WN18RR_SPLITS:
        kept = [line for line in lines[split] if line.split("\t")[0] in visited and line.split("\t")[2] in visited]
        (out / split).write_text("".join(line + "\n" for line in kept), encoding="utf-8")
        counts[split] = len(kept)
    texts = [line for line in read_lines(source / "entity2text.txt") if line.split("\t", 1)[0] in visited]
    (out / "entity2text.txt").write_text("".join(line + "\n" for line in texts), encoding="utf-8")
    counts["entity2text.txt"] = len(texts)
    shutil.copyfile(source / "relation2text.txt", out / "relation2text.txt")
    return counts


def sample_redocred(source: Path, out: Path, num_documents: int) -> int:
    """Write the first ``num_documents`` documents of dev_revised.json and copy rel_info.json."""
    documents = json.loads((source / "dev_revised.json").read_text(encoding="utf-8"))
    out.mkdir(parents=True, exist_ok=True)
    sample = documents[:num_documents]
    (out / "dev_revised_sample.json").write_text(json.dumps(sample, ensure_ascii=False), encoding="utf-8")
    shutil.copyfile(source / "rel_info.json", out / "rel_info.json")
    return len(sample)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wn18rr", type=Path, required=True, help="folder with the WN18RR files of kg-bert's data/WN18RR")
    parser.add_argument("--redocred", type=Path, required=True, help="folder with dev_revised.json and rel_info.json")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent, help="folder to write the samples to")
    parser.add_argument("--wn18rr-entities", type=int, default=2500, help="entities in the WN18RR sample")
    parser.add_argument("--wn18rr-fanout", type=int, default=4, help="most new neighbours one visited entity adds")
    parser.add_argument("--redocred-documents", type=int, default=30, help="documents in the Re-DocRED sample")
    args = parser.parse_args()
    counts = sample_wn18rr(args.wn18rr, args.out / "wn18rr", args.wn18rr_entities, args.wn18rr_fanout)
    print("wn18rr:", counts)
    print("redocred documents:", sample_redocred(args.redocred, args.out / "redocred", args.redocred_documents))


if __name__ == "__main__":
    main()
