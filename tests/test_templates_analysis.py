"""Tests of the template analysis and ``erlgym templates``: effect recovery on synthetic runs, edge cases, the CLI.

The synthetic runs sample templates of the bundled frozenlake library uniformly and draw
success with a probability that the test sets, so the true effects are known. Bootstrap
counts are small (20 to 30 resamples) to keep the file fast. That is enough for the
intervals of the true effects, which are far from 0.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from erlgym.erl.cli import EXIT_USAGE, main
from erlgym.templates import SteeredController, Template, load_library
from erlgym.templates.analysis import AnalysisOptions, RunAnalysis, analyze_run
from erlgym.templates.records import RECORDS_FILE, TemplateAnalysisError, load_records
from erlgym.templates.report import write_analysis

ACTIONS = load_library("frozenlake")
REFLECTIONS = load_library("reflection")
TEMPLATES = ACTIONS.all_templates()
TRUE_FEATURE = "t0:strategy=close-gap"
INTERACTION = "t0:strategy=plan-route*t0:opening=locate-goal"


# ---------------------------------------------------------------------- run writers


def record(templates: list[str], success: bool, group: str = "0:0:first_attempt", kind: str = "first_attempt",
           followed: list[dict[str, bool]] | None = None, library: str = "frozenlake",
           reward: float | None = None) -> dict:
    """Return one templates.jsonl record in the format erlgym train writes."""
    return {"step": 0, "kind": kind, "task_seed": 0, "group": group, "library": library, "templates": templates,
            "followed": followed if followed is not None else [{} for _ in templates],
            "actions": ["right"] * len(templates), "final_state": "", "reward": float(success) if reward is None
            else reward, "success": success}


def write_run(run_dir: Path, records: list[dict], reflections: bool = False, copy_actions: bool = True) -> Path:
    """Write a run directory with templates.jsonl and the library copies that erlgym train writes."""
    (run_dir / "templates").mkdir(parents=True, exist_ok=True)
    if copy_actions:
        (run_dir / "templates" / "actions.json").write_text(json.dumps(ACTIONS.to_dict()), encoding="utf-8")
    if reflections:
        (run_dir / "templates" / "reflections.json").write_text(json.dumps(REFLECTIONS.to_dict()), encoding="utf-8")
    (run_dir / "config.json").write_text("{}\n", encoding="utf-8")
    lines = [json.dumps(item) for item in records]
    (run_dir / RECORDS_FILE).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return run_dir


def synthetic_records(count: int, probability: Callable[[list[Template]], float], seed: int,
                      max_turns: int = 1, per_group: int = 4) -> list[dict]:
    """Return ``count`` records of 1 to ``max_turns`` uniform templates, with success drawn with ``probability``.

    Every ``per_group`` consecutive records share a group, as the samples of one task in one step do.
    """
    rng = np.random.default_rng(seed)
    records = []
    for index in range(count):
        turns = int(rng.integers(1, max_turns + 1))
        chosen = [TEMPLATES[int(rng.integers(len(TEMPLATES)))] for _ in range(turns)]
        success = bool(rng.random() < probability(chosen))
        group = index // per_group
        followed = [{"strategy": bool(rng.random() < 0.7)} for _ in chosen]
        keys = [template.key for template in chosen]
        records.append(record(keys, success, group=f"{group // 8}:{group}:first_attempt", followed=followed))
    return records


def close_gap_first(templates: list[Template]) -> float:
    return 0.8 if templates[0].as_dict()["strategy"] == "close-gap" else 0.2


def plan_route_with_goal(templates: list[Template]) -> float:
    chosen = templates[0].as_dict()
    return 0.85 if (chosen["strategy"], chosen["opening"]) == ("plan-route", "locate-goal") else 0.25


def run_main(argv: list[str]) -> tuple[int, str, str]:
    """Run ``erlgym`` and return its exit status, stdout and stderr (whitespace collapsed)."""
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        status = main(argv)
    return status, stdout.getvalue(), " ".join(stderr.getvalue().split())


@pytest.fixture(scope="module")
def position_run(tmp_path_factory) -> tuple[Path, RunAnalysis]:
    """Return a run of 1 to 3 turns per episode, with success 0.8 after close-gap at turn 0 and 0.2 otherwise."""
    run_dir = write_run(tmp_path_factory.mktemp("position-run"), synthetic_records(400, close_gap_first, seed=0,
                                                                                     max_turns=3))
    return run_dir, analyze_run(run_dir, AnalysisOptions(bootstrap=30))


@pytest.fixture(scope="module")
def choice_run(tmp_path_factory) -> tuple[Path, RunAnalysis]:
    """Return a run of single-turn episodes, with success 0.8 after close-gap and 0.2 otherwise, for any opening."""
    run_dir = write_run(tmp_path_factory.mktemp("choice-run"), synthetic_records(400, close_gap_first, seed=1))
    return run_dir, analyze_run(run_dir, AnalysisOptions(bootstrap=30))


# ---------------------------------------------------------------------- effect recovery


def test_lasso_recovers_position_effect(position_run):
    lasso = position_run[1].sections["actions"].lasso
    features = {feature.feature: feature for feature in lasso.features}

    true = features[TRUE_FEATURE]
    assert true.coefficient > 0
    assert true.ci_low > 0
    assert true.selection_frequency >= 0.9

    nulls = [feature for feature in lasso.features if "strategy=close-gap" not in feature.feature]
    assert len(nulls) > 50
    assert sum(feature.coefficient != 0 for feature in nulls) <= 0.05 * len(nulls)
    assert sum(feature.selection_frequency >= 0.5 for feature in nulls) <= 0.05 * len(nulls)


def test_presence_model_recovers_choice_effect(choice_run):
    effects = {effect.feature: effect for effect in choice_run[1].sections["actions"].presence.effects}

    assert effects["strategy=close-gap"].effect > 0
    assert effects["strategy=close-gap"].ci_low > 0
    for name in ("opening=locate-self", "opening=locate-goal", "opening=free"):
        assert effects[name].ci_low < 0 < effects[name].ci_high, name


def test_choice_counts_and_rates(choice_run):
    run_dir, analysis = choice_run
    records = load_records(run_dir)
    with_choice = [item for item in records if "strategy=close-gap" in item.templates[0]]
    effect = next(effect for effect in analysis.sections["actions"].presence.effects
                  if effect.feature == "strategy=close-gap")

    assert effect.trajectories == len(with_choice)
    assert effect.success_rate == pytest.approx(np.mean([item.success for item in with_choice]))


def test_single_turn_features_are_merged(choice_run):
    lasso = choice_run[1].sections["actions"].lasso
    close_gap = next(feature for feature in lasso.features if feature.feature == "strategy=close-gap")

    assert close_gap.aliases == ["t0:strategy=close-gap"]
    assert close_gap.coefficient > 0
    assert close_gap.ci_low > 0


@pytest.mark.parametrize("target", ["success", "reward"])
def test_lasso_recovers_interaction(tmp_path, target):
    run_dir = write_run(tmp_path, synthetic_records(480, plan_route_with_goal, seed=2))
    lasso = analyze_run(run_dir, AnalysisOptions(bootstrap=20, target=target)).sections["actions"].lasso

    assert lasso.selected[0].feature == INTERACTION
    assert lasso.selected[0].coefficient > 0
    assert lasso.selected[0].ci_low > 0
    assert lasso.selected[0].selection_frequency >= 0.9


def test_analysis_is_deterministic(tmp_path):
    run_dir = write_run(tmp_path, synthetic_records(80, close_gap_first, seed=3, max_turns=2))
    first = write_analysis(analyze_run(run_dir, AnalysisOptions(bootstrap=10, seed=5)), tmp_path / "first")
    second = write_analysis(analyze_run(run_dir, AnalysisOptions(bootstrap=10, seed=5)), tmp_path / "second")

    assert first["analysis"].read_text() == second["analysis"].read_text()


def test_no_effect_is_stated_plainly(tmp_path):
    run_dir = write_run(tmp_path, synthetic_records(60, lambda templates: 0.5, seed=4))
    analysis = analyze_run(run_dir, AnalysisOptions(bootstrap=20))
    files = write_analysis(analysis, tmp_path / "out")

    assert any("No choice effect's 95% interval excludes 0" in note for note in analysis.sections["actions"].notes)
    assert "No choice effect's 95% interval excludes 0" in files["report"].read_text()


# ---------------------------------------------------------------------- controllability and steering


def test_controllability_counts(tmp_path):
    records = [
        record(["strategy=close-gap,opening=locate-self", "strategy=close-gap,opening=free"], True,
               followed=[{"strategy": True, "opening": False}, {"strategy": False}]),
        record(["strategy=close-gap,opening=locate-self"], False, followed=[{"strategy": True, "opening": True}]),
        record(["strategy=plan-route,opening=free"], False, followed=[{"strategy": True}]),
    ]
    analysis = analyze_run(write_run(tmp_path, records), AnalysisOptions(bootstrap=0))
    table = {row.dimension: row for row in analysis.sections["actions"].controllability}
    strategy = {row.choice: row for row in table["strategy"].choices}
    opening = {row.choice: row for row in table["opening"].choices}

    assert (strategy["close-gap"].turns, strategy["close-gap"].turns_checked) == (3, 3)
    assert strategy["close-gap"].turns_followed == 2
    assert strategy["close-gap"].follow_rate == pytest.approx(2 / 3)
    assert (strategy["plan-route"].turns_checked, strategy["plan-route"].turns_followed) == (1, 1)
    assert strategy["follow-edge"].follow_rate is None
    assert (table["strategy"].turns_checked, table["strategy"].turns_followed) == (4, 3)
    assert (opening["locate-self"].turns_checked, opening["locate-self"].turns_followed) == (2, 1)
    assert opening["free"].has_check is False
    assert opening["free"].turns == 2
    assert opening["free"].turns_checked == 0


def test_steering_weights_favour_good_choice(choice_run, tmp_path):
    files = write_analysis(choice_run[1], tmp_path)
    steering = json.loads(files["steering_actions"].read_text())
    controller = SteeredController.from_file(ACTIONS, files["steering_actions"])
    probabilities = controller.probabilities(0)
    close_gap = [template.as_dict()["strategy"] == "close-gap" for template in controller.templates]

    assert steering["library"] == "frozenlake"
    assert steering["temperature"] == 0.5
    assert steering["target"] == "success"
    assert steering["fitted_on"] == str(choice_run[0])
    assert steering["trajectories"] == 400
    assert steering["source"] == "lasso"
    assert not any(">" in name for name in steering["weights"])
    assert probabilities[close_gap].sum() > 0.5


def test_steering_weights_exclude_sequences(position_run, tmp_path):
    files = write_analysis(position_run[1], tmp_path)
    weights = json.loads(files["steering_actions"].read_text())["weights"]

    assert TRUE_FEATURE in weights
    assert not any(">" in name for name in weights)


# ---------------------------------------------------------------------- edge cases


def test_single_class_outcome_writes_zero_weights(tmp_path):
    records = [record([TEMPLATES[index % len(TEMPLATES)].key], True, group=f"0:{index}:first_attempt")
               for index in range(30)]
    analysis = analyze_run(write_run(tmp_path, records), AnalysisOptions(bootstrap=10))
    section = analysis.sections["actions"]
    files = write_analysis(analysis, tmp_path / "out")
    controller = SteeredController.from_file(ACTIONS, files["steering_actions"])

    assert section.lasso.fitted is False
    assert section.presence.fitted is False
    assert any("All 30 trajectories succeeded" in note for note in section.notes)
    assert "All 30 trajectories succeeded" in files["report"].read_text()
    assert set(section.steering["weights"].values()) == {0.0}
    assert np.allclose(controller.probabilities(0), 1 / len(TEMPLATES))


def test_few_trajectories_fit_with_note(tmp_path):
    records = [record([TEMPLATES[index].key], index % 2 == 0, group=f"0:{index}:first_attempt") for index in range(10)]
    section = analyze_run(write_run(tmp_path, records), AnalysisOptions(bootstrap=10)).sections["actions"]

    assert section.presence.fitted
    assert any("intervals are unreliable" in note for note in section.notes)


def test_one_trajectory_raises(tmp_path):
    run_dir = write_run(tmp_path, [record([TEMPLATES[0].key], True)])

    with pytest.raises(TemplateAnalysisError, match="at least 2"):
        analyze_run(run_dir)


def test_corrupt_line_names_line_number(tmp_path):
    run_dir = write_run(tmp_path, synthetic_records(3, close_gap_first, seed=0))
    with (run_dir / RECORDS_FILE).open("a", encoding="utf-8") as file:
        file.write('{"step": 1, "kind": "first_att\n')

    with pytest.raises(TemplateAnalysisError, match=r"templates\.jsonl, line 4: invalid JSON"):
        analyze_run(run_dir)


def test_invalid_field_names_line_number(tmp_path):
    records = synthetic_records(3, close_gap_first, seed=0)
    records[1]["success"] = "yes"
    run_dir = write_run(tmp_path, records)

    with pytest.raises(TemplateAnalysisError, match="line 2: 'success' must be true or false"):
        analyze_run(run_dir)


def test_unknown_template_names_line_number(tmp_path):
    records = synthetic_records(3, close_gap_first, seed=0)
    records[2]["templates"] = ["strategy=fly,opening=free"]
    run_dir = write_run(tmp_path, records)

    with pytest.raises(TemplateAnalysisError, match="line 3: unknown choice 'fly'"):
        analyze_run(run_dir)


def test_missing_records_file(tmp_path):
    with pytest.raises(TemplateAnalysisError, match=r"templates\.jsonl not found.*--templates"):
        analyze_run(tmp_path)


def test_missing_run_directory(tmp_path):
    with pytest.raises(TemplateAnalysisError, match="run directory .* not found"):
        analyze_run(tmp_path / "absent")


def test_empty_records_file(tmp_path):
    (tmp_path / RECORDS_FILE).write_text("\n", encoding="utf-8")

    with pytest.raises(TemplateAnalysisError, match="is empty"):
        analyze_run(tmp_path)


def test_line_separator_in_text_is_kept(tmp_path):
    records = synthetic_records(3, close_gap_first, seed=0)
    records[0]["final_state"] = "row 1\u2028row 2"
    run_dir = write_run(tmp_path, [])
    lines = [json.dumps(item, ensure_ascii=False) for item in records]
    (run_dir / RECORDS_FILE).write_text("\n".join(lines) + "\n", encoding="utf-8")

    loaded = load_records(run_dir)

    assert len(loaded) == 3
    assert loaded[0].final_state == "row 1\u2028row 2"
    assert loaded[2].line == 3


def test_missing_library_copy_uses_bundled(tmp_path):
    run_dir = write_run(tmp_path, synthetic_records(20, close_gap_first, seed=0), copy_actions=False)
    section = analyze_run(run_dir, AnalysisOptions(bootstrap=0)).sections["actions"]

    assert section.library == "frozenlake"
    assert section.library_source.endswith("frozenlake.json")


def test_unknown_library_without_copy_raises(tmp_path):
    records = [record([TEMPLATES[0].key], True, library="mine"), record([TEMPLATES[1].key], False, library="mine")]
    run_dir = write_run(tmp_path, records, copy_actions=False)

    with pytest.raises(TemplateAnalysisError, match=r"actions\.json not found"):
        analyze_run(run_dir)


def test_invalid_options_raise():
    with pytest.raises(TemplateAnalysisError, match="invalid target"):
        AnalysisOptions(target="accuracy").validate()
    with pytest.raises(TemplateAnalysisError, match="min_count must be an integer >= 1"):
        AnalysisOptions(min_count=0).validate()


def test_reflections_analysed_with_their_library(tmp_path):
    actions = synthetic_records(40, close_gap_first, seed=6)
    rng = np.random.default_rng(6)
    reflection_templates = REFLECTIONS.all_templates()
    reflections = [record([reflection_templates[int(rng.integers(len(reflection_templates)))].key],
                          bool(rng.random() < 0.5), group=f"0:{index // 4}:reflection", kind="reflection",
                          library="reflection") for index in range(40)]
    run_dir = write_run(tmp_path, actions + reflections, reflections=True)
    analysis = analyze_run(run_dir, AnalysisOptions(bootstrap=10))
    files = write_analysis(analysis, tmp_path / "out")

    assert analysis.sections["actions"].trajectories == 40
    assert analysis.sections["reflections"].trajectories == 40
    assert analysis.sections["reflections"].library == "reflection"
    assert "## Reflections (reflection)" in files["report"].read_text()
    assert SteeredController.from_file(REFLECTIONS, files["steering_reflections"]).library.name == "reflection"


# ---------------------------------------------------------------------- command line


def test_cli_analyze_writes_outputs(tmp_path):
    run_dir = write_run(tmp_path / "run", synthetic_records(120, close_gap_first, seed=7))

    status, stdout, stderr = run_main(["templates", "analyze", str(run_dir), "--bootstrap", "10"])

    out = run_dir / "templates-analysis"
    assert status == 0
    assert "Action trajectories" in stdout
    assert "120 trajectories" in stdout
    for name in ("report.md", "analysis.json", "steering.json"):
        assert (out / name).is_file(), name
        assert str(out / name) in stderr
    assert json.loads((out / "analysis.json").read_text())["options"]["bootstrap"] == 10


def test_cli_analyze_missing_run_fails(tmp_path):
    status, _, stderr = run_main(["templates", "analyze", str(tmp_path)])

    assert status == EXIT_USAGE
    assert "templates.jsonl not found" in stderr


def test_cli_check_bad_file_fails(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"name": "bad", "dimensions": [{"id": "Strategy", "choices": []}]}), encoding="utf-8")

    status, _, stderr = run_main(["templates", "check", str(bad)])

    assert status == EXIT_USAGE
    assert "error:" in stderr
    assert "invalid id 'Strategy'" in stderr


def test_cli_check_good_file(tmp_path):
    good = tmp_path / "good.json"
    good.write_text(json.dumps(ACTIONS.to_dict()), encoding="utf-8")

    status, stdout, _ = run_main(["templates", "check", str(good)])

    assert status == 0
    assert "OK" in stdout
    assert "2 dimensions, 7 choices, 12 templates" in stdout


def test_cli_list_and_show():
    list_status, list_output, _ = run_main(["templates", "list"])
    show_status, show_output, _ = run_main(["templates", "show", "frozenlake", "--template",
                                      "strategy=close-gap,opening=locate-self"])

    assert list_status == 0
    assert "frozenlake" in list_output
    assert "reflection" in list_output
    assert show_status == 0
    assert "close-gap" in show_output
    assert ACTIONS.prefill(ACTIONS.parse("strategy=close-gap,opening=locate-self")) in show_output


def test_cli_show_unknown_template_fails():
    status, _, stderr = run_main(["templates", "show", "frozenlake", "--template", "strategy=fly,opening=free"])

    assert status == EXIT_USAGE
    assert "unknown choice 'fly'" in stderr


def test_cli_analyze_out_is_file_fails(tmp_path):
    run_dir = write_run(tmp_path / "run", synthetic_records(20, close_gap_first, seed=8))
    (tmp_path / "taken").write_text("", encoding="utf-8")

    status, _, stderr = run_main(["templates", "analyze", str(run_dir), "--out", str(tmp_path / "taken")])

    assert status == EXIT_USAGE
    assert "is a file" in stderr


def test_steering_max_position_reaches_the_controller(tmp_path):
    from erlgym.templates import SteeredController, load_library

    path = tmp_path / "steering.json"
    library = load_library("frozenlake")
    path.write_text(json.dumps({"library": "frozenlake", "temperature": 0.5, "max_position": 2,
                                "weights": {"t2:strategy=plan-route": 3.0}}))
    controller = SteeredController.from_file(library, path)
    assert controller.max_position == 2
    assert controller.probabilities(7).tolist() == controller.probabilities(2).tolist()
