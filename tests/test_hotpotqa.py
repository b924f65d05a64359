"""Tests of the HotpotQA loader on the bundled sample and on malformed files."""

import json
import re
from importlib import resources

import pytest

from erlgym.redsearch.hotpotqa import load_hotpotqa, slugify_title
from erlgym.redsearch.tasks import TaskSet, TaskSetError

SAMPLE = resources.files("erlgym.envs").joinpath("levels", "hotpotqa", "hotpotqa_train_sample100.json")
PATH_SAFE_ID = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")


def question(**overrides) -> dict:
    values = {
        "_id": "q1",
        "question": "Which headland has the Vela lighthouse?",
        "answer": "Cape Orin",
        "type": "bridge",
        "level": "medium",
        "supporting_facts": [["Vela lighthouse", 0], ["Cape Orin", 1], ["Vela lighthouse", 1]],
        "context": [
            ["Vela lighthouse", ["The Vela lighthouse is a tower.", " It stands on Cape Orin."]],
            ["Cape Orin", ["Cape Orin is a headland.", " It is in Norland."]],
            ["Harbor Lights", ["Harbor Lights is a film."]],
        ],
    }
    values.update(overrides)
    return values


def write_json(path, value):
    path.write_text(json.dumps(value))
    return path


@pytest.fixture(scope="module")
def sample():
    return load_hotpotqa(SAMPLE)


# ---------------------------------------------------------------- the bundled sample


def test_sample_counts(sample):
    assert len(sample.tasks) == 100
    assert len(sample.documents) == 994
    assert sample.summary["types"] == {"bridge": 78, "comparison": 22}
    assert sample.summary["levels"] == {"easy": 16, "medium": 69, "hard": 15}
    assert sample.summary["conflicting_paragraphs"] == 0


def test_sample_first_question(sample):
    task = sample.tasks[0]
    assert task.task_id == "5a77ec115542992a6e59dff7"
    assert task.question == "If Gallu is a demon Lilu is what?"
    assert task.answer == "a spirit"
    assert task.shape == "bridge"
    assert task.evidence == ["alu", "lilu-mythology"]
    assert task.difficulty == {"hops": 2, "documents": 2}
    assert task.source == "hotpotqa:easy"
    assert sample.documents["alu"].title == "Alû"
    assert sample.documents["alu"].sentences[1] == "The demon has no mouth, lips or ears."


def test_sample_doc_ids_are_path_safe(sample):
    for doc_id, document in sample.documents.items():
        assert PATH_SAFE_ID.match(doc_id), doc_id
        assert len(doc_id) <= 80
        assert document.doc_id == doc_id
    titles = {document.title: doc_id for doc_id, document in sample.documents.items()}
    assert titles["I Am a Good Person/I Am a Bad Person"] == "i-am-a-good-person-i-am-a-bad-person"
    assert titles["...Earth to the Dandy Warhols..."] == "earth-to-the-dandy-warhols"


def test_sample_evidence_is_in_corpus(sample):
    for task in sample.tasks:
        assert task.evidence
        assert all(doc_id in sample.documents for doc_id in task.evidence)


def test_sample_round_trips_through_task_set_folder(sample, tmp_path):
    loaded = TaskSet.load(sample.save(tmp_path / "hotpotqa"))
    assert [task.to_dict() for task in loaded.tasks] == [task.to_dict() for task in sample.tasks]
    assert loaded.documents == sample.documents


# ---------------------------------------------------------------- mapping rules


def test_question_maps_to_task(tmp_path):
    task_set = load_hotpotqa(write_json(tmp_path / "q.json", [question()]))
    task = task_set.tasks[0]
    assert task.evidence == ["vela-lighthouse", "cape-orin"]
    assert task.difficulty == {"hops": 2, "documents": 2}
    assert task.source == "hotpotqa:medium"
    assert task_set.documents["vela-lighthouse"].sentences == ["The Vela lighthouse is a tower.", "It stands on Cape Orin."]
    assert set(task_set.documents) == {"vela-lighthouse", "cape-orin", "harbor-lights"}


def test_type_and_level_are_optional(tmp_path):
    values = question()
    del values["type"], values["level"]
    task = load_hotpotqa(write_json(tmp_path / "q.json", [values])).tasks[0]
    assert task.shape == "bridge"
    assert task.source == "hotpotqa"


def test_corpus_file_adds_documents(tmp_path):
    values = question(supporting_facts=[["Vela lighthouse", 0], ["Norland", 0]])
    questions = write_json(tmp_path / "q.json", [values])
    corpus = write_json(tmp_path / "corpus.json", {"Norland": ["Norland is a region."], "Cape Orin": ["Other text."]})
    task_set = load_hotpotqa(questions, corpus)
    assert task_set.tasks[0].evidence == ["vela-lighthouse", "norland"]
    assert task_set.documents["norland"].sentences == ["Norland is a region."]
    # A title already read from the questions keeps its context paragraph.
    assert task_set.documents["cape-orin"].sentences == ["Cape Orin is a headland.", "It is in Norland."]
    assert task_set.summary["conflicting_paragraphs"] == 1
    assert task_set.summary["corpus_file"] == str(corpus)


