"""Tests of the ``erlgym`` command line: train, eval and play end to end, and input errors.

Bad user input must exit with status 2 and print one message that names the value.
"""

import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from erlgym.erl import cli
from erlgym.erl.cli import EXIT_USAGE, build_parser, format_step_line, main, resolve_train_config
from tiny_model import ACTION_ENV_ID

ENV_KWARGS = '{"size": [2, 3]}'
TWO_BY_TWO = '{"desc": ["SF", "FG"]}'


def train_args(model_dir, output_dir, *extra: str) -> list[str]:
    return ["train", "--model", str(model_dir), "--output-dir", str(output_dir), "--env-kwargs", ENV_KWARGS,
            "--steps", "1", "--tasks-per-step", "2", "--rollouts-per-task", "2", "--micro-batches", "2",
            "--max-new-tokens", "8", "--reflection-max-new-tokens", "8", *extra]


@pytest.fixture
def wide_console(monkeypatch):
    """Keep each error message on one line, so that values in it stay whole."""
    monkeypatch.setattr(cli.console, "width", 1000)


def run_failing(argv, capsys) -> str:
    """Run ``main`` and return stderr with whitespace collapsed, after checking the usage exit status."""
    status = main(argv)
    err = capsys.readouterr().err
    assert status == EXIT_USAGE
    return " ".join(err.split())


@pytest.fixture(scope="module")
def cli_run(action_model_dir, tmp_path_factory):
    """Run one training step through ``main`` and return the run directory, exit status and stderr."""
    run_dir = tmp_path_factory.mktemp("cli") / "run"
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        status = main(train_args(action_model_dir, run_dir))
    return run_dir, status, stderr.getvalue()


# ---------------------------------------------------------------- help


def test_console_script_help():
    script = Path(sys.executable).parent / "erlgym"

    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60)

    assert result.returncode == 0
    assert "usage: erlgym" in result.stdout
    for command in ("train", "eval", "play"):
        assert command in result.stdout


def test_train_help_lists_config_fields(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--help"])
    out = capsys.readouterr().out

    assert exit_info.value.code == 0
    assert "--rollouts-per-task" in out
    assert "First attempts per task" in out
    assert "--no-lora" in out


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])

    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith("erlgym ")


# ---------------------------------------------------------------- train


def test_train_exits_zero(cli_run):
    _, status, _ = cli_run

    assert status == 0


def test_train_writes_run(cli_run):
    run_dir, _, _ = cli_run
    run_status = json.loads((run_dir / "run.json").read_text())

    assert run_status["status"] == "completed"
    assert run_status["steps"] == 1
    assert (run_dir / "final" / "adapter_model.safetensors").is_file()
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 1


def test_train_prints_step_line(cli_run):
    run_dir, _, stderr = cli_run

    assert "step   1/1 | success" in stderr
    assert f"Run directory: {run_dir}" in " ".join(stderr.split())


def test_train_config_from_options(cli_run, action_model_dir):
    run_dir, _, _ = cli_run
    config = json.loads((run_dir / "config.json").read_text())

    assert config["model"] == str(action_model_dir)
    assert config["env_kwargs"] == {"size": [2, 3]}
    assert config["steps"] == 1
    assert config["rollouts_per_task"] == 2


# ---------------------------------------------------------------- eval


@pytest.fixture(scope="module")
def cli_eval(cli_run):
    run_dir, _, _ = cli_run
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(io.StringIO()):
        status = main(["eval", "--model", str(run_dir), "--episodes", "4", "--max-new-tokens", "8"])
    return run_dir, status, stdout.getvalue()


def test_eval_run_exits_zero(cli_eval):
    _, status, _ = cli_eval

    assert status == 0


def test_eval_run_writes_results(cli_eval):
    run_dir, _, stdout = cli_eval
    results = json.loads((run_dir / "eval.json").read_text())

    assert json.loads(stdout) == results
    assert results["episodes"] == 4
    assert 0.0 <= results["eval/success_rate"] <= 1.0
    assert results["eval/mean_steps"] >= 1.0
    assert 0.0 <= results["eval/invalid_action_rate"] <= 1.0


