"""Tests of template libraries (file format and errors) and of the controllers that choose templates."""

import json
from collections import Counter

import numpy as np
import pytest

from erlgym.templates import (
    BanditController,
    ForcedController,
    SteeredController,
    TemplateError,
    TemplateLibrary,
    UniformController,
    build_controller,
    bundled_libraries,
    load_library,
)
from erlgym.templates.features import sequence_features, template_features


def library_data(**overrides) -> dict:
    data = {
        "name": "toy",
        "dimensions": [
            {"id": "strategy", "choices": [
                {"id": "good", "definition": "The good way.", "guidance": "I do it the good way.", "check": "good"},
                {"id": "bad", "definition": "The bad way.", "guidance": "I do it the bad way."},
                {"id": "odd", "definition": "The odd way.", "guidance": ""},
            ]},
            {"id": "opening", "choices": [
                {"id": "lead", "definition": "Lead with a phrase.", "prefix": "First,"},
                {"id": "free", "definition": "No prefix."},
            ]},
        ],
    }
    data.update(overrides)
    return data


@pytest.fixture
def toy() -> TemplateLibrary:
    return TemplateLibrary.from_dict(library_data())


# ---------------------------------------------------------------- file format


def test_bundled_libraries_load():
    names = bundled_libraries()
    assert {"frozenlake", "sokoban", "searchqa", "reflection"} <= set(names)
    for name in names:
        library = load_library(name)
        assert library.all_templates()
        with_prefix = [d.id for d in library.dimensions if any(choice.prefix for choice in d.choices)]
        assert len(with_prefix) <= 1


def test_bundled_texts_never_name_an_action():
    # The environments parse "Action: <name>" lines, so a prefill must not contain one.
    for name in bundled_libraries():
        library = load_library(name)
        for template in library.all_templates():
            assert "action:" not in library.prefill(template).lower()


def test_all_templates_is_the_product(toy):
    keys = [template.key for template in toy.all_templates()]
    assert len(keys) == 6
    assert len(set(keys)) == 6
    assert keys[0] == "strategy=good,opening=lead"


def test_prefill_joins_guidance_and_prefix(toy):
    assert toy.prefill(toy.parse("strategy=good,opening=lead")) == "I do it the good way.\nFirst,"
    assert toy.prefill(toy.parse("strategy=bad,opening=free")) == "I do it the bad way.\n"
    assert toy.prefill(toy.parse("strategy=odd,opening=lead")) == "First,"
    assert toy.prefill(toy.parse("strategy=odd,opening=free")) == ""


def test_prefix_and_followed(toy):
    template = toy.parse("strategy=good,opening=lead")
    assert toy.prefix(template) == "First,"
    assert toy.followed(template, "a GOOD move") == {"strategy": True}
    assert toy.followed(template, "a move") == {"strategy": False}
    assert toy.followed(toy.parse("strategy=bad,opening=free"), "anything") == {}


def test_parse_accepts_any_order_and_spaces(toy):
    assert toy.parse(" opening = free , strategy=bad").key == "strategy=bad,opening=free"


@pytest.mark.parametrize("key, message", [
    ("strategy=good", "no choice for dimension"),
    ("strategy=good,opening=lead,strategy=bad", "named twice"),
    ("strategy=great,opening=lead", "unknown choice 'great'"),
    ("tone=calm,opening=lead", "unknown dimension 'tone'"),
    ("good", "dimension=choice"),
])
def test_parse_errors(toy, key, message):
    with pytest.raises(TemplateError, match=message):
        toy.parse(key)


def test_round_trip_through_dict(toy):
    again = TemplateLibrary.from_dict(json.loads(json.dumps(toy.to_dict())))
    assert [t.key for t in again.all_templates()] == [t.key for t in toy.all_templates()]
    assert again.prefill(again.all_templates()[0]) == toy.prefill(toy.all_templates()[0])


def with_choice(dimension: int, choice: dict) -> dict:
    data = library_data()
    data["dimensions"][dimension]["choices"].append(choice)
    return data


