"""generate_world: determinism, sizes, unique names, evidence sentences, cycles and consistent attributes."""

from __future__ import annotations

from collections import Counter

import networkx as nx
import pytest

from erlgym.redsearch.graph import KnowledgeGraph
from erlgym.redsearch.world import (
    ENTITY_TYPES,
    MAX_WORKING_AGE,
    MIN_ENTITIES,
    PUBLISHER_CATEGORY,
    RELATION_NAMES,
    demonym,
    generate_world,
    type_counts,
)


@pytest.fixture(scope="module")
def world() -> KnowledgeGraph:
    return generate_world(2000, seed=11)


def facts_by_relation(graph: KnowledgeGraph, relation: str) -> list[tuple[str, str]]:
    return [(fact.head, fact.tail) for fact in graph.facts() if fact.relation == relation]


def test_world_same_seed_same_graph(tmp_path):
    first, second = tmp_path / "first.json", tmp_path / "second.json"

    generate_world(300, seed=5).save(first)
    generate_world(300, seed=5).save(second)

    assert first.read_text(encoding="utf-8") == second.read_text(encoding="utf-8")


def test_world_other_seed_other_graph():
    first = generate_world(300, seed=5)
    second = generate_world(300, seed=6)

    assert first.name == "world-300-seed5"
    assert second.name == "world-300-seed6"
    assert [first.entity_name(entity) for entity in first.graph] != [second.entity_name(entity) for entity in second.graph]


@pytest.mark.parametrize("num_entities", [MIN_ENTITIES, 300, 5000])
def test_world_sizes_and_type_counts(num_entities):
    graph = generate_world(num_entities, seed=1)

    assert graph.num_entities == num_entities
    counts = Counter(data["type"] for _, data in graph.graph.nodes(data=True))
    assert counts == type_counts(num_entities)
    assert set(counts) == set(ENTITY_TYPES)
    # About three facts per entity, so that multi-hop paths exist at every size.
    assert 2 * num_entities < graph.num_facts < 5 * num_entities


def test_world_too_small_raises():
    with pytest.raises(ValueError, match=f"at least {MIN_ENTITIES} entities"):
        generate_world(MIN_ENTITIES - 1)


def test_world_one_document_per_entity(world):
    assert set(world.documents) == set(world.graph.nodes)
    for entity_id, document in world.documents.items():
        assert document.doc_id == entity_id
        assert document.title == world.entity_name(entity_id)
        assert document.sentences[0].startswith(document.title)


def test_world_names_unique(world):
    names = [data["name"] for _, data in world.graph.nodes(data=True)]
    aliases = [alias for _, data in world.graph.nodes(data=True) for alias in data["aliases"]]

    assert len(set(names)) == len(names)
    assert len(set(aliases)) == len(aliases)
    assert not set(names) & set(aliases)
    assert aliases, "some entities should have an alias"


def test_world_nationalities_name_one_country(world):
    countries = [data["name"] for _, data in world.graph.nodes(data=True) if data["type"] == "country"]

    assert len({demonym(country) for country in countries}) == len(countries)


def test_world_names_pronounceable(world):
    for _, data in world.graph.nodes(data=True):
        for word in data["name"].split():
            assert word[0].isupper() or word == "of", data["name"]
            assert not any(letter * 3 in word.lower() for letter in "abcdefghijklmnopqrstuvwxyz"), data["name"]


def test_world_aliases_stated_in_documents(world):
    for entity_id, data in world.graph.nodes(data=True):
        for alias in data["aliases"]:
            assert alias in world.documents[entity_id].sentences[1]


def test_world_relation_names_cover_facts(world):
    relations = {fact.relation for fact in world.facts()}

    assert relations == set(RELATION_NAMES)
    assert world.relation_names == RELATION_NAMES


def test_world_evidence_sentences_name_the_tail(world):
    for fact in world.facts():
        head_name, tail_name = world.entity_name(fact.head), world.entity_name(fact.tail)
        assert fact.evidence, fact
        assert fact.evidence[0][0] == fact.head, f"the head's document states {fact} first"
        for doc_id, index in fact.evidence:
            sentence = world.documents[doc_id].sentences[index]
            assert tail_name in sentence, (fact, sentence)
            if doc_id != fact.head:
                assert doc_id == fact.tail
                assert head_name in sentence, (fact, sentence)


def test_world_evidence_dispersion_varies(world):
    documents_per_fact = Counter(len(fact.documents) for fact in world.facts())

    assert set(documents_per_fact) == {1, 2}
    assert documents_per_fact[2] > 0.1 * world.num_facts