def test_eval_run_uses_run_env(cli_eval):
    run_dir, _, _ = cli_eval
    results = json.loads((run_dir / "eval.json").read_text())

    assert results["env"] == ACTION_ENV_ID
    assert results["env_kwargs"] == {"size": [2, 3]}
    assert results["seeds"] == [1_000_000, 1_000_003]
    assert results["model"] == str(run_dir / "final")


def test_eval_model_folder_to_out(action_model_dir, tmp_path, capsys):
    out = tmp_path / "results" / "eval.json"

    status = main(["eval", "--model", str(action_model_dir), "--env-kwargs", '{"size": 2}', "--episodes", "2",
                   "--max-new-tokens", "8", "--out", str(out)])
    results = json.loads(out.read_text())

    assert status == 0
    assert results["model"] == str(action_model_dir)
    assert results["env_kwargs"] == {"size": 2}
    assert results["episodes"] == 2


def test_eval_dtype_option(action_model_dir, tmp_path):
    out = tmp_path / "eval.json"

    status = main(["eval", "--model", str(action_model_dir), "--env-kwargs", '{"size": 2}', "--episodes", "1",
                   "--max-new-tokens", "4", "--dtype", "bfloat16", "--out", str(out)])

    assert status == 0
    assert json.loads(out.read_text())["dtype"] == "bfloat16"


def test_eval_run_without_final_uses_checkpoint(cli_run, tmp_path, capsys):
    run_dir, _, _ = cli_run
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("final", "eval.json"))
    out = tmp_path / "eval.json"

    status = main(["eval", "--model", str(copy), "--episodes", "1", "--max-new-tokens", "8", "--out", str(out)])

    assert status == 0
    assert json.loads(out.read_text())["model"] == str(copy / "checkpoints" / "checkpoint-1")


def test_eval_run_without_weights(cli_run, tmp_path, capsys, wide_console):
    run_dir, _, _ = cli_run
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("final", "checkpoints", "eval.json"))

    err = run_failing(["eval", "--model", str(copy), "--episodes", "1"], capsys)

    assert f"Run directory {copy} has neither final/ nor a checkpoint" in err


def test_eval_unwritable_out(action_model_dir, tmp_path, capsys, wide_console):
    parent = tmp_path / "notes.txt"
    parent.write_text("")

    err = run_failing(["eval", "--model", str(action_model_dir), "--episodes", "1", "--max-new-tokens", "8",
                       "--out", str(parent / "eval.json")], capsys)

    assert f"Cannot write results to {parent / 'eval.json'}" in err


@pytest.mark.parametrize("option", ["--batch-size", "--max-new-tokens"])
def test_eval_zero_option(action_model_dir, capsys, wide_console, option):
    err = run_failing(["eval", "--model", str(action_model_dir), "--episodes", "2", option, "0"], capsys)

    assert option.lstrip("-").replace("-", "_") in err


# ---------------------------------------------------------------- play


def scripted_input(monkeypatch, replies: list[str]) -> list[str]:
    """Feed ``replies`` to ``input`` and return the list it records prompts in. Input ends after the last reply."""
    prompts = []
    remaining = list(replies)

    def fake_input(prompt=""):
        prompts.append(prompt)
        if not remaining:
            raise EOFError
        return remaining.pop(0)

    monkeypatch.setattr("builtins.input", fake_input)
    return prompts


def test_play_reaches_goal(monkeypatch, capsys):
    prompts = scripted_input(monkeypatch, ["Action: Right", "Action: Down"])

    status = main(["play", ACTION_ENV_ID, "--env-kwargs", TWO_BY_TWO, "--seed", "3"])
    out = capsys.readouterr().out

    assert status == 0
    assert prompts == ["your reply> ", "your reply> "]
    assert "You moved down and reached the goal." in out
    assert "Succeeded in 2 moves." in out


def test_play_shows_system_prompt(monkeypatch, capsys):
    scripted_input(monkeypatch, ["Action: Down", "Action: Right"])

    main(["play", ACTION_ENV_ID, "--env-kwargs", TWO_BY_TWO, "--seed", "3"])
    out = capsys.readouterr().out

    assert "You are P on a frozen lake grid" in out
    assert out.index("You are P") < out.index("You moved down.")