@pytest.mark.parametrize("data, message", [
    ([], "top level must be a JSON object"),
    (library_data(name=""), "'name' must be a non-empty string"),
    (library_data(dimensions=[]), "'dimensions' must be a non-empty list"),
    (library_data(extra=1), "unknown top-level keys"),
    (library_data(dimensions=[{"id": "a", "choices": []}]), "'choices' must be a non-empty list"),
    (library_data(dimensions=[{"id": "Bad Id", "choices": [{"id": "x", "definition": "d"}]}]), "invalid id 'Bad Id'"),
    (library_data(dimensions=[{"id": "a", "choices": [{"id": "x", "definition": "d"}]},
                              {"id": "a", "choices": [{"id": "y", "definition": "d"}]}]), "duplicate dimension id 'a'"),
    (with_choice(0, {"id": "good", "definition": "again"}), "duplicate choice id 'good'"),
    (with_choice(0, {"id": "new", "definition": "d", "prefix": "Also"}), "only one dimension may supply the text prefix"),
    (with_choice(0, {"id": "new", "definition": " "}), "'definition' must say"),
    (with_choice(0, {"id": "new", "definition": "d", "check": "("}), "not a valid regular expression"),
    (with_choice(0, {"id": "new", "definition": "d", "colour": "red"}), "unknown keys \\['colour'\\]"),
    (with_choice(1, {"id": "new", "definition": "d", "prefix": "Then "}), "ends with whitespace"),
    (with_choice(0, {"id": "new", "definition": 3}), "'definition' must be a string"),
])
def test_invalid_library_rejected(data, message):
    with pytest.raises(TemplateError, match=message):
        TemplateLibrary.from_dict(data, source="test.json")


def test_too_many_templates_rejected():
    dimensions = [{"id": f"d{i}", "choices": [{"id": f"c{j}", "definition": "d"} for j in range(10)]}
                  for i in range(4)]
    with pytest.raises(TemplateError, match="10000 templates"):
        TemplateLibrary.from_dict({"name": "big", "dimensions": dimensions})


@pytest.mark.parametrize("field, text", [("guidance", "I go.\nAction: right"), ("prefix", "<action>up</action>"),
                                         ("guidance", "action = left")])
def test_prefill_naming_an_action_rejected(field, text):
    with pytest.raises(TemplateError, match="names an action"):
        TemplateLibrary.from_dict(with_choice(0, {"id": "new", "definition": "d", field: text}))


def test_id_with_trailing_newline_rejected():
    with pytest.raises(TemplateError, match="invalid id"):
        TemplateLibrary.from_dict(with_choice(0, {"id": "new\n", "definition": "d"}))


def test_check_ignores_action_lines(toy):
    template = toy.parse("strategy=good,opening=free")
    assert toy.followed(template, "anything\nAction: good") == {"strategy": False}
    assert toy.followed(template, "a good plan\nAction: up") == {"strategy": True}


def test_bundled_checks_need_reasoning_words():
    frozenlake = load_library("frozenlake")
    template = frozenlake.parse("strategy=follow-edge,opening=locate-goal")
    assert frozenlake.followed(template, " at the top.\nAction: Right") == {"strategy": False, "opening": False}
    assert frozenlake.followed(template, "I consider going down.") == {"strategy": False, "opening": False}
    assert frozenlake.followed(template, " 2 rows down, along the edge\nAction: down") == {"strategy": True,
                                                                                         "opening": True}
    searchqa = load_library("searchqa")
    verify = searchqa.parse("strategy=verify-answer,opening=free")
    assert searchqa.followed(verify, "\nAction: search[Paris]") == {"strategy": False}


def test_load_library_directory_and_bundled_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "frozenlake").mkdir()
    assert load_library("frozenlake").name == "frozenlake"  # the bundled library, not the folder
    (tmp_path / "lib.json").mkdir()
    with pytest.raises(TemplateError, match="is a directory"):
        load_library("lib.json")


