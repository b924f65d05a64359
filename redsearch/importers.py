"""Knowledge graphs from public datasets: triple files (the WN18RR layout) and Re-DocRED documents.

:func:`load_triples` reads tab-separated ``head<TAB>relation<TAB>tail`` files with
optional entity and relation texts, and writes a short document per entity from them.
:func:`load_redocred` reads Re-DocRED (or DocRED) JSON, whose Wikipedia paragraphs are
the documents and whose annotated relations are the facts.

Both store what they read in the graph attribute ``graph.graph.graph["import_report"]``,
a JSON-serialisable dict that :meth:`KnowledgeGraph.save` writes with the graph. Both log
a warning for input they had to skip or fill in. For input they cannot read, they raise
:class:`GraphError` naming the file, the line or document, and the fix.
"""

from __future__ import annotations

import json
import logging
import re
import unicodedata
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from erlgym.redsearch.graph import Document, GraphError, KnowledgeGraph

logger = logging.getLogger(__name__)

PathLike = str | Path
REPORT_KEY = "import_report"
"""Key of the import report in the networkx graph attributes (``graph.graph.graph``)."""
MAX_REPORT_EXAMPLES = 5

# ---------------------------------------------------------------------- triples


def load_triples(triples: PathLike | Sequence[PathLike], entity_texts: PathLike | None = None,
                 relation_texts: PathLike | None = None, name: str = "triples",
                 entity_type: str = "entity") -> KnowledgeGraph:
    """Build a graph from triple files, as in WN18RR, FB15k-237 and the KG-BERT data layout.

    Args:
        triples: one or more UTF-8 files of ``head<TAB>relation<TAB>tail`` lines, such as
            ``train.tsv``, ``dev.tsv`` and ``test.tsv``. Blank lines are skipped, and CRLF
            line endings are accepted. A triple repeated within or across files is one fact.
        entity_texts: optional ``id<TAB>text`` file (``entity2text.txt``). An entity's name
            is its text up to the first comma (WN18RR texts read "lemma, gloss"). An entity
            without a text is named by its id.
        relation_texts: optional ``id<TAB>text`` file (``relation2text.txt``) of readable
            relation names. Without a text, ``_member_of_domain_usage`` reads
            "member of domain usage".
        name: the graph's name.
        entity_type: the ``type`` of every entity (for example ``"synset"`` for WordNet).

    Each entity gets a document with its id as ``doc_id`` and its name as title. Its
    first sentence is the entity's text, if it has one. One sentence per fact whose head
    is the entity follows, in file order: "<head name> <relation name> <tail name>.".
    A fact's evidence is that sentence. Facts are stated in the head's document only,
    so that the document of a hub (a WordNet hypernym with thousands of hyponyms) stays
    short.

    The import report lists the entity texts whose ids appear in no triple and the
    triple entities without a text (a count and up to five examples each), and both are
    logged as warnings.

    Raises:
        GraphError: a file is missing or not UTF-8, a line does not have the expected
            tab-separated fields (the message names the file and line), the files contain
            no triples, or an entity or relation text file lists an id twice.
    """
    paths = [Path(triples)] if isinstance(triples, (str, Path)) else [Path(path) for path in triples]
    if not paths:
        raise GraphError("load_triples needs at least one triple file. Pass a path or a list of paths.")
    texts = _read_id_texts(Path(entity_texts), "Entity text") if entity_texts is not None else {}
    relation_names = _read_id_texts(Path(relation_texts), "Relation text") if relation_texts is not None else {}

    # A dict keeps the first occurrence of each triple in file order.
    unique_triples: dict[tuple[str, str, str], None] = {}
    num_lines = 0
    for path in paths:
        for triple in _read_triples(path):
            num_lines += 1
            unique_triples[triple] = None
    if not unique_triples:
        raise GraphError(f"Triple files {', '.join(str(path) for path in paths)} contain no triples. "
                         "Pass files of head<TAB>relation<TAB>tail lines.")

    entity_order: dict[str, None] = {}
    facts_by_head: dict[str, list[tuple[str, str]]] = {}
    for head, relation, tail in unique_triples:
        entity_order[head] = None
        entity_order[tail] = None
        facts_by_head.setdefault(head, []).append((relation, tail))

    names = {entity_id: _name_from_text(texts.get(entity_id, ""), entity_id) for entity_id in entity_order}
    for relation in {relation for _, relation, _ in unique_triples}:
        relation_names.setdefault(relation, _readable_relation(relation))

    graph = KnowledgeGraph(name)
    graph.relation_names = relation_names
    graph.graph.add_nodes_from(
        (entity_id, {"name": names[entity_id], "type": entity_type, "aliases": [], "attributes": {}})
        for entity_id in entity_order)
    edges = []
    for entity_id in entity_order:
        sentences = [texts[entity_id]] if texts.get(entity_id) else []
        for relation, tail in facts_by_head.get(entity_id, ()):
            edges.append((entity_id, tail, relation, {"evidence": [(entity_id, len(sentences))]}))
            sentences.append(f"{names[entity_id]} {relation_names[relation]} {names[tail]}.")
        graph.add_document(Document(entity_id, names[entity_id], sentences))
    graph.graph.add_edges_from(edges)

    unused_texts = [entity_id for entity_id in texts if entity_id not in entity_order]
    without_text = [entity_id for entity_id in entity_order if not texts.get(entity_id)]
    report = {
        "source": "triples",
        "files": [str(path) for path in paths],
        "entity_texts": str(entity_texts) if entity_texts is not None else None,
        "relation_texts": str(relation_texts) if relation_texts is not None else None,
        "triple_lines": num_lines,
        "duplicate_triples": num_lines - len(unique_triples),
        "facts": len(unique_triples),
        "entities": len(entity_order),
        **_id_list_report("unused_entity_texts", unused_texts),
        **_id_list_report("entities_without_text", without_text),
    }
    graph.graph.graph[REPORT_KEY] = report
    if unused_texts:
        logger.warning("%d entity texts in %s name ids that appear in no triple, for example %s",
                       len(unused_texts), entity_texts, ", ".join(report["unused_entity_texts_examples"]))
    if without_text and entity_texts is not None:
        logger.warning("%d entities of the triples have no text in %s and are named by their id, for example %s",
                       len(without_text), entity_texts, ", ".join(report["entities_without_text_examples"]))
    return graph


