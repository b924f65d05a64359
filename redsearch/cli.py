"""The ``erlgym tasks`` command: build a multi-hop search task set from a graph, and inspect or export one.

- ``build`` makes a knowledge graph (a generated world, triple files, Re-DocRED
  documents or a saved graph), synthesizes verified tasks with
  :func:`~erlgym.redsearch.synthesis.synthesize`, prints the difficulty it achieved and
  writes the task-set folder. Its synthesis options are generated from the fields of
  :class:`~erlgym.redsearch.synthesis.SynthesisSpec` (:mod:`erlgym.redsearch.spec_options`).
- ``stats`` prints counts by shape, difficulty distributions, the corpus size and the
  settings recorded in ``summary.json`` (tables from :mod:`erlgym.redsearch.task_tables`).
- ``show`` prints tasks with their facts and evidence documents.
- ``export`` writes JSON Lines or a Hugging Face ``DatasetDict`` (:mod:`erlgym.redsearch.export`).

``erlgym.erl.cli`` registers the command with :func:`add_tasks_command` and runs it with
:func:`run_tasks`. Bad input raises :class:`TaskCommandError`, ``GraphError``,
``TaskSetError`` or ``SynthesisError``, which the command line prints as one line
before exiting with status 2. Results (tables, tasks) go to stdout, and progress and
status lines go to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from erlgym.redsearch.graph import GraphError, KnowledgeGraph
from erlgym.redsearch.spec_options import add_spec_options, resolve_spec
from erlgym.redsearch.synthesis import SynthesisSpec
from erlgym.redsearch.task_tables import (count_noun, describe_build, difficulty_table, joint_table, rejection_table,
                                         shape_table)
from erlgym.redsearch.tasks import CORPUS_FILE, SHAPES, SUMMARY_FILE, TASKS_FILE, Task, TaskSet
from erlgym.redsearch.world import MIN_ENTITIES

# soft_wrap: rich never breaks long lines (questions, paths), so they stay whole when
# the output is piped or captured.
console = Console(stderr=True, soft_wrap=True)
"""Progress bars and status lines, on stderr."""
output = Console(soft_wrap=True)
"""Results: tables and tasks, on stdout."""

SOURCES = ("world", "triples", "redocred", "graph")
SOURCE_OPTIONS = {
    "world": ("entities", "world_seed"),
    "triples": ("triples", "entity_texts", "relation_texts", "entity_type"),
    "redocred": ("documents", "rel_info", "merge_entities"),
    "graph": ("graph",),
}
"""The ``tasks build`` options (argparse destinations) that each --source reads."""
REQUIRED_SOURCE_OPTIONS = {"triples": "--triples FILE [FILE ...]", "redocred": "--documents FILE",
                           "graph": "--graph FILE"}
DEFAULT_WORLD_ENTITIES = 2000
GRAPH_SUFFIXES = (".json", ".graphml")
EXPORT_FORMATS = ("jsonl", "datasets")
DATASET_DICT_FILE = "dataset_dict.json"
"""The file that ``DatasetDict.save_to_disk`` writes at the top of its folder."""


class TaskCommandError(Exception):
    """Bad input to ``erlgym tasks``; the command line prints the message and exits with status 2."""


# ---------------------------------------------------------------------- parser


def add_tasks_command(add_command: Callable[..., argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Add ``tasks`` and its subcommands with ``add_command(name, **kwargs)``, the top-level subparser factory."""
    tasks = add_command(
        "tasks", help="Build, inspect and export multi-hop search task sets.",
        description="Build a task set for erlgym/SearchQA-v0 from a knowledge graph, print its statistics or "
                    "tasks, or export it as JSON Lines or a Hugging Face dataset.")
    subcommands = tasks.add_subparsers(dest="tasks_command", required=True, metavar="{build,stats,show,export}")

    def add_subcommand(name: str, **kwargs: Any) -> argparse.ArgumentParser:
        return subcommands.add_parser(name, allow_abbrev=False, **kwargs)

    _add_build_parser(add_subcommand)

    stats = add_subcommand("stats", help="Print counts by shape, difficulty distributions and the build settings.",
                           description="Print a task set's counts by shape, difficulty distributions, the (hops, "
                                       "documents) table, the corpus size and the settings its summary.json records.")
    stats.add_argument("folder", type=Path, metavar="FOLDER", help="Task-set folder.")

    show = add_subcommand("show", help="Print tasks with their facts and evidence documents.",
                          description="Print tasks: question, answer, aliases, shape, difficulty, the facts of the "
                                      "reasoning graph and the evidence documents.")
    show.add_argument("folder", type=Path, metavar="FOLDER", help="Task-set folder.")
    where = show.add_mutually_exclusive_group()
    where.add_argument("--index", type=int, default=None, metavar="N",
                       help="Position of the first task to print, from 0 (default: 0).")
    where.add_argument("--id", dest="task_id", default=None, metavar="TASK_ID", help="Id of the first task to print.")
    show.add_argument("--count", type=int, default=1, metavar="K", help="Number of tasks to print (default: 1).")
    show.add_argument("--graph", type=Path, default=None, metavar="FILE",
                      help="Knowledge graph (.json or .graphml) to read entity and relation names from. Without "
                           "it, an entity is named by the title of the document with the same id, where there is "
                           "one, and a relation by the name the build recorded.")

    export = add_subcommand(
        "export", help="Write a task set as JSON Lines or a Hugging Face dataset.",
        description="jsonl: one task per line with its evidence documents inlined (not the rest of the corpus). "
                    "datasets: a datasets.DatasetDict with a 'tasks' and a 'corpus' dataset, written with "
                    "save_to_disk; read it with datasets.load_from_disk(PATH).")
    export.add_argument("folder", type=Path, metavar="FOLDER", help="Task-set folder.")
    export.add_argument("--format", default="jsonl", choices=EXPORT_FORMATS, help="Output format (default: jsonl).")
    export.add_argument("--out", type=Path, required=True, metavar="PATH",
                        help="Output file (jsonl) or folder (datasets).")
    export.add_argument("--overwrite", action="store_true", help="Replace an existing --out.")
    return tasks