def test_colliding_titles_get_unique_ids(tmp_path):
    context = [["Alû", ["One."]], ["Alu", ["Two."]], ["ALU!", ["Three."]], ["魍魎", ["Four."]]]
    values = question(context=context, supporting_facts=[["Alu", 0], ["魍魎", 0]])
    task_set = load_hotpotqa(write_json(tmp_path / "q.json", [values]))
    assert [(doc_id, document.title) for doc_id, document in task_set.documents.items()] == [
        ("alu", "Alû"), ("alu-2", "Alu"), ("alu-3", "ALU!"), ("doc", "魍魎"),
    ]
    assert task_set.tasks[0].evidence == ["alu-2", "doc"]


@pytest.mark.parametrize(
    ("title", "slug"),
    [("Lilu (mythology)", "lilu-mythology"), ("../../etc/passwd", "etc-passwd"), ("Nüwa", "nuwa"),
     ("Tromsø", "tromso"), ("   ", "doc"), ("A" * 200, "a" * 80)],
)
def test_slugify_title(title, slug):
    assert slugify_title(title) == slug


# ---------------------------------------------------------------- malformed input


def test_missing_file_rejected(tmp_path):
    with pytest.raises(TaskSetError, match="missing.json not found: pass the path of a HotpotQA questions file"):
        load_hotpotqa(tmp_path / "missing.json")


def test_invalid_json_names_position(tmp_path):
    path = tmp_path / "q.json"
    path.write_text('[\n  {"_id": "q1",\n  "question": }\n]')
    with pytest.raises(TaskSetError, match=r"q\.json: invalid JSON at line 3, column 15"):
        load_hotpotqa(path)


def test_non_utf8_file_rejected(tmp_path):
    path = tmp_path / "q.json"
    path.write_bytes(b'["\xff"]')
    with pytest.raises(TaskSetError, match="q.json: invalid UTF-8 at byte 2"):
        load_hotpotqa(path)


def test_top_level_object_rejected(tmp_path):
    with pytest.raises(TaskSetError, match="expected a JSON array of questions, got a JSON object"):
        load_hotpotqa(write_json(tmp_path / "q.json", {"data": []}))


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ("text", r"question at index 1: expected a JSON object, got a JSON string"),
        ({k: v for k, v in question().items() if k != "answer"}, r"question at index 1 \(_id 'q1'\): missing field answer"),
        ({"_id": "x"}, "missing field question, answer, supporting_facts, context"),
        (question(_id=None), "_id must be a string or an integer, got a JSON null"),
        (question(answer=["a"]), "answer must be a string, got a JSON array"),
        (question(type="bridging"), "type 'bridging' is invalid"),
        (question(level=3), "level 3 is invalid"),
        (question(context={"a": []}), "context must be an array of"),
        (question(context=[["Title", "one sentence"]]), "context entry 0 is invalid"),
        (question(context=[["Title", ["ok"], "extra"]]), "context entry 0 is invalid"),
        (question(supporting_facts="Vela"), "supporting_facts must be an array of"),
        (question(supporting_facts=[["Vela lighthouse", "0"]]), "supporting_facts entry 0 is invalid"),
        (question(supporting_facts=[["Vela lighthouse", True]]), "supporting_facts entry 0 is invalid"),
        (question(supporting_facts=[["Nowhere", 0]]), "supporting fact title 'Nowhere' is neither"),
        (question(_id="q0"), r"question at index 1 \(_id 'q0'\): _id repeats the _id of the question at index 0"),
    ],
)
def test_malformed_question_names_file_and_index(tmp_path, values, message):
    path = write_json(tmp_path / "questions.json", [question(_id="q0"), values])
    with pytest.raises(TaskSetError, match=message) as error:
        load_hotpotqa(path)
    assert str(error.value).startswith(f"{path}: ")


@pytest.mark.parametrize(
    ("corpus", "message"),
    [([["Title", ["s"]]], "expected a JSON object mapping titles to sentence lists, got a JSON array"),
     ({"Norland": "one sentence"}, "title 'Norland': expected an array of sentence strings"),
     ({"Norland": [1, 2]}, "title 'Norland': expected an array of sentence strings")],
)
def test_malformed_corpus_names_file(tmp_path, corpus, message):
    questions = write_json(tmp_path / "q.json", [question()])
    corpus_path = write_json(tmp_path / "corpus.json", corpus)
    with pytest.raises(TaskSetError, match=message) as error:
        load_hotpotqa(questions, corpus_path)
    assert str(error.value).startswith(f"{corpus_path}: ")
