"""Tests of ``erlgym tasks``: build from each graph source, stats, show, export, input errors, and SearchQA on a built set.

Builds use small graphs (a 300-entity world, the WN18RR and Re-DocRED samples in
tests/data/kg) and small counts, so each takes well under a second.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import io
import json
import os
from pathlib import Path

import gymnasium
import pytest

import erlgym.envs  # noqa: F401  (registers the erlgym environments)
from erlgym.envs.search_corpus import task_split
from erlgym.erl import cli
from erlgym.erl.cli import EXIT_USAGE, build_parser, main
from erlgym.redsearch import cli as tasks_cli
from erlgym.redsearch import synthesis
from erlgym.redsearch.spec_options import parse_spec_option, resolve_spec
from erlgym.redsearch.graph import KnowledgeGraph
from erlgym.redsearch.synthesis import SynthesisSpec
from erlgym.redsearch.tasks import TaskSet

DATA = Path(__file__).resolve().parent / "data" / "kg"
WN18RR = DATA / "wn18rr"
REDOCRED = DATA / "redocred" / "dev_revised_sample.json"
REL_INFO = DATA / "redocred" / "rel_info.json"
HOP_TARGETS = '{"hops": {"2": 0.5, "3": 0.5}}'
WORLD_TASKS = 12


@dataclasses.dataclass
class Build:
    """One ``erlgym tasks build`` run: its folder, exit status and output."""

    out: Path
    status: int
    stdout: str
    stderr: str


def run_main(argv: list[str]) -> tuple[int, str, str]:
    """Run ``main`` and return its exit status, stdout and stderr (whitespace collapsed)."""
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        status = main(argv)
    return status, stdout.getvalue(), " ".join(stderr.getvalue().split())


def run_build(out: Path, *options: str) -> Build:
    status, stdout, stderr = run_main(["tasks", "build", "--out", str(out), *options])
    return Build(out, status, stdout, stderr)


def world_options(count: int = WORLD_TASKS) -> list[str]:
    return ["--source", "world", "--entities", "300", "--count", str(count)]


def run_failing(argv: list[str]) -> str:
    """Run ``main``, check the usage exit status, and return stderr with whitespace collapsed."""
    status, _, stderr = run_main(argv)
    assert status == EXIT_USAGE
    return stderr


@contextlib.contextmanager
def wide_consoles():
    """Keep messages and table cells on one line, so that values in them stay whole."""
    with pytest.MonkeyPatch.context() as patch:
        for console in (cli.console, tasks_cli.console, tasks_cli.output):
            patch.setattr(console, "width", 1000)
        yield


@pytest.fixture(autouse=True)
def wide_console():
    with wide_consoles():
        yield


@pytest.fixture(scope="module")
def world_build(tmp_path_factory) -> Build:
    folder = tmp_path_factory.mktemp("world")
    with wide_consoles():
        return run_build(folder / "tasks", *world_options(), "--targets", HOP_TARGETS,
                         "--save-graph", str(folder / "graph.json"))


@pytest.fixture(scope="module")
def triples_build(tmp_path_factory) -> Build:
    folder = tmp_path_factory.mktemp("triples")
    with wide_consoles():
        return run_build(folder / "tasks", "--source", "triples", "--triples", str(WN18RR / "train.tsv"),
                         str(WN18RR / "dev.tsv"), str(WN18RR / "test.tsv"), "--entity-texts",
                         str(WN18RR / "entity2text.txt"), "--relation-texts", str(WN18RR / "relation2text.txt"),
                         "--entity-type", "synset", "--count", "8")


@pytest.fixture(scope="module")
def redocred_build(tmp_path_factory) -> Build:
    folder = tmp_path_factory.mktemp("redocred")
    with wide_consoles():
        return run_build(folder / "tasks", "--source", "redocred", "--documents", str(REDOCRED), "--rel-info",
                         str(REL_INFO), "--merge-entities", "--count", "5", "--save-graph",
                         str(folder / "graph.json"))


# ---------------------------------------------------------------------- help


def test_tasks_help_lists_subcommands(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["tasks", "--help"])
    out = capsys.readouterr().out

    assert exit_info.value.code == 0
    for command in ("build", "stats", "show", "export"):
        assert command in out


def test_build_help_has_every_spec_field(capsys):
    with pytest.raises(SystemExit):
        main(["tasks", "build", "--help"])
    out = " ".join(capsys.readouterr().out.split())

    for spec_field in dataclasses.fields(SynthesisSpec):
        assert "--" + spec_field.name.replace("_", "-") in out
        assert " ".join(spec_field.metadata["help"].split()) in out


def test_docs_list_every_spec_option():
    doc = (Path(__file__).resolve().parent.parent / "docs" / "redsearch.md").read_text(encoding="utf-8")

    for spec_field in dataclasses.fields(SynthesisSpec):
        assert f"`--{spec_field.name.replace('_', '-')}" in doc


# ---------------------------------------------------------------------- build: world


def test_world_build_exits_zero(world_build):
    assert world_build.status == 0, world_build.stderr


def test_world_build_writes_task_set(world_build):
    task_set = TaskSet.load(world_build.out)

    assert sorted(path.name for path in world_build.out.iterdir()) == ["corpus.jsonl", "summary.json", "tasks.jsonl"]
    assert len(task_set.tasks) == WORLD_TASKS
    assert len(task_set.documents) == 300
    assert all(doc_id in task_set.documents for task in task_set.tasks for doc_id in task.evidence)


def test_world_build_meets_hop_target(world_build):
    task_set = TaskSet.load(world_build.out)

    assert task_set.summary["achieved"]["marginals"]["hops"] == {"2": 6, "3": 6}
    assert sorted(task.difficulty["hops"] for task in task_set.tasks) == [2] * 6 + [3] * 6


def test_world_build_records_source(world_build):
    summary = TaskSet.load(world_build.out).summary

    assert summary["graph_source"] == {"kind": "world", "entities": 300, "world_seed": 0}
    assert summary["spec"]["targets"] == json.loads(HOP_TARGETS)
    assert summary["relation_names"]
    assert all(relation_id.replace("_", " ") == name for relation_id, name in summary["relation_names"].items())


def test_world_build_prints_summary(world_build):
    stdout = world_build.stdout

    assert "Tasks by shape" in stdout
    assert "Difficulty" in stdout
    assert "Tasks by hops (rows) and evidence documents (columns)" in stdout
    assert "Rejected seeds" in stdout
    assert "50.0%" in stdout
    assert f"{WORLD_TASKS} kept" in stdout


def test_world_build_prints_progress(world_build):
    stderr = world_build.stderr

    assert "Graph world-300-seed0: 300 entities" in stderr
    assert "synthesizing" in stderr
    assert f"Task set written to {world_build.out} ({WORLD_TASKS} tasks, 300 documents)." in stderr
    env_kwargs = json.dumps({"tasks": str(world_build.out), "top_k": 3, "max_steps": 6})
    assert f"erlgym train --env erlgym/SearchQA-v0 --env-kwargs '{env_kwargs}' --max-new-tokens 48" in stderr


def test_world_build_saves_graph(world_build):
    graph = KnowledgeGraph.load(world_build.out.parent / "graph.json")

    assert graph.num_entities == 300
    assert len(graph.documents) == 300


# ---------------------------------------------------------------------- build: triples, Re-DocRED, graph file


def test_triples_build_writes_task_set(triples_build):
    assert triples_build.status == 0, triples_build.stderr
    task_set = TaskSet.load(triples_build.out)

    assert len(task_set.tasks) == 8
    assert len(task_set.documents) == 2500
    assert all(task.difficulty["documents"] >= 2 for task in task_set.tasks)


def test_triples_build_records_import(triples_build):
    source = TaskSet.load(triples_build.out).summary["graph_source"]

    assert source["kind"] == "triples"
    assert source["triples"] == [str(WN18RR / name) for name in ("train.tsv", "dev.tsv", "test.tsv")]
    assert source["entity_type"] == "synset"
    assert source["import_report"]["facts"] == 4924


def test_triples_build_names_relations(triples_build):
    relation_names = TaskSet.load(triples_build.out).summary["relation_names"]
    lines = (WN18RR / "relation2text.txt").read_text(encoding="utf-8").splitlines()
    texts = dict(line.split("\t") for line in lines)

    assert relation_names
    assert relation_names == {relation_id: texts[relation_id] for relation_id in relation_names}


def test_redocred_build_writes_task_set(redocred_build):
    assert redocred_build.status == 0, redocred_build.stderr
    task_set = TaskSet.load(redocred_build.out)

    assert len(task_set.tasks) == 5
    assert len(task_set.documents) == 30
    assert all(len(set(task.evidence)) >= 2 for task in task_set.tasks)
    assert TaskSet.load(redocred_build.out).summary["graph_source"]["merge_entities"] is True


def test_redocred_without_merge_fails_with_hint(tmp_path):
    out = tmp_path / "tasks"
    err = run_failing(["tasks", "build", "--out", str(out), "--source", "redocred", "--documents", str(REDOCRED),
                       "--count", "3", "--max-attempts", "200"])

    assert "yielded 0 after 200 attempts" in err
    assert "pass --merge-entities" in err
    assert "Warning: no --rel-info, so questions name relations by their ids (such as P17)" in err
    assert not out.exists()


def test_redocred_with_rel_info_has_no_warning(redocred_build):
    assert "--rel-info" not in redocred_build.stderr


@pytest.mark.parametrize("text", ["", "\n \n\n"])
def test_empty_triples_file_rejected(tmp_path, text):
    triples = tmp_path / "empty.tsv"
    triples.write_text(text, encoding="utf-8")

    err = run_failing(["tasks", "build", "--out", str(tmp_path / "tasks"), "--source", "triples", "--triples",
                       str(triples)])

    assert f"Triple files {triples} contain no triples" in err
    assert "GraphML" not in err
    assert not (tmp_path / "tasks").exists()


def test_empty_redocred_list_rejected(tmp_path):
    documents = tmp_path / "empty.json"
    documents.write_text("[]", encoding="utf-8")

    err = run_failing(["tasks", "build", "--out", str(tmp_path / "tasks"), "--source", "redocred", "--documents",
                       str(documents), "--rel-info", str(REL_INFO)])

    assert f"{documents} contains an empty list, so there are no documents to import" in err
    assert "GraphML" not in err


def test_build_from_saved_graph(world_build, tmp_path):
    build = run_build(tmp_path / "tasks", "--source", "graph", "--graph", str(world_build.out.parent / "graph.json"),
                      "--count", "4")

    assert build.status == 0, build.stderr
    assert len(TaskSet.load(build.out).tasks) == 4
    assert TaskSet.load(build.out).summary["source"] == "world-300-seed0"


def test_graphml_without_documents_rejected(world_build, tmp_path):
    graphml = tmp_path / "graph.graphml"
    KnowledgeGraph.load(world_build.out.parent / "graph.json").save_graphml(graphml)

    err = run_failing(["tasks", "build", "--out", str(tmp_path / "tasks"), "--source", "graph", "--graph",
                       str(graphml), "--count", "3"])

    assert "has no documents" in err
    assert "GraphML files contain entities and facts only" in err
    assert not (tmp_path / "tasks").exists()


def test_foreign_graphml_rejected(tmp_path):
    graphml = tmp_path / "foreign.graphml"
    graphml.write_text('<?xml version="1.0"?><graphml xmlns="http://graphml.graphdrawing.org/xmlns">'
                       '<graph edgedefault="directed"><node id="a"/><node id="b"/><edge source="a" target="b"/>'
                       "</graph></graphml>")

    err = run_failing(["tasks", "build", "--out", str(tmp_path / "tasks"), "--source", "graph", "--graph",
                       str(graphml)])

    assert f"{graphml} is not a GraphML file written by KnowledgeGraph.save_graphml" in err


# ---------------------------------------------------------------------- build: output folder and failures


def test_existing_out_rejected(world_build):
    before = (world_build.out / "tasks.jsonl").read_text()

    err = run_failing(["tasks", "build", "--out", str(world_build.out), *world_options(4)])

    assert f"--out {world_build.out} already exists and is not empty" in err
    assert "--overwrite" in err
    assert (world_build.out / "tasks.jsonl").read_text() == before


def test_overwrite_replaces_task_set(tmp_path):
    out = tmp_path / "tasks"
    assert run_build(out, *world_options(4)).status == 0
    (out / "notes.txt").write_text("kept")
    (out / "runs").mkdir()
    (out / "runs" / "log.txt").write_text("kept too")
    out.chmod(0o750)

    build = run_build(out, *world_options(3), "--seed", "7", "--overwrite")

    assert build.status == 0, build.stderr
    assert len(TaskSet.load(out).tasks) == 3
    assert TaskSet.load(out).summary["spec"]["seed"] == 7
    assert (out / "notes.txt").read_text() == "kept"
    assert (out / "runs" / "log.txt").read_text() == "kept too"
    assert (out.stat().st_mode & 0o777) == 0o750
    assert [path.name for path in tmp_path.iterdir()] == ["tasks"]


def test_overwrite_moves_graph_inside_out(tmp_path):
    out = tmp_path / "tasks"
    assert run_build(out, *world_options(4)).status == 0

    build = run_build(out, *world_options(3), "--overwrite", "--save-graph", str(out / "graph.json"))

    assert build.status == 0, build.stderr
    assert len(TaskSet.load(out).tasks) == 3
    assert KnowledgeGraph.load(out / "graph.json").num_entities == 300
    assert sorted(path.name for path in tmp_path.iterdir()) == ["tasks"]
    assert sorted(path.name for path in out.iterdir()) == ["corpus.jsonl", "graph.json", "summary.json", "tasks.jsonl"]


def test_overwrite_rejects_other_folder(tmp_path):
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")

    err = run_failing(["tasks", "build", "--out", str(folder), *world_options(), "--overwrite"])

    assert f"--out {folder} is not empty and contains no tasks.jsonl" in err
    assert [path.name for path in folder.iterdir()] == ["notes.txt"]


def test_save_graph_over_task_set_file_rejected(tmp_path):
    out = tmp_path / "tasks"
    assert run_build(out, *world_options(4)).status == 0

    err = run_failing(["tasks", "build", "--out", str(out), *world_options(3), "--overwrite",
                       "--save-graph", str(out / "summary.json")])

    assert f"--save-graph {out / 'summary.json'} is a file of the task set in --out" in err


def file_digests(root: Path) -> dict[str, str]:
    """Map every path under ``root`` to the SHA-256 of its bytes, or to "folder"."""
    digests = {}
    for folder, folders, files in os.walk(root):
        for name in folders:
            digests[os.path.relpath(os.path.join(folder, name), root)] = "folder"
        for name in files:
            path = Path(folder, name)
            digests[os.path.relpath(path, root)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digests


def interrupt_synthesis(monkeypatch, out: Path) -> None:
    def synthesize(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(synthesis, "synthesize", synthesize)


def fail_task_set_write(monkeypatch, out: Path) -> None:
    def save(task_set, folder):
        (Path(folder) / "tasks.jsonl").write_text("{\"task_id\": ")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(TaskSet, "save", save)


def interrupt_graph_write(monkeypatch, out: Path) -> None:
    def save(graph, path):
        Path(path).write_text("{\"format\": ")
        raise KeyboardInterrupt

    monkeypatch.setattr(KnowledgeGraph, "save", save)


def interrupt_rename_into_place(monkeypatch, out: Path) -> None:
    """Interrupt the rename that moves the new task set to ``out``, after the previous one was moved aside."""
    rename = os.rename
    interrupted = []

    def interrupted_rename(source, destination):
        if os.path.realpath(destination) == os.path.realpath(out) and not out.exists() and not interrupted:
            interrupted.append(source)
            raise KeyboardInterrupt
        rename(source, destination)

    monkeypatch.setattr(tasks_cli.os, "rename", interrupted_rename)


@pytest.mark.parametrize("make_failure,status", [
    (interrupt_synthesis, 130),
    (fail_task_set_write, EXIT_USAGE),
    (interrupt_graph_write, 130),
    (interrupt_rename_into_place, 130),
], ids=["synthesis", "task_set_write", "graph_write", "rename_into_place"])
def test_failed_overwrite_keeps_task_set(tmp_path, monkeypatch, make_failure, status):
    out, graph = tmp_path / "tasks", tmp_path / "graph.json"
    assert run_build(out, *world_options(4), "--save-graph", str(graph)).status == 0
    (out / "notes.txt").write_text("kept")
    before = file_digests(tmp_path)
    make_failure(monkeypatch, out)

    build = run_build(out, *world_options(3), "--seed", "7", "--save-graph", str(graph), "--overwrite")

    assert build.status == status, build.stderr
    assert sorted(file_digests(tmp_path)) == sorted(before)
    assert file_digests(tmp_path) == before
    assert len(TaskSet.load(out).tasks) == 4


def test_unmet_target_writes_nothing(tmp_path):
    out = tmp_path / "tasks"
    targets = '{"documents": {"2": 0.5, "40": 0.5}}'

    err = run_failing(["tasks", "build", "--out", str(out), *world_options(10), "--targets", targets,
                       "--max-attempts", "200", "--save-graph", str(tmp_path / "graph.json")])

    assert "Asked for 10 tasks with documents 2: 0.5, 40: 0.5" in err
    assert "Lower the targets, or raise max_attempts." in err
    assert list(tmp_path.iterdir()) == []


def test_out_under_file_rejected(tmp_path):
    blocker = tmp_path / "afile"
    blocker.write_text("")

    err = run_failing(["tasks", "build", "--out", str(blocker / "tasks"), *world_options()])

    assert f"Cannot write --out {blocker / 'tasks'}: {blocker} is a file" in err


def test_save_graph_under_file_rejected(tmp_path):
    blocker = tmp_path / "afile"
    blocker.write_text("")

    err = run_failing(["tasks", "build", "--out", str(tmp_path / "tasks"), *world_options(),
                       "--save-graph", str(blocker / "graph.json")])

    assert f"Cannot write --save-graph {blocker / 'graph.json'}: {blocker} is a file" in err
    assert not (tmp_path / "tasks").exists()


def test_save_graph_keeps_existing_file(tmp_path):
    existing = tmp_path / "precious.json"
    existing.write_text("keep me")

    err = run_failing(["tasks", "build", "--out", str(tmp_path / "tasks"), *world_options(),
                       "--save-graph", str(existing)])

    assert f"--save-graph {existing} already exists. Pass --overwrite" in err
    assert existing.read_text() == "keep me"
    assert not (tmp_path / "tasks").exists()


def test_save_graph_never_replaces_an_input(tmp_path):
    documents = tmp_path / "documents.json"
    documents.write_bytes(REDOCRED.read_bytes())

    err = run_failing(["tasks", "build", "--out", str(tmp_path / "tasks"), "--source", "redocred", "--documents",
                       str(documents), "--merge-entities", "--overwrite", "--save-graph", str(documents)])

    assert "is one of the build's input files" in err
    assert documents.read_bytes() == REDOCRED.read_bytes()


def reject_probe_under(monkeypatch, folder: Path) -> None:
    """Make the write probe fail with EACCES in ``folder``: root ignores permission bits, so chmod cannot."""
    make_temporary_file = tasks_cli.tempfile.TemporaryFile

    def temporary_file(*args, **kwargs):
        if Path(kwargs.get("dir", "")) == folder:
            raise PermissionError(13, "Permission denied", str(folder / ".probe"))
        return make_temporary_file(*args, **kwargs)

    def build_graph(args):
        raise AssertionError("the graph was built before the output folders were checked")

    monkeypatch.setattr(tasks_cli.tempfile, "TemporaryFile", temporary_file)
    monkeypatch.setattr(tasks_cli, "build_graph", build_graph)


def test_unwritable_out_rejected_before_build(tmp_path, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    reject_probe_under(monkeypatch, locked)

    err = run_failing(["tasks", "build", "--out", str(locked / "tasks"), *world_options()])

    assert f"Cannot write --out {locked / 'tasks'}: {locked} is not writable (Permission denied)" in err
    assert list(locked.iterdir()) == []


def test_unwritable_out_missing_parent_probes_ancestor(tmp_path, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    reject_probe_under(monkeypatch, locked)

    err = run_failing(["tasks", "build", "--out", str(locked / "new" / "tasks"), *world_options()])

    assert f"{locked} is not writable" in err
    assert not (locked / "new").exists()


def test_unwritable_save_graph_rejected_before_build(tmp_path, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    reject_probe_under(monkeypatch, locked)

    err = run_failing(["tasks", "build", "--out", str(tmp_path / "tasks"), *world_options(),
                       "--save-graph", str(locked / "graph.json")])

    assert f"Cannot write --save-graph {locked / 'graph.json'}: {locked} is not writable" in err
    assert not (tmp_path / "tasks").exists()


def test_write_failure_names_out_not_staging(tmp_path, monkeypatch):
    out = tmp_path / "tasks"

    def save(task_set, folder):
        raise PermissionError(13, "Permission denied", str(folder / "tasks.jsonl"))

    monkeypatch.setattr(TaskSet, "save", save)
    with pytest.raises(tasks_cli.TaskCommandError) as raised:
        tasks_cli.write_build(TaskSet(tasks=[], documents={}), None, out, None)

    assert str(raised.value) == (f"Cannot write the task set to --out {out}: Permission denied. "
                                 "Pass a writable --out.")
    assert list(tmp_path.iterdir()) == []


def test_single_task_build_uses_singular(tmp_path):
    build = run_build(tmp_path / "tasks", *world_options(1))

    assert build.status == 0, build.stderr
    assert f"Task set written to {build.out} (1 task, 300 documents)." in build.stderr
    assert "1 tasks" not in build.stderr
    assert "1 tasks" not in build.stdout


def test_save_graph_in_missing_folder_rejected(tmp_path):
    err = run_failing(["tasks", "build", "--out", str(tmp_path / "tasks"), *world_options(),
                       "--save-graph", str(tmp_path / "missing" / "graph.json")])

    assert "does not exist. Create it or pass another path" in err
    assert not (tmp_path / "missing").exists()


def test_task_set_folder_follows_umask(tmp_path):
    build = run_build(tmp_path / "tasks", *world_options())
    umask = os.umask(0)
    os.umask(umask)

    assert build.status == 0
    assert (build.out.stat().st_mode & 0o777) == 0o777 & ~umask


@pytest.mark.parametrize("options,message", [
    (["--targets", "{hops: 2}"],
     "--targets is not valid JSON (Expecting property name enclosed in double quotes at character 1): '{hops: 2}'. "
     "Pass JSON such as '{\"hops\": {\"2\": 0.5, \"3\": 0.5}}'"),
    (["--targets", "[1]"], "--targets must be a JSON object whose values are objects of numbers, such as"),
    (["--targets", '{"depth": {"2": 1}}'], "Unknown difficulty measure 'depth'"),
    (["--joint", '{"hops": 2}'], "--joint must be a JSON list of objects of numbers, such as [{\"hops\": 2"),
    (["--joint", "[1]"], "--joint must be a JSON list of objects of numbers"),
    (["--targets", '{"hops": {"2": "half"}}'], "--targets must be a JSON object whose values are objects of numbers"),
    (["--shapes", '{"bridge": "x"}'], "--shapes must be a JSON object of numbers, such as {\"bridge\": 2"),
    (["--shapes", "bridge,riddle"],
     "--shapes names unknown shape(s) 'riddle'. Valid shapes: bridge, intersection, comparison, count."),
    (["--shapes", '{"bridge": 1, "riddle": 2}'],
     "--shapes names unknown shape(s) 'riddle'. Valid shapes: bridge, intersection, comparison, count."),
    (["--shapes", "[]"], "--shapes '[]' is invalid: pass shape names separated by commas, such as bridge,count, "
                         "or a JSON object of weights, such as '{\"bridge\": 2}'. "
                         "Valid shapes: bridge, intersection, comparison, count."),
    (["--hops", "2,x"], "--hops takes one or two integers, such as 2,3 or 2 3, got '2,x'"),
    (["--hops", "3", "2"], "hops must be a range (low, high) with 1 <= low <= high, got (3, 2)"),
    (["--bm25-k", "zero"], "--bm25-k must be an integer or none, got 'zero'"),
    (["--count", "0"], "count must be a positive integer, got 0"),
    (["--save-graph", "graph.txt"], "--save-graph graph.txt must end in .json or .graphml"),
    (["--triples", "a.tsv"], "--triples applies to --source triples, not --source world"),
    (["--merge-entities"], "--merge-entities applies to --source redocred, not --source world"),
    (["--graph", "graph.json"], "--graph applies to --source graph, not --source world"),
    (["--entities", "10"], "--entities must be at least 50"),
])
def test_build_bad_option(tmp_path, options, message):
    out = tmp_path / "tasks"
    argv = ["tasks", "build", "--out", str(out), "--source", "world", *options]

    err = run_failing(argv)

    assert message in err
    assert not out.exists()


@pytest.mark.parametrize("options,message", [
    (["--targets", '{"hops": {"2": Infinity, "3": 1}}'],
     "targets['hops'][2] must be a finite non-negative number, got inf."),
    (["--joint", '[{"hops": 2, "share": NaN}]'], "the share must be a finite non-negative number, got nan."),
    (["--joint", '[{"hops": 1e300, "share": 1}]'], "the hops value must be an integer, got 1e+300."),
    (["--joint", '[{"hops": 2.5, "share": 1}]'], "the hops value must be an integer, got 2.5."),
    (["--shapes", '{"bridge": Infinity}'], "shapes['bridge'] must be a finite non-negative number, got inf."),
    (["--shapes", '{"bridge": NaN, "count": 1}'], "shapes['bridge'] must be a finite non-negative number, got nan."),
    (["--hops", "99999999999999999999"], "hops must be at most 64, got (99999999999999999999, 99999999999999999999)."),
    (["--count", "99999999999999999999"], "count must be at most 10,000,000, got 99999999999999999999."),
])
def test_build_non_finite_spec_value(tmp_path, options, message):
    out = tmp_path / "tasks"

    err = run_failing(["tasks", "build", "--out", str(out), "--source", "world", *options])

    assert message in err
    assert "Traceback" not in err
    assert not out.exists()


@pytest.mark.parametrize("source,message", [
    ("triples", "--source triples needs --triples FILE [FILE ...]"),
    ("redocred", "--source redocred needs --documents FILE"),
    ("graph", "--source graph needs --graph FILE"),
])
def test_build_missing_source_file_option(tmp_path, source, message):
    assert message in run_failing(["tasks", "build", "--out", str(tmp_path / "tasks"), "--source", source])


def test_world_seed_zero_with_triples_rejected(tmp_path):
    err = run_failing(["tasks", "build", "--out", str(tmp_path / "tasks"), "--source", "triples", "--triples",
                       str(WN18RR / "train.tsv"), "--world-seed", "0"])

    assert "--world-seed applies to --source world, not --source triples" in err


def test_build_missing_input_file_named(tmp_path):
    missing = tmp_path / "missing.tsv"

    err = run_failing(["tasks", "build", "--out", str(tmp_path / "tasks"), "--source", "triples", "--triples",
                       str(missing)])

    assert f"Triples file {missing} not found" in err


def test_build_missing_templates_file(tmp_path):
    err = run_failing(["tasks", "build", "--out", str(tmp_path / "tasks"), "--source", "world", "--templates",
                       str(tmp_path / "none.json")])

    assert "--templates: Template file" in err
    assert "none.json not found" in err


# ---------------------------------------------------------------------- synthesis settings


def parse_build_args(*options: str):
    return build_parser().parse_args(["tasks", "build", "--out", "unused", "--source", "world", *options])


def test_options_override_spec_file(tmp_path):
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps({"count": 40, "seed": 3, "hops": [3, 3], "shapes": {"bridge": 1.0}}))

    spec = resolve_spec(parse_build_args("--spec", str(spec_file), "--count", "5", "--shapes", "bridge,count"))

    assert spec.count == 5
    assert spec.seed == 3
    assert spec.hops == (3, 3)
    assert spec.shapes == {"bridge": 1.0, "count": 1.0}


def test_defaults_without_options():
    assert resolve_spec(parse_build_args()) == SynthesisSpec()


@pytest.mark.parametrize("values,expected", [(["2,3"], (2, 3)), (["2", "3"], (2, 3)), (["4"], (4, 4)),
                                             (["2, 4"], (2, 4))])
def test_hops_option_forms(values, expected):
    hops_field = next(spec_field for spec_field in dataclasses.fields(SynthesisSpec) if spec_field.name == "hops")

    assert parse_spec_option(hops_field, values) == expected


def test_optional_int_accepts_none():
    assert resolve_spec(parse_build_args("--bm25-k", "none")).bm25_k is None
    assert resolve_spec(parse_build_args("--bm25-k", "3")).bm25_k == 3


def test_bool_option_negation():
    assert resolve_spec(parse_build_args("--no-use-attributes")).use_attributes is False


def test_joint_option_parsed():
    joint = '[{"hops": 2, "documents": 2, "share": 1.0}]'

    assert resolve_spec(parse_build_args("--joint", joint)).joint == json.loads(joint)


@pytest.mark.parametrize("content,message", [
    ('{"count": "ten"}', 'Field count of spec file SPEC must be an integer, got "ten".'),
    ('{"cont": 3}', "Spec file SPEC has unknown field(s) cont. SynthesisSpec fields: count, seed"),
    ('{"hops": [2]}', "Field hops of spec file SPEC must be a list of two integers, such as [2, 3], got [2]."),
    ("[1]", "Spec file SPEC must contain a JSON object of SynthesisSpec fields"),
    ("{count: 1}", "Spec file SPEC is not valid JSON: Expecting property name enclosed in double quotes at line 1"),
])
def test_bad_spec_file(tmp_path, content, message):
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(content)

    err = run_failing(["tasks", "build", "--out", str(tmp_path / "tasks"), "--source", "world", "--spec",
                       str(spec_file)])

    assert message.replace("SPEC", str(spec_file)) in err


def test_missing_spec_file(tmp_path):
    err = run_failing(["tasks", "build", "--out", str(tmp_path / "tasks"), "--source", "world", "--spec",
                       str(tmp_path / "none.json")])

    assert f"Spec file {tmp_path / 'none.json'} not found" in err


# ---------------------------------------------------------------------- stats


def test_stats_prints_counts_and_settings(world_build):
    status, stdout, _ = run_main(["tasks", "stats", str(world_build.out)])
    text = " ".join(stdout.split())

    assert status == 0
    assert f"Task set {world_build.out}: {WORLD_TASKS} tasks; corpus of 300 documents" in text
    assert "Graph source: world (entities=300, world_seed=0)" in text
    assert f"Requested: count={WORLD_TASKS}, seed=0" in text
    assert f"targets={HOP_TARGETS}" in text
    assert "Tasks by shape" in text
    assert "Tasks by hops (rows) and evidence documents (columns)" in text


def test_stats_without_summary(world_build, tmp_path):
    folder = tmp_path / "copy"
    task_set = TaskSet.load(world_build.out)
    task_set.summary = {}
    task_set.save(folder)
    (folder / "summary.json").unlink()

    status, stdout, _ = run_main(["tasks", "stats", str(folder)])

    assert status == 0
    assert "No summary.json: the build settings are unknown." in stdout


def test_stats_missing_folder(tmp_path):
    err = run_failing(["tasks", "stats", str(tmp_path / "none")])

    assert f"Task set {tmp_path / 'none'} not found" in err


def test_stats_folder_not_task_set(tmp_path):
    err = run_failing(["tasks", "stats", str(tmp_path)])

    assert f"{tmp_path / 'tasks.jsonl'} not found: a task set folder contains tasks.jsonl and corpus.jsonl" in err


# ---------------------------------------------------------------------- show


def test_show_prints_task(world_build):
    task_set = TaskSet.load(world_build.out)
    task = task_set.tasks[1]

    status, stdout, _ = run_main(["tasks", "show", str(world_build.out), "--index", "1"])

    assert status == 0
    assert f"Task 1 of {WORLD_TASKS} (id {task.task_id})" in stdout
    assert f"question   {task.question}" in stdout
    assert f"answer     {task.answer}" in stdout
    assert f"shape      {task.shape}" in stdout
    assert f"hops {task.difficulty['hops']}" in stdout
    fact = task.subgraph[0]
    head_name = task_set.documents[fact["head"]].title
    relation = fact["relation"].replace("_", " ")
    assert f"{head_name} ({fact['head']}) --{relation}--> " in stdout
    for doc_id in task.evidence:
        assert f"{doc_id}: {task_set.documents[doc_id].title}" in stdout
    assert "Task 2 of" not in stdout


def test_show_by_id_with_count(world_build):
    tasks = TaskSet.load(world_build.out).tasks

    status, stdout, _ = run_main(["tasks", "show", str(world_build.out), "--id", tasks[2].task_id, "--count", "2"])

    assert status == 0
    assert f"(id {tasks[2].task_id})" in stdout
    assert f"(id {tasks[3].task_id})" in stdout
    assert f"(id {tasks[4].task_id})" not in stdout


def test_show_count_stops_at_last_task(world_build):
    status, stdout, _ = run_main(["tasks", "show", str(world_build.out), "--index", str(WORLD_TASKS - 1),
                                  "--count", "5"])

    assert status == 0
    assert stdout.count("Task ") == 1


def test_show_names_entities_from_graph(redocred_build):
    task = TaskSet.load(redocred_build.out).tasks[0]
    graph = KnowledgeGraph.load(redocred_build.out.parent / "graph.json")
    head = task.subgraph[0]["head"]

    _, without_graph, _ = run_main(["tasks", "show", str(redocred_build.out)])
    status, with_graph, _ = run_main(["tasks", "show", str(redocred_build.out), "--graph",
                                      str(redocred_build.out.parent / "graph.json")])

    assert status == 0
    assert f"{graph.entity_name(head)} ({head})" in with_graph
    assert f"  {head} --" in without_graph
    assert f"--{graph.relation_name(task.subgraph[0]['relation'])}-->" in without_graph


def test_show_index_out_of_range(world_build):
    err = run_failing(["tasks", "show", str(world_build.out), "--index", str(WORLD_TASKS)])

    assert f"--index {WORLD_TASKS} is out of range: {world_build.out} has {WORLD_TASKS} tasks, so pass 0 to " \
           f"{WORLD_TASKS - 1}." in err


def test_show_unknown_id(world_build):
    err = run_failing(["tasks", "show", str(world_build.out), "--id", "no-such-task"])

    assert f"No task has id 'no-such-task' in {world_build.out}" in err


def test_show_zero_count(world_build):
    assert "--count must be at least 1, got 0." in run_failing(["tasks", "show", str(world_build.out), "--count", "0"])


# ---------------------------------------------------------------------- export


def test_export_jsonl_inlines_evidence(world_build, tmp_path):
    out = tmp_path / "tasks.jsonl"
    task_set = TaskSet.load(world_build.out)

    status, _, stderr = run_main(["tasks", "export", str(world_build.out), "--format", "jsonl", "--out", str(out)])
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]

    assert status == 0
    assert f"Wrote {WORLD_TASKS} tasks with their evidence documents to {out}." in stderr
    assert [row["task_id"] for row in rows] == [task.task_id for task in task_set.tasks]
    for row, task in zip(rows, task_set.tasks):
        assert {key: value for key, value in row.items()
                if key not in ("evidence_documents", "split")} == task.to_dict()
        assert row["split"] == task_split(task.task_id)
        assert [document["doc_id"] for document in row["evidence_documents"]] == task.evidence
        for document in row["evidence_documents"]:
            assert document["title"] == task_set.documents[document["doc_id"]].title
            assert document["sentences"] == task_set.documents[document["doc_id"]].sentences


def test_export_datasets_round_trip(world_build, tmp_path):
    import datasets

    out = tmp_path / "dataset"
    task_set = TaskSet.load(world_build.out)

    status, _, stderr = run_main(["tasks", "export", str(world_build.out), "--format", "datasets", "--out", str(out)])
    loaded = datasets.load_from_disk(str(out))

    assert status == 0
    assert "datasets.load_from_disk(" in stderr
    assert set(loaded) == {"tasks", "corpus"}
    rows = loaded["tasks"].to_list()
    assert len(rows) == WORLD_TASKS
    for row, task in zip(rows, task_set.tasks):
        row["query"] = json.loads(row["query"])
        assert row.pop("split") == task_split(task.task_id)
        assert row == task.to_dict()
    corpus = {row["doc_id"]: row for row in loaded["corpus"].to_list()}
    assert len(corpus) == 300
    for doc_id, document in task_set.documents.items():
        assert corpus[doc_id] == {"doc_id": doc_id, "title": document.title, "sentences": document.sentences}


def test_export_existing_out_rejected(world_build, tmp_path):
    out = tmp_path / "tasks.jsonl"
    out.write_text("old")

    err = run_failing(["tasks", "export", str(world_build.out), "--out", str(out)])

    assert f"--out {out} already exists. Pass --overwrite" in err
    assert out.read_text() == "old"


def test_export_overwrite_replaces_file(world_build, tmp_path):
    out = tmp_path / "tasks.jsonl"
    out.write_text("old")

    status, _, _ = run_main(["tasks", "export", str(world_build.out), "--out", str(out), "--overwrite"])

    assert status == 0
    assert len(out.read_text().splitlines()) == WORLD_TASKS
    assert list(tmp_path.iterdir()) == [out]


def test_export_overwrite_replaces_dataset(world_build, tmp_path):
    import datasets

    out = tmp_path / "dataset"
    argv = ["tasks", "export", str(world_build.out), "--format", "datasets", "--out", str(out)]
    assert run_main(argv)[0] == 0

    assert "already exists and is not empty" in run_failing(argv)
    assert run_main([*argv, "--overwrite"])[0] == 0
    assert datasets.load_from_disk(str(out))["tasks"].num_rows == WORLD_TASKS


def test_export_overwrite_keeps_other_folder(world_build, tmp_path):
    (tmp_path / "notes.txt").write_text("kept")

    err = run_failing(["tasks", "export", str(world_build.out), "--format", "datasets", "--out", str(tmp_path),
                       "--overwrite"])

    assert "contains no dataset_dict.json" in err
    assert (tmp_path / "notes.txt").read_text() == "kept"


def test_export_jsonl_to_folder_rejected(world_build, tmp_path):
    err = run_failing(["tasks", "export", str(world_build.out), "--out", str(tmp_path)])

    assert f"--out {tmp_path} is a folder. Pass a file path for --format jsonl." in err


# ---------------------------------------------------------------------- from graph to environment


def test_search_qa_answers_every_built_task(world_build):
    task_set = TaskSet.load(world_build.out)
    env = gymnasium.make("erlgym/SearchQA-v0", tasks=str(world_build.out), split="all", max_steps=4)

    for task in task_set.tasks:
        observation, _ = env.reset(options={"task": task.task_id})
        assert observation.startswith(f"Question: {task.question}")

        observation, reward, terminated, _, info = env.step(f"Action: search[{task.question}]")
        assert info["action_valid"], info["feedback"]
        assert "(id: " in observation

        observation, reward, terminated, _, info = env.step(f"Action: open[{task.evidence[0]}]")
        assert info["action_valid"], info["feedback"]
        assert f"(id: {task.evidence[0]})" in observation
        assert info["evidence_opened"] == 1

        _, reward, terminated, _, info = env.step(f"Action: answer[{task.answer}]")
        assert reward == 1.0, (task.question, task.answer, info["feedback"])
        assert terminated
        assert info["success"]