def _add_build_parser(add_subcommand: Callable[..., argparse.ArgumentParser]) -> None:
    build = add_subcommand(
        "build", help="Synthesize a task set from a knowledge graph.",
        description="Make a knowledge graph from --source, synthesize verified multi-hop tasks that meet the "
                    "requested difficulty, print the difficulty achieved and write the task-set folder "
                    "(tasks.jsonl, corpus.jsonl, summary.json). Nothing is written when synthesis fails.")
    build.add_argument("--source", required=True, choices=SOURCES,
                       help="Where the graph comes from: a generated fictional world, tab-separated triple files, "
                            "Re-DocRED JSON, or a graph file written by KnowledgeGraph.save.")
    build.add_argument("--out", type=Path, required=True, metavar="FOLDER", help="Task-set folder to write.")
    build.add_argument("--overwrite", action="store_true",
                       help="Write into an existing non-empty --out, replacing its tasks.jsonl, corpus.jsonl and "
                            "summary.json (other files are left in place), and replace an existing --save-graph file.")
    build.add_argument("--save-graph", type=Path, default=None, metavar="FILE",
                       help="Also write the graph: .json keeps the documents (KnowledgeGraph.save), .graphml "
                            "keeps entities and facts only.")

    world = build.add_argument_group("--source world")
    world.add_argument("--entities", type=int, default=None, metavar="N",
                       help=f"Entities in the world, at least {MIN_ENTITIES} (default: {DEFAULT_WORLD_ENTITIES}).")
    world.add_argument("--world-seed", type=int, default=None, metavar="SEED",
                       help="Seed of the generated world (default: 0).")

    triples = build.add_argument_group("--source triples")
    triples.add_argument("--triples", type=Path, nargs="+", default=None, metavar="FILE",
                         help="UTF-8 files of head<TAB>relation<TAB>tail lines, such as WN18RR's train.tsv, "
                              "dev.tsv and test.tsv.")
    triples.add_argument("--entity-texts", type=Path, default=None, metavar="FILE",
                         help="id<TAB>text file (entity2text.txt); an entity's name is its text up to the first comma.")
    triples.add_argument("--relation-texts", type=Path, default=None, metavar="FILE",
                         help="id<TAB>text file of readable relation names (relation2text.txt).")
    triples.add_argument("--entity-type", default=None, metavar="TYPE",
                         help="Type of every entity, used in question wording, e.g. synset (default: entity).")

    redocred = build.add_argument_group("--source redocred")
    redocred.add_argument("--documents", type=Path, default=None, metavar="FILE",
                          help="Re-DocRED or DocRED JSON list of documents, such as dev_revised.json.")
    redocred.add_argument("--rel-info", type=Path, default=None, metavar="FILE",
                          help='JSON object of relation names, such as rel_info.json ({"P17": "country", ...}).')
    redocred.add_argument("--merge-entities", action="store_true",
                          help="Merge person, organisation, location and miscellaneous entities with the same name "
                               "and type across documents. Without it every fact stays inside one document, so "
                               "no task can need two documents.")

    graph = build.add_argument_group("--source graph")
    graph.add_argument("--graph", type=Path, default=None, metavar="FILE",
                       help="Graph written by KnowledgeGraph.save (.json). A .graphml file has no documents, so "
                            "it is rejected.")

    synthesis = build.add_argument_group(
        "synthesis", "Fields of SynthesisSpec. --spec reads them from a JSON file, and an option given here "
                     "overrides the file's value.")
    synthesis.add_argument("--spec", type=Path, default=None, metavar="FILE",
                           help="JSON object of SynthesisSpec fields, e.g. "
                                '{"count": 500, "targets": {"hops": {"2": 0.5, "3": 0.5}}}.')
    add_spec_options(synthesis)


