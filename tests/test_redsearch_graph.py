"""KnowledgeGraph and TaskSet: building, reading, and JSON, GraphML and task-set files."""

from __future__ import annotations

import json

import pytest

from erlgym.redsearch.graph import Document, Fact, GraphError, KnowledgeGraph
from erlgym.redsearch.tasks import CORPUS_FILE, SUMMARY_FILE, TASKS_FILE, Task, TaskSet, TaskSetError


def small_graph() -> KnowledgeGraph:
    """Two people, a city and a cycle: Ada and Ben are married to each other and both born in Lorn."""
    graph = KnowledgeGraph("small")
    graph.relation_names = {"born_in": "born in", "spouse_of": "spouse of"}
    graph.add_entity("ada", "Ada Vell", "person", ["A. Vell"], {"birth_year": 1950, "height_m": 1.7})
    graph.add_entity("ben", "Ben Orr", "person", attributes={"birth_year": 1948})
    graph.add_entity("lorn", "Lorn", "city", attributes={"population": 12000, "motto": "Ever onward"})
    graph.add_fact("ada", "born_in", "lorn", [("ada", 1)])
    graph.add_fact("ben", "born_in", "lorn", [("ben", 1), ("lorn", 1)])
    graph.add_fact("ada", "spouse_of", "ben", [("ada", 2)])
    graph.add_fact("ben", "spouse_of", "ada", [("ben", 2)])
    graph.add_document(Document("ada", "Ada Vell", ["Ada Vell is a painter.", "She was born in Lorn.",
                                                    "She is married to Ben Orr."]))
    graph.add_document(Document("ben", "Ben Orr", ["Ben Orr is a baker.", "He was born in Lorn.",
                                                   "He is married to Ada Vell."]))
    graph.add_document(Document("lorn", "Lorn", ["Lorn is a city.", "Ben Orr was born in Lorn."]))
    return graph


def sorted_facts(graph: KnowledgeGraph) -> list[Fact]:
    return sorted(graph.facts(), key=lambda fact: (fact.head, fact.relation, fact.tail))


def entity_data(graph: KnowledgeGraph) -> dict:
    return {entity_id: dict(data) for entity_id, data in graph.graph.nodes(data=True)}


# ---------------------------------------------------------------------- building and reading


def test_graph_counts_and_lookups():
    graph = small_graph()

    assert graph.num_entities == 3
    assert graph.num_facts == 4
    assert graph.entity_name("lorn") == "Lorn"
    assert graph.entity("ada")["aliases"] == ["A. Vell"]
    assert graph.relation_name("born_in") == "born in"
    assert graph.relation_name("P17") == "P17"


def test_facts_from_and_to_entity():
    graph = small_graph()

    assert {(fact.relation, fact.tail) for fact in graph.facts_from("ada")} == {("born_in", "lorn"), ("spouse_of", "ben")}
    assert {(fact.head, fact.relation) for fact in graph.facts_to("lorn")} == {("ada", "born_in"), ("ben", "born_in")}


def test_fact_documents_and_document_text():
    graph = small_graph()
    fact = next(fact for fact in graph.facts_from("ben") if fact.relation == "born_in")

    assert fact.evidence == (("ben", 1), ("lorn", 1))
    assert fact.documents == frozenset({"ben", "lorn"})
    assert graph.documents["lorn"].text == "Lorn is a city. Ben Orr was born in Lorn."


def test_add_fact_unknown_entity_raises():
    graph = small_graph()

    with pytest.raises(GraphError, match="unknown entity 'nobody'"):
        graph.add_fact("ada", "mentor_of", "nobody")
    with pytest.raises(GraphError, match="unknown entity 'ghost'"):
        graph.add_fact("ghost", "born_in", "lorn")
    assert graph.num_facts == 4


def test_add_fact_twice_merges_evidence():
    graph = small_graph()

    graph.add_fact("ada", "born_in", "lorn", [("ada", 1), ("lorn", 1)])

    assert graph.num_facts == 4
    fact = next(fact for fact in graph.facts_from("ada") if fact.relation == "born_in")
    assert fact.evidence == (("ada", 1), ("lorn", 1))


def test_entity_unknown_raises():
    with pytest.raises(GraphError, match="Unknown entity 'nobody' in graph 'small'"):
        small_graph().entity("nobody")


# ---------------------------------------------------------------------- JSON files