def _id_list_report(key: str, ids: list[str]) -> dict[str, Any]:
    return {key: len(ids), f"{key}_examples": ids[:MAX_REPORT_EXAMPLES]}


def _open_text(path: Path, kind: str, expected: str):
    """Open a UTF-8 text file in universal-newline mode (CRLF reads as LF) and skip a byte order mark."""
    try:
        return open(path, encoding="utf-8-sig")
    except FileNotFoundError:
        raise GraphError(f"{kind} file {path} not found. Pass the path of a file of {expected} lines.") from None
    except OSError as error:
        raise GraphError(f"{kind} file {path} cannot be read: {error}") from error


def _lines(path: Path, kind: str, expected: str) -> Iterator[tuple[int, str]]:
    """Yield (line number, line without its line ending) for the non-blank lines of a file."""
    with _open_text(path, kind, expected) as handle:
        try:
            for number, line in enumerate(handle, start=1):
                line = line.rstrip("\r\n")
                if line.strip():
                    yield number, line
        except UnicodeDecodeError as error:
            raise GraphError(f"{kind} file {path} is not UTF-8 text ({error}). "
                             "Convert it to UTF-8.") from error


def _read_triples(path: Path) -> Iterator[tuple[str, str, str]]:
    expected = "head<TAB>relation<TAB>tail"
    for number, line in _lines(path, "Triples", expected):
        fields = [field.strip() for field in line.split("\t")]
        if len(fields) != 3 or not all(fields):
            raise GraphError(f"{path}, line {number}: expected {expected} (3 non-empty tab-separated fields), "
                             f"got {len(fields)} field(s): {line!r}. Fix or remove the line.")
        yield fields[0], fields[1], fields[2]


def _read_id_texts(path: Path, kind: str) -> dict[str, str]:
    """Read an ``id<TAB>text`` file into a dict. Tabs after the first one belong to the text."""
    expected = "id<TAB>text"
    texts: dict[str, str] = {}
    first_line: dict[str, int] = {}
    for number, line in _lines(path, kind, expected):
        entity_id, separator, text = line.partition("\t")
        entity_id = entity_id.strip()
        if not separator or not entity_id:
            raise GraphError(f"{path}, line {number}: expected {expected}, got {line!r}. Fix or remove the line.")
        if entity_id in texts:
            raise GraphError(f"{path}, line {number}: id {entity_id!r} already has a text on line "
                             f"{first_line[entity_id]}. Keep one line per id.")
        texts[entity_id] = text.strip()
        first_line[entity_id] = number
    return texts


