"""A generated fictional world: people, organisations, places, works and events, with a document each.

:func:`generate_world` builds a :class:`~erlgym.redsearch.graph.KnowledgeGraph` from one
seed. Every name is made from syllables, so an agent cannot recall an answer from
pretraining and has to search the documents. Names and aliases are unique across the
whole world, so a question that names an entity is never ambiguous.

Entity types and the relations between them (head → tail):

- person: ``born_in``, ``lives_in`` (city), ``works_for`` (an organisation founded
  before the person turned 65),
  ``participated_in`` (event), ``spouse_of`` (person, stored in both directions),
  ``mentor_of`` (a younger person);
- organisation: ``founded_by`` (person), ``headquartered_in`` (city);
- city: ``located_in`` and, for one city per country, ``capital_of`` (country);
- country: ``borders`` (country, stored in both directions);
- work (book, film or album): ``created_by`` (person), ``published_by`` (a publisher,
  film studio or record label founded by the publication year, if one was), and for
  some films ``adapted_from`` (an earlier book);
- event: ``took_place_in`` (city) and, for most events, ``organised_by`` (an
  organisation founded by the event's year).

Attributes by entity type:

- person: ``birth_year``, ``occupation`` and ``nationality`` (the demonym of the
  country of the birth city);
- organisation: ``category`` and ``founding_year``;
- city: ``population`` and ``founding_year``;
- country: ``population``;
- work: ``category``, ``genre`` and ``publication_year``;
- event: ``category`` and ``year``.

The graph has cycles and shared neighbours on purpose: spouses and bordering countries
form 2-cycles, some founders work for the organisation they founded, mentor chains run
through several generations, and many people work for an organisation headquartered
in their birth city, which closes a person–organisation–city triangle.

Entity ids are ``<type>-<number>``, numbered per type from 0 (``person-0``, ``city-12``).
Documents: entity ``e`` has the document ``e`` titled with its name. Sentence 0
introduces the entity (type, and the attributes that describe it), and an alias, if
any, follows as sentence 1. The remaining sentences state the other attributes and
every fact whose head is ``e``, in a seeded random order and with wording drawn from
several templates. Each fact's evidence is its sentence in the head's document, and for
about a third of the facts also a sentence in the tail's document that names both
entities. Every evidence sentence contains the tail's name.
"""

from __future__ import annotations

import bisect
import random
import re
from collections import defaultdict

from erlgym.redsearch.graph import Document, KnowledgeGraph

ENTITY_TYPES = ("person", "organisation", "city", "country", "work", "event")
RELATION_NAMES = {
    "born_in": "born in",
    "lives_in": "lives in",
    "works_for": "works for",
    "participated_in": "participated in",
    "spouse_of": "spouse of",
    "mentor_of": "mentor of",
    "founded_by": "founded by",
    "headquartered_in": "headquartered in",
    "located_in": "located in",
    "capital_of": "capital of",
    "borders": "borders",
    "created_by": "created by",
    "published_by": "published by",
    "adapted_from": "adapted from",
    "took_place_in": "took place in",
    "organised_by": "organised by",
}
MIN_ENTITIES = 50
"""The smallest world: 3 countries, 6 cities, 6 organisations, 6 works, 3 events and the rest persons."""

# Share of each type among the entities that are not countries. Persons take the rest.
TYPE_SHARES = {"city": 0.08, "organisation": 0.10, "work": 0.20, "event": 0.07}
TYPE_MINIMUMS = {"country": 3, "city": 6, "organisation": 6, "work": 6, "event": 3}
MAX_COUNTRIES = 400
# The first year of the world and the last year in which anything happens.
FIRST_YEAR = 1850
LAST_YEAR = 2024
# A person's employer was founded no later than the year the person turned this age.
MAX_WORKING_AGE = 65

# Probability that a fact is also stated in the tail's document, and the most such
# sentences one document gets, so that a city with thousands of natives keeps a short document.
TAIL_SENTENCE_PROBABILITY = 0.35
MAX_TAIL_SENTENCES = 12

# ---------------------------------------------------------------------- vocabulary

ONSETS = ("b", "br", "c", "d", "dr", "f", "g", "gr", "h", "k", "kr", "l", "m", "n", "p", "r",
          "s", "sh", "st", "t", "th", "tr", "v", "w", "z")
VOWELS = ("a", "e", "i", "o", "u", "a", "e", "o", "i", "ai", "ou")
FINAL_CODAS = ("", "", "", "n", "r", "l", "s", "m", "nd", "rn", "st", "th", "x")
INNER_CODAS = ("", "", "", "n", "r", "l")