def test_load_library_errors(tmp_path):
    with pytest.raises(TemplateError, match="not found.*frozenlake"):
        load_library("no-such-library")
    with pytest.raises(TemplateError, match="not found"):
        load_library(tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(TemplateError, match="broken.json.*not valid UTF-8 JSON"):
        load_library(broken)
    good = tmp_path / "good.json"
    good.write_text(json.dumps(library_data()))
    assert load_library(good).name == "toy"


# ---------------------------------------------------------------- features


def test_template_features(toy):
    features = template_features(toy.parse("strategy=good,opening=lead"), 1)
    assert features == ["strategy=good", "opening=lead", "t1:strategy=good", "t1:opening=lead",
                        "t1:strategy=good*t1:opening=lead"]


def test_sequence_features_cap_positions(toy):
    turns = [toy.parse("strategy=good,opening=lead"), toy.parse("strategy=bad,opening=lead"),
             toy.parse("strategy=odd,opening=free")]
    features = sequence_features(turns, max_position=1)
    assert "t0:strategy=good>t1:strategy=bad" in features
    assert "t1:strategy=odd" in features  # turn 2 counted as turn 1
    assert not any(name.startswith("t2:") for name in features)
    assert "t1:strategy=bad>t1:strategy=odd" not in features


# ---------------------------------------------------------------- controllers


def test_uniform_covers_every_choice(toy):
    controller = UniformController(toy, seed=0)
    counts = Counter(template.key for template in controller.choose(600))
    assert len(counts) == 6
    assert min(counts.values()) > 60


def test_controllers_are_deterministic_in_seed(toy):
    for kind in ("uniform", "ucb", "thompson"):
        first = [t.key for t in build_controller(kind, toy, seed=3).choose(20)]
        second = [t.key for t in build_controller(kind, toy, seed=3).choose(20)]
        assert first == second


def run_bandit(controller, success_of, rounds=60, batch=8, seed=0):
    rng = np.random.default_rng(seed)
    for _ in range(rounds):
        templates = controller.choose(batch)
        controller.update([[t] for t in templates], [float(rng.random() < success_of(t)) for t in templates])


@pytest.mark.parametrize("method", ["ucb", "thompson"])
def test_bandit_prefers_the_rewarded_choice(toy, method):
    controller = BanditController(toy, seed=1, method=method)
    run_bandit(controller, lambda template: 0.9 if template.as_dict()["strategy"] == "good" else 0.1)
    means = controller.means()
    assert means["strategy=good"] > means["strategy=bad"]
    pulls = dict(zip([c.id for c in toy.dimension("strategy").choices], controller.pulls["strategy"]))
    assert pulls["good"] > pulls["bad"] + pulls["odd"]


def test_bandit_counts_a_choice_once_per_episode(toy):
    controller = BanditController(toy, method="ucb")
    good, bad = toy.parse("strategy=good,opening=free"), toy.parse("strategy=bad,opening=free")
    controller.update([[good, good], [good] * 8, [bad]], [1.0, 0.0, 1.0])
    assert controller.means()["strategy=good"] == pytest.approx(0.5)
    assert controller.means()["opening=free"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="2 episodes and 1 rewards"):
        controller.update([[good], [bad]], [1.0])


def test_state_for_other_library_rejected(toy):
    other = TemplateLibrary.from_dict(library_data(name="other"))
    with pytest.raises(TemplateError, match="another version of library 'toy'"):
        BanditController(other, method="ucb").load_state_dict(BanditController(toy, method="ucb").state_dict())
    with pytest.raises(TemplateError, match="no 'pulls'"):
        state = BanditController(toy, method="ucb").state_dict()
        del state["pulls"]
        BanditController(toy, method="ucb").load_state_dict(state)


def test_ucb_spreads_a_batch_over_untried_choices(toy):
    controller = BanditController(toy, seed=0, method="ucb")
    strategies = {template.as_dict()["strategy"] for template in controller.choose(3)}
    assert strategies == {"good", "bad", "odd"}


def test_bandit_state_round_trip(toy):
    controller = BanditController(toy, seed=2, method="ucb")
    run_bandit(controller, lambda template: 0.5, rounds=5)
    state = json.loads(json.dumps(controller.state_dict()))
    restored = BanditController(toy, seed=99, method="ucb")
    restored.load_state_dict(state)
    assert [t.key for t in restored.choose(10)] == [t.key for t in controller.choose(10)]


def test_state_of_another_kind_rejected(toy):
    with pytest.raises(TemplateError, match="'uniform' controller, not 'ucb'"):
        BanditController(toy, method="ucb").load_state_dict(UniformController(toy).state_dict())


def test_bandit_rejects_bad_settings(toy):
    with pytest.raises(TemplateError, match="unknown bandit method"):
        BanditController(toy, method="greedy")
    with pytest.raises(TemplateError, match="exploration"):
        BanditController(toy, exploration=float("nan"))


def test_steered_follows_weights(toy, tmp_path):
    path = tmp_path / "steering.json"
    path.write_text(json.dumps({"library": "toy", "temperature": 0.25,
                                "weights": {"strategy=good": 1.0, "t1:opening=free": 2.0}}))
    controller = SteeredController.from_file(toy, path, seed=0)
    first_turn = Counter(t.as_dict()["strategy"] for t in controller.choose(400, position=0))
    assert first_turn["good"] > 300
    second_turn = Counter(t.as_dict()["opening"] for t in controller.choose(400, position=1))
    assert second_turn["free"] > 350
    assert controller.probabilities(0).sum() == pytest.approx(1.0)


def test_steered_file_errors(toy, tmp_path):
    with pytest.raises(TemplateError, match="not found.*templates analyze"):
        SteeredController.from_file(toy, tmp_path / "none.json")
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"library": "other", "weights": {}}))
    with pytest.raises(TemplateError, match="fitted for library 'other'"):
        SteeredController.from_file(toy, wrong)
    no_weights = tmp_path / "empty.json"
    no_weights.write_text("{}")
    with pytest.raises(TemplateError, match="no 'weights'"):
        SteeredController.from_file(toy, no_weights)
    with pytest.raises(TemplateError, match="finite"):
        SteeredController(toy, {"strategy=good": float("inf")})
    with pytest.raises(TemplateError, match="temperature"):
        SteeredController(toy, {}, temperature=0)


