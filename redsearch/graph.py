"""Knowledge graphs: entities with attributes, typed facts between them, and the documents that state them.

A :class:`KnowledgeGraph` keeps three things:

- entities, as nodes of a ``networkx.MultiDiGraph`` with a display ``name``, a ``type``
  (person, city, synset, ...), ``aliases`` and ``attributes`` (name → str, int or float);
- facts, as edges keyed by relation id, each with its ``evidence``: the (document id,
  sentence index) pairs that state it;
- documents (:class:`Document`), the corpus a search agent reads, by document id.

Relation ids map to readable names in ``relation_names`` (for example ``P17`` →
``country``). Graphs save to and load from one JSON file (networkx node-link data
plus the documents) or GraphML (entities and facts only, because GraphML has no place for a corpus).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import networkx as nx

FORMAT_VERSION = 1


class GraphError(ValueError):
    """Invalid graph input: the message names the file, the line or the entity, and the fix."""


@dataclass
class Document:
    """A document of the corpus: an id, a title and its sentences."""

    doc_id: str
    title: str
    sentences: list[str]

    @property
    def text(self) -> str:
        return " ".join(self.sentences)


@dataclass(frozen=True)
class Fact:
    """One typed edge: ``head`` --relation--> ``tail``, with the sentences that state it."""

    head: str
    relation: str
    tail: str
    evidence: tuple[tuple[str, int], ...] = field(default=())

    @property
    def documents(self) -> frozenset[str]:
        """Ids of the documents that state this fact."""
        return frozenset(doc_id for doc_id, _ in self.evidence)


class KnowledgeGraph:
    """Entities, facts and documents; see the module docstring for what each holds."""

    def __init__(self, name: str = "graph"):
        self.name = name
        self.graph = nx.MultiDiGraph()
        self.documents: dict[str, Document] = {}
        self.relation_names: dict[str, str] = {}

    # ------------------------------------------------------------------ building

    def add_entity(self, entity_id: str, name: str, type: str = "entity", aliases: Iterable[str] = (),
                   attributes: dict[str, Any] | None = None) -> None:
        self.graph.add_node(entity_id, name=name, type=type, aliases=list(aliases),
                            attributes=dict(attributes or {}))

    def add_fact(self, head: str, relation: str, tail: str, evidence: Iterable[tuple[str, int]] = ()) -> None:
        """Add ``head`` --relation--> ``tail``; both entities must exist. A repeated fact merges its evidence."""
        for entity_id in (head, tail):
            if entity_id not in self.graph:
                raise GraphError(f"Fact ({head}, {relation}, {tail}) names unknown entity {entity_id!r}. "
                                 "Add the entity before its facts.")
        evidence = [(str(doc_id), int(index)) for doc_id, index in evidence]
        if self.graph.has_edge(head, tail, key=relation):
            known = self.graph.edges[head, tail, relation]["evidence"]
            known.extend(pair for pair in evidence if pair not in known)
        else:
            self.graph.add_edge(head, tail, key=relation, evidence=evidence)

    def add_document(self, document: Document) -> None:
        self.documents[document.doc_id] = document

    # ------------------------------------------------------------------ reading

    @property
    def num_entities(self) -> int:
        return self.graph.number_of_nodes()

    @property
    def num_facts(self) -> int:
        return self.graph.number_of_edges()

    def entity(self, entity_id: str) -> dict[str, Any]:
        """Return the entity's data: ``name``, ``type``, ``aliases`` and ``attributes``."""
        try:
            return self.graph.nodes[entity_id]
        except KeyError:
            raise GraphError(f"Unknown entity {entity_id!r} in graph {self.name!r}.") from None

    def entity_name(self, entity_id: str) -> str:
        return self.entity(entity_id)["name"]

    def relation_name(self, relation: str) -> str:
        """Return the readable name of a relation id, or the id itself."""
        return self.relation_names.get(relation, relation)

    def facts(self) -> Iterator[Fact]:
        for head, tail, relation, data in self.graph.edges(keys=True, data=True):
            yield Fact(head, relation, tail, tuple(map(tuple, data["evidence"])))

    def facts_from(self, entity_id: str) -> Iterator[Fact]:
        for _, tail, relation, data in self.graph.out_edges(entity_id, keys=True, data=True):
            yield Fact(entity_id, relation, tail, tuple(map(tuple, data["evidence"])))

    def facts_to(self, entity_id: str) -> Iterator[Fact]:
        for head, _, relation, data in self.graph.in_edges(entity_id, keys=True, data=True):
            yield Fact(head, relation, entity_id, tuple(map(tuple, data["evidence"])))

    # ------------------------------------------------------------------ files

    def save(self, path: str | Path) -> None:
        """Write the graph and its documents to one JSON file (networkx node-link data)."""
        payload = {
            "format": "erlgym-knowledge-graph",
            "version": FORMAT_VERSION,
            "name": self.name,
            "relation_names": self.relation_names,
            "graph": nx.node_link_data(self.graph, edges="edges"),
            "documents": [asdict(document) for document in self.documents.values()],
        }
        Path(path).write_text(json.dumps(payload, ensure_ascii=False), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> "KnowledgeGraph":
        """Read a file written by :meth:`save`.

        Raises:
            GraphError: the file is missing, not JSON, or not an erlgym knowledge graph.
        """
        path = Path(path)
        try:
            payload = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise GraphError(f"Graph file {path} not found. Pass the path of a file written by KnowledgeGraph.save.") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise GraphError(f"Cannot read graph file {path}: {error}") from error
        if not isinstance(payload, dict) or payload.get("format") != "erlgym-knowledge-graph":
            raise GraphError(f"{path} is not an erlgym knowledge graph file (no \"format\": "
                             "\"erlgym-knowledge-graph\" field).")
        graph = cls(payload.get("name", path.stem))
        try:
            graph.relation_names = dict(payload.get("relation_names", {}))
            graph.graph = nx.node_link_graph(payload["graph"], directed=True, multigraph=True, edges="edges")
            for document in payload.get("documents", []):
                graph.add_document(Document(**document))
            # JSON has no tuples: restore (doc_id, sentence index) pairs so that add_fact
            # recognises evidence it already has.
            for _, _, data in graph.graph.edges(data=True):
                data["evidence"] = [(str(doc_id), int(index)) for doc_id, index in data.get("evidence", [])]
        except (KeyError, TypeError, ValueError, nx.NetworkXError) as error:
            raise GraphError(f"{path} is an incomplete or invalid knowledge graph file ({type(error).__name__}: "
                             f"{error}). Write it again with KnowledgeGraph.save.") from error
        return graph

    def save_graphml(self, path: str | Path) -> None:
        """Write entities and facts as GraphML; lists and dicts are stored as JSON strings, documents are left out."""
        flat = nx.MultiDiGraph()
        for entity_id, data in self.graph.nodes(data=True):
            flat.add_node(entity_id, name=data["name"], type=data["type"], aliases=json.dumps(data["aliases"]),
                          attributes=json.dumps(data["attributes"]))
        for head, tail, relation, data in self.graph.edges(keys=True, data=True):
            flat.add_edge(head, tail, key=relation, relation=relation, evidence=json.dumps(data["evidence"]))
        nx.write_graphml(flat, path)

    @classmethod
    def load_graphml(cls, path: str | Path) -> "KnowledgeGraph":
        """Read a file written by :meth:`save_graphml` (no documents)."""
        try:
            flat = nx.read_graphml(path, force_multigraph=True)
        except (OSError, ValueError, KeyError) as error:  # ParseError is a SyntaxError subclass
            raise GraphError(f"Cannot read GraphML file {path}: {error}") from error
        except SyntaxError as error:
            raise GraphError(f"Cannot read GraphML file {path}: {error}") from error
        graph = cls(Path(path).stem)
        for entity_id, data in flat.nodes(data=True):
            graph.add_entity(entity_id, data.get("name", entity_id), data.get("type", "entity"),
                             json.loads(data.get("aliases", "[]")), json.loads(data.get("attributes", "{}")))
        for head, tail, data in flat.edges(data=True):
            graph.add_fact(head, data["relation"], tail, [tuple(pair) for pair in json.loads(data.get("evidence", "[]"))])
        return graph