CITY_SUFFIXES = ("", "", "", "ton", "burg", "mere", "holm", "ford", "vik", "stad")
CITY_PREFIXES = ("Port", "New", "Upper", "Lower", "Saint")
COUNTRY_SUFFIXES = ("ia", "ia", "and", "ora", "esh", "")
COUNTRY_FORMS = ("Republic", "Kingdom", "Federation", "Commonwealth", "Principality")
SURNAME_SUFFIXES = ("", "", "", "son", "ley", "ova", "ski", "wick", "dale")

OCCUPATIONS = {
    "book": ("novelist", "poet", "writer", "playwright"),
    "film": ("film director", "screenwriter"),
    "album": ("composer", "singer", "guitarist", "pianist"),
    "other": ("painter", "architect", "engineer", "physicist", "historian", "journalist",
              "politician", "athlete", "entrepreneur", "chemist", "teacher", "economist"),
}
OCCUPATION_GROUP_WEIGHTS = (("book", 0.15), ("film", 0.08), ("album", 0.12), ("other", 0.65))

ORGANISATION_CATEGORIES = ("publisher", "film studio", "record label", "university", "company",
                           "newspaper", "museum", "bank")
ORGANISATION_NAME_PATTERNS = {
    "publisher": ("{w} Press", "{w} Books", "House of {w}", "{w} Publishing"),
    "film studio": ("{w} Pictures", "{w} Studios", "{w} Films"),
    "record label": ("{w} Records", "{w} Sound", "{w} Music"),
    "university": ("{w} University", "{w} Institute of Technology", "{w} College"),
    "company": ("{w} Industries", "{w} Holdings", "{w} Works", "{w} Group"),
    "newspaper": ("The {w} Herald", "The {w} Gazette", "The Daily {w}", "{w} Courier"),
    "museum": ("{w} Museum", "Museum of {w}", "{w} Gallery"),
    "bank": ("{w} Bank", "Bank of {w}", "{w} Savings"),
}
# The organisation category that publishes each work category.
PUBLISHER_CATEGORY = {"book": "publisher", "film": "film studio", "album": "record label"}

WORK_CATEGORIES = ("book", "film", "album")
GENRES = {
    "book": ("mystery", "fantasy", "historical", "romance", "science fiction", "poetry"),
    "film": ("drama", "comedy", "thriller", "documentary", "western", "animated"),
    "album": ("jazz", "folk", "rock", "electronic", "classical", "pop"),
}
WORK_NOUNS = {"book": "novel", "film": "film", "album": "album"}
TITLE_ADJECTIVES = ("Silent", "Hollow", "Crimson", "Last", "Distant", "Broken", "Golden", "Winter",
                    "Hidden", "Burning", "Quiet", "Northern", "Iron", "Glass", "Paper", "Velvet",
                    "Endless", "Forgotten", "Second", "Lonely")
TITLE_NOUNS = ("Harbour", "Garden", "River", "Mirror", "Lantern", "Season", "Kingdom", "Orchard",
               "Voyage", "Letter", "Machine", "Bridge", "Tower", "Shadow", "Island", "Promise",
               "Empire", "Song", "Storm", "Archive")
TITLE_PATTERNS = ("The {adjective} {noun}", "{noun} of {w}", "The {noun} of {w}", "{w}",
                  "The {w} {noun}", "{adjective} {w}")

# Event name word → the event's category.
EVENT_KINDS = {"Festival": "festival", "Summit": "summit", "Championship": "championship",
               "Exhibition": "exhibition", "Conference": "conference", "Games": "sports event"}
EVENT_NAME_PATTERNS = ("{w} {kind}", "The {w} {kind}", "{w} International {kind}", "Grand {kind} of {w}")

# ---------------------------------------------------------------------- sentence templates