def test_json_round_trip(tmp_path):
    graph = small_graph()
    path = tmp_path / "graph.json"

    graph.save(path)
    loaded = KnowledgeGraph.load(path)

    assert loaded.name == "small"
    assert loaded.relation_names == graph.relation_names
    assert entity_data(loaded) == entity_data(graph)
    assert sorted_facts(loaded) == sorted_facts(graph)
    assert loaded.documents == graph.documents


def test_json_round_trip_keeps_unicode(tmp_path):
    graph = KnowledgeGraph("unicode")
    graph.add_entity("m", "Mediaș", "city", ["Mediasch"])
    graph.add_document(Document("m", "Mediaș", ["Mediaș is a city in Transylvania."]))
    path = tmp_path / "graph.json"

    graph.save(path)

    assert "Mediaș" in path.read_text(encoding="utf-8")
    assert KnowledgeGraph.load(path).entity_name("m") == "Mediaș"


def test_add_fact_after_load_keeps_evidence_unique(tmp_path):
    path = tmp_path / "graph.json"
    small_graph().save(path)
    loaded = KnowledgeGraph.load(path)

    loaded.add_fact("ben", "born_in", "lorn", [("lorn", 1), ("lorn", 0)])

    fact = next(fact for fact in loaded.facts_from("ben") if fact.relation == "born_in")
    assert fact.evidence == (("ben", 1), ("lorn", 1), ("lorn", 0))


def test_load_missing_file_names_path(tmp_path):
    path = tmp_path / "absent.json"

    with pytest.raises(GraphError, match="absent.json not found") as caught:
        KnowledgeGraph.load(path)
    assert str(path) in str(caught.value)