# ---------------------------------------------------------------------- entry point


def run_tasks(args: argparse.Namespace) -> int:
    """Run the ``erlgym tasks`` subcommand in ``args.tasks_command``; return the exit status."""
    handlers = {"build": run_build, "stats": run_stats, "show": run_show, "export": run_export}
    return handlers[args.tasks_command](args)


# ---------------------------------------------------------------------- build


def run_build(args: argparse.Namespace) -> int:
    from erlgym.redsearch.synthesis import synthesis_indexes

    _check_shapes_option(getattr(args, "shapes", None))
    spec = resolve_spec(args)
    _check_source_options(args)
    _check_build_output(args.out, args.overwrite)
    _check_writable_folder(args.out.parent, "--out", args.out)
    if args.save_graph is not None:
        if args.save_graph.suffix.lower() not in GRAPH_SUFFIXES:
            raise TaskCommandError(f"--save-graph {args.save_graph} must end in .json or .graphml.")
        if args.save_graph.is_dir():
            raise TaskCommandError(f"--save-graph {args.save_graph} is a folder. Pass a file path.")
        _check_parents(args.save_graph, "--save-graph")
        inputs = [getattr(args, name, None) for name in
                  ("triples", "entity_texts", "relation_texts", "documents", "rel_info", "graph")]
        flat_inputs = [path for value in inputs if value is not None
                       for path in (value if isinstance(value, list) else [value])]
        if any(Path(path).resolve() == args.save_graph.resolve() for path in flat_inputs):
            raise TaskCommandError(f"--save-graph {args.save_graph} is one of the build's input files. "
                                   "Pass another path.")
        if args.save_graph.exists() and not args.overwrite:
            raise TaskCommandError(f"--save-graph {args.save_graph} already exists. Pass --overwrite to replace "
                                   "it, or another path.")
        if (args.save_graph.name in (TASKS_FILE, CORPUS_FILE, SUMMARY_FILE)
                and args.save_graph.parent.resolve() == args.out.resolve()):
            raise TaskCommandError(f"--save-graph {args.save_graph} is a file of the task set in --out. "
                                   "Pass another path.")
        if not args.save_graph.parent.is_dir():
            raise TaskCommandError(f"Cannot write --save-graph {args.save_graph}: the folder "
                                   f"{args.save_graph.parent} does not exist. Create it or pass another path.")
        _check_writable_folder(args.save_graph.parent, "--save-graph", args.save_graph)
    if args.source == "redocred" and args.rel_info is None:
        console.print(escape("Warning: no --rel-info, so questions name relations by their ids (such as P17). "
                             "Pass --rel-info rel_info.json for readable relation names."))

    started = time.perf_counter()
    with console.status("building the graph"):
        graph, graph_source = build_graph(args)
    console.print(escape(f"Graph {graph.name}: {count_noun(graph.num_entities, 'entity', 'entities')}, "
                         f"{count_noun(graph.num_facts, 'fact')}, {count_noun(len(graph.documents), 'document')} "
                         f"({time.perf_counter() - started:.1f} s)"))
    if not graph.documents:
        raise TaskCommandError(_no_documents_message(args, graph))
    with console.status("indexing the documents"):
        synthesis_indexes(graph)

    task_set = synthesize_with_progress(graph, spec, args)
    used_relations = sorted({fact["relation"] for task in task_set.tasks for fact in task.subgraph})
    task_set.summary["graph_source"] = graph_source
    task_set.summary["relation_names"] = {relation: graph.relation_name(relation) for relation in used_relations}
    print_build_summary(task_set)

    write_build(task_set, graph, args.out, args.save_graph)
    # --env-kwargs replaces erlgym train's SearchQA defaults (top_k 3, max_steps 6, which fit
    # the default model's context), so the command repeats them.
    env_kwargs = shlex.quote(json.dumps({"tasks": str(args.out), "top_k": 3, "max_steps": 6}))
    console.print(escape(f"Train on it with: erlgym train --env erlgym/SearchQA-v0 --env-kwargs {env_kwargs} "
                         "--max-new-tokens 48"))
    return 0