# Intro sentences: sentence 0 of each document.
INTRO_TEMPLATES = {
    "person": ("{name} is a {nationality} {occupation}.",
               "{name} is a {occupation} of {nationality} nationality.",
               "{name} is a {occupation} who holds {nationality} citizenship."),
    "organisation": ("{name} is a {category}.",
                     "{name} is a {category} with a long history."),
    "city": ("{name} is a city.", "{name} is a city and municipality."),
    "country": ("{name} is a country.", "{name} is a sovereign country."),
    "work": ("{name} is a {genre} {noun}.", "{name} is a {noun} in the {genre} genre."),
    "event": ("{name} was a {category}.", "{name} was a {category} that drew a large crowd."),
}
ALIAS_TEMPLATES = {
    "person": ("{name} is also known as {alias}.", "{name} often signs as {alias}."),
    "organisation": ("{name} is also known as {alias}.", "{name} is often abbreviated {alias}."),
    "city": ("{name} was formerly known as {alias}.", "{name} was once called {alias}."),
    "country": ("{name} is officially the {alias}.", "The official name of {name} is the {alias}."),
    "work": ("{name} was released in some markets as {alias}.", "{name} is also known as {alias}."),
    "event": ("{name} is also known as {alias}.",),
}
ATTRIBUTE_TEMPLATES = {
    "birth_year": ("{h} was born in {value}.", "{h} was born in the year {value}.",
                   "The birth year of {h} is {value}."),
    "founding_year": ("{h} was founded in {value}.", "{h} has existed since {value}.",
                      "{h} was established in {value}."),
    "population": ("{h} has a population of {value:,}.", "About {value:,} people live in {h}.",
                   "{h} is home to {value:,} residents."),
    "publication_year": ("{h} first appeared in {value}.", "{h} came out in {value}.",
                         "{h} dates from {value}."),
    "year": ("{h} was held in {value}.", "{h} happened in {value}.", "{h} took place in the year {value}."),
}
# Attributes stated in the intro sentence instead of a sentence of their own.
INTRO_ATTRIBUTES = frozenset({"occupation", "nationality", "category", "genre"})

# Sentences in the head's document. ``{h}`` refers to the head, ``{t}`` is the tail's name.
HEAD_TEMPLATES = {
    "born_in": ("{h} was born in {t}.", "{h} is a native of {t}.", "{t} is the birthplace of {h}.",
                "{h} came into the world in {t}."),
    "lives_in": ("{h} lives in {t}.", "{h} currently resides in {t}.", "{h} has settled in {t}.",
                 "These days {h} makes a home in {t}."),
    "works_for": ("{h} works for {t}.", "{h} is employed by {t}.", "{h} holds a position at {t}.",
                  "{h} is on the staff of {t}."),
    "participated_in": ("{h} took part in {t}.", "{h} participated in {t}.", "{h} attended {t}."),
    "spouse_of": ("{h} is married to {t}.", "{h} married {t}.", "The spouse of {h} is {t}."),
    "mentor_of": ("{h} mentored {t}.", "{h} was a mentor to {t}.", "{t} was trained by {h}.",
                  "{t} studied under {h}."),
    "founded_by": ("{h} was founded by {t}.", "{t} founded {h}.", "{h} was established by {t}.",
                   "The founder of {h} is {t}."),
    "headquartered_in": ("{h} is headquartered in {t}.", "{h} has its head office in {t}.",
                         "The headquarters of {h} are in {t}.", "{h} is based in {t}."),
    "located_in": ("{h} is located in {t}.", "{h} is a city in {t}.", "{h} lies in {t}."),
    "capital_of": ("{h} is the capital of {t}.", "{h} serves as the capital of {t}."),
    "borders": ("{h} borders {t}.", "{h} shares a border with {t}.", "{h} is a neighbour of {t}."),
    "created_by:book": ("{h} was written by {t}.", "{t} wrote {h}.", "{h} is a book by {t}."),
    "created_by:film": ("{h} was directed by {t}.", "{t} directed {h}.", "{h} is a film by {t}."),
    "created_by:album": ("{h} was recorded by {t}.", "{t} recorded {h}.", "{h} is an album by {t}."),
    "published_by:book": ("{h} was published by {t}.", "{t} published {h}."),
    "published_by:film": ("{h} was produced by {t}.", "{t} produced {h}."),
    "published_by:album": ("{h} was released by {t}.", "{t} released {h}."),
    "adapted_from": ("{h} is an adaptation of {t}.", "{h} is based on the book {t}.", "{h} was adapted from {t}."),
    "took_place_in": ("{h} took place in {t}.", "{h} was held in {t}.", "{t} hosted {h}."),
    "organised_by": ("{h} was organised by {t}.", "{t} organised {h}.", "The organiser of {h} was {t}."),
}
# Sentences in the tail's document. ``{h}`` is the head's name, ``{t}`` the tail's name.
# Relations stored in both directions (spouse_of, borders) have none.
TAIL_TEMPLATES = {
    "born_in": ("{t} is the birthplace of {h}.", "{h} was born in {t}."),
    "lives_in": ("{h} lives in {t}.", "{t} is the home of {h}."),
    "works_for": ("{t} employs {h}.", "{h} works for {t}."),
    "participated_in": ("{h} was among the participants of {t}.", "{h} took part in {t}."),
    "mentor_of": ("{t} studied under {h}.", "{t} was a student of {h}."),
    "founded_by": ("{t} founded {h}.", "{t} is the founder of {h}."),
    "headquartered_in": ("{h} has its headquarters in {t}.", "{t} is the seat of {h}."),
    "located_in": ("{h} is one of the cities of {t}.", "{t} includes the city of {h}."),
    "capital_of": ("The capital of {t} is {h}.",),
    "created_by:book": ("{t} wrote {h}.",),
    "created_by:film": ("{t} directed {h}.",),
    "created_by:album": ("{t} recorded {h}.",),
    "published_by:book": ("{t} published {h}.",),
    "published_by:film": ("{t} produced {h}.",),
    "published_by:album": ("{t} released {h}.",),
    "adapted_from": ("{t} was adapted as {h}.", "{h} is based on {t}."),
    "took_place_in": ("{t} hosted {h}.", "{h} was held in {t}."),
    "organised_by": ("{t} organised {h}.",),
}


