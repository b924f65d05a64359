"""Questions as conjunctive queries over a knowledge graph, solved exactly with typed adjacency.

A :class:`Query` is what a synthesized question asks, in executable form: variables
(named anchor entities, or unknowns with an optional type and attribute values),
relation constraints between them, and an operation on the result (``select`` one
entity, ``count`` the entities of a variable, or ``compare`` two entities by an
attribute). :func:`solve` returns, for every variable, the set of entities it takes over
all solutions of the constraints. A variable may take the same entity as another one
(homomorphism semantics), which can only add solutions, so a question found unique
under it is unique under any stricter reading.

:class:`GraphIndex` holds the adjacency by (entity, relation, direction) that both
synthesis and :func:`solve` walk, so per-question work is proportional to the
neighbourhoods the question touches and never to the size of the graph.
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from erlgym.redsearch.graph import KnowledgeGraph

OPERATIONS = ("select", "count", "compare")
# Maximum candidate entities of one variable while solving, and maximum search nodes
# when the query graph has a cycle among unknowns. Past either, solve() raises instead
# of running for long on a hub entity.
MAX_DOMAIN = 200_000
MAX_SEARCH_NODES = 200_000


class QueryError(ValueError):
    """An invalid query: an unknown variable or operation, or a variable that no named entity constrains."""


class SolveBudgetExceeded(RuntimeError):
    """Solving a query needed more candidates or search nodes than the budget allows."""


@dataclass
class Variable:
    """An entity of the question: named (``entity`` set) or unknown, with the type and attribute values it must have."""

    entity: str | None = None
    type: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Constraint:
    """``head --relation--> tail`` between two variables."""

    head: str
    relation: str
    tail: str


@dataclass
class Query:
    """A question in executable form; see the module docstring.

    ``target`` is the answer variable of ``select`` and the counted variable of ``count``.
    A ``compare`` query picks, of its two ``candidates``, the one with the ``order``
    ("min" or "max") value of ``attribute``. ``bindings`` records the entities the
    synthesizer chose for each variable, which solving must reproduce.
    """

    operation: str
    variables: dict[str, Variable]
    constraints: list[Constraint]
    target: str | None = None
    candidates: list[str] = field(default_factory=list)
    attribute: str | None = None
    order: str | None = None
    bindings: dict[str, list[str]] = field(default_factory=dict)

    @property
    def anchors(self) -> list[str]:
        """Names of the variables that are named entities."""
        return [name for name, variable in self.variables.items() if variable.entity is not None]

    @property
    def answer_variables(self) -> list[str]:
        """The variables the operation reads: the target, or both compared candidates."""
        return list(self.candidates) if self.operation == "compare" else [self.target]

    def to_dict(self) -> dict[str, Any]:
        return {
            "operation": self.operation,
            "variables": {name: {"entity": variable.entity, "type": variable.type,
                                 "attributes": dict(variable.attributes)}
                          for name, variable in self.variables.items()},
            "constraints": [[c.head, c.relation, c.tail] for c in self.constraints],
            "target": self.target,
            "candidates": list(self.candidates),
            "attribute": self.attribute,
            "order": self.order,
            "bindings": {name: list(entities) for name, entities in self.bindings.items()},
        }

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "Query":
        """Read a dict written by :meth:`to_dict`.

        Raises:
            QueryError: a field is missing, or a constraint names an unknown variable.
        """
        try:
            variables = {str(name): Variable(**spec) for name, spec in values["variables"].items()}
            constraints = [Constraint(*map(str, triple)) for triple in values["constraints"]]
            query = cls(operation=values["operation"], variables=variables, constraints=constraints,
                        target=values.get("target"), candidates=list(values.get("candidates", [])),
                        attribute=values.get("attribute"), order=values.get("order"),
                        bindings={str(name): list(entities) for name, entities in values.get("bindings", {}).items()})
        except (KeyError, TypeError, ValueError) as error:
            raise QueryError(f"invalid query: {type(error).__name__}: {error}") from error
        query.check()
        return query

    def check(self) -> None:
        """Raise :class:`QueryError` unless the operation and every variable reference are valid."""
        if self.operation not in OPERATIONS:
            raise QueryError(f"unknown query operation {self.operation!r}; use one of {', '.join(OPERATIONS)}")
        for constraint in self.constraints:
            for name in (constraint.head, constraint.tail):
                if name not in self.variables:
                    raise QueryError(f"constraint {constraint} names unknown variable {name!r}")
        for name in self.answer_variables:
            if name not in self.variables:
                raise QueryError(f"{self.operation} query reads unknown variable {name!r}")
        if self.operation == "compare" and (len(self.candidates) != 2 or self.order not in ("min", "max")
                                            or not self.attribute):
            raise QueryError("a compare query needs two candidates, an attribute and order 'min' or 'max'")


class GraphIndex:
    """Adjacency of a :class:`KnowledgeGraph` by (entity, relation, direction), with types and attributes.

    Build it once per graph. Relations and neighbours are stored sorted, so walks that
    pick by index give the same result however the graph was built or loaded.
    """

    def __init__(self, graph: KnowledgeGraph):
        self.graph = graph
        self.fingerprint = graph_fingerprint(graph)
        self.entities: list[str] = sorted(graph.graph.nodes)
        self.types: dict[str, str] = {}
        self.names: dict[str, str] = {}
        self.aliases: dict[str, list[str]] = {}
        self.attributes: dict[str, dict[str, Any]] = {}
        for entity, data in graph.graph.nodes(data=True):
            self.types[entity] = data.get("type", "entity")
            self.names[entity] = data.get("name", entity)
            self.aliases[entity] = list(data.get("aliases") or ())
            self.attributes[entity] = data.get("attributes") or {}

        out: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
        into: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
        self.num_facts = 0
        for head, tail, relation in graph.graph.edges(keys=True):
            out[head][relation].append(tail)
            into[tail][relation].append(head)
            self.num_facts += 1
        self.out = _freeze(out)
        self.into = _freeze(into)

        # Entities with a numeric attribute, by (type, attribute), for comparison questions.
        self.numeric: dict[tuple[str, str], list[str]] = defaultdict(list)
        for entity in self.entities:
            for attribute, value in self.attributes[entity].items():
                if _is_number(value):
                    self.numeric[(self.types[entity], attribute)].append(entity)
        self.numeric_entities = sorted({entity for entities in self.numeric.values() for entity in entities})
        self._documents_by_title: dict[str, list[str]] | None = None
        self._attribute_documents: dict[tuple[str, str], frozenset[str]] = {}

    def neighbors(self, entity: str, relation: str, forward: bool) -> tuple[str, ...]:
        """Return the tails of ``entity --relation-->`` if ``forward``, else the heads of ``--relation--> entity``."""
        return (self.out if forward else self.into).get(entity, {}).get(relation, ())

    def steps(self, entity: str) -> list[tuple[str, bool, tuple[str, ...]]]:
        """Return every (relation, forward, neighbours) group of facts that touch ``entity``."""
        groups = [(relation, True, tails) for relation, tails in self.out.get(entity, {}).items()]
        groups += [(relation, False, heads) for relation, heads in self.into.get(entity, {}).items()]
        return groups

    def fact_documents(self, head: str, relation: str, tail: str) -> frozenset[str]:
        """Return the ids of the documents that state the fact (empty if it has no evidence).

        Raises:
            KeyError: the graph has no such fact.
        """
        return frozenset(doc_id for doc_id, _ in self.graph.graph.succ[head][tail][relation]["evidence"])

    def entity_documents(self, entity: str) -> list[str]:
        """Return the documents about ``entity``: the one whose id is the entity id, else those titled with its name."""
        if entity in self.graph.documents:
            return [entity]
        if self._documents_by_title is None:
            by_title: dict[str, list[str]] = defaultdict(list)
            for doc_id, document in self.graph.documents.items():
                by_title[document.title].append(doc_id)
            self._documents_by_title = dict(by_title)
        return self._documents_by_title.get(self.names.get(entity, ""), [])

    def attribute_documents(self, entity: str, attribute: str) -> frozenset[str]:
        """Return the documents about ``entity`` whose text contains its ``attribute`` value.

        Numbers match as written by ``str`` or with thousands separators (``12,000``),
        text matches case-insensitively.
        """
        key = (entity, attribute)
        found = self._attribute_documents.get(key)
        if found is None:
            forms = value_forms(self.attributes.get(entity, {}).get(attribute))
            found = frozenset(doc_id for doc_id in self.entity_documents(entity)
                              if forms and any(form in self.graph.documents[doc_id].text.lower() for form in forms))
            self._attribute_documents[key] = found
        return found


def graph_fingerprint(graph: KnowledgeGraph) -> tuple[int, int, int]:
    """Return a cheap identity of a graph's content: the networkx graph object, entity and document counts.

    NOTE: facts added to or removed from the same networkx graph are not noticed, since
    counting a multigraph's edges takes a pass over all of them.
    """
    return id(graph.graph), graph.graph.number_of_nodes(), len(graph.documents)


def value_forms(value: Any) -> list[str]:
    """Return the lowercase ways a document may write an attribute value."""
    if value is None or isinstance(value, (dict, list)):
        return []
    forms = [str(value).lower()]
    if isinstance(value, float) and value.is_integer():
        value = int(value)
        forms.append(str(value))
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 1000:
        forms.append(f"{value:,}")
    return forms


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _freeze(adjacency: dict[str, dict[str, list[str]]]) -> dict[str, dict[str, tuple[str, ...]]]:
    return {entity: {relation: tuple(sorted(set(neighbors))) for relation, neighbors in sorted(groups.items())}
            for entity, groups in adjacency.items()}


# ---------------------------------------------------------------------- solving


def solve(query: Query, index: GraphIndex) -> dict[str, frozenset[str]]:
    """Return, for every variable, the entities it takes over all solutions of the query's constraints.

    Domains start at the named entities and spread along the constraints through
    ``index``. Arc consistency then removes values without support. When the unknowns,
    with the named entities left out, form a forest, arc consistency leaves exactly the
    values that occur in solutions. Otherwise a depth-first search enumerates the
    solutions.

    Raises:
        QueryError: a variable is not connected to any named entity.
        SolveBudgetExceeded: a domain grew past :data:`MAX_DOMAIN` or the search past
            :data:`MAX_SEARCH_NODES` nodes.
    """
    query.check()
    pairs: dict[tuple[str, str], list[Constraint]] = defaultdict(list)
    linked: dict[str, set[str]] = defaultdict(set)
    domains: dict[str, set[str]] = {}
    for name in query.anchors:
        entity = query.variables[name].entity
        domains[name] = {entity} if entity in index.types else set()
    for constraint in query.constraints:
        if constraint.head == constraint.tail:
            # A fact from a variable to itself only filters that variable's domain.
            continue
        pairs[(constraint.head, constraint.tail)].append(constraint)
        pairs[(constraint.tail, constraint.head)].append(constraint)
        linked[constraint.head].add(constraint.tail)
        linked[constraint.tail].add(constraint.head)

    _spread_domains(query, index, domains, pairs, linked)
    for constraint in query.constraints:
        if constraint.head == constraint.tail:
            domains[constraint.head] = {entity for entity in domains[constraint.head]
                                        if entity in index.neighbors(entity, constraint.relation, True)}
    if not _arc_consistency(index, domains, pairs, linked):
        return {name: frozenset() for name in query.variables}

    unknowns = [name for name in query.variables if query.variables[name].entity is None]
    if _is_forest(unknowns, linked):
        return {name: frozenset(domain) for name, domain in domains.items()}
    return _enumerate_projections(query, index, domains, pairs, linked, unknowns)


def _allowed(index: GraphIndex, variable: Variable, entity: str) -> bool:
    if variable.type is not None and index.types.get(entity) != variable.type:
        return False
    if variable.attributes:
        attributes = index.attributes.get(entity, {})
        return all(attributes.get(name) == value for name, value in variable.attributes.items())
    return True


def _related(index: GraphIndex, constraint: Constraint, source: str, entity: str) -> tuple[str, ...]:
    """Entities the ``constraint`` allows for its other variable when ``source`` takes ``entity``."""
    return index.neighbors(entity, constraint.relation, forward=constraint.head == source)


def _spread_domains(query, index, domains, pairs, linked) -> None:
    queue = deque(domains)
    while queue:
        source = queue.popleft()
        for other in sorted(linked[source]):
            if other in domains:
                continue
            constraint = pairs[(source, other)][0]
            reached: set[str] = set()
            for entity in domains[source]:
                reached.update(_related(index, constraint, source, entity))
                if len(reached) > MAX_DOMAIN:
                    raise SolveBudgetExceeded(f"variable {other!r} has more than {MAX_DOMAIN} candidates")
            variable = query.variables[other]
            domains[other] = {entity for entity in reached if _allowed(index, variable, entity)}
            queue.append(other)
    missing = [name for name in query.variables if name not in domains]
    if missing:
        raise QueryError(f"variable(s) {', '.join(missing)} are not connected to a named entity")


def _supported(index, constraints, source, entity, target_domain) -> bool:
    if len(constraints) == 1:
        return not target_domain.isdisjoint(_related(index, constraints[0], source, entity))
    common = target_domain.intersection(_related(index, constraints[0], source, entity))
    for constraint in constraints[1:]:
        if not common:
            return False
        common.intersection_update(_related(index, constraint, source, entity))
    return bool(common)


def _arc_consistency(index, domains, pairs, linked) -> bool:
    """Run AC-3 over the variable pairs; return False if a domain becomes empty."""
    arcs = deque(pairs)
    queued = set(arcs)
    while arcs:
        source, other = arcs.popleft()
        queued.discard((source, other))
        constraints = pairs[(source, other)]
        kept = {entity for entity in domains[source]
                if _supported(index, constraints, source, entity, domains[other])}
        if len(kept) == len(domains[source]):
            continue
        domains[source] = kept
        if not kept:
            return False
        for neighbor in linked[source]:
            if neighbor != other and (neighbor, source) not in queued:
                arcs.append((neighbor, source))
                queued.add((neighbor, source))
    return True


def _is_forest(unknowns: Iterable[str], linked: dict[str, set[str]]) -> bool:
    """Return whether the unknowns and the links among them form a forest (no cycle)."""
    members = set(unknowns)
    parent = {name: name for name in members}

    def root(name: str) -> str:
        while parent[name] != name:
            parent[name] = parent[parent[name]]
            name = parent[name]
        return name

    for name in members:
        for other in linked[name]:
            if other in members and name < other:
                first, second = root(name), root(other)
                if first == second:
                    return False
                parent[first] = second
    return True


def _enumerate_projections(query, index, domains, pairs, linked, unknowns) -> dict[str, frozenset[str]]:
    """Enumerate all assignments of the unknowns depth first and collect the values each one takes."""
    order = sorted(unknowns, key=lambda name: (len(domains[name]), name))
    seen: dict[str, set[str]] = {name: set() for name in unknowns}
    assignment = {name: next(iter(domains[name])) for name in query.anchors}
    nodes = 0

    def extend(position: int) -> None:
        nonlocal nodes
        if position == len(order):
            for name in unknowns:
                seen[name].add(assignment[name])
            return
        name = order[position]
        for entity in sorted(domains[name]):
            nodes += 1
            if nodes > MAX_SEARCH_NODES:
                raise SolveBudgetExceeded(f"solving needed more than {MAX_SEARCH_NODES} search nodes")
            if all(_supported(index, pairs[(name, other)], name, entity, {assignment[other]})
                   for other in linked[name] if other in assignment):
                assignment[name] = entity
                extend(position + 1)
                del assignment[name]

    extend(0)
    if not seen[order[0]]:
        return {name: frozenset() for name in query.variables}
    projections = {name: frozenset(domains[name]) for name in query.anchors}
    projections.update({name: frozenset(values) for name, values in seen.items()})
    return projections
