"""Tests of ``erlgym bench``: runs per method and seed, evaluation, report, and continuing after a stop.

Benches use the tiny action model (see ``tiny_model.py``) with one training step per
run and four held-out episodes, so a bench of two methods and two seeds took about
ten seconds on 2 CPU cores.
"""

import json

import pytest

from erlgym.erl import cli
from erlgym.erl.cli import main
from erlgym.erl.config import ConfigError
from erlgym.eval.bench import BenchConfig, BenchEvent, prepare_bench_dir, run_bench
from tiny_model import ACTION_ENV_ID, ACTION_ENV_KWARGS, tiny_train_config


def tiny_bench(model_dir, out, **overrides) -> BenchConfig:
    values = dict(out=str(out), train=tiny_train_config(model_dir, steps=1), methods=("erl", "grpo"), seeds=2,
                  episodes=4)
    values.update(overrides)
    return BenchConfig(**values)


class StopAfterRuns:
    """An ``on_event`` callback that raises KeyboardInterrupt when the given number of runs has started."""

    def __init__(self, runs: int):
        self.runs = runs
        self.started = 0

    def __call__(self, event: BenchEvent):
        if event.kind == "start" and event.label != "base model evaluation":
            self.started += 1
            if self.started > self.runs:
                raise KeyboardInterrupt


@pytest.fixture(scope="module")
def bench(action_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "bench"
    events = []
    report_path = run_bench(tiny_bench(action_model_dir, out), on_event=events.append)
    return out, report_path.parent, events


def test_bench_trains_every_method_and_seed(bench):
    out, _, _ = bench
    runs = sorted(path.name for path in (out / "runs").iterdir())

    assert runs == ["erl-seed0", "erl-seed1", "grpo-seed0", "grpo-seed1"]
    for name in runs:
        assert json.loads((out / "runs" / name / "run.json").read_text())["status"] == "completed"
        assert len(json.loads((out / "runs" / name / "eval.json").read_text())["episode_success"]) == 4


def test_bench_pairs_tasks_within_a_seed(bench):
    out, _, _ = bench

    def config(name):
        return json.loads((out / "runs" / name / "config.json").read_text())

    assert config("erl-seed0")["train_seed_offset"] == config("grpo-seed0")["train_seed_offset"]
    assert config("erl-seed0")["seed"] == config("grpo-seed0")["seed"] == 0
    assert config("erl-seed1")["train_seed_offset"] == config("erl-seed0")["train_seed_offset"] + 2
    assert config("grpo-seed0")["method"] == "grpo"


def test_bench_evaluates_same_episodes(bench):
    out, _, _ = bench
    seeds = {json.dumps(json.loads(path.read_text())["seeds"]) for path in (out / "runs").glob("*/eval.json")}

    assert len(seeds) == 1
    assert json.loads((out / "base_eval.json").read_text())["seeds"] == json.loads(seeds.pop())


def test_bench_writes_report(bench):
    _, report_dir, _ = bench
    report = (report_dir / "report.md").read_text()

    assert "erl" in report
    assert "grpo" in report
    assert (report_dir / "results.csv").read_text().count("\n") >= 5
    assert (report_dir / "curves_steps.png").read_bytes().startswith(b"\x89PNG")
    assert "## Untrained model" in report
    assert json.loads((report_dir / "results.json").read_text())["base_model"]["episodes"] == 4


def test_bench_events_count_runs(bench):
    _, _, events = bench
    done = [event for event in events if event.kind == "done"]

    assert [event.label for event in done] == ["base model evaluation", "erl seed 0", "grpo seed 0",
                                               "erl seed 1", "grpo seed 1"]
    assert done[-1].done == done[-1].total == 5


def test_bench_rerun_reuses_finished_runs(bench, action_model_dir):
    out, _, _ = bench
    eval_file = out / "runs" / "erl-seed0" / "eval.json"
    before = eval_file.stat().st_mtime_ns
    events = []

    run_bench(tiny_bench(action_model_dir, out), on_event=events.append)

    assert {event.kind for event in events} == {"skip"}
    assert eval_file.stat().st_mtime_ns == before


def test_bench_continues_after_interrupt(action_model_dir, tmp_path):
    out = tmp_path / "bench"
    config = tiny_bench(action_model_dir, out, seeds=1, train=tiny_train_config(action_model_dir, steps=2))
    with pytest.raises(KeyboardInterrupt):
        run_bench(config, on_event=StopAfterRuns(1))
    assert (out / "runs" / "erl-seed0" / "eval.json").is_file()
    assert not (out / "runs" / "grpo-seed0").exists()

    events = []
    report_path = run_bench(config, on_event=events.append)

    assert [(event.kind, event.label) for event in events if event.kind != "start"] == [
        ("skip", "base model evaluation"), ("skip", "erl seed 0"), ("done", "grpo seed 0")]
    assert report_path.is_file()


def test_bench_resumes_interrupted_run(action_model_dir, tmp_path):
    """A run stopped after its first checkpoint continues from it instead of starting over."""
    out = tmp_path / "bench"
    config = tiny_bench(action_model_dir, out, seeds=1, methods=("grpo",),
                        train=tiny_train_config(action_model_dir, steps=3))

    def stop_at_second_step(record):
        if record["step"] == 2:  # logged before step 2's checkpoint, so checkpoint-1 is the last
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_bench(config, on_step=stop_at_second_step)
    run_dir = out / "runs" / "grpo-seed0"
    assert json.loads((run_dir / "run.json").read_text())["status"] == "interrupted"

    run_bench(config)
    status = json.loads((run_dir / "run.json").read_text())
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]

    assert status["status"] == "completed"
    assert status["resumed_from"].endswith("checkpoint-1")
    assert steps == [1, 2, 3]