def test_play_invalid_reply_then_hole(monkeypatch, capsys):
    scripted_input(monkeypatch, ["jump", "Action: Down"])

    status = main(["play", ACTION_ENV_ID, "--env-kwargs", '{"desc": ["SF", "HG"]}', "--seed", "0"])
    out = capsys.readouterr().out

    assert status == 0
    assert "Invalid action" in out
    assert "Failed: you fell into a hole at row 2, column 1 after 1 move. 1 invalid action." in out


def test_play_end_of_input(monkeypatch, capsys):
    prompts = scripted_input(monkeypatch, [])

    status = main(["play", ACTION_ENV_ID, "--env-kwargs", TWO_BY_TWO, "--seed", "0"])

    assert status == 0
    assert prompts == ["your reply> "]


# ---------------------------------------------------------------- input errors


def test_train_unknown_env(capsys, wide_console, tmp_path):
    err = run_failing(["train", "--env", "erlgym/Nope-v0", "--output-dir", str(tmp_path / "run")], capsys)

    assert "Unknown environment id 'erlgym/Nope-v0'" in err
    assert "erlgym/FrozenLake-v0" in err


def test_play_unknown_env(capsys, wide_console):
    err = run_failing(["play", "erlgym/Nope-v0"], capsys)

    assert "erlgym/Nope-v0" in err


def test_eval_unknown_env(action_model_dir, capsys, wide_console):
    err = run_failing(["eval", "--env", "erlgym/Nope-v0", "--model", str(action_model_dir)], capsys)

    assert "erlgym/Nope-v0" in err


def test_invalid_env_kwargs_json(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--env-kwargs", "{size: 3}"])
    err = capsys.readouterr().err

    assert exit_info.value.code == EXIT_USAGE
    assert "--env-kwargs" in err
    assert "not valid JSON" in err
    assert "'{size: 3}'" in err


def test_env_kwargs_not_object(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["play", ACTION_ENV_ID, "--env-kwargs", "[3]"])
    err = capsys.readouterr().err

    assert exit_info.value.code == EXIT_USAGE
    assert "expected a JSON object" in err
    assert "'[3]'" in err


def test_unknown_method(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--method", "ppo"])

    assert exit_info.value.code == EXIT_USAGE
    assert "'ppo'" in capsys.readouterr().err


def test_steps_zero(capsys, wide_console, tmp_path):
    err = run_failing(["train", "--steps", "0", "--output-dir", str(tmp_path / "run")], capsys)

    assert "steps must be a positive integer, got 0" in err
    assert not (tmp_path / "run").exists()


def test_missing_model_path(capsys, wide_console, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    err = run_failing(["train", "--model", "./nope"], capsys)

    assert "./nope" in err
    assert "does not exist" in err
    # The default run directory runs/<env>-<method>-<time> is removed again.
    assert list(tmp_path.glob("runs/*")) == []


def test_resume_without_output_dir(capsys, wide_console):
    err = run_failing(["train", "--resume"], capsys)

    assert "--resume needs --output-dir" in err


def test_output_dir_under_file(action_model_dir, capsys, wide_console, tmp_path):
    parent = tmp_path / "notes.txt"
    parent.write_text("")
    output_dir = parent / "run"

    err = run_failing(["train", "--model", str(action_model_dir), "--output-dir", str(output_dir)], capsys)

    assert f"Cannot write to run directory {output_dir}" in err


def test_config_unknown_field(capsys, wide_console, tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"steps": 2, "bogus_field": 1}))

    err = run_failing(["train", "--config", str(config)], capsys)

    assert "Unknown config field(s): bogus_field" in err


def test_config_file_missing(capsys, wide_console, tmp_path):
    config = tmp_path / "missing.json"

    err = run_failing(["train", "--config", str(config)], capsys)

    assert f"Config file {config} not found" in err


def test_config_file_invalid_json(capsys, wide_console, tmp_path):
    config = tmp_path / "config.json"
    config.write_text("{steps: 2}")

    err = run_failing(["train", "--config", str(config)], capsys)

    assert f"Config file {config} is not valid JSON" in err


def test_play_bad_env_kwargs(capsys, wide_console):
    err = run_failing(["play", ACTION_ENV_ID, "--env-kwargs", '{"size": 99}'], capsys)

    assert f"Cannot create {ACTION_ENV_ID}" in err
    assert "99" in err


def test_eval_zero_episodes(action_model_dir, capsys, wide_console):
    err = run_failing(["eval", "--model", str(action_model_dir), "--episodes", "0"], capsys)

    assert "episodes must be a positive integer, got 0" in err


def test_train_bad_env_kwargs(action_model_dir, capsys, wide_console, tmp_path):
    err = run_failing(train_args(action_model_dir, tmp_path / "run") + ["--env-kwargs", '{"size": 99}'], capsys)

    assert "99" in err


def test_resume_folder_without_config(action_model_dir, capsys, wide_console, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "notes.txt").write_text("")

    err = run_failing(train_args(action_model_dir, run_dir) + ["--resume"], capsys)

    assert str(run_dir) in err


def test_error_keeps_bracketed_value(capsys, wide_console):
    err = run_failing(["train", "--env", "erlgym/[test]"], capsys)

    assert "'erlgym/[test]'" in err


# ---------------------------------------------------------------- config resolution


def test_resume_reads_run_config(cli_run):
    run_dir, _, _ = cli_run
    args = build_parser().parse_args(["train", "--resume", "--output-dir", str(run_dir), "--steps", "3"])

    config = resolve_train_config(args)

    assert config.steps == 3
    assert config.env_kwargs == {"size": [2, 3]}
    assert config.rollouts_per_task == 2


def test_resume_config_file_overrides_run_config(cli_run, tmp_path):
    run_dir, _, _ = cli_run
    path = tmp_path / "more-steps.json"
    path.write_text(json.dumps({"steps": 4}))
    args = build_parser().parse_args(["train", "--resume", "--output-dir", str(run_dir), "--config", str(path)])

    config = resolve_train_config(args)

    assert config.steps == 4
    # Fields the file does not set keep the run's values, not the defaults.
    assert config.env_kwargs == {"size": [2, 3]}
    assert config.rollouts_per_task == 2


def test_options_override_config_file(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"steps": 5, "method": "grpo"}))
    args = build_parser().parse_args(["train", "--config", str(path), "--steps", "2"])

    config = resolve_train_config(args)

    assert config.steps == 2
    assert config.method == "grpo"