def generate_world(num_entities: int, seed: int = 0) -> KnowledgeGraph:
    """Generate a fictional world of ``num_entities`` entities, with one document per entity.

    The same ``num_entities`` and ``seed`` give the same graph and documents on every
    run and platform (the generator is Python's ``random.Random``). The graph is named
    ``world-<num_entities>-seed<seed>``.

    Raises:
        ValueError: ``num_entities`` is below :data:`MIN_ENTITIES`.
    """
    if num_entities < MIN_ENTITIES:
        raise ValueError(f"num_entities={num_entities} is too small: a world needs at least "
                         f"{MIN_ENTITIES} entities to hold every entity type.")
    builder = _WorldBuilder(num_entities, random.Random(seed))
    builder.build()
    graph = KnowledgeGraph(f"world-{num_entities}-seed{seed}")
    graph.relation_names = dict(RELATION_NAMES)
    builder.fill(graph)
    return graph


def type_counts(num_entities: int) -> dict[str, int]:
    """Return how many entities of each type a world of ``num_entities`` entities has."""
    countries = min(max(TYPE_MINIMUMS["country"], num_entities // 100), MAX_COUNTRIES)
    rest = num_entities - countries
    counts = {"country": countries}
    for entity_type, share in TYPE_SHARES.items():
        counts[entity_type] = max(TYPE_MINIMUMS[entity_type], round(rest * share))
    counts["person"] = num_entities - sum(counts.values())
    return counts


def demonym(country: str) -> str:
    """Return the adjective for people of ``country``: Velmoria → Velmorian, Torland → Torlandic."""
    if country.endswith("a"):
        return country + "n"
    if country.endswith("and"):
        return country + "ic"
    if country.endswith("sh"):
        return country + "i"
    if country[-1] in "eiouy":
        return country[:-1] + "ese"
    return country + "ian"


# "a" before a vowel letter, except before words that start with a "you" sound (a university).
_ARTICLE_BEFORE_VOWEL = re.compile(r"\ba (?!uni|eu|use)(?=[aeiouAEIOU])")


def _fix_articles(sentence: str) -> str:
    """Replace "a" with "an" before a vowel: "a Ostravan poet" becomes "an Ostravan poet"."""
    return _ARTICLE_BEFORE_VOWEL.sub("an ", sentence)


class _WorldBuilder:
    """Entities and facts as parallel lists, filled in one pass per type and then rendered."""

    def __init__(self, num_entities: int, rng: random.Random):
        self.rng = rng
        self.counts = type_counts(num_entities)
        self.used_names: set[str] = set()
        # Per entity, by global index.
        self.ids: list[str] = []
        self.names: list[str] = []
        self.types: list[str] = []
        self.aliases: list[list[str]] = []
        self.attributes: list[dict] = []
        # Per fact.
        self.heads: list[int] = []
        self.relations: list[str] = []
        self.tails: list[int] = []
        self.fact_keys: set[tuple[int, str, int]] = set()
        self.of_type: dict[str, list[int]] = {}

    # ------------------------------------------------------------------ names

    def _word(self, min_syllables: int = 2, max_syllables: int = 3) -> str:
        rng = self.rng
        count = rng.randint(min_syllables, max_syllables)
        parts = []
        for index in range(count):
            onset = rng.choice(ONSETS) if index or rng.random() < 0.85 else ""
            coda = rng.choice(FINAL_CODAS if index == count - 1 else INNER_CODAS)
            parts.append(onset + rng.choice(VOWELS) + coda)
        return "".join(parts).capitalize()

    def _unique(self, make_name) -> str:
        """Call ``make_name`` until it returns a name no entity uses yet, and reserve it."""
        while True:
            name = make_name()
            if name not in self.used_names:
                self.used_names.add(name)
                return name

    def _try_alias(self, alias: str) -> list[str]:
        if alias in self.used_names:
            return []
        self.used_names.add(alias)
        return [alias]

    def _person_name(self) -> str:
        first = self._word(2, 2)
        surname = self._word(2, 2) + self.rng.choice(SURNAME_SUFFIXES)
        return f"{first} {surname}"

    def _city_name(self) -> str:
        rng = self.rng
        name = self._word(2, 3) + rng.choice(CITY_SUFFIXES)
        if rng.random() < 0.1:
            name = f"{rng.choice(CITY_PREFIXES)} {name}"
        return name

    def _country_name(self) -> str:
        return self._word(2, 2) + self.rng.choice(COUNTRY_SUFFIXES)

    def _organisation_name(self, category: str) -> str:
        return self.rng.choice(ORGANISATION_NAME_PATTERNS[category]).format(w=self._word(2, 3))

    def _work_title(self) -> str:
        rng = self.rng
        return rng.choice(TITLE_PATTERNS).format(adjective=rng.choice(TITLE_ADJECTIVES),
                                                 noun=rng.choice(TITLE_NOUNS), w=self._word(2, 3))

    def _event_name(self, kind: str) -> str:
        return self.rng.choice(EVENT_NAME_PATTERNS).format(w=self._word(2, 3), kind=kind)

    # ------------------------------------------------------------------ entities and facts

    def _add_entity(self, entity_type: str, name: str, attributes: dict, aliases: list[str] | None = None) -> int:
        index = len(self.ids)
        self.ids.append(f"{entity_type}-{len(self.of_type[entity_type])}")
        self.of_type[entity_type].append(index)
        self.names.append(name)
        self.types.append(entity_type)
        self.aliases.append(aliases or [])
        self.attributes.append(attributes)
        return index

    def _add_fact(self, head: int, relation: str, tail: int) -> bool:
        """Record a fact unless it is a self-loop or already recorded, and return whether it was added."""
        key = (head, relation, tail)
        if head == tail or key in self.fact_keys:
            return False
        self.fact_keys.add(key)
        self.heads.append(head)
        self.relations.append(relation)
        self.tails.append(tail)
        return True

    def build(self) -> None:
        for entity_type in ENTITY_TYPES:
            self.of_type[entity_type] = []
        self._build_places()
        self._build_persons()
        self._build_organisations()
        self._build_employment()
        self._build_works()
        self._build_events()
        self._build_families_and_mentors()

    def _build_places(self) -> None:
        rng = self.rng
        # Distinct demonyms too, so that a nationality names one country.
        demonyms: set[str] = set()
        countries = []
        while len(countries) < self.counts["country"]:
            name = self._country_name()
            if name in self.used_names or demonym(name) in demonyms:
                continue
            self.used_names.add(name)
            demonyms.add(demonym(name))
            countries.append(self._add_entity("country", name, {}))
        for country in countries:
            if rng.random() < 0.5:
                form = rng.choice(COUNTRY_FORMS)
                self.aliases[country] = self._try_alias(f"{form} of {self.names[country]}")

        self.city_country: dict[int, int] = {}
        country_population = defaultdict(int)
        for number in range(self.counts["city"]):
            population = int(round(10 ** rng.uniform(3.5, 6.7), -1))
            founding_year = rng.randint(900, 1900)
            city = self._add_entity("city", self._unique(self._city_name),
                                    {"population": population, "founding_year": founding_year})
            if rng.random() < 0.1:
                self.aliases[city] = self._try_alias(self._word(2, 3))
            # The first city of each country is its capital, so every country has a city.
            if number < len(countries):
                country = countries[number]
                self._add_fact(city, "capital_of", country)
            else:
                country = rng.choice(countries)
            self._add_fact(city, "located_in", country)
            self.city_country[city] = country
            country_population[country] += population
        for country in countries:
            total = country_population[country] * rng.uniform(1.5, 3.0)
            self.attributes[country]["population"] = int(round(total, -3))

        # A ring of borders, so every country has neighbours and the ring is a cycle,
        # plus random extra borders.
        order = countries[:]
        rng.shuffle(order)
        pairs = [(order[i], order[(i + 1) % len(order)]) for i in range(len(order))]
        pairs += [tuple(rng.sample(countries, 2)) for _ in range(len(countries) // 2)]
        for first, second in pairs:
            self._add_fact(first, "borders", second)
            self._add_fact(second, "borders", first)

    def _build_persons(self) -> None:
        rng = self.rng
        cities = self.of_type["city"]
        groups = [group for group, _ in OCCUPATION_GROUP_WEIGHTS]
        weights = [weight for _, weight in OCCUPATION_GROUP_WEIGHTS]
        self.occupation_group: dict[int, str] = {}
        self.persons_by_group: dict[str, list[int]] = {group: [] for group in groups}
        for _ in range(self.counts["person"]):
            group = rng.choices(groups, weights)[0]
            birth_city = rng.choice(cities)
            attributes = {
                "birth_year": rng.randint(FIRST_YEAR, 2000),
                "occupation": rng.choice(OCCUPATIONS[group]),
                "nationality": demonym(self.names[self.city_country[birth_city]]),
            }
            person = self._add_entity("person", self._unique(self._person_name), attributes)
            if rng.random() < 0.15:
                first, surname = self.names[person].split(" ", 1)
                self.aliases[person] = self._try_alias(f"{first[0]}. {surname}")
            self.occupation_group[person] = group
            self.persons_by_group[group].append(person)
            self._add_fact(person, "born_in", birth_city)
            home = birth_city if rng.random() < 0.4 else rng.choice(cities)
            self._add_fact(person, "lives_in", home)

        persons = self.of_type["person"]
        self.persons_by_birth = sorted(persons, key=lambda person: self.attributes[person]["birth_year"])
        self.birth_years = [self.attributes[person]["birth_year"] for person in self.persons_by_birth]

    def _person_born_between(self, first_year: int, last_year: int) -> int:
        """Return a random person born in [first_year, last_year], or any person if none is."""
        low = bisect.bisect_left(self.birth_years, first_year)
        high = bisect.bisect_right(self.birth_years, last_year)
        if low >= high:
            return self.rng.choice(self.persons_by_birth)
        return self.persons_by_birth[self.rng.randrange(low, high)]

    def _build_organisations(self) -> None:
        rng = self.rng
        cities = self.of_type["city"]
        self.founders: dict[int, list[int]] = {}
        self.organisations_in_city: dict[int, list[int]] = defaultdict(list)
        self.organisations_by_category: dict[str, list[int]] = defaultdict(list)
        for number in range(self.counts["organisation"]):
            # The first three are a publisher, a film studio and a record label, so every
            # work category has a publisher.
            category = ORGANISATION_CATEGORIES[number] if number < 3 else rng.choice(ORGANISATION_CATEGORIES)
            founder = self._person_born_between(FIRST_YEAR, LAST_YEAR - 30)
            founder_birth = self.attributes[founder]["birth_year"]
            founding_year = min(founder_birth + rng.randint(25, 60), LAST_YEAR - 5)
            name = self._unique(lambda: self._organisation_name(category))
            organisation = self._add_entity("organisation", name,
                                            {"category": category, "founding_year": founding_year})
            capitals = [word[0] for word in name.split() if word[0].isupper()]
            if len(capitals) >= 2 and rng.random() < 0.3:
                self.aliases[organisation] = self._try_alias("".join(capitals))
            headquarters = rng.choice(cities)
            self._add_fact(organisation, "headquartered_in", headquarters)
            self.organisations_in_city[headquarters].append(organisation)
            self.organisations_by_category[category].append(organisation)

            founders = [founder]
            if rng.random() < 0.15:
                cofounder = self._person_born_between(founder_birth - 15, founder_birth + 15)
                if cofounder != founder:
                    founders.append(cofounder)
            for person in founders:
                self._add_fact(organisation, "founded_by", person)
            self.founders[organisation] = founders

        # Organisations sorted by founding year, all together (key None) and per
        # category, for picking one that already existed in a given year.
        self.organisations_by_founding: dict[str | None, tuple[list[int], list[int]]] = {}
        groups = {None: self.of_type["organisation"], **self.organisations_by_category}
        for category, organisations in groups.items():
            ordered = sorted(organisations, key=lambda organisation: self.attributes[organisation]["founding_year"])
            founding_years = [self.attributes[organisation]["founding_year"] for organisation in ordered]
            self.organisations_by_founding[category] = (ordered, founding_years)

    def _founded_by(self, year: int, category: str | None = None) -> int | None:
        """Return a random organisation (of ``category``, if given) founded in or before ``year``, or None if there is none."""
        organisations, founding_years = self.organisations_by_founding[category]
        founded = bisect.bisect_right(founding_years, year)
        return organisations[self.rng.randrange(founded)] if founded else None

    def _build_employment(self) -> None:
        """Give most persons an employer founded before they turned 65.

        Half of the founders work for their own organisation. Of the other employed
        persons, 35% of those whose birth city has an organisation they did not found
        work for one of those.
        """
        rng = self.rng
        employer: dict[int, int] = {}
        for organisation, founders in self.founders.items():
            for founder in founders:
                if founder not in employer and rng.random() < 0.5:
                    employer[founder] = organisation
        birth_city = {self.heads[i]: self.tails[i] for i in range(len(self.heads)) if self.relations[i] == "born_in"}
        for person in self.of_type["person"]:
            if person in employer or rng.random() >= 0.85:
                continue
            latest_founding = self.attributes[person]["birth_year"] + MAX_WORKING_AGE
            local = [organisation for organisation in self.organisations_in_city.get(birth_city[person], ())
                     if person not in self.founders[organisation]]
            local = [organisation for organisation in local
                     if self.attributes[organisation]["founding_year"] <= latest_founding]
            if local and rng.random() < 0.35:
                chosen = rng.choice(local)
            else:
                chosen = self._founded_by(latest_founding)
            if chosen is not None:
                employer[person] = chosen
        for person in self.of_type["person"]:
            if person in employer:
                self._add_fact(person, "works_for", employer[person])

    def _build_works(self) -> None:
        rng = self.rng
        books: list[int] = []
        for _ in range(self.counts["work"]):
            category = rng.choice(WORK_CATEGORIES)
            candidates = self.persons_by_group[category] or self.of_type["person"]
            creator = rng.choice(candidates)
            creator_birth = self.attributes[creator]["birth_year"]
            year = min(creator_birth + rng.randint(20, 70), LAST_YEAR)
            attributes = {"category": category, "genre": rng.choice(GENRES[category]), "publication_year": year}
            work = self._add_entity("work", self._unique(self._work_title), attributes)
            if rng.random() < 0.08:
                self.aliases[work] = self._try_alias(self._word(2, 3))
            self._add_fact(work, "created_by", creator)
            publisher = self._founded_by(year, PUBLISHER_CATEGORY[category])
            if publisher is not None:
                self._add_fact(work, "published_by", publisher)
            if category == "book":
                books.append(work)
            elif category == "film" and books and rng.random() < 0.3:
                # Adapt a book published before the film, if a random pick finds one.
                for _ in range(3):
                    book = rng.choice(books)
                    if self.attributes[book]["publication_year"] < year:
                        self._add_fact(work, "adapted_from", book)
                        break

    def _build_events(self) -> None:
        rng = self.rng
        cities = self.of_type["city"]
        kinds = list(EVENT_KINDS)
        for _ in range(self.counts["event"]):
            kind = rng.choice(kinds)
            year = rng.randint(FIRST_YEAR + 30, LAST_YEAR)
            name = self._unique(lambda: self._event_name(kind))
            event = self._add_entity("event", name, {"category": EVENT_KINDS[kind], "year": year})
            self._add_fact(event, "took_place_in", rng.choice(cities))
            organiser = self._founded_by(year) if rng.random() < 0.7 else None
            if organiser is not None:
                self._add_fact(event, "organised_by", organiser)
            for _ in range(rng.randint(2, 6)):
                participant = self._person_born_between(year - 80, year - 16)
                self._add_fact(participant, "participated_in", event)

    def _build_families_and_mentors(self) -> None:
        """Marry 40% of the persons to someone of similar age, and give 30% a mentor born 15 to 50 years earlier."""
        rng = self.rng
        persons = self.of_type["person"]
        married = rng.sample(persons, int(len(persons) * 0.4) // 2 * 2)
        married.sort(key=lambda person: self.attributes[person]["birth_year"])
        for first, second in zip(married[::2], married[1::2]):
            self._add_fact(first, "spouse_of", second)
            self._add_fact(second, "spouse_of", first)
        for person in persons:
            if rng.random() < 0.3:
                birth_year = self.attributes[person]["birth_year"]
                low = bisect.bisect_left(self.birth_years, birth_year - 50)
                high = bisect.bisect_right(self.birth_years, birth_year - 15)
                if low < high:
                    self._add_fact(self.persons_by_birth[rng.randrange(low, high)], "mentor_of", person)

    # ------------------------------------------------------------------ documents

    def _head_reference(self, entity: int) -> str:
        """Return the name by which an entity's own document refers to it, for a person sometimes the surname alone."""
        name = self.names[entity]
        if self.types[entity] == "person" and self.rng.random() < 0.3:
            return name.split(" ", 1)[1]
        return name

    def _template_key(self, relation: str, head: int) -> str:
        if relation in ("created_by", "published_by"):
            return f"{relation}:{self.attributes[head]['category']}"
        return relation

    def _intro(self, entity: int) -> list[str]:
        rng = self.rng
        entity_type = self.types[entity]
        attributes = self.attributes[entity]
        values = {"name": self.names[entity]}
        if entity_type == "person":
            values.update(occupation=attributes["occupation"], nationality=attributes["nationality"])
        elif entity_type in ("organisation", "event"):
            values.update(category=attributes["category"])
        elif entity_type == "work":
            values.update(genre=attributes["genre"], noun=WORK_NOUNS[attributes["category"]])
        sentences = [_fix_articles(rng.choice(INTRO_TEMPLATES[entity_type]).format(**values))]
        for alias in self.aliases[entity]:
            sentences.append(rng.choice(ALIAS_TEMPLATES[entity_type]).format(name=self.names[entity], alias=alias))
        return sentences

    def render(self) -> tuple[list[list[str]], list[list[tuple[str, int]]]]:
        """Render every document, and return the sentences per entity and the evidence per fact."""
        rng = self.rng
        names = self.names
        num_facts = len(self.heads)
        # Body sentences per entity as (sentence, fact index or -1 for an attribute).
        bodies: list[list[tuple[str, int]]] = [[] for _ in names]
        # Sentences that state a fact in its tail's document, at most MAX_TAIL_SENTENCES per entity.
        tail_bodies: list[list[tuple[str, int]]] = [[] for _ in names]
        for entity, attributes in enumerate(self.attributes):
            for attribute, value in attributes.items():
                if attribute in INTRO_ATTRIBUTES:
                    continue
                sentence = rng.choice(ATTRIBUTE_TEMPLATES[attribute]).format(h=self._head_reference(entity), value=value)
                bodies[entity].append((sentence, -1))
        for fact in range(num_facts):
            head, tail = self.heads[fact], self.tails[fact]
            key = self._template_key(self.relations[fact], head)
            sentence = rng.choice(HEAD_TEMPLATES[key]).format(h=self._head_reference(head), t=names[tail])
            bodies[head].append((sentence, fact))
            tail_templates = TAIL_TEMPLATES.get(key)
            if (tail_templates and len(tail_bodies[tail]) < MAX_TAIL_SENTENCES
                    and rng.random() < TAIL_SENTENCE_PROBABILITY):
                sentence = rng.choice(tail_templates).format(h=names[head], t=names[tail])
                tail_bodies[tail].append((sentence, fact))

        head_evidence: list[tuple[str, int]] = [("", -1)] * num_facts
        tail_evidence: list[list[tuple[str, int]]] = [[] for _ in range(num_facts)]
        documents: list[list[str]] = []
        for entity, body in enumerate(bodies):
            doc_id = self.ids[entity]
            sentences = self._intro(entity)
            tail_body = tail_bodies[entity]
            body.extend(tail_body)
            rng.shuffle(body)
            for sentence, fact in body:
                if fact >= 0:
                    # Facts have no self-loops, so a fact in this body is either the
                    # entity's own fact or one stated here as its tail.
                    pair = (doc_id, len(sentences))
                    if self.heads[fact] == entity:
                        head_evidence[fact] = pair
                    else:
                        tail_evidence[fact].append(pair)
                sentences.append(sentence)
            documents.append(sentences)
        evidence = [[head_evidence[fact], *tail_evidence[fact]] for fact in range(num_facts)]
        return documents, evidence

    def fill(self, graph: KnowledgeGraph) -> None:
        """Add every entity, fact and document to ``graph`` in bulk."""
        documents, evidence = self.render()
        ids = self.ids
        graph.graph.add_nodes_from(
            (ids[entity], {"name": self.names[entity], "type": self.types[entity],
                           "aliases": self.aliases[entity], "attributes": self.attributes[entity]})
            for entity in range(len(ids)))
        graph.graph.add_edges_from(
            (ids[self.heads[fact]], ids[self.tails[fact]], self.relations[fact], {"evidence": evidence[fact]})
            for fact in range(len(self.heads)))
        for entity, sentences in enumerate(documents):
            graph.add_document(Document(ids[entity], self.names[entity], sentences))
