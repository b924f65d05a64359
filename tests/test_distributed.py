"""Tests of training with several processes: step metrics reduced over processes, and a 2-process run.

The 2-process run starts ``distributed_train.py`` under ``accelerate launch`` with two
CPU processes that talk over gloo on 127.0.0.1. It took 13 to 17 s on 2 CPU cores.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from erlgym.erl.algorithm import StepResult, TrainingSample
from erlgym.erl.trainer import ERLTrainer
from test_trainer import build_trainer
from tiny_model import tiny_train_config

PROCESSES = 2
SCRIPT = Path(__file__).with_name("distributed_train.py")
LAUNCH_TIMEOUT_S = 600


# ---------------------------------------------------------------- metric reduction


def test_reduce_one_process_unchanged():
    metrics = {"rollout/first_success_rate": 0.1 + 0.2, "tokens/generated_tokens": 37.0,
               "erl/memory_size": 3.0, "time/rollout_s": 1.2345678901}

    reduced = ERLTrainer._reduce_process_metrics([dict(metrics)])

    assert reduced == metrics


def test_reduce_sums_counts():
    per_process = [{"tokens/generated_tokens": 10.0, "samples/trained": 3.0, "erl/num_reflections": 2.0,
                    "erl/memory_kept": 1.0},
                   {"tokens/generated_tokens": 5.0, "samples/trained": 0.0, "erl/num_reflections": 1.0,
                    "erl/memory_kept": 0.0}]

    reduced = ERLTrainer._reduce_process_metrics(per_process)

    assert reduced["tokens/generated_tokens"] == 15.0
    assert reduced["samples/trained"] == 3.0
    assert reduced["erl/num_reflections"] == 3.0
    assert reduced["erl/memory_kept"] == 1.0


def test_reduce_averages_rates():
    per_process = [{"rollout/first_success_rate": 0.5, "erl/memory_size": 2.0, "time/rollout_s": 1.0},
                   {"rollout/first_success_rate": 0.0, "erl/memory_size": 4.0, "time/rollout_s": 3.0}]

    reduced = ERLTrainer._reduce_process_metrics(per_process)

    assert reduced["rollout/first_success_rate"] == 0.25
    assert reduced["erl/memory_size"] == 3.0
    assert reduced["time/rollout_s"] == 2.0


def test_reduce_key_on_one_process():
    """Retry metrics exist only on a process whose step had a failed attempt."""
    per_process = [{"rollout/first_success_rate": 1.0, "tokens/generated_tokens": 8.0},
                   {"rollout/first_success_rate": 0.0, "tokens/generated_tokens": 20.0,
                    "erl/retry_success_rate": 0.5, "tokens/reflection_tokens": 6.0}]

    reduced = ERLTrainer._reduce_process_metrics(per_process)

    assert reduced["erl/retry_success_rate"] == 0.5
    assert reduced["tokens/reflection_tokens"] == 6.0
    assert reduced["tokens/generated_tokens"] == 28.0
    assert reduced["rollout/first_success_rate"] == 0.5


def test_reduce_sorts_keys():
    per_process = [{"b/second": 1.0, "a/first": 1.0}, {"c/third": 1.0, "a/first": 3.0}]

    reduced = ERLTrainer._reduce_process_metrics(per_process)

    assert list(reduced) == ["a/first", "b/second", "c/third"]


@pytest.fixture
def fixed_step(monkeypatch):
    """Replace the collection step in the trainer module with one that returns fixed samples and metrics."""
    metrics = {"rollout/first_success_rate": 0.1 + 0.2, "tokens/first_attempt_tokens": 12.0,
               "tokens/generated_tokens": 12.0, "erl/num_reflections": 0.0, "samples/trained": 3.0,
               "time/rollout_s": 0.123456789}
    samples = [TrainingSample(kind="first_attempt", task_seed=0, prompt_ids=[5, 6], completion_ids=[7 + i],
                              env_mask=[1], reward=1.0, advantage=1.0) for i in range(3)]
    monkeypatch.setattr("erlgym.erl.trainer.collect_step",
                        lambda *args, **kwargs: StepResult(samples=samples, metrics=dict(metrics), records=[]))
    return metrics


def test_one_process_metrics_unchanged(action_model_dir, tmp_path, fixed_step):
    trainer = build_trainer(action_model_dir, tmp_path)
    inputs = [{"task_seed": 0}, {"task_seed": 0}, {"task_seed": 1}, {"task_seed": 1}]

    batch = trainer._generate_and_score_completions(inputs)

    assert trainer.last_step_metrics == fixed_step
    assert {name: values for name, values in trainer._metrics["train"].items() if name in fixed_step} == {
        name: [value] for name, value in fixed_step.items()}
    # 3 samples, padded to a multiple of the 2 micro-batches as without other processes.
    assert batch["completion_ids"].shape[0] == 4


# ---------------------------------------------------------------- 2-process run


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def two_process_run(action_model_dir, tmp_path_factory):
    """Run 2 ERL steps with 2 processes into one run directory.

    Returns the run directory, the results folder and the finished launcher process.
    """
    root = tmp_path_factory.mktemp("distributed")
    run_dir, results_dir = root / "run", root / "results"
    command = [
        sys.executable, "-m", "accelerate.commands.launch",
        # --cpu would start one process (accelerate starts several CPU processes only under
        # mpirun). --multi_gpu starts them with torchrun, and with no GPU visible each
        # process runs on CPU with the gloo backend.
        "--multi_gpu", "--num_processes", str(PROCESSES), "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_ip", "127.0.0.1", "--main_process_port", str(free_port()),
        str(SCRIPT), "--run-dir", str(run_dir), "--results-dir", str(results_dir),
        "--model", str(action_model_dir),
    ]
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    completed = subprocess.run(command, env=env, cwd=SCRIPT.parent, capture_output=True, text=True,
                               timeout=LAUNCH_TIMEOUT_S)
    return run_dir, results_dir, completed


def launch_output(completed: subprocess.CompletedProcess) -> str:
    return f"exit status {completed.returncode}; output ends with:\n{(completed.stdout + completed.stderr)[-4000:]}"


def read_metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_two_processes_exit_cleanly(two_process_run):
    _, _, completed = two_process_run

    assert completed.returncode == 0, launch_output(completed)


@pytest.mark.parametrize("index", range(PROCESSES))
def test_two_processes_each_trained(two_process_run, index):
    _, results_dir, completed = two_process_run
    path = results_dir / f"process-{index}.json"

    assert path.is_file(), launch_output(completed)
    result = json.loads(path.read_text())
    assert result["error"] is None
    assert result["process_index"] == index
    assert result["num_processes"] == PROCESSES


def test_two_processes_run_completed(two_process_run):
    run_dir, _, completed = two_process_run

    status = json.loads((run_dir / "run.json").read_text())
    assert status["status"] == "completed", launch_output(completed)
    assert status["steps"] == 2
    assert [record["step"] for record in read_metrics(run_dir)] == [1, 2]


def test_two_processes_checkpoint_rng_states(two_process_run):
    """Every process saves its own RNG state into each checkpoint."""
    run_dir, _, _ = two_process_run

    for step in (1, 2):
        checkpoint = run_dir / "checkpoints" / f"checkpoint-{step}"
        assert sorted(path.name for path in checkpoint.glob("rng_state_*.pth")) == [
            f"rng_state_{index}.pth" for index in range(PROCESSES)]


def test_two_processes_metrics_summed(two_process_run, action_model_dir):
    """First attempts are counted before zero-advantage samples are dropped, so the count is exact."""
    run_dir, _, _ = two_process_run
    config = tiny_train_config(action_model_dir)
    first_attempts = PROCESSES * config.tasks_per_step * config.rollouts_per_task

    for record in read_metrics(run_dir):
        assert record["samples/first_attempt"] == first_attempts
        assert record["tokens/generated_tokens"] == (
            record["tokens/first_attempt_tokens"] + record.get("tokens/reflection_tokens", 0.0)
            + record.get("tokens/retry_tokens", 0.0))
        assert 0.0 <= record["rollout/first_success_rate"] <= 1.0


def test_two_processes_lora_changed(two_process_run):
    """LoRA initializes lora_B to zeros, so a nonzero lora_B shows that the update ran."""
    run_dir, _, _ = two_process_run

    weights = load_file(run_dir / "final" / "adapter_model.safetensors")
    lora_b = [tensor for name, tensor in weights.items() if "lora_B" in name]
    assert lora_b
    assert sum(float(tensor.abs().sum()) for tensor in lora_b) > 0


def read_results(results_dir: Path) -> list[dict]:
    return [json.loads((results_dir / f"process-{index}.json").read_text()) for index in range(PROCESSES)]


def test_two_processes_agree_on_weights(two_process_run):
    _, results_dir, completed = two_process_run
    digests = [result["digests"] for result in read_results(results_dir)]

    assert all(set(digest) == {"before", "after"} for digest in digests), launch_output(completed)
    assert digests[0]["before"] == digests[1]["before"]
    assert digests[0]["after"] == digests[1]["after"]
    assert digests[0]["after"] != digests[0]["before"]


def test_two_processes_agree_on_logged_metrics(two_process_run):
    _, results_dir, _ = two_process_run
    # Step times are measured by each process; every other logged value is reduced over both.
    logs = [[{key: value for key, value in record.items() if "time" not in key} for record in result["logs"]]
            for result in read_results(results_dir)]

    assert [record["step"] for record in logs[0]] == [1, 2]
    assert logs[0] == logs[1]


def test_two_processes_train_on_distinct_tasks(two_process_run):
    run_dir, _, _ = two_process_run
    seeds_by_step: dict[int, set] = {}
    for line in (run_dir / "samples.jsonl").read_text().splitlines():
        record = json.loads(line)
        seeds_by_step.setdefault(record["step"], set()).add(record["task_seed"])

    # Process 0 writes its own tasks' records; each step's tasks are new.
    assert sorted(seeds_by_step) == [1, 2]
    assert not seeds_by_step[1] & seeds_by_step[2]