def test_bool_option_negation():
    args = build_parser().parse_args(["train", "--no-lora"])

    assert resolve_train_config(args).lora is False


def test_step_line_after_reflection():
    record = {"step": 3, "rollout/first_success_rate": 0.25, "erl/success_after_reflection": 0.75,
              "erl/num_reflections": 3, "rollout/first_reward_mean": 0.25, "rollout/invalid_action_rate": 0.1,
              "tokens/generated_tokens": 1234, "loss": 0.01, "time/step_s": 2.5}

    line = format_step_line(record, total_steps=12)

    assert line.startswith("step   3/12 | success 0.25 → 0.75 after reflection")
    assert "tokens 1,234" in line
    assert line.endswith("2.5 s")


def test_step_line_grpo():
    record = {"step": 1, "rollout/first_success_rate": 0.5, "erl/num_reflections": 0.0, "loss": 0.0}

    line = format_step_line(record, total_steps=2)

    assert "after reflection" not in line
    assert "success 0.50" in line


def test_play_missing_level_file(tmp_path, capsys):
    missing = tmp_path / "missing.xsb"
    status = main(["play", "erlgym/Sokoban-v0", "--env-kwargs", json.dumps({"level_file": str(missing)})])
    assert status == 2
    assert "missing.xsb" in capsys.readouterr().err


def test_play_bad_level_names_line(tmp_path, capsys):
    level_file = tmp_path / "bad.xsb"
    level_file.write_text("#####\n#@$.#\n#####\n\n#####\n#@$x#\n#####\n")
    status = main(["play", "erlgym/Sokoban-v0", "--env-kwargs", json.dumps({"level_file": str(level_file)})])
    error = " ".join(capsys.readouterr().err.split())
    assert status == 2
    assert "bad.xsb:6" in error


