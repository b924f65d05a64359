"""load_triples and load_redocred on the WN18RR and Re-DocRED samples in tests/data/kg."""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

import networkx as nx
import pytest

from erlgym.redsearch.graph import GraphError, KnowledgeGraph
from erlgym.redsearch.importers import MERGE_TYPES, REPORT_KEY, detokenize, load_redocred, load_triples

DATA = Path(__file__).resolve().parent / "data" / "kg"
WN18RR = DATA / "wn18rr"
SPLITS = [WN18RR / "train.tsv", WN18RR / "dev.tsv", WN18RR / "test.tsv"]
REDOCRED = DATA / "redocred" / "dev_revised_sample.json"
REL_INFO = DATA / "redocred" / "rel_info.json"


def count_lines(path: Path) -> int:
    return len([line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()])


def load_wn18rr(folder: Path = WN18RR) -> KnowledgeGraph:
    return load_triples([folder / "train.tsv", folder / "dev.tsv", folder / "test.tsv"],
                        folder / "entity2text.txt", folder / "relation2text.txt", name="wn18rr-sample",
                        entity_type="synset")


@pytest.fixture(scope="module")
def wn18rr() -> KnowledgeGraph:
    return load_wn18rr()


@pytest.fixture(scope="module")
def redocred_documents() -> list[dict]:
    return json.loads(REDOCRED.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def redocred() -> KnowledgeGraph:
    return load_redocred(REDOCRED, REL_INFO)


def copy_wn18rr(target: Path) -> Path:
    shutil.copytree(WN18RR, target)
    return target


# ---------------------------------------------------------------------- WN18RR triples


def test_triples_counts(wn18rr):
    num_lines = sum(count_lines(path) for path in SPLITS)

    assert wn18rr.num_facts == num_lines == 4924
    assert wn18rr.num_entities == count_lines(WN18RR / "entity2text.txt") == 2500
    assert len(wn18rr.relation_names) == 11
    assert len(wn18rr.documents) == 2500
    report = wn18rr.graph.graph[REPORT_KEY]
    assert report["triple_lines"] == 4924
    assert report["duplicate_triples"] == 0
    assert report["unused_entity_texts"] == 0
    assert report["entities_without_text"] == 0


def test_triples_sample_connected_with_cycles(wn18rr):
    assert nx.number_weakly_connected_components(wn18rr.graph) == 1
    assert wn18rr.num_facts > wn18rr.num_entities


def test_triples_entity_name_and_text(wn18rr):
    entity = wn18rr.entity("00260881")
    document = wn18rr.documents["00260881"]

    assert entity["name"] == "land reform"
    assert entity["type"] == "synset"
    assert document.title == "land reform"
    assert document.sentences[0] == "land reform, a redistribution of agricultural land (especially by government action)"
    assert wn18rr.relation_name("_hypernym") == "hypernym"
    assert wn18rr.relation_name("_derivationally_related_form") == "derivationally related form"


def test_triples_evidence_is_head_sentence(wn18rr):
    for fact in wn18rr.facts():
        assert len(fact.evidence) == 1
        doc_id, index = fact.evidence[0]
        assert doc_id == fact.head
        expected = (f"{wn18rr.entity_name(fact.head)} {wn18rr.relation_name(fact.relation)} "
                    f"{wn18rr.entity_name(fact.tail)}.")
        assert wn18rr.documents[doc_id].sentences[index] == expected


def test_triples_one_sentence_per_fact(wn18rr):
    for entity_id, document in wn18rr.documents.items():
        assert len(document.sentences) == 1 + sum(1 for _ in wn18rr.facts_from(entity_id))


def test_triples_crlf_copy_same_graph(tmp_path, wn18rr):
    folder = tmp_path / "crlf"
    folder.mkdir()
    for path in WN18RR.iterdir():
        text = path.read_text(encoding="utf-8")
        (folder / path.name).write_bytes(text.replace("\n", "\r\n").encode("utf-8"))
    assert b"\r\n" in (folder / "train.tsv").read_bytes()

    crlf = load_wn18rr(folder)

    assert sorted(crlf.facts(), key=str) == sorted(wn18rr.facts(), key=str)
    assert dict(crlf.graph.nodes(data=True)) == dict(wn18rr.graph.nodes(data=True))
    assert crlf.documents == wn18rr.documents
    assert crlf.relation_names == wn18rr.relation_names


def test_triples_blank_lines_and_no_final_newline(tmp_path):
    path = tmp_path / "triples.tsv"
    path.write_text("a\tlikes\tb\n\n   \nb\tlikes\tc", encoding="utf-8")

    graph = load_triples(path)

    assert graph.num_facts == 2
    assert graph.entity_name("c") == "c"
    assert graph.documents["a"].sentences == ["a likes b."]


def test_triples_malformed_line_names_file_and_line(tmp_path):
    folder = copy_wn18rr(tmp_path / "wn18rr")
    lines = (folder / "dev.tsv").read_text(encoding="utf-8").splitlines()
    lines[6] = lines[6].replace("\t", " ", 1)
    (folder / "dev.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")

    with pytest.raises(GraphError) as caught:
        load_wn18rr(folder)
    message = str(caught.value)
    assert str(folder / "dev.tsv") in message
    assert "line 7" in message
    assert "head<TAB>relation<TAB>tail" in message
    assert "got 2 field(s)" in message


def test_triples_empty_field_raises(tmp_path):
    path = tmp_path / "triples.tsv"
    path.write_text("a\tlikes\tb\nb\t\tc\n", encoding="utf-8")

    with pytest.raises(GraphError, match="line 2: expected head<TAB>relation<TAB>tail"):
        load_triples(path)


def test_entity_text_without_tab_names_line(tmp_path):
    folder = copy_wn18rr(tmp_path / "wn18rr")
    with open(folder / "entity2text.txt", "a", encoding="utf-8") as handle:
        handle.write("99999999 no tab here\n")

    with pytest.raises(GraphError, match=r"entity2text.txt, line 2501: expected id<TAB>text"):
        load_wn18rr(folder)


def test_entity_text_duplicate_id_raises(tmp_path):
    folder = copy_wn18rr(tmp_path / "wn18rr")
    with open(folder / "entity2text.txt", "a", encoding="utf-8") as handle:
        handle.write("00260881\tland reform, again\n")

    with pytest.raises(GraphError, match="line 2501: id '00260881' already has a text on line"):
        load_wn18rr(folder)


def test_triples_unused_entity_texts_reported(tmp_path, caplog):
    folder = copy_wn18rr(tmp_path / "wn18rr")
    unused = [f"9900000{index}" for index in range(7)]
    with open(folder / "entity2text.txt", "a", encoding="utf-8") as handle:
        for entity_id in unused:
            handle.write(f"{entity_id}\tunused synset {entity_id}, never in a triple\n")

    with caplog.at_level(logging.WARNING, logger="erlgym.redsearch.importers"):
        graph = load_wn18rr(folder)

    report = graph.graph.graph[REPORT_KEY]
    assert report["unused_entity_texts"] == 7
    assert report["unused_entity_texts_examples"] == unused[:5]
    assert graph.num_entities == 2500
    assert "7 entity texts" in caplog.text
    assert unused[0] in caplog.text


def test_triples_entity_without_text_named_by_id(tmp_path, caplog):
    folder = copy_wn18rr(tmp_path / "wn18rr")
    with open(folder / "train.tsv", "a", encoding="utf-8") as handle:
        handle.write("00260881\t_also_see\t77777777\n")

    with caplog.at_level(logging.WARNING, logger="erlgym.redsearch.importers"):
        graph = load_wn18rr(folder)

    assert graph.entity_name("77777777") == "77777777"
    assert graph.documents["77777777"].sentences == []
    assert "land reform also see 77777777." in graph.documents["00260881"].sentences
    report = graph.graph.graph[REPORT_KEY]
    assert report["entities_without_text"] == 1
    assert report["entities_without_text_examples"] == ["77777777"]
    assert "1 entities of the triples have no text" in caplog.text


def test_triples_repeated_across_files_one_fact(tmp_path):
    first, second = tmp_path / "first.tsv", tmp_path / "second.tsv"
    first.write_text("a\tlikes\tb\na\tlikes\tc\n", encoding="utf-8")
    second.write_text("a\tlikes\tb\n", encoding="utf-8")

    graph = load_triples([first, second])

    assert graph.num_facts == 2
    assert graph.graph.graph[REPORT_KEY]["duplicate_triples"] == 1
    assert graph.documents["a"].sentences == ["a likes b.", "a likes c."]


def test_triples_missing_file_names_path(tmp_path):
    path = tmp_path / "absent.tsv"

    with pytest.raises(GraphError, match="not found") as caught:
        load_triples(path)
    assert str(path) in str(caught.value)


def test_triples_missing_entity_texts_names_path(tmp_path):
    with pytest.raises(GraphError, match="Entity text file .*absent.txt not found"):
        load_triples(SPLITS[0], tmp_path / "absent.txt")


def test_triples_not_utf8_raises(tmp_path):
    path = tmp_path / "latin1.tsv"
    path.write_bytes("a\tlikes\tcaf\xe9\n".encode("latin-1"))

    with pytest.raises(GraphError, match="is not UTF-8 text"):
        load_triples(path)


def test_triples_no_files_raises():
    with pytest.raises(GraphError, match="at least one triple file"):
        load_triples([])


def test_triples_graph_json_round_trip(tmp_path, wn18rr):
    path = tmp_path / "wn18rr.json"

    wn18rr.save(path)
    loaded = KnowledgeGraph.load(path)

    assert sorted(loaded.facts(), key=str) == sorted(wn18rr.facts(), key=str)
    assert loaded.graph.graph[REPORT_KEY] == wn18rr.graph.graph[REPORT_KEY]


# ---------------------------------------------------------------------- Re-DocRED


def test_redocred_counts(redocred, redocred_documents):
    num_vertices = sum(len(document["vertexSet"]) for document in redocred_documents)
    labels = {(index, label["h"], label["r"], label["t"])
              for index, document in enumerate(redocred_documents) for label in document["labels"]}

    assert len(redocred.documents) == len(redocred_documents) == 30
    assert redocred.num_entities == num_vertices
    assert redocred.num_facts == len(labels)
    report = redocred.graph.graph[REPORT_KEY]
    assert report["documents"] == 30
    assert report["labels"] == sum(len(document["labels"]) for document in redocred_documents)
    assert 0 < report["labels_with_inferred_evidence"] < report["labels"]
    assert report["merged_vertices"] == 0


def test_redocred_relation_names_from_crlf_file(redocred):
    assert b"\r\n" in REL_INFO.read_bytes()
    assert len(redocred.relation_names) == 96
    assert redocred.relation_name("P17") == "country"
    assert redocred.relation_name("P19") == "place of birth"
    assert {fact.relation for fact in redocred.facts()} <= set(redocred.relation_names)


def test_redocred_documents_path_safe_and_unique(redocred, redocred_documents):
    titles = [document["title"] for document in redocred_documents]

    assert [document.title for document in redocred.documents.values()] == titles
    for doc_id in redocred.documents:
        assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", doc_id), doc_id
    assert "Willi_Schneider_skeleton_racer" in redocred.documents
    assert "Cambodia_Vietnam_Friendship_Monument" in redocred.documents


def test_redocred_sentences_detokenized(redocred, redocred_documents):
    document = redocred.documents["Willi_Schneider_skeleton_racer"]

    assert len(document.sentences) == len(redocred_documents[0]["sents"])
    assert document.sentences[0] == ('Wilfried "Willi" Schneider (born 13 March 1963 in Mediaș, Transylvania) is a '
                                     "German skeleton racer who competed from 1992 to 2002.")
    assert "in the men's skeleton event" in document.sentences[1]


def test_redocred_entity_ids_names_aliases_types(redocred, redocred_documents):
    schneider = redocred.entity("0:0")

    assert schneider["name"] == 'Wilfried "Willi" Schneider'
    assert schneider["aliases"] == ["Schneider"]
    assert schneider["type"] == "PER"
    for doc_index, document in enumerate(redocred_documents):
        for vertex_index, mentions in enumerate(document["vertexSet"]):
            entity = redocred.entity(f"{doc_index}:{vertex_index}")
            assert entity["type"] in {mention["type"] for mention in mentions}
            assert len(entity["aliases"]) < len(mentions)


def test_redocred_evidence_in_own_document(redocred, redocred_documents):
    doc_ids = list(redocred.documents)
    for fact in redocred.facts():
        doc_index = int(fact.head.split(":")[0])
        assert fact.tail.startswith(f"{doc_index}:")
        assert fact.evidence
        for doc_id, sentence_id in fact.evidence:
            assert doc_id == doc_ids[doc_index]
            assert 0 <= sentence_id < len(redocred.documents[doc_id].sentences)


def test_redocred_evidence_mentions_head_or_tail(redocred):
    """Each fact has an evidence sentence that names its head or tail.

    This holds for every fact of the sample. Across all 500 dev documents, 11 annotated
    evidence sets cite only sentences that refer to both entities indirectly.
    """
    for fact in redocred.facts():
        head, tail = redocred.entity(fact.head), redocred.entity(fact.tail)
        mentions = [head["name"], *head["aliases"], tail["name"], *tail["aliases"]]
        sentences = [redocred.documents[doc_id].sentences[index] for doc_id, index in fact.evidence]
        assert any(mention in sentence for mention in mentions for sentence in sentences), (fact, mentions, sentences)


def test_redocred_inferred_evidence_rule(redocred, redocred_documents):
    """A label without evidence gets the sentences that mention both entities, or else the head's first one."""
    doc_ids = list(redocred.documents)
    checked = 0
    for doc_index, document in enumerate(redocred_documents):
        for label in document["labels"]:
            if label["evidence"]:
                continue
            head_sentences = {mention["sent_id"] for mention in document["vertexSet"][label["h"]]}
            tail_sentences = {mention["sent_id"] for mention in document["vertexSet"][label["t"]]}
            first_head = min(document["vertexSet"][label["h"]], key=lambda mention: (mention["sent_id"], mention["pos"][0]))
            expected = sorted(head_sentences & tail_sentences) or [first_head["sent_id"]]
            fact = next(fact for fact in redocred.facts_from(f"{doc_index}:{label['h']}")
                        if fact.relation == label["r"] and fact.tail == f"{doc_index}:{label['t']}")
            assert [index for _, index in fact.evidence] == expected
            assert {doc_id for doc_id, _ in fact.evidence} == {doc_ids[doc_index]}
            checked += 1
    assert checked > 100


def test_redocred_merge_entities_across_documents(redocred):
    merged = load_redocred(REDOCRED, REL_INFO, merge_entities=True)

    assert merged.num_entities < redocred.num_entities
    report = merged.graph.graph[REPORT_KEY]
    assert report["merged_vertices"] == redocred.num_entities - merged.num_entities
    london = [entity for entity, data in merged.graph.nodes(data=True) if data["name"] == "London"]
    assert len(london) == 1
    documents = {doc_id for fact in [*merged.facts_from(london[0]), *merged.facts_to(london[0])]
                 for doc_id, _ in fact.evidence}
    assert len(documents) >= 2
    names_and_types = [(data["name"], data["type"]) for _, data in merged.graph.nodes(data=True)
                       if data["type"] in MERGE_TYPES]
    assert len(names_and_types) == len(set(names_and_types))


def test_redocred_merge_keeps_dates_per_document():
    merged = load_redocred(REDOCRED, merge_entities=True)
    dates = [data["name"] for _, data in merged.graph.nodes(data=True) if data["type"] == "TIME"]

    assert len(dates) > len(set(dates)), "a date named in two documents stays two entities"


def test_redocred_duplicate_titles_get_unique_ids(tmp_path, redocred_documents):
    path = tmp_path / "twice.json"
    path.write_text(json.dumps([redocred_documents[0], redocred_documents[0], {**redocred_documents[1], "title": "../"}]),
                    encoding="utf-8")

    graph = load_redocred(path)

    assert list(graph.documents) == ["Willi_Schneider_skeleton_racer", "Willi_Schneider_skeleton_racer-2", "doc-2"]
    assert graph.entity("1:0")["name"] == graph.entity("0:0")["name"]


def test_redocred_missing_file_names_path(tmp_path):
    path = tmp_path / "absent.json"

    with pytest.raises(GraphError, match="not found") as caught:
        load_redocred(path)
    assert str(path) in str(caught.value)


def test_redocred_invalid_json_names_path(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text(REDOCRED.read_text(encoding="utf-8")[:5000], encoding="utf-8")

    with pytest.raises(GraphError, match="is not valid JSON") as caught:
        load_redocred(path)
    assert str(path) in str(caught.value)


def test_redocred_invalid_rel_info_names_path(tmp_path):
    path = tmp_path / "rel_info.json"
    path.write_text('{"P17": "country",\r\n', encoding="utf-8")

    with pytest.raises(GraphError, match="Relation info file .*rel_info.json is not valid JSON"):
        load_redocred(REDOCRED, path)


@pytest.mark.parametrize("text", ["", "\n\n  \n"])
def test_triples_without_triples_raises(tmp_path, text):
    path = tmp_path / "empty.tsv"
    path.write_text(text, encoding="utf-8")

    with pytest.raises(GraphError, match=f"Triple files {re.escape(str(path))} contain no triples"):
        load_triples(path)


def test_redocred_empty_list_raises(tmp_path):
    path = tmp_path / "empty.json"
    path.write_text("[]", encoding="utf-8")

    with pytest.raises(GraphError, match="contains an empty list, so there are no documents to import"):
        load_redocred(path)


@pytest.mark.parametrize("relation", [None, "", 17, ["P17"]])
def test_redocred_label_invalid_relation_raises(tmp_path, redocred_documents, relation):
    document = json.loads(json.dumps(redocred_documents[0]))
    document["labels"].append({"h": 0, "t": 1, "r": relation, "evidence": []})
    label_index = len(document["labels"]) - 1
    path = tmp_path / "bad_relation.json"
    path.write_text(json.dumps([redocred_documents[1], document]), encoding="utf-8")

    with pytest.raises(GraphError) as raised:
        load_redocred(path)
    message = str(raised.value)
    assert str(path) in message
    assert f"document 1 ('Willi Schneider (skeleton racer)'), label {label_index}: " in message
    assert f"invalid relation r={relation!r}" in message


def test_redocred_not_a_list_raises(tmp_path):
    path = tmp_path / "object.json"
    path.write_text('{"title": "x"}', encoding="utf-8")

    with pytest.raises(GraphError, match="expected a list of documents"):
        load_redocred(path)


def test_redocred_label_unknown_vertex_names_document(tmp_path, redocred_documents):
    document = json.loads(json.dumps(redocred_documents[0]))
    document["labels"].append({"h": 0, "t": 999, "r": "P17", "evidence": []})
    path = tmp_path / "bad_label.json"
    path.write_text(json.dumps([document]), encoding="utf-8")

    with pytest.raises(GraphError, match=r"document 0 \('Willi Schneider \(skeleton racer\)'\), label \d+: "
                                         r"vertex 999 does not exist"):
        load_redocred(path)


def test_redocred_missing_field_names_document(tmp_path, redocred_documents):
    document = {key: value for key, value in redocred_documents[2].items() if key != "vertexSet"}
    path = tmp_path / "no_vertices.json"
    path.write_text(json.dumps([redocred_documents[0], document]), encoding="utf-8")

    with pytest.raises(GraphError, match="document 1 .* has no vertexSet"):
        load_redocred(path)


@pytest.mark.parametrize(("tokens", "text"), [
    (["He", "won", "two", "medals", "."], "He won two medals."),
    (["the", "men", "'s", "event", ",", "in", "1998"], "the men's event, in 1998"),
    (["Smith", "(", "born", "1963", ")", "is"], "Smith (born 1963) is"),
    (["called", '"', "Willi", '"', "Schneider"], 'called "Willi" Schneider'),
    (['"', "Hello", '"', ",", "she", "said", "."], '"Hello", she said.'),
    (["it", "does", "n't", "cost", "$", "5", "or", "10", "%"], "it doesn't cost $5 or 10%"),
    ([], ""),
])
def test_detokenize(tokens, text):
    assert detokenize(tokens) == text