def test_world_attribute_sentences_present(world):
    entity_id = "person-0"
    document = world.documents[entity_id]
    birth_year = world.entity(entity_id)["attributes"]["birth_year"]

    assert any(str(birth_year) in sentence for sentence in document.sentences[1:])


def test_world_symmetric_relations_stored_both_ways(world):
    for relation in ("spouse_of", "borders"):
        pairs = set(facts_by_relation(world, relation))
        assert pairs
        assert all((tail, head) in pairs for head, tail in pairs), relation


def test_world_directed_cycles_exist(world):
    cycle = nx.find_cycle(world.graph)

    assert len(cycle) >= 2
    borders = nx.DiGraph(facts_by_relation(world, "borders"))
    assert any(len(cycle) >= 3 for cycle in nx.simple_cycles(borders, length_bound=4))


def test_world_founder_works_for_own_organisation(world):
    works_for = set(facts_by_relation(world, "works_for"))

    assert any((founder, organisation) in works_for for organisation, founder in facts_by_relation(world, "founded_by"))


def test_world_employer_in_birth_city_not_founded(world):
    """A person–organisation–city triangle: works for an organisation headquartered where they were born."""
    born_in = dict(facts_by_relation(world, "born_in"))
    headquarters = dict(facts_by_relation(world, "headquartered_in"))
    founded = set(facts_by_relation(world, "founded_by"))

    triangles = [(person, organisation) for person, organisation in facts_by_relation(world, "works_for")
                 if headquarters[organisation] == born_in[person] and (organisation, person) not in founded]
    assert len(triangles) >= 10


def test_world_shared_neighbours_exist(world):
    """Two people born in the same city who work for the same organisation: an intersection question."""
    born_in = dict(facts_by_relation(world, "born_in"))
    pairs = Counter((born_in[person], organisation) for person, organisation in facts_by_relation(world, "works_for"))

    assert max(pairs.values()) >= 2


def test_world_mentor_chains_exist(world):
    mentors = nx.DiGraph(facts_by_relation(world, "mentor_of"))

    assert nx.is_directed_acyclic_graph(mentors)
    assert nx.dag_longest_path_length(mentors) >= 3


def test_world_attributes_consistent(world):
    born_in = dict(facts_by_relation(world, "born_in"))
    located_in = dict(facts_by_relation(world, "located_in"))
    for person, city in born_in.items():
        country_name = world.entity_name(located_in[city])
        assert world.entity(person)["attributes"]["nationality"] == demonym(country_name)

    for work, organisation in facts_by_relation(world, "published_by"):
        category = world.entity(work)["attributes"]["category"]
        assert world.entity(organisation)["attributes"]["category"] == PUBLISHER_CATEGORY[category]

    for person, organisation in facts_by_relation(world, "works_for"):
        birth_year = world.entity(person)["attributes"]["birth_year"]
        assert world.entity(organisation)["attributes"]["founding_year"] <= birth_year + MAX_WORKING_AGE

    for work, organisation in facts_by_relation(world, "published_by"):
        year = world.entity(work)["attributes"]["publication_year"]
        assert world.entity(organisation)["attributes"]["founding_year"] <= year

    for event, organisation in facts_by_relation(world, "organised_by"):
        year = world.entity(event)["attributes"]["year"]
        assert world.entity(organisation)["attributes"]["founding_year"] <= year

    for organisation, founder in facts_by_relation(world, "founded_by"):
        birth_year = world.entity(founder)["attributes"]["birth_year"]
        assert world.entity(organisation)["attributes"]["founding_year"] >= birth_year + 10

    for mentor, student in facts_by_relation(world, "mentor_of"):
        gap = world.entity(student)["attributes"]["birth_year"] - world.entity(mentor)["attributes"]["birth_year"]
        assert 15 <= gap <= 50


def test_world_every_country_has_a_capital(world):
    capitals = Counter(country for _, country in facts_by_relation(world, "capital_of"))
    countries = [entity for entity, data in world.graph.nodes(data=True) if data["type"] == "country"]

    assert all(capitals[country] == 1 for country in countries)


def test_world_json_round_trip(tmp_path, world):
    path = tmp_path / "world.json"

    world.save(path)
    loaded = KnowledgeGraph.load(path)

    assert loaded.num_entities == world.num_entities
    assert sorted(loaded.facts(), key=str) == sorted(world.facts(), key=str)
    assert loaded.documents == world.documents


def test_demonym_forms():
    assert demonym("Velmoria") == "Velmorian"
    assert demonym("Torland") == "Torlandic"
    assert demonym("Kavesh") == "Kaveshi"
    assert demonym("Drako") == "Drakese"
    assert demonym("Velmor") == "Velmorian"
