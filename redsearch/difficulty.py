"""Difficulty measures of a question: the shape of its reasoning graph and how many documents it needs.

The reasoning graph of a :class:`~erlgym.redsearch.queries.Query` has a node per query
variable: the named anchors, the obscured intermediates and the answer. The entities
that a count question counts form one node. It has an edge per relation constraint,
plus an edge between the two entities that a comparison compares. The measures, the
keys of :data:`~erlgym.redsearch.tasks.DIFFICULTY_MEASURES`:

- ``hops``: relation constraints in the question; a counted relation counts once;
- ``branching``: the most relation edges that reach one node from nodes farther from
  the answer, minus one. A chain has 0, two constraints meeting at the answer give 1;
- ``cycles``: independent cycles, the circuit rank |E| − |V| + components of the
  multigraph, so two relations between the same pair of nodes make one cycle;
- ``treewidth``: the exact treewidth of the simple undirected graph (see :func:`treewidth`);
- ``documents``: the fewest documents that together state every fact the question
  needs, an exact minimum set cover over each fact's evidence documents.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Iterable, Sequence
from itertools import combinations

import networkx as nx
from networkx.algorithms.approximation import treewidth_min_degree, treewidth_min_fill_in

from erlgym.redsearch.queries import Query
from erlgym.redsearch.tasks import DIFFICULTY_MEASURES

# Largest graph whose treewidth is computed by the exact subset recursion when the
# heuristic upper bound and the lower bound disagree: 2^12 subsets stay well under a second.
EXACT_TREEWIDTH_MAX_NODES = 12


def reasoning_graph(query: Query) -> nx.MultiGraph:
    """Build the reasoning graph of ``query`` (see the module docstring); edge kinds: "relation", "comparison"."""
    graph = nx.MultiGraph()
    graph.add_nodes_from(query.variables)
    for constraint in query.constraints:
        graph.add_edge(constraint.head, constraint.tail, kind="relation", relation=constraint.relation)
    if query.operation == "compare":
        graph.add_edge(*query.candidates, kind="comparison")
    return graph


def difficulty_of(query: Query, fact_documents: Sequence[Iterable[str]]) -> dict[str, int]:
    """Measure a question: the reasoning-graph measures of ``query``, and the document cover of ``fact_documents``.

    ``fact_documents`` holds, for every fact the question needs (relation facts and
    attribute values), the ids of the documents that state it.

    Raises:
        ValueError: a fact has no evidence document.
    """
    graph = reasoning_graph(query)
    cycles = count_cycles(graph)
    measures = {
        "hops": count_hops(graph),
        "branching": branching(graph, query.answer_variables),
        "cycles": cycles,
        # Without cycles the graph is a forest, whose treewidth needs no search.
        "treewidth": treewidth(graph) if cycles else int(graph.number_of_edges() > 0),
        "documents": len(min_document_cover(fact_documents)),
    }
    return {name: measures[name] for name in DIFFICULTY_MEASURES}


def count_hops(graph: nx.MultiGraph) -> int:
    return sum(1 for _, _, kind in graph.edges(data="kind") if kind == "relation")


def count_cycles(graph: nx.MultiGraph) -> int:
    """Return the circuit rank |E| − |V| + components (independent cycles, parallel edges included)."""
    if graph.number_of_nodes() == 0:
        return 0
    return graph.number_of_edges() - graph.number_of_nodes() + nx.number_connected_components(graph)


def branching(graph: nx.MultiGraph, answers: Iterable[Hashable]) -> int:
    """Return the most relation edges that reach one node from nodes one step farther from ``answers``, minus one."""
    distance = {node: 0 for node in answers}
    queue = deque(distance)
    while queue:
        node = queue.popleft()
        for neighbor in graph.neighbors(node):
            if neighbor not in distance:
                distance[neighbor] = distance[node] + 1
                queue.append(neighbor)
    most = 0
    for node in distance:
        incoming = sum(1 for _, neighbor, kind in graph.edges(node, data="kind")
                       if kind == "relation" and distance.get(neighbor) == distance[node] + 1)
        most = max(most, incoming)
    return max(0, most - 1)


def treewidth(graph: nx.Graph) -> int:
    """Return the exact treewidth of ``graph``, ignoring edge directions, parallel edges and self-loops.

    Forests are decided directly (0 without edges, else 1). Otherwise the upper bound is
    the better of networkx's min-degree and min-fill-in heuristics and the lower bound
    the larger of 2 (a graph with a cycle) and the minor-min-width bound. When the two
    bounds meet that is the treewidth. When they do not, graphs of up to
    :data:`EXACT_TREEWIDTH_MAX_NODES` nodes get the exact subset recursion of
    :func:`exact_treewidth`.
    """
    simple = nx.Graph(graph.to_undirected() if graph.is_directed() else graph)
    simple.remove_edges_from(list(nx.selfloop_edges(simple)))
    edges = simple.number_of_edges()
    if edges == 0:
        return 0
    if edges == simple.number_of_nodes() - nx.number_connected_components(simple):
        return 1
    upper = min(treewidth_min_degree(simple)[0], treewidth_min_fill_in(simple)[0])
    lower = max(2, minor_min_width(simple))
    if lower >= upper:
        return upper
    if simple.number_of_nodes() <= EXACT_TREEWIDTH_MAX_NODES:
        return exact_treewidth(simple)
    # NOTE: larger reasoning graphs with disagreeing bounds report the heuristic upper
    # bound; synthesized questions have far fewer nodes than this.
    return upper


def minor_min_width(graph: nx.Graph) -> int:
    """Return the minor-min-width lower bound on treewidth.

    Repeatedly take a node of minimum degree, record its degree, and contract it into its
    neighbour of minimum degree. Treewidth does not grow under contraction, and every
    graph's treewidth is at least its minimum degree, so the largest recorded degree is
    a lower bound.
    """
    adjacency = {node: set(graph.neighbors(node)) - {node} for node in graph}
    lower = 0
    while len(adjacency) > 1:
        node = min(adjacency, key=lambda name: (len(adjacency[name]), str(name)))
        degree = len(adjacency[node])
        lower = max(lower, degree)
        if degree == 0:
            del adjacency[node]
            continue
        into = min(adjacency[node], key=lambda name: (len(adjacency[name]), str(name)))
        for neighbor in adjacency[node]:
            adjacency[neighbor].discard(node)
            if neighbor != into:
                adjacency[neighbor].add(into)
                adjacency[into].add(neighbor)
        del adjacency[node]
    return lower


def exact_treewidth(graph: nx.Graph) -> int:
    """Return the treewidth by the subset recursion of Bodlaender et al., "On exact algorithms for treewidth" (2006).

    TW(S) = min over v in S of max(TW(S − v), |Q(S − v, v)|), where Q(S, v) is the set
    of nodes outside S ∪ {v} that v reaches through paths inside S. The treewidth is
    TW(all nodes). Time and memory grow as 2^n, so use it on small graphs only.
    """
    nodes = list(graph)
    position = {node: i for i, node in enumerate(nodes)}
    neighbors = [0] * len(nodes)
    for first, second in graph.edges():
        if first != second:
            neighbors[position[first]] |= 1 << position[second]
            neighbors[position[second]] |= 1 << position[first]

    def reach_outside(inside: int, start: int) -> int:
        visited = frontier = 1 << start
        reached = 0
        while frontier:
            low = frontier & -frontier
            frontier ^= low
            new = neighbors[low.bit_length() - 1] & ~visited
            visited |= new
            reached |= new & ~inside
            frontier |= new & inside
        return bin(reached).count("1")

    best = {0: -1}
    for size in range(1, len(nodes) + 1):
        for members in combinations(range(len(nodes)), size):
            subset = sum(1 << i for i in members)
            best[subset] = min(max(best[subset ^ (1 << i)], reach_outside(subset ^ (1 << i), i)) for i in members)
    return best[(1 << len(nodes)) - 1]


def min_document_cover(fact_documents: Sequence[Iterable[str]]) -> list[str]:
    """Return a smallest set of documents that contains every fact, sorted; ties go to the first found in sorted order.

    Exact: branch and bound, branching on the uncovered fact with the fewest documents,
    starting from the greedy cover as the bound. Fine for the tens of facts a question needs.

    Raises:
        ValueError: a fact has no evidence document.
    """
    facts = sorted({frozenset(documents) for documents in fact_documents}, key=lambda docs: (len(docs), sorted(docs)))
    if facts and not facts[0]:
        raise ValueError("a fact has no evidence document, so no set of documents contains every fact")
    # A fact whose documents include all of another fact's is covered whenever that one is.
    facts = [docs for i, docs in enumerate(facts) if not any(other < docs for other in facts[:i])]
    best = _greedy_cover(facts)

    def search(uncovered: list[frozenset[str]], chosen: list[str]) -> None:
        nonlocal best
        if not uncovered:
            if len(chosen) < len(best):
                best = list(chosen)
            return
        if len(chosen) + 1 >= len(best):
            return
        fewest = min(uncovered, key=len)
        for document in sorted(fewest):
            chosen.append(document)
            search([docs for docs in uncovered if document not in docs], chosen)
            chosen.pop()

    search(facts, [])
    return sorted(best)


def _greedy_cover(facts: list[frozenset[str]]) -> list[str]:
    uncovered = list(facts)
    chosen: list[str] = []
    while uncovered:
        counts: dict[str, int] = {}
        for docs in uncovered:
            for document in docs:
                counts[document] = counts.get(document, 0) + 1
        document = min(counts, key=lambda name: (-counts[name], name))
        chosen.append(document)
        uncovered = [docs for docs in uncovered if document not in docs]
    return chosen