def _no_documents_message(args: argparse.Namespace, graph: KnowledgeGraph) -> str:
    """Describe why the graph of ``args`` has no documents and what to pass instead."""
    if args.source == "graph" and args.graph.suffix.lower() == ".graphml":
        return (f"Graph {graph.name} has no documents, so no task could be answered by searching. "
                "GraphML files contain entities and facts only: pass a .json graph written by "
                "KnowledgeGraph.save (or by erlgym tasks build --save-graph FILE.json).")
    if args.source == "graph":
        return (f"--graph {args.graph} has no documents, so no task could be answered by searching. "
                "Pass a graph saved from a non-empty source.")
    # The importers reject input without triples or documents, so this is a fallback.
    return f"--source {args.source} produced a graph without documents. Check the input files."


def synthesize_with_progress(graph: KnowledgeGraph, spec: SynthesisSpec, args: argparse.Namespace) -> TaskSet:
    """Run synthesis under a progress bar of kept tasks.

    Raises:
        SynthesisError: the graph did not meet the spec. For Re-DocRED without
            --merge-entities, the message also names that option.
    """
    from erlgym.redsearch.synthesis import SynthesisError, synthesize

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("eta"), TimeRemainingColumn(), console=console) as progress:
        bar = progress.add_task("synthesizing", total=spec.count)
        try:
            return synthesize(graph, spec, progress=lambda done, total: progress.update(bar, completed=done))
        except SynthesisError as error:
            if args.source == "redocred" and not args.merge_entities:
                raise SynthesisError(f"{error} Without --merge-entities every Re-DocRED fact stays inside its own "
                                     "document, so no task can need two documents: pass --merge-entities.") from error
            raise


def write_build(task_set: TaskSet, graph: KnowledgeGraph, out: Path, save_graph: Path | None) -> None:
    """Write the task set to ``out``, and the graph to ``save_graph`` when it is given.

    Both are first written to temporary paths beside their targets, and the task set
    replaces ``out`` only when both are complete (:func:`replace_folder`). So an error or
    an interrupt before that point leaves the previous task set and graph as they were,
    and no temporary path remains. Files in ``out`` other than the task-set files are
    copied into the new folder, and a ``save_graph`` inside ``out`` moves with it.
    """
    # Replace the folder that a symbolic link points to, not the link.
    folder = Path(os.path.realpath(out))
    staging: Path | None = None
    graph_staging: Path | None = None
    try:
        try:
            folder.parent.mkdir(parents=True, exist_ok=True)
            staging = _staging_folder(folder)
            task_set.save(staging)
            _copy_other_files(folder, staging)
        except OSError as error:
            # error.filename is usually the staging folder beside --out, which the user never named.
            raise TaskCommandError(f"Cannot write the task set to --out {out}: {error.strerror}. "
                                   "Pass a writable --out.") from error
        if save_graph is not None:
            try:
                graph_target, graph_staging = _graph_target(save_graph, folder, staging)
                if save_graph.suffix.lower() == ".graphml":
                    graph.save_graphml(graph_target)
                else:
                    graph.save(graph_target)
            except OSError as error:
                raise TaskCommandError(f"Cannot write the graph to {save_graph}: {error.strerror}. "
                                       "Pass a writable --save-graph.") from error

        try:
            replace_folder(staging, folder)
        except OSError as error:
            raise TaskCommandError(f"Cannot replace --out {out} with the new task set: {error.strerror}. "
                                   "The previous task set is unchanged.") from error
        console.print(escape(f"Task set written to {out} ({count_noun(len(task_set.tasks), 'task')}, "
                             f"{count_noun(len(task_set.documents), 'document')})."))
        if graph_staging is not None:
            try:
                os.replace(graph_staging, save_graph)
            except OSError as error:
                raise TaskCommandError(f"Cannot write the graph to {save_graph}: {error.strerror}. "
                                       "Pass a writable --save-graph.") from error
        if save_graph is not None:
            console.print(escape(f"Graph written to {save_graph}."))
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        if graph_staging is not None:
            graph_staging.unlink(missing_ok=True)