def _name_from_text(text: str, entity_id: str) -> str:
    """Return the part of "lemma, gloss" before the first comma, or the id if that part is empty."""
    return text.split(",", 1)[0].strip() or entity_id


def _readable_relation(relation: str) -> str:
    """Turn a relation id such as ``_member_of_domain_usage`` into "member of domain usage"."""
    return relation.strip("_").replace("_", " ") or relation


# ---------------------------------------------------------------------- Re-DocRED

MERGE_TYPES = frozenset({"PER", "ORG", "LOC", "MISC"})
"""Entity types merged across documents by ``load_redocred(merge_entities=True)``. Dates
(TIME) and numbers (NUM) stay per document: "1998" in two articles shares a value, not
an identity, and merging values would join unrelated documents through a few hubs."""
MAX_DOC_ID_LENGTH = 80

# Tokens written without a space before them, and tokens written without a space after them.
_NO_SPACE_BEFORE = frozenset({".", ",", ":", ";", "!", "?", ")", "]", "}", "%", "'s", "'S", "n't", "'re", "'ve",
                              "'ll", "'d", "'m", "''", "'"})
_NO_SPACE_AFTER = frozenset({"(", "[", "{", "$", "``", "#"})


def detokenize(tokens: Sequence[str]) -> str:
    """Join word tokens into text: no space before punctuation and clitics, none inside brackets or quotes.

    A ``"`` token opens a quote when an even number of them precede it in ``tokens``
    and closes one otherwise.
    """
    parts: list[str] = []
    quotes = 0
    attach_next = True
    for token in tokens:
        if token == '"':
            opening = quotes % 2 == 0
            quotes += 1
            if opening:
                parts.append(token if attach_next else " " + token)
                attach_next = True
            else:
                parts.append(token)
                attach_next = False
            continue
        if attach_next or token in _NO_SPACE_BEFORE:
            parts.append(token)
        else:
            parts.append(" " + token)
        attach_next = token in _NO_SPACE_AFTER
    return "".join(parts)