def test_bench_other_settings_rejected(bench, action_model_dir):
    out, _, _ = bench

    with pytest.raises(ConfigError, match="contains a bench with other settings .seeds: 2 there, 3 now"):
        run_bench(tiny_bench(action_model_dir, out, seeds=3))


def test_bench_saved_before_a_field_existed_reopens(action_model_dir, tmp_path):
    config = tiny_bench(action_model_dir, tmp_path / "bench")
    prepare_bench_dir(config)
    saved_path = tmp_path / "bench" / "bench.json"
    saved = json.loads(saved_path.read_text())
    # An older erlgym wrote no "update" field; its runs used the default.
    del saved["train"]["update"]
    saved_path.write_text(json.dumps(saved))

    assert prepare_bench_dir(config) == tmp_path / "bench"


@pytest.mark.parametrize("overrides, message", [
    ({"methods": ("erl", "a2c")}, "--methods must list methods from erl, grpo, erl-no-internalize"),
    ({"methods": ("erl", "erl")}, "lists a method twice"),
    ({"methods": ("erl",)}, "--baseline 'grpo' is not among"),
    ({"seeds": 0}, "--seeds must be a positive integer"),
    ({"budget": "tokens"}, "needs --budget-value above 0"),
    ({"budget": "hours", "budget_value": 1.0}, "--budget must be one of"),
    ({"budget": "steps", "budget_value": 500.0}, "has no effect with --budget steps"),
])
def test_bench_bad_settings_rejected(action_model_dir, tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        tiny_bench(action_model_dir, tmp_path / "bench", **overrides).validate()


def test_bench_identical_methods_rejected(action_model_dir, tmp_path):
    # Under --update ppo the grpo method is the ppo method.
    config = tiny_bench(action_model_dir, tmp_path / "bench", methods=("ppo", "grpo"),
                        train=tiny_train_config(action_model_dir, steps=1, update="ppo"))

    with pytest.raises(ConfigError, match="ppo and grpo train the same configuration"):
        config.validate()


def test_bench_token_budget_sets_run_limit(action_model_dir, tmp_path):
    config = tiny_bench(action_model_dir, tmp_path / "bench", budget="tokens", budget_value=500)

    run_config = config.run_config("erl", 1, tmp_path / "run")

    assert run_config.max_generated_tokens == 500
    assert run_config.max_train_seconds == 0
    assert run_config.train_seed_offset == 2


def test_cli_bench_writes_report(action_model_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cli.console, "width", 1000)  # keep the printed path on one line
    out = tmp_path / "bench"

    status = main(["bench", "--model", str(action_model_dir), "--env", ACTION_ENV_ID,
                   "--env-kwargs", json.dumps(ACTION_ENV_KWARGS), "--methods", "grpo", "--seeds", "1",
                   "--episodes", "2", "--steps", "1", "--tasks-per-step", "2", "--rollouts-per-task", "2",
                   "--max-new-tokens", "8", "--dtype", "float32", "--out", str(out)])

    assert status == 0
    assert (out / "report" / "report.md").is_file()
    assert f"Report: {out / 'report' / 'report.md'}" in capsys.readouterr().err


def test_cli_bench_config_file_with_method_rejected(tmp_path, capsys):
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps({"method": "erl"}))

    status = main(["bench", "--config", str(config_file), "--out", str(tmp_path / "bench")])

    assert status == 2
    assert "sets method" in " ".join(capsys.readouterr().err.split())