def _graph_target(save_graph: Path, folder: Path, staging: Path) -> tuple[Path, Path | None]:
    """Return where to write the graph until the task set is in place, and the staging file to rename, if any.

    A ``save_graph`` inside the task-set folder is written to the same place in
    ``staging``, which moves into place with the task set, so there is no file to rename.
    Any other is written to a new staging file beside ``save_graph``.
    """
    graph_path = Path(os.path.realpath(save_graph))
    if graph_path.is_relative_to(folder):
        target = staging / graph_path.relative_to(folder)
        target.parent.mkdir(parents=True, exist_ok=True)
        return target, None
    graph_staging = _staging_file(save_graph)
    return graph_staging, graph_staging


def _check_source_options(args: argparse.Namespace) -> None:
    """Reject options of another --source and a missing required option of this one."""
    for source, names in SOURCE_OPTIONS.items():
        if source == args.source:
            continue
        for name in names:
            value = getattr(args, name)
            # store_true options default to False, the others to None.
            if value is not None and value is not False:
                flag = "--" + name.replace("_", "-")
                raise TaskCommandError(f"{flag} applies to --source {source}, not --source {args.source}. "
                                       f"Remove it or pass --source {source}.")
    required = REQUIRED_SOURCE_OPTIONS.get(args.source)
    if required is not None and getattr(args, SOURCE_OPTIONS[args.source][0]) is None:
        raise TaskCommandError(f"--source {args.source} needs {required}.")
    if args.source == "world" and args.entities is not None and args.entities < MIN_ENTITIES:
        raise TaskCommandError(f"--entities must be at least {MIN_ENTITIES} (a world needs every entity type), "
                               f"got {args.entities}.")


def _check_shapes_option(raw: str | None) -> None:
    """Reject a --shapes value that names an unknown shape or is neither a name list nor a JSON object."""
    if raw is None:
        return
    valid = ", ".join(SHAPES)
    text = raw.strip()
    if text.startswith("["):
        raise TaskCommandError(f"--shapes {raw!r} is invalid: pass shape names separated by commas, such as "
                               f"bridge,count, or a JSON object of weights, such as '{{\"bridge\": 2}}'. "
                               f"Valid shapes: {valid}.")
    if text.startswith("{"):
        try:
            weights = json.loads(text)
        except json.JSONDecodeError:
            return  # resolve_spec reports the JSON error.
        names = list(weights) if isinstance(weights, dict) else []
    else:
        names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in SHAPES]
    if unknown:
        raise TaskCommandError(f"--shapes names unknown shape(s) {', '.join(repr(name) for name in unknown)}. "
                               f"Valid shapes: {valid}.")


def _check_writable_folder(folder: Path, option: str, path: Path) -> None:
    """Create and remove a probe file in the nearest existing folder of ``folder``, or raise TaskCommandError.

    A probe catches what permission bits do not show: a read-only file system, or root
    on a mount that refuses writes. The folders that are still missing are created at
    write time, in the existing folder that is probed here.
    """
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return  # _check_parents reports a file in the path.
    try:
        with tempfile.TemporaryFile(dir=existing, prefix=".erlgym-write-probe."):
            pass
    except OSError as error:
        raise TaskCommandError(f"Cannot write {option} {path}: {existing} is not writable ({error.strerror}). "
                               f"Pass a writable {option}.") from error