def load_redocred(path: PathLike, rel_info: PathLike | None = None, *, merge_entities: bool = False,
                  name: str | None = None) -> KnowledgeGraph:
    """Build a graph from Re-DocRED or DocRED JSON: each document's annotated relations and its text.

    Args:
        path: a JSON list of documents, each with ``title``, ``sents`` (tokenized
            sentences), ``vertexSet`` (entities, each a list of mentions with ``name``,
            ``sent_id``, ``pos`` and ``type``) and ``labels`` (``h``, ``t``, ``r`` and
            ``evidence`` sentence ids).
        rel_info: optional JSON object mapping relation ids (Wikidata properties such as
            ``P17``) to readable names (``rel_info.json``).
        merge_entities: merge entities of the types in :data:`MERGE_TYPES` that have the
            same name and type in several documents into one entity, so that questions
            can span documents. Off by default, because a shared name does not prove a
            shared identity ("Schneider" in two articles can be two people).
        name: the graph's name, by default the file's stem.

    Documents: one per input document, with the detokenized ``sents`` as sentences. The
    ``doc_id`` is the title without accents, with every run of characters other than
    ASCII letters, digits, ``.``, ``_`` and ``-`` replaced by ``_``, so it is safe as a
    file name. It is cut to 80 characters, and ``-2``, ``-3`` are appended when titles
    collide.

    Entities: the id of vertex ``v`` of document number ``d`` (0-based, in file order)
    is ``"d:v"``. Its name is the first mention in reading order, because a Wikipedia
    article usually introduces an entity by its full name and shortens it later. Its
    aliases are the other distinct mention texts, and its type is the most frequent
    mention type. A merged entity keeps the id of its first occurrence and collects the
    aliases of all occurrences.

    Facts: a label ``(h, r, t)`` is the fact ``h --r--> t``. Its evidence is the label's
    evidence sentences. When a label has none (9,811 of the 17,284 labels of Re-DocRED dev), the
    evidence is the sentences that mention both entities, or else the sentence of the
    head's first mention. The import report counts those labels as
    ``labels_with_inferred_evidence``.

    Raises:
        GraphError: a file is missing or not valid JSON, or the list of documents is
            empty. Also when a label's relation is not a non-empty string, or a document
            lacks a field or refers to a vertex or sentence that does not exist. The
            message names the document and the fix.
    """
    path = Path(path)
    documents = _read_json(path, "Re-DocRED",
                           "a JSON list of documents with title, sents, vertexSet and labels, such as dev_revised.json")
    if not isinstance(documents, list):
        raise GraphError(f"{path} contains a JSON {type(documents).__name__}, expected a list of documents. "
                         "Pass a Re-DocRED file such as dev_revised.json.")
    if not documents:
        raise GraphError(f"{path} contains an empty list, so there are no documents to import. "
                         "Pass a Re-DocRED file with documents, such as dev_revised.json.")
    graph = KnowledgeGraph(name or path.stem)
    if rel_info is not None:
        relation_names = _read_json(Path(rel_info), "Relation info", 'a JSON object such as {"P17": "country"}')
        if not isinstance(relation_names, dict):
            raise GraphError(f"{rel_info} contains a JSON {type(relation_names).__name__}, expected an object "
                             'mapping relation ids to names, such as {"P17": "country"}.')
        graph.relation_names = {str(key): str(value) for key, value in relation_names.items()}

    merged_ids: dict[tuple[str, str], str] = {}
    used_doc_ids: set[str] = set()
    num_labels = 0
    inferred_evidence = 0
    merged = 0
    for doc_index, raw in enumerate(documents):
        document = _check_document(raw, doc_index, path)
        doc_id = _unique_doc_id(document["title"], doc_index, used_doc_ids)
        sentences = [detokenize([str(token) for token in tokens]) for tokens in document["sents"]]
        graph.add_document(Document(doc_id, str(document["title"]), sentences))

        entity_ids = []
        mention_sentences = []
        for vertex_index, mentions in enumerate(document["vertexSet"]):
            entity_name, entity_type, aliases, sentence_ids = _vertex_entity(mentions, document, doc_index, vertex_index, path)
            entity_id = f"{doc_index}:{vertex_index}"
            key = (entity_name, entity_type)
            if merge_entities and entity_type in MERGE_TYPES and key in merged_ids:
                entity_id = merged_ids[key]
                known = graph.entity(entity_id)["aliases"]
                known.extend(alias for alias in aliases if alias not in known)
                merged += 1
            else:
                graph.add_entity(entity_id, entity_name, entity_type, aliases)
                if merge_entities and entity_type in MERGE_TYPES:
                    merged_ids[key] = entity_id
            entity_ids.append(entity_id)
            mention_sentences.append(sentence_ids)

        for label_index, label in enumerate(document["labels"]):
            head, tail, relation, evidence = _check_label(label, label_index, document, doc_index, path)
            num_labels += 1
            if not evidence:
                inferred_evidence += 1
                shared = sorted(set(mention_sentences[head]) & set(mention_sentences[tail]))
                evidence = shared or [mention_sentences[head][0]]
            graph.add_fact(entity_ids[head], relation, entity_ids[tail],
                           [(doc_id, sentence_id) for sentence_id in evidence])

    graph.graph.graph[REPORT_KEY] = {
        "source": "redocred",
        "file": str(path),
        "rel_info": str(rel_info) if rel_info is not None else None,
        "documents": len(documents),
        "labels": num_labels,
        "labels_with_inferred_evidence": inferred_evidence,
        "merge_entities": merge_entities,
        "merged_vertices": merged,
        "entities": graph.num_entities,
        "facts": graph.num_facts,
    }
    unnamed = sorted({fact.relation for fact in graph.facts()} - set(graph.relation_names))
    if rel_info is not None and unnamed:
        logger.warning("%d relation ids of %s have no name in %s, for example %s",
                       len(unnamed), path, rel_info, ", ".join(unnamed[:MAX_REPORT_EXAMPLES]))
    return graph


def _read_json(path: Path, kind: str, expected: str) -> Any:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise GraphError(f"{kind} file {path} not found. Pass the path of {expected}.") from None
    except (OSError, UnicodeDecodeError) as error:
        raise GraphError(f"{kind} file {path} cannot be read: {error}. Pass a UTF-8 file with {expected}.") from error
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise GraphError(f"{kind} file {path} is not valid JSON: {error}. Pass {expected}.") from error