def test_load_invalid_json_names_path_and_line(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{\n"format": "erlgym-knowledge-graph",\n"name": \n}\n', encoding="utf-8")

    with pytest.raises(GraphError) as caught:
        KnowledgeGraph.load(path)
    assert str(path) in str(caught.value)
    assert "line 4" in str(caught.value)


def test_load_other_json_raises(tmp_path):
    path = tmp_path / "other.json"
    path.write_text(json.dumps({"nodes": []}), encoding="utf-8")

    with pytest.raises(GraphError, match="is not an erlgym knowledge graph file"):
        KnowledgeGraph.load(path)


def test_load_incomplete_graph_file_raises(tmp_path):
    path = tmp_path / "incomplete.json"
    path.write_text(json.dumps({"format": "erlgym-knowledge-graph", "name": "x"}), encoding="utf-8")

    with pytest.raises(GraphError, match="incomplete or invalid knowledge graph file") as caught:
        KnowledgeGraph.load(path)
    assert str(path) in str(caught.value)


def test_load_invalid_document_raises(tmp_path):
    path = tmp_path / "graph.json"
    small_graph().save(path)
    payload = json.loads(path.read_text(encoding="utf-8"))
    payload["documents"][0] = {"doc_id": "ada"}
    path.write_text(json.dumps(payload), encoding="utf-8")

    with pytest.raises(GraphError, match="incomplete or invalid knowledge graph file"):
        KnowledgeGraph.load(path)


# ---------------------------------------------------------------------- GraphML files


def test_graphml_round_trip(tmp_path):
    graph = small_graph()
    path = tmp_path / "graph.graphml"

    graph.save_graphml(path)
    loaded = KnowledgeGraph.load_graphml(path)

    assert loaded.name == "graph"
    assert entity_data(loaded) == entity_data(graph)
    assert sorted_facts(loaded) == sorted_facts(graph)
    assert loaded.documents == {}


def test_graphml_keeps_parallel_facts(tmp_path):
    graph = small_graph()
    graph.add_fact("ada", "lives_in", "lorn", [("ada", 1)])
    path = tmp_path / "parallel.graphml"

    graph.save_graphml(path)
    loaded = KnowledgeGraph.load_graphml(path)

    assert {fact.relation for fact in loaded.facts_from("ada") if fact.tail == "lorn"} == {"born_in", "lives_in"}


def test_load_graphml_missing_file_names_path(tmp_path):
    path = tmp_path / "absent.graphml"

    with pytest.raises(GraphError, match="Cannot read GraphML file") as caught:
        KnowledgeGraph.load_graphml(path)
    assert str(path) in str(caught.value)


def test_load_graphml_corrupt_file_names_path(tmp_path):
    path = tmp_path / "corrupt.graphml"
    path.write_text("<graphml><graph edgedefault='directed'><node id='a'>", encoding="utf-8")

    with pytest.raises(GraphError, match="Cannot read GraphML file") as caught:
        KnowledgeGraph.load_graphml(path)
    assert str(path) in str(caught.value)


# ---------------------------------------------------------------------- task sets


def small_task_set() -> TaskSet:
    graph = small_graph()
    task = Task(
        task_id="t0",
        question="Where was the spouse of the painter Ada Vell born?",
        answer="Lorn",
        aliases=["the city of Lorn"],
        shape="bridge",
        subgraph=[{"head": "ada", "relation": "spouse_of", "tail": "ben"},
                  {"head": "ben", "relation": "born_in", "tail": "lorn"}],
        evidence=["ada", "ben"],
        difficulty={"hops": 2, "branching": 1, "cycles": 0, "treewidth": 1, "documents": 2},
        seed=7,
        source="small",
    )
    return TaskSet(tasks=[task, Task("t1", "Who is Ben Orr married to?", "Ada Vell")],
                   documents=graph.documents, summary={"source": "small", "num_tasks": 2})


def test_task_set_round_trip(tmp_path):
    task_set = small_task_set()

    folder = task_set.save(tmp_path / "set")
    loaded = TaskSet.load(folder)

    assert loaded.tasks == task_set.tasks
    assert loaded.documents == task_set.documents
    assert loaded.summary == task_set.summary
    assert sorted(path.name for path in folder.iterdir()) == sorted([TASKS_FILE, CORPUS_FILE, SUMMARY_FILE])


def test_task_set_without_summary_loads(tmp_path):
    folder = small_task_set().save(tmp_path / "set")
    (folder / SUMMARY_FILE).unlink()

    assert TaskSet.load(folder).summary == {}


def test_task_from_dict_ignores_unknown_keys():
    task = Task.from_dict({"task_id": "t", "question": "q?", "answer": "a", "added_later": 1})

    assert task == Task("t", "q?", "a")


def test_task_set_missing_folder_raises(tmp_path):
    with pytest.raises(TaskSetError, match="not found") as caught:
        TaskSet.load(tmp_path / "absent")
    assert str(tmp_path / "absent") in str(caught.value)


def test_task_set_missing_corpus_names_path(tmp_path):
    folder = small_task_set().save(tmp_path / "set")
    (folder / CORPUS_FILE).unlink()

    with pytest.raises(TaskSetError, match="not found") as caught:
        TaskSet.load(folder)
    assert str(folder / CORPUS_FILE) in str(caught.value)


def test_task_set_invalid_json_line(tmp_path):
    folder = small_task_set().save(tmp_path / "set")
    lines = (folder / TASKS_FILE).read_text(encoding="utf-8").splitlines()
    (folder / TASKS_FILE).write_text(lines[0] + "\n" + lines[1][:-5] + "\n", encoding="utf-8")

    with pytest.raises(TaskSetError, match="line 2: invalid task") as caught:
        TaskSet.load(folder)
    assert str(folder / TASKS_FILE) in str(caught.value)


def test_task_set_task_without_answer_names_line(tmp_path):
    folder = small_task_set().save(tmp_path / "set")
    with open(folder / TASKS_FILE, "a", encoding="utf-8") as handle:
        handle.write("\n" + json.dumps({"task_id": "t2", "question": "Who?"}) + "\n")

    with pytest.raises(TaskSetError, match="line 4: invalid task: task is missing answer"):
        TaskSet.load(folder)


def test_task_set_document_without_sentences_names_line(tmp_path):
    folder = small_task_set().save(tmp_path / "set")
    with open(folder / CORPUS_FILE, "a", encoding="utf-8") as handle:
        handle.write(json.dumps({"doc_id": "x", "title": "X"}) + "\n")

    with pytest.raises(TaskSetError, match="line 4: invalid document") as caught:
        TaskSet.load(folder)
    assert str(folder / CORPUS_FILE) in str(caught.value)


def test_task_set_line_not_object_raises(tmp_path):
    folder = small_task_set().save(tmp_path / "set")
    (folder / CORPUS_FILE).write_text("[1, 2]\n", encoding="utf-8")

    with pytest.raises(TaskSetError, match="line 1: invalid document: not a JSON object"):
        TaskSet.load(folder)


def test_task_set_invalid_summary_names_path(tmp_path):
    folder = small_task_set().save(tmp_path / "set")
    (folder / SUMMARY_FILE).write_text("{not json", encoding="utf-8")

    with pytest.raises(TaskSetError, match="invalid summary") as caught:
        TaskSet.load(folder)
    assert str(folder / SUMMARY_FILE) in str(caught.value)