def _check_build_output(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise TaskCommandError(f"--out {out} is a file. Pass a folder path for the task set.")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise TaskCommandError(f"--out {out} already exists and is not empty. Pass --overwrite to replace its "
                                   "task set, or choose another folder.")
        if not (out / TASKS_FILE).is_file():
            # --overwrite copies the folder's other files into the new one, so only a task
            # set folder is replaced, never an arbitrary folder such as a home directory.
            raise TaskCommandError(f"--out {out} is not empty and contains no {TASKS_FILE}, so it is not a task set "
                                   "that --overwrite may replace. Choose another folder.")
    _check_parents(out)


def build_graph(args: argparse.Namespace) -> tuple[KnowledgeGraph, dict[str, Any]]:
    """Make the graph that ``--source`` names; return it with a description of the source for the summary.

    Raises:
        GraphError: an input file is missing or malformed.
    """
    from erlgym.redsearch.importers import REPORT_KEY, load_redocred, load_triples
    from erlgym.redsearch.world import generate_world

    if args.source == "world":
        entities = args.entities if args.entities is not None else DEFAULT_WORLD_ENTITIES
        seed = args.world_seed if args.world_seed is not None else 0
        return generate_world(entities, seed), {"kind": "world", "entities": entities, "world_seed": seed}
    if args.source == "triples":
        graph = load_triples(args.triples, args.entity_texts, args.relation_texts,
                             entity_type=args.entity_type or "entity")
        source = {"kind": "triples", "triples": [str(path) for path in args.triples],
                  "entity_texts": _optional_str(args.entity_texts),
                  "relation_texts": _optional_str(args.relation_texts), "entity_type": args.entity_type or "entity"}
    elif args.source == "redocred":
        graph = load_redocred(args.documents, args.rel_info, merge_entities=args.merge_entities)
        source = {"kind": "redocred", "documents": str(args.documents), "rel_info": _optional_str(args.rel_info),
                  "merge_entities": args.merge_entities}
    else:
        graph = load_graph_file(args.graph)
        source = {"kind": "graph", "graph": str(args.graph)}
    report = graph.graph.graph.get(REPORT_KEY)
    if report is not None:
        source["import_report"] = report
    return graph, source


def load_graph_file(path: Path) -> KnowledgeGraph:
    """Read a graph written by KnowledgeGraph.save, or by save_graphml for a ``.graphml`` path."""
    if path.suffix.lower() != ".graphml":
        return KnowledgeGraph.load(path)
    try:
        return KnowledgeGraph.load_graphml(path)
    except GraphError:
        raise
    except (KeyError, ValueError) as error:
        # load_graphml expects the attributes save_graphml writes: a relation per edge and
        # JSON-encoded aliases, attributes and evidence.
        raise TaskCommandError(f"{path} is not a GraphML file written by KnowledgeGraph.save_graphml "
                               f"({type(error).__name__}: {error}).") from error


def _optional_str(path: Path | None) -> str | None:
    return None if path is None else str(path)


def replace_folder(staging: Path, out: Path) -> None:
    """Move the complete folder ``staging`` to ``out``, replacing the folder there.

    The previous folder is renamed aside and deleted only after ``staging`` is in place.
    When moving ``staging`` fails or is interrupted, the previous folder is renamed back,
    so ``out`` then contains the previous folder, never a mix of the two. Both paths must be
    on one file system, which a staging folder beside ``out`` is.

    Raises:
        OSError: a rename failed; ``out`` is unchanged.
        TaskCommandError: the previous folder could not be renamed back; the message names
            where it is.
    """
    if not out.exists():
        os.rename(staging, out)
        return
    # The staging name is unique in out.parent, so this name is free.
    aside = staging.with_name(staging.name + ".previous")
    try:
        os.rename(out, aside)
        os.rename(staging, out)
    finally:
        if aside.exists() and not out.exists():
            try:
                os.rename(aside, out)
            except OSError as error:
                raise TaskCommandError(f"Cannot move the previous folder back from {aside} to {out}: "
                                       f"{error.strerror}. Rename it by hand.") from error
        elif aside.exists():
            _delete_previous_folder(aside)


def _delete_previous_folder(folder: Path) -> None:
    try:
        shutil.rmtree(folder)
    except OSError as error:
        console.print(escape(f"Warning: cannot delete the replaced folder {folder} ({error.strerror}). "
                             "Delete it by hand."))


def _copy_other_files(out: Path, staging: Path) -> None:
    """Copy the entries of ``out`` other than the task-set files into ``staging``, so that replacing ``out`` keeps them.

    Symbolic links are copied as links. Does nothing when ``out`` does not exist.
    """
    if not out.is_dir():
        return
    for entry in sorted(out.iterdir()):
        if entry.name in (TASKS_FILE, CORPUS_FILE, SUMMARY_FILE):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.copytree(entry, staging / entry.name, symlinks=True)
        else:
            shutil.copy2(entry, staging / entry.name, follow_symlinks=False)


# ---------------------------------------------------------------------- tables


def print_build_summary(task_set: TaskSet) -> None:
    """Print the shapes, the difficulty achieved against the targets, the (hops, documents) table and the rejections."""
    summary = task_set.summary
    output.print(shape_table(task_set.tasks))
    output.print(difficulty_table(task_set.tasks, summary.get("targets", {}).get("marginal_shares", {})))
    joint = joint_table(task_set.tasks)
    if joint is not None:
        output.print(joint)
    output.print(rejection_table(summary))


# ---------------------------------------------------------------------- stats


def run_stats(args: argparse.Namespace) -> int:
    task_set = TaskSet.load(args.folder)
    summary = task_set.summary
    sentences = sum(len(document.sentences) for document in task_set.documents.values())
    characters = sum(len(document.text) for document in task_set.documents.values())
    output.print(escape(f"Task set {args.folder}: {count_noun(len(task_set.tasks), 'task')}; corpus of "
                        f"{count_noun(len(task_set.documents), 'document')}, {count_noun(sentences, 'sentence')}, "
                        f"{count_noun(characters, 'character')}"))
    for line in describe_build(summary):
        output.print(escape(line))
    if task_set.tasks:
        output.print(shape_table(task_set.tasks))
        output.print(difficulty_table(task_set.tasks, summary.get("targets", {}).get("marginal_shares", {})))
        joint = joint_table(task_set.tasks)
        if joint is not None:
            output.print(joint)
    return 0


# ---------------------------------------------------------------------- show


def run_show(args: argparse.Namespace) -> int:
    task_set = TaskSet.load(args.folder)
    tasks = task_set.tasks
    if not tasks:
        raise TaskCommandError(f"Task set {args.folder} has no tasks.")
    if args.count < 1:
        raise TaskCommandError(f"--count must be at least 1, got {args.count}.")
    if args.task_id is not None:
        positions = [position for position, task in enumerate(tasks) if task.task_id == args.task_id]
        if not positions:
            raise TaskCommandError(f"No task has id {args.task_id!r} in {args.folder}. Use --index N, from 0 to "
                                   f"{len(tasks) - 1}, or an id from {TASKS_FILE}, such as {tasks[0].task_id!r}.")
        start = positions[0]
    else:
        start = args.index if args.index is not None else 0
        if not 0 <= start < len(tasks):
            raise TaskCommandError(f"--index {start} is out of range: {args.folder} has {len(tasks)} tasks, "
                                   f"so pass 0 to {len(tasks) - 1}.")

    entity_names = {doc_id: document.title for doc_id, document in task_set.documents.items()}
    relation_names = dict(task_set.summary.get("relation_names", {}))
    if args.graph is not None:
        graph = load_graph_file(args.graph)
        entity_names.update((entity_id, data["name"]) for entity_id, data in graph.graph.nodes(data=True))
        relation_names.update(graph.relation_names)
    for position in range(start, min(start + args.count, len(tasks))):
        if position > start:
            output.print()
        print_task(tasks[position], position, len(tasks), task_set, entity_names, relation_names)
    return 0


def print_task(task: Task, position: int, total: int, task_set: TaskSet, entity_names: dict[str, str],
               relation_names: dict[str, str]) -> None:
    def entity(entity_id: str) -> str:
        name = entity_names.get(entity_id)
        return entity_id if name is None or name == entity_id else f"{name} ({entity_id})"

    fields = [
        ("question", task.question),
        ("answer", task.answer),
        ("aliases", ", ".join(task.aliases) if task.aliases else "none"),
        ("shape", task.shape),
        ("difficulty", ", ".join(f"{measure} {value}" for measure, value in task.difficulty.items()) or "none"),
        ("source", f"{task.source or 'unknown'}, seed {task.seed}"),
    ]
    output.print(f"[bold]Task {position} of {total}[/bold]", escape(f"(id {task.task_id})"))
    for label, value in fields:
        output.print(f"[bold]{label:<10}[/bold]", escape(value))
    output.print("[bold]facts[/bold]" if task.subgraph else "[bold]facts[/bold]      none")
    for fact in task.subgraph:
        relation = relation_names.get(fact["relation"], fact["relation"])
        output.print(escape(f"  {entity(fact['head'])} --{relation}--> {entity(fact['tail'])}"))
    output.print("[bold]evidence[/bold]" if task.evidence else "[bold]evidence[/bold]   none")
    for doc_id in task.evidence:
        document = task_set.documents.get(doc_id)
        title = document.title if document is not None else "(not in the corpus)"
        output.print(escape(f"  {doc_id}: {title}"))


# ---------------------------------------------------------------------- export


def run_export(args: argparse.Namespace) -> int:
    from erlgym.redsearch.export import to_dataset_dict, write_jsonl

    out: Path = args.out
    if args.format == "jsonl":
        _check_export_file(out, args.overwrite)
    else:
        _check_export_folder(out, args.overwrite)
    task_set = TaskSet.load(args.folder)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        if args.format == "jsonl":
            staging = out.with_name(f".{out.name}.partial")
            try:
                write_jsonl(task_set, staging)
                os.replace(staging, out)
            finally:
                staging.unlink(missing_ok=True)
            console.print(escape(f"Wrote {count_noun(len(task_set.tasks), 'task')} with their evidence documents to {out}."))
        else:
            import datasets

            datasets.disable_progress_bars()
            staging = _staging_folder(out)
            try:
                to_dataset_dict(task_set).save_to_disk(str(staging))
                replace_folder(staging, out)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
            console.print(escape(f"Wrote a DatasetDict with {count_noun(len(task_set.tasks), 'task')} and "
                                 f"{count_noun(len(task_set.documents), 'corpus document')} to {out}. Read it with "
                                 f"datasets.load_from_disk({str(out)!r})."))
    except OSError as error:
        raise TaskCommandError(f"Cannot write {error.filename or out}: {error.strerror}. "
                               "Pass a writable --out.") from error
    return 0


def _check_export_file(out: Path, overwrite: bool) -> None:
    if out.is_dir():
        raise TaskCommandError(f"--out {out} is a folder. Pass a file path for --format jsonl.")
    if out.exists() and not overwrite:
        raise TaskCommandError(f"--out {out} already exists. Pass --overwrite to replace it, or choose another path.")
    _check_parents(out)


def _check_export_folder(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise TaskCommandError(f"--out {out} is a file. Pass a folder path for --format datasets.")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise TaskCommandError(f"--out {out} already exists and is not empty. Pass --overwrite to replace it, "
                                   "or choose another folder.")
        if not (out / DATASET_DICT_FILE).is_file():
            # --overwrite deletes the folder, so only a folder that save_to_disk wrote is replaced.
            raise TaskCommandError(f"--out {out} is not empty and contains no {DATASET_DICT_FILE}, so it is not a "
                                   "dataset that --overwrite may replace. Choose another folder.")
    _check_parents(out)


def _staging_folder(out: Path) -> Path:
    """Make an empty folder beside ``out`` with the permissions of ``out``, or those the umask gives a new folder.

    ``tempfile.mkdtemp`` creates mode 0700, which the renamed output would keep.
    """
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        _copy_mode(out, staging, 0o777)
    except BaseException:
        staging.rmdir()
        raise
    return staging


def _staging_file(path: Path) -> Path:
    """Make an empty file beside ``path``, with the same suffix and the permissions that :func:`_copy_mode` gives."""
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    os.close(handle)
    staging = Path(name)
    try:
        _copy_mode(path, staging, 0o666)
    except BaseException:
        staging.unlink()
        raise
    return staging


def _copy_mode(existing: Path, staging: Path, new_mode: int) -> None:
    """Give ``staging`` the permissions of ``existing``, or ``new_mode`` less the umask when ``existing`` is missing."""
    if existing.exists():
        shutil.copymode(existing, staging)
        return
    umask = os.umask(0)
    os.umask(umask)
    staging.chmod(new_mode & ~umask)


def _check_parents(path: Path, option: str = "--out") -> None:
    for parent in path.parents:
        if parent.exists() and not parent.is_dir():
            raise TaskCommandError(f"Cannot write {option} {path}: {parent} is a file. Pass another path.")