def test_train_non_text_env(tmp_path, capsys):
    status = main(["train", "--env", "CartPole-v1", "--output-dir", str(tmp_path / "run")])
    error = " ".join(capsys.readouterr().err.split())
    assert status == 2
    assert "not an erlgym text environment" in error
    assert not (tmp_path / "run").exists()


def test_play_negative_seed(capsys):
    status = main(["play", "erlgym/FrozenLake-v0", "--seed", "-1"])
    assert status == 2
    assert "--seed" in capsys.readouterr().err


def test_eval_out_under_file(tmp_path, capsys):
    blocker = tmp_path / "afile"
    blocker.write_text("")
    status = main(["eval", "--model", str(tmp_path / "none"), "--out", str(blocker / "x.json")])
    assert status == 2
    assert "x.json" in capsys.readouterr().err


def test_config_directory_rejected(tmp_path, capsys):
    status = main(["train", "--config", str(tmp_path)])
    assert status == 2
    assert "Cannot read config file" in " ".join(capsys.readouterr().err.split())


def test_train_interrupt_names_run_dir(action_model_dir, tmp_path):
    """Ctrl-C during training prints the resume command with the actual run directory."""
    run_dir = tmp_path / "run"
    script = Path(sys.executable).with_name("erlgym")
    argv = train_args(action_model_dir, run_dir)
    argv[argv.index("--steps") + 1] = "200"
    # A shell without job control starts background commands with SIGINT ignored, and the child would
    # inherit that, so the child's SIGINT handler is reset to the default.
    process = subprocess.Popen([str(script), *argv], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, "COLUMNS": "1000"},
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 120
        metrics = run_dir / "metrics.jsonl"
        while not (metrics.is_file() and metrics.read_text().strip()) and time.monotonic() < deadline:
            assert process.poll() is None, process.stdout.read()
            time.sleep(0.2)
        process.send_signal(signal.SIGINT)
        # Generous: on a loaded machine the step in progress finishes before the interrupt is handled.
        output, _ = process.communicate(timeout=300)
    finally:
        process.kill()

    assert process.returncode == 130
    assert f"erlgym train --resume --output-dir {run_dir}" in output
    assert json.loads((run_dir / "run.json").read_text())["status"] == "interrupted"


def test_eval_folder_without_run_status(tmp_path, capsys, wide_console):
    """A folder with erlgym's config.json but no run.json is rejected as a model, not a traceback."""
    folder = tmp_path / "copied-run"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"env": ACTION_ENV_ID, "dtype": "auto", "steps": 2}))

    err = run_failing(["eval", "--model", str(folder), "--episodes", "1"], capsys)

    assert f"Could not load model '{folder}'" in err


# ---------------------------------------------------------------- presets


@pytest.mark.parametrize("name", cli.preset_names())
def test_preset_is_valid_config(name):
    args = build_parser().parse_args(["train", "--config", name])

    config = resolve_train_config(args)

    assert config.env.startswith("erlgym/")


@pytest.mark.parametrize("name, env", [("cpu-frozenlake", "erlgym/FrozenLake-v0"), ("cpu-sokoban", "erlgym/Sokoban-v0")])
def test_cpu_presets_match_defaults(name, env):
    """The CPU presets spell out the measured defaults, so they must not drift from them."""
    from erlgym.erl.config import DEFAULT_ENV_KWARGS, TrainConfig

    preset = resolve_train_config(build_parser().parse_args(["train", "--config", name]))
    defaults = TrainConfig(env=env, env_kwargs=DEFAULT_ENV_KWARGS[env])

    assert preset == defaults


def test_preset_options_override(tmp_path):
    args = build_parser().parse_args(["train", "--config", "cpu-quick-frozenlake", "--steps", "2"])

    assert resolve_train_config(args).steps == 2


def test_unknown_config_lists_presets(capsys, wide_console, tmp_path):
    err = run_failing(["train", "--config", str(tmp_path / "missing.json")], capsys)

    assert "not found" in err
    assert "cpu-quick-frozenlake" in err