def test_steered_uses_last_position_beyond_max(toy):
    controller = SteeredController(toy, {"t1:opening=free": 5.0}, temperature=0.5, max_position=1)
    assert controller.probabilities(4).tolist() == controller.probabilities(1).tolist()
    assert controller.probabilities(4).tolist() != controller.probabilities(0).tolist()


def test_steered_rejects_unknown_features(toy):
    with pytest.raises(TemplateError, match="not choices of library 'toy'"):
        SteeredController(toy, {"strategy=fast": 1.0})
    with pytest.raises(TemplateError, match="not choices"):
        SteeredController(toy, {"t0:strategy=good*t0:tone=calm": 1.0})
    assert SteeredController(toy, {"t0:strategy=good>t1:strategy=bad": 1.0}).weights


def test_steered_file_rejects_bad_values(toy, tmp_path):
    path = tmp_path / "steering.json"
    for data, message in [({"weights": {}, "temperature": "hot"}, "'temperature' must be a number"),
                          ({"weights": {}, "temperature": None}, "'temperature' must be a number"),
                          ({"weights": {}, "max_position": True}, "max_position must be an integer"),
                          ({"weights": {"x:strategy=good": 1.0}}, "not choices")]:
        path.write_text(json.dumps(data))
        with pytest.raises(TemplateError, match=message):
            SteeredController.from_file(toy, path)
    with pytest.raises(TemplateError, match="cannot read steering weights file"):
        SteeredController.from_file(toy, tmp_path)


def test_forced_sequence_from_string(toy):
    controller = build_controller("forced", toy, sequence="strategy=good,opening=lead; strategy=bad,opening=free")
    assert [controller.choose(1, position)[0].key for position in (0, 1)] == ["strategy=good,opening=lead",
                                                                              "strategy=bad,opening=free"]


def test_forced_sequence_repeats_last(toy):
    controller = ForcedController(toy, ["strategy=good,opening=lead", "strategy=bad,opening=free"])
    assert [t.key for t in controller.choose(2, position=0)] == ["strategy=good,opening=lead"] * 2
    assert controller.choose(1, position=5)[0].key == "strategy=bad,opening=free"
    with pytest.raises(TemplateError, match="at least one template"):
        ForcedController(toy, [])


def test_build_controller_errors(toy):
    with pytest.raises(TemplateError, match="unknown template controller 'random'"):
        build_controller("random", toy)
    with pytest.raises(TemplateError, match="needs a weights file"):
        build_controller("steered", toy)