def _check_document(raw: Any, doc_index: int, path: Path) -> dict[str, Any]:
    where = f"{path}, document {doc_index}"
    if not isinstance(raw, dict):
        raise GraphError(f"{where} is a JSON {type(raw).__name__}, expected an object with title, sents, "
                         "vertexSet and labels.")
    missing = [key for key in ("title", "sents", "vertexSet") if key not in raw]
    if missing:
        raise GraphError(f"{where} ({raw.get('title', 'no title')!r}) has no {', '.join(missing)}. "
                         "Each document needs title, sents, vertexSet and labels.")
    for key in ("sents", "vertexSet"):
        if not isinstance(raw[key], list) or not all(isinstance(item, list) for item in raw[key]):
            raise GraphError(f"{where} ({raw['title']!r}): {key} must be a list of lists.")
    labels = raw.get("labels", [])
    if not isinstance(labels, list):
        raise GraphError(f"{where} ({raw['title']!r}): labels must be a list.")
    return {"title": raw["title"], "sents": raw["sents"], "vertexSet": raw["vertexSet"], "labels": labels}


def _unique_doc_id(title: Any, doc_index: int, used: set[str]) -> str:
    """Reduce a title to a file-name-safe ASCII id that no earlier document has."""
    # Drop accents (Mediaș → Medias), then turn every other character outside [A-Za-z0-9._-]
    # into "_" (Cambodia–Vietnam → Cambodia_Vietnam).
    decomposed = unicodedata.normalize("NFKD", str(title))
    plain = "".join(character for character in decomposed if not unicodedata.combining(character))
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", plain).strip("._-")[:MAX_DOC_ID_LENGTH].rstrip("._-")
    slug = slug or f"doc-{doc_index}"
    doc_id = slug
    suffix = 2
    while doc_id in used:
        doc_id = f"{slug}-{suffix}"
        suffix += 1
    used.add(doc_id)
    return doc_id


def _vertex_entity(mentions: list, document: dict[str, Any], doc_index: int, vertex_index: int,
                   path: Path) -> tuple[str, str, list[str], list[int]]:
    """Return a vertex's name, type, aliases and mention sentence ids (in reading order)."""
    where = f"{path}, document {doc_index} ({document['title']!r}), vertex {vertex_index}"
    if not mentions:
        raise GraphError(f"{where} has no mentions. Each vertex needs at least one mention.")
    sentences = document["sents"]
    located = []
    for mention in mentions:
        try:
            sentence_id = int(mention["sent_id"])
            start, end = (int(value) for value in mention["pos"])
            mention_type = str(mention["type"])
        except (KeyError, TypeError, ValueError) as error:
            raise GraphError(f"{where}: invalid mention {mention!r} ({error}). A mention needs name, "
                             "sent_id, pos [start, end] and type.") from error
        if not 0 <= sentence_id < len(sentences):
            raise GraphError(f"{where}: mention sent_id {sentence_id} is out of range. The document has "
                             f"{len(sentences)} sentences.")
        tokens = sentences[sentence_id][start:end]
        text = detokenize([str(token) for token in tokens]) if tokens else str(mention.get("name", ""))
        located.append((sentence_id, start, text, mention_type))
    located.sort(key=lambda item: (item[0], item[1]))

    name = located[0][2]
    aliases = []
    for _, _, text, _ in located:
        if text and text != name and text not in aliases:
            aliases.append(text)
    entity_type = Counter(mention_type for _, _, _, mention_type in located).most_common(1)[0][0]
    return name, entity_type, aliases, [sentence_id for sentence_id, _, _, _ in located]


def _check_label(label: Any, label_index: int, document: dict[str, Any], doc_index: int,
                 path: Path) -> tuple[int, int, str, list[int]]:
    where = f"{path}, document {doc_index} ({document['title']!r}), label {label_index}"
    try:
        head, tail, relation = int(label["h"]), int(label["t"]), str(label["r"])
        evidence = [int(sentence_id) for sentence_id in label.get("evidence", [])]
    except (KeyError, TypeError, ValueError) as error:
        raise GraphError(f"{where}: invalid label {label!r} ({error}). A label needs h, t, r and evidence.") from error
    # str() would turn null, a number or a list into a relation named "None", "17" or "['P17']".
    if not isinstance(label["r"], str) or not label["r"].strip():
        raise GraphError(f"{where}: invalid relation r={label['r']!r}. A label's r must be a relation id "
                         "string such as \"P17\".")
    num_vertices = len(document["vertexSet"])
    for index in (head, tail):
        if not 0 <= index < num_vertices:
            raise GraphError(f"{where}: vertex {index} does not exist. The document has {num_vertices} vertices.")
    for sentence_id in evidence:
        if not 0 <= sentence_id < len(document["sents"]):
            raise GraphError(f"{where}: evidence sentence {sentence_id} does not exist. The document has "
                             f"{len(document['sents'])} sentences.")
    return head, tail, relation, evidence
