"""Tests of loading run directories and writing the comparison report."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest

from erlgym.eval.report import RunDataError, load_run, write_report
from erlgym.eval.runs import RunResult

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CURVE_FILES = ["curves_steps.png", "curves_tokens.png", "curves_time.png"]
EPISODES = 64


def erl_step(step: int) -> dict:
    return {
        "step": step,
        "time/step_s": 100.0 + step,
        "rollout/first_success_rate": 0.25 + 0.05 * step,
        "erl/success_after_reflection": 0.5 + 0.05 * step,
        "tokens/first_attempt_tokens": 600.0,
        "tokens/reflection_tokens": 200.0,
        "tokens/retry_tokens": 400.0,
        "tokens/generated_tokens": 1200.0,
    }


def grpo_step(step: int) -> dict:
    return {
        "step": step,
        "time/step_s": 60.0,
        "rollout/first_success_rate": 0.2,
        "tokens/first_attempt_tokens": 500.0,
        "tokens/generated_tokens": 500.0,
    }


def write_run(run_dir: Path, steps: list[dict], episode_success: list[int], invalid_rate: float = 0.0) -> Path:
    """Write metrics.jsonl and eval.json the way `erlgym train` and `erlgym eval` do."""
    run_dir.mkdir(parents=True)
    lines = [json.dumps(step) for step in steps]
    (run_dir / "metrics.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    evaluation = {
        "env": "erlgym/FrozenLake-v0",
        "seeds": [1000000, 1000000 + len(episode_success) - 1],
        "episodes": len(episode_success),
        "eval/success_rate": float(np.mean(episode_success)),
        "eval/invalid_action_rate": invalid_rate,
        "episode_success": episode_success,
    }
    (run_dir / "eval.json").write_text(json.dumps(evaluation), encoding="utf-8")
    return run_dir


def successes(solved: int) -> list[int]:
    return [1] * solved + [0] * (EPISODES - solved)


@pytest.fixture
def runs(tmp_path) -> list[RunResult]:
    """Two methods x two seeds: ERL solves 56 and 58 of 64 held-out episodes, GRPO 6 and 8."""
    layout = [
        ("erl", 0, [erl_step(step) for step in range(1, 5)], 56),
        ("erl", 1, [erl_step(step) for step in range(1, 5)], 58),
        ("grpo", 0, [grpo_step(step) for step in range(1, 4)], 6),
        ("grpo", 1, [grpo_step(step) for step in range(1, 4)], 8),
    ]
    loaded = []
    for method, seed, steps, solved in layout:
        run_dir = write_run(tmp_path / "runs" / f"{method}-{seed}", steps, successes(solved), invalid_rate=0.01 * seed)
        loaded.append(load_run(method, seed, run_dir))
    return loaded


def test_load_run_reads_both_files(runs):
    erl = runs[0]

    assert erl.steps == 4
    assert erl.held_out_success == pytest.approx(56 / 64)
    assert erl.tokens_by_kind() == {"first_attempt": 2400.0, "reflection": 800.0, "retry": 1600.0, "generated": 4800.0}
    assert erl.wall_time_s == pytest.approx(410.0)


def test_load_run_counts_missing_token_keys_as_zero(runs):
    grpo = runs[2]

    assert grpo.tokens_by_kind() == {"first_attempt": 1500.0, "reflection": 0.0, "retry": 0.0, "generated": 1500.0}
    assert not grpo.has_metric("erl/success_after_reflection")


def test_load_run_tolerates_sparse_metrics(tmp_path):
    run_dir = write_run(tmp_path / "sparse", [{"tokens/first_attempt_tokens": 10}, {}], successes(3))

    run = load_run("erl", 0, run_dir)

    assert run.step_numbers.tolist() == [1.0, 2.0]
    assert run.tokens_by_kind()["generated"] == 10.0
    assert run.wall_time_s == 0.0
    assert np.isnan(run.series("rollout/first_success_rate")).all()


def test_report_lists_methods_and_intervals(tmp_path, runs):
    report_path = write_report(
        tmp_path / "report", runs, "FrozenLake: ERL vs GRPO", command="erlgym report runs/*", resamples=2000
    )
    report = report_path.read_text(encoding="utf-8")

    assert report_path == tmp_path / "report" / "report.md"
    assert report.startswith("# FrozenLake: ERL vs GRPO\n")
    assert "erlgym report runs/*" in report
    assert "| erl | 89.1% |" in report
    assert "| grpo | 10.9% |" in report
    assert "95% CI" in report
    assert "erl \N{MINUS SIGN} grpo: +78.1 points (95% CI" in report
    assert "significant at 95%: the interval excludes 0." in report
    assert "Seeds: 0, 1." in report


def test_report_shows_reflection_and_budget(tmp_path, runs):
    report = write_report(tmp_path / "report", runs, "t", resamples=500, last_steps=2).read_text(encoding="utf-8")

    assert "## Success after reflection (training)" in report
    assert "measured during training with the reflection in context" in report.lower()
    # ERL success after reflection over steps 3 and 4: (0.65 + 0.70) / 2.
    assert "| erl | 67.5% | 42.5% |" in report
    assert "| erl | 2,400 | 800 | 1,600 | 4,800 | 4 | 410 s (6.8 min) |" in report
    assert "| grpo | 1,500 | 0 | 0 | 1,500 | 3 | 180 s (3.0 min) |" in report
    for name in CURVE_FILES:
        assert f"]({name})" in report


def test_report_without_difference_says_not_significant(tmp_path):
    same = successes(20)
    runs = [
        load_run("erl", seed, write_run(tmp_path / f"erl-{seed}", [erl_step(1)], same)) for seed in (0, 1)
    ] + [load_run("grpo", seed, write_run(tmp_path / f"grpo-{seed}", [grpo_step(1)], same)) for seed in (0, 1)]

    report = write_report(tmp_path / "report", runs, "t", resamples=500).read_text(encoding="utf-8")

    assert "erl \N{MINUS SIGN} grpo: +0.0 points" in report
    assert "not significant: the interval includes 0." in report


def test_report_writes_valid_pngs(tmp_path, runs):
    out_dir = tmp_path / "report"

    write_report(out_dir, runs, "t", resamples=200, smoothing_window=2)

    for name in CURVE_FILES:
        path = out_dir / name
        assert path.read_bytes()[:8] == PNG_SIGNATURE
        image = matplotlib.image.imread(path)
        assert image.ndim == 3
        assert image.shape[0] > 100
        assert image.shape[1] > 100


def test_results_csv_has_one_row_per_run(tmp_path, runs):
    out_dir = tmp_path / "report"

    write_report(out_dir, runs, "t", resamples=200)

    with (out_dir / "results.csv").open(newline="", encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    assert [(row["method"], row["seed"]) for row in rows] == [("erl", "0"), ("erl", "1"), ("grpo", "0"), ("grpo", "1")]
    erl_seed_1 = rows[1]
    assert erl_seed_1["run_dir"] == str(runs[1].run_dir)
    assert float(erl_seed_1["held_out_success"]) == pytest.approx(58 / 64)
    assert float(erl_seed_1["invalid_action_rate"]) == pytest.approx(0.01)
    assert int(erl_seed_1["episodes"]) == 64
    assert int(erl_seed_1["steps"]) == 4
    assert int(erl_seed_1["first_attempt_tokens"]) == 2400
    assert int(erl_seed_1["reflection_tokens"]) == 800
    assert int(erl_seed_1["retry_tokens"]) == 1600
    assert int(erl_seed_1["generated_tokens"]) == 4800
    assert float(erl_seed_1["wall_time_s"]) == pytest.approx(410.0)
    grpo_seed_0 = rows[2]
    assert int(grpo_seed_0["reflection_tokens"]) == 0
    assert int(grpo_seed_0["steps"]) == 3


def test_results_json_matches_report(tmp_path, runs):
    out_dir = tmp_path / "report"

    write_report(out_dir, runs, "t", resamples=300)

    results = json.loads((out_dir / "results.json").read_text(encoding="utf-8"))
    methods = {summary["method"]: summary for summary in results["methods"]}
    assert list(methods) == ["grpo", "erl"]
    assert methods["erl"]["held_out_success"]["mean"] == pytest.approx(114 / 128)
    assert methods["grpo"]["after_reflection"] is None
    comparison = results["comparisons"][0]
    assert comparison["method"] == "erl"
    assert comparison["excludes_zero"] is True
    assert comparison["difference"]["low"] > 0
    assert len(results["runs"]) == 4
    assert results["runs"][0]["metrics"][3]["step"] == 4
    assert results["settings"]["resamples"] == 300


def test_different_evaluation_settings_are_flagged(tmp_path, runs):
    other = write_run(tmp_path / "erl-2", [erl_step(1)], successes(10))
    evaluation = json.loads((other / "eval.json").read_text(encoding="utf-8"))
    evaluation["env"] = "erlgym/Sokoban-v0"
    (other / "eval.json").write_text(json.dumps(evaluation), encoding="utf-8")

    report = write_report(tmp_path / "report", [*runs, load_run("erl", 2, other)], "t", resamples=200)

    assert "evaluated with different settings" in report.read_text(encoding="utf-8")


def test_missing_baseline_is_stated(tmp_path, runs):
    report = write_report(tmp_path / "report", runs[:2], "t", resamples=200).read_text(encoding="utf-8")

    assert "No runs of the baseline method 'grpo'" in report


def test_duplicate_run_raises(tmp_path, runs):
    with pytest.raises(ValueError, match="two runs of method 'erl' with seed 0"):
        write_report(tmp_path / "report", [*runs, runs[0]], "t")


def test_missing_eval_json_names_path(tmp_path):
    run_dir = write_run(tmp_path / "run", [erl_step(1)], successes(1))
    (run_dir / "eval.json").unlink()

    with pytest.raises(RunDataError, match="erlgym eval --model") as error:
        load_run("erl", 0, run_dir)
    assert str(run_dir / "eval.json") in str(error.value)


def test_missing_metrics_names_path(tmp_path):
    run_dir = write_run(tmp_path / "run", [erl_step(1)], successes(1))
    (run_dir / "metrics.jsonl").unlink()

    with pytest.raises(RunDataError) as error:
        load_run("erl", 0, run_dir)
    assert str(run_dir / "metrics.jsonl") in str(error.value)


def test_corrupt_files_raise(tmp_path):
    run_dir = write_run(tmp_path / "run", [erl_step(1), erl_step(2)], successes(1))
    metrics_path = run_dir / "metrics.jsonl"
    metrics_path.write_text(metrics_path.read_text(encoding="utf-8") + '{"step": 3, "time/st', encoding="utf-8")

    with pytest.raises(RunDataError, match="line 3: invalid JSON"):
        load_run("erl", 0, run_dir)

    metrics_path.write_text(json.dumps(erl_step(1)) + "\n", encoding="utf-8")
    (run_dir / "eval.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(RunDataError, match="eval.json is not valid JSON"):
        load_run("erl", 0, run_dir)


def test_eval_without_episode_outcomes_raises(tmp_path):
    run_dir = write_run(tmp_path / "run", [erl_step(1)], successes(1))
    (run_dir / "eval.json").write_text(json.dumps({"eval/success_rate": 0.5, "episodes": 64}), encoding="utf-8")

    with pytest.raises(RunDataError, match='no "episode_success" list'):
        load_run("erl", 0, run_dir)


def test_eval_with_inconsistent_counts_raises(tmp_path):
    run_dir = write_run(tmp_path / "run", [erl_step(1)], successes(1))
    evaluation = json.loads((run_dir / "eval.json").read_text(encoding="utf-8"))
    evaluation["episodes"] = 32
    (run_dir / "eval.json").write_text(json.dumps(evaluation), encoding="utf-8")

    with pytest.raises(RunDataError, match='"episodes" is 32 but "episode_success" has 64'):
        load_run("erl", 0, run_dir)


def test_runs_without_retries_have_no_after_reflection_row(tmp_path):
    # The trainer logs erl/success_after_reflection for GRPO runs too, equal to first-attempt success.
    grpo_steps = [dict(grpo_step(step), **{"erl/success_after_reflection": 0.2}) for step in (1, 2, 3)]
    erl_steps = [erl_step(step) for step in (1, 2, 3)]
    outcomes = [1, 0] * 32
    runs = [load_run("grpo", seed, write_run(tmp_path / f"grpo-{seed}", grpo_steps, outcomes)) for seed in (0, 1)]
    runs += [load_run("erl", seed, write_run(tmp_path / f"erl-{seed}", erl_steps, outcomes)) for seed in (0, 1)]
    out_dir = tmp_path / "report"

    write_report(out_dir, runs, "t", resamples=100)

    results = json.loads((out_dir / "results.json").read_text(encoding="utf-8"))
    methods = {summary["method"]: summary for summary in results["methods"]}
    assert methods["grpo"]["after_reflection"] is None
    assert methods["erl"]["after_reflection"] is not None
    report = (out_dir / "report.md").read_text(encoding="utf-8")
    section = report.split("## Success after reflection (training)")[1].split("\n## ")[0]
    assert "| erl |" in section
    assert "| grpo |" not in section