def test_bench_variant_sets_its_fields(action_model_dir, tmp_path):
    config = tiny_bench(action_model_dir, tmp_path / "bench", methods=("erl-attempt-retry", "erl-no-memory", "grpo"))

    attempt = config.validate().run_config("erl-attempt-retry", 0, tmp_path / "run")
    no_memory = config.run_config("erl-no-memory", 0, tmp_path / "run")

    assert (attempt.method, attempt.retry_context) == ("erl", "attempt")
    assert (no_memory.method, no_memory.memory_size) == ("erl", 0)
    assert config.run_config("grpo", 0, tmp_path / "run").method == "grpo"


def test_bench_scope_variants_set_fields(action_model_dir, tmp_path):
    config = tiny_bench(action_model_dir, tmp_path / "bench", methods=("erl-rulebook", "erl-task-memory", "grpo"))

    rulebook = config.validate().run_config("erl-rulebook", 0, tmp_path / "run")
    task_memory = config.run_config("erl-task-memory", 0, tmp_path / "run")

    assert (rulebook.method, rulebook.reflection_scope, rulebook.memory_scope) == ("erl", "batch", "global")
    assert (task_memory.method, task_memory.reflection_scope, task_memory.memory_scope) == ("erl", "task", "task")


def test_bench_template_variants_set_fields(action_model_dir, tmp_path):
    # The tiny configuration samples at 1.0, so grpo-t1.0 is the baseline here and plain grpo would duplicate it.
    config = tiny_bench(action_model_dir, tmp_path / "bench", methods=("grpo-templates", "erl-templates", "grpo-t1.0"),
                        baseline="grpo-t1.0")

    grpo = config.validate().run_config("grpo-templates", 0, tmp_path / "run").validate()
    erl = config.run_config("erl-templates", 0, tmp_path / "run").validate()
    hot = config.run_config("grpo-t1.0", 0, tmp_path / "run")

    assert (grpo.method, grpo.templates, grpo.reflection_templates, grpo.temperature) == (
        "grpo", "frozenlake", None, 0.3)
    assert (erl.method, erl.templates, erl.reflection_templates) == ("erl", "frozenlake", "reflection")
    assert (hot.method, hot.templates, hot.temperature) == ("grpo", None, 1.0)


def test_bench_runs_scope_variants(action_model_dir, tmp_path):
    """Both variants train through ``erlgym train``: one rulebook per step, and a memory saved with its scope."""
    out = tmp_path / "bench"
    config = tiny_bench(action_model_dir, out, methods=("erl-rulebook", "erl-task-memory"),
                        baseline="erl-task-memory", seeds=1)

    run_bench(config)
    rulebook_run = out / "runs" / "erl-rulebook-seed0"
    task_memory_run = out / "runs" / "erl-task-memory-seed0"
    records = [json.loads(line) for line in (rulebook_run / "samples.jsonl").read_text().splitlines()]
    reflections = [record for record in records if record["kind"] == "reflection"]
    metrics = [json.loads(line) for line in (rulebook_run / "metrics.jsonl").read_text().splitlines()]

    assert json.loads((rulebook_run / "run.json").read_text())["status"] == "completed"
    assert json.loads((task_memory_run / "run.json").read_text())["status"] == "completed"
    # Precondition: some step had a failed first attempt, so it wrote a rulebook.
    assert reflections
    for step in {record["step"] for record in reflections}:
        assert len({record["reflection"] for record in reflections if record["step"] == step}) == 1
    assert all(record["erl/num_reflections"] <= 1 for record in metrics)
    assert json.loads((task_memory_run / "final" / "erl_memory.json").read_text())["scope"] == "task"
    assert json.loads((rulebook_run / "final" / "erl_memory.json").read_text())["scope"] == "global"


def test_bench_reevaluates_corrupt_evaluation(bench, action_model_dir):
    out, _, _ = bench
    eval_file = out / "runs" / "grpo-seed1" / "eval.json"
    eval_file.write_text("{not json")
    events = []

    report_path = run_bench(tiny_bench(action_model_dir, out), on_event=events.append)

    assert [event.label for event in events if event.kind == "done"] == ["grpo seed 1"]
    assert len(json.loads(eval_file.read_text())["episode_success"]) == 4
    assert report_path.is_file()
