"""Tests of the ERL trainer on TRL and of training runs: files, checkpoints, resume and errors.

Runs use the tiny action model (see ``tiny_model.py``) on 2x2 and 3x3 FrozenLake maps
with two tasks per step, so a step took about one second on 2 CPU cores.
"""

import json
import shutil
import math

import pytest
import torch
from peft import LoraConfig
from peft.tuners.lora import LoraLayer
from safetensors.torch import load_file
from trl import GRPOConfig, GRPOTrainer

from erlgym.erl.algorithm import EnvPool, StepSettings, TrainingSample
from erlgym.erl.config import ConfigError, TrainConfig
from erlgym.erl.memory import ReflectionMemory
from erlgym.erl.models import ModelLoadError, load_model
from erlgym.erl.rollout import GenerationConfig
from erlgym.erl.run import RunError, train
from erlgym.erl.trainer import MEMORY_FILE, ERLTrainer, copy_merged_weights, trim_padding
from tiny_model import ACTION_ENV_ID, ACTION_ENV_KWARGS, tiny_train_config

STEP_KEYS = {
    "step", "loss", "time/step_s", "rollout/first_success_rate", "rollout/first_reward_mean",
    "rollout/invalid_action_rate", "tokens/generated_tokens", "erl/success_after_reflection",
    "erl/num_reflections", "erl/memory_size", "samples/trained",
}


def tiny_config(model_dir, output_dir, **overrides) -> TrainConfig:
    return tiny_train_config(model_dir, output_dir=str(output_dir), **overrides)


def read_metrics(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def read_status(run_dir) -> dict:
    return json.loads((run_dir / "run.json").read_text())


def lora_b_norm(adapter_dir) -> float:
    weights = load_file(adapter_dir / "adapter_model.safetensors")
    lora_b = [tensor for name, tensor in weights.items() if "lora_B" in name]
    assert lora_b, "the adapter has no lora_B weights"
    return float(sum(tensor.abs().sum() for tensor in lora_b))


class Interrupt:
    """An ``on_step`` callback that raises KeyboardInterrupt after the given step is logged."""

    def __init__(self, step: int):
        self.step = step

    def __call__(self, record):
        if record["step"] == self.step:
            raise KeyboardInterrupt


@pytest.fixture(scope="module")
def erl_run(action_model_dir, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("erl") / "run"
    records = []
    returned = train(tiny_config(action_model_dir, run_dir), on_step=records.append)
    return returned, records


@pytest.fixture(scope="module")
def grpo_run(action_model_dir, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("grpo") / "run"
    return train(tiny_config(action_model_dir, run_dir, method="grpo", rollouts_per_task=4, save_every=2))


# ---------------------------------------------------------------- ERL run


def test_erl_run_completed(erl_run):
    run_dir, _ = erl_run
    status = read_status(run_dir)

    assert status["status"] == "completed"
    assert status["steps"] == 2
    assert status["resumed_from"] is None


def test_erl_run_metrics_per_step(erl_run):
    run_dir, on_step_records = erl_run
    metrics = read_metrics(run_dir)

    assert [record["step"] for record in metrics] == [1, 2]
    assert metrics == on_step_records
    for record in metrics:
        assert STEP_KEYS <= set(record)
        assert math.isfinite(record["loss"])


def test_erl_run_trains_samples(erl_run):
    run_dir, _ = erl_run

    assert any(record["samples/trained"] > 0 for record in read_metrics(run_dir))
    assert any(record["erl/num_reflections"] > 0 for record in read_metrics(run_dir))


def test_erl_run_lora_changed(erl_run):
    """LoRA initializes lora_B to zeros, so a nonzero lora_B shows that the update ran."""
    run_dir, _ = erl_run

    assert lora_b_norm(run_dir / "final") > 0
    assert lora_b_norm(run_dir / "checkpoints" / "checkpoint-1") > 0


def test_erl_run_final_folder(erl_run):
    run_dir, _ = erl_run
    final = run_dir / "final"

    assert (final / "adapter_config.json").is_file()
    assert (final / "adapter_model.safetensors").is_file()
    assert (final / "tokenizer.json").is_file()
    assert (final / MEMORY_FILE).is_file()


def test_erl_run_checkpoints(erl_run):
    run_dir, _ = erl_run

    for step in (1, 2):
        checkpoint = run_dir / "checkpoints" / f"checkpoint-{step}"
        assert (checkpoint / "adapter_model.safetensors").is_file()
        assert (checkpoint / MEMORY_FILE).is_file()
        assert (checkpoint / "trainer_state.json").is_file()


def test_erl_run_config_saved(erl_run, action_model_dir):
    run_dir, _ = erl_run
    saved = TrainConfig.from_dict(json.loads((run_dir / "config.json").read_text()))

    assert saved == tiny_config(action_model_dir, run_dir)


def test_erl_run_samples_file(erl_run):
    run_dir, _ = erl_run
    records = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]
    kinds = {record["kind"] for record in records}

    assert {"first_attempt", "reflection", "retry"} <= kinds
    assert {record["step"] for record in records} == {1, 2}


def test_erl_run_final_memory_matches_checkpoint(erl_run):
    run_dir, _ = erl_run
    final = ReflectionMemory.load(run_dir / "final" / MEMORY_FILE)
    last = ReflectionMemory.load(run_dir / "checkpoints" / "checkpoint-2" / MEMORY_FILE)

    assert final.texts() == last.texts()
    assert final.capacity == 8
    assert final.threshold == 1.0


# ---------------------------------------------------------------- GRPO run


def test_grpo_run_completed(grpo_run):
    status = read_status(grpo_run)

    assert status["status"] == "completed"
    assert status["steps"] == 2


def test_grpo_run_metrics_per_step(grpo_run):
    metrics = read_metrics(grpo_run)

    assert [record["step"] for record in metrics] == [1, 2]
    for record in metrics:
        assert math.isfinite(record["loss"])
        assert record["erl/num_reflections"] == 0
        assert record["samples/reflection"] == 0
        assert "erl/retry_success_rate" not in record


def test_grpo_run_first_attempts_only(grpo_run):
    records = [json.loads(line) for line in (grpo_run / "samples.jsonl").read_text().splitlines()]

    assert records
    assert {record["kind"] for record in records} == {"first_attempt"}


def test_grpo_run_lora_changed(grpo_run):
    assert lora_b_norm(grpo_run / "final") > 0


def test_grpo_run_checkpoint_at_end(grpo_run):
    assert sorted(path.name for path in (grpo_run / "checkpoints").glob("checkpoint-*")) == ["checkpoint-2"]


@pytest.fixture(scope="module")
def full_kl_run(action_model_dir, tmp_path_factory):
    """One step of full fine-tuning (no LoRA) with a KL term against the initial weights."""
    run_dir = tmp_path_factory.mktemp("full") / "run"
    return train(tiny_config(action_model_dir, run_dir, steps=1, lora=False, beta=0.04))


def test_full_run_saves_model(full_kl_run):
    final = full_kl_run / "final"

    assert (final / "model.safetensors").is_file()
    assert (final / "config.json").is_file()
    assert not (final / "adapter_config.json").exists()


def test_full_run_changes_weights(full_kl_run, action_model_dir):
    base = load_file(action_model_dir / "model.safetensors")
    trained = load_file(full_kl_run / "final" / "model.safetensors")

    assert base.keys() == trained.keys()
    assert any(not torch.equal(base[name], trained[name]) for name in base)


def test_full_run_loads_back(full_kl_run):
    loaded = load_model(str(full_kl_run / "final"))

    assert loaded.tokenizer.chat_template is not None


def test_kl_run_keeps_zero_advantages(full_kl_run):
    (record,) = read_metrics(full_kl_run)
    produced = sum(record[f"samples/{kind}"] for kind in ("first_attempt", "reflection", "retry",
                                                          "internalized_retry"))

    # With a KL term every sample carries a gradient, so none is dropped.
    assert record["samples/trained"] == produced
    assert math.isfinite(record["kl"])
    assert math.isfinite(record["loss"])


# ---------------------------------------------------------------- resume


@pytest.fixture(scope="module")
def resumed_run(action_model_dir, tmp_path_factory):
    """A 3-step run interrupted after step 2 is logged (checkpoint-1 saved), then resumed."""
    run_dir = tmp_path_factory.mktemp("resume") / "run"
    config = tiny_config(action_model_dir, run_dir, steps=3, memory_threshold=0.0, memory_size=64)
    with pytest.raises(KeyboardInterrupt):
        train(config, on_step=Interrupt(2))
    interrupted = {
        "status": read_status(run_dir),
        "steps": [record["step"] for record in read_metrics(run_dir)],
        "checkpoints": sorted(path.name for path in (run_dir / "checkpoints").glob("checkpoint-*")),
        "memory": ReflectionMemory.load(run_dir / "checkpoints" / "checkpoint-1" / MEMORY_FILE),
    }
    train(config, resume=True)
    return run_dir, interrupted


def test_interrupted_run_status(resumed_run):
    _, interrupted = resumed_run

    assert interrupted["status"]["status"] == "interrupted"
    assert interrupted["steps"] == [1, 2]
    assert interrupted["checkpoints"] == ["checkpoint-1"]
    assert interrupted["status"]["error"] == "KeyboardInterrupt"
    assert interrupted["status"]["train_seconds"] > 0


def test_resumed_run_counts_interrupted_time(resumed_run):
    run_dir, interrupted = resumed_run

    assert read_status(run_dir)["train_seconds"] > interrupted["status"]["train_seconds"]


def test_resume_continues_steps(resumed_run):
    run_dir, _ = resumed_run

    assert [record["step"] for record in read_metrics(run_dir)] == [1, 2, 3]


def test_resume_status_completed(resumed_run):
    run_dir, _ = resumed_run
    status = read_status(run_dir)

    assert status["status"] == "completed"
    assert status["steps"] == 3
    assert status["resumed_from"].endswith("checkpoint-1")


def test_resume_restores_memory(resumed_run):
    run_dir, interrupted = resumed_run
    saved = interrupted["memory"]
    final = ReflectionMemory.load(run_dir / "final" / MEMORY_FILE)

    # With τ = 0 every reflection is kept, so step 1 must have left some in the checkpoint.
    assert len(saved) > 0
    assert list(final.items)[: len(saved)] == list(saved.items)
    assert len(final) > len(saved)


def test_resume_without_checkpoint_restarts_metrics(action_model_dir, tmp_path):
    run_dir = tmp_path / "run"
    config = tiny_config(action_model_dir, run_dir, steps=2, save_every=2)
    with pytest.raises(KeyboardInterrupt):
        train(config, on_step=Interrupt(1))

    train(config, resume=True)

    assert [record["step"] for record in read_metrics(run_dir)] == [1, 2]


# ---------------------------------------------------------------- errors


def test_existing_dir_without_resume_rejected(action_model_dir, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "notes.txt").write_text("keep me")

    with pytest.raises(RunError, match="already exists and is not empty") as error:
        train(tiny_config(action_model_dir, run_dir))

    assert str(run_dir) in str(error.value)
    assert sorted(path.name for path in run_dir.iterdir()) == ["notes.txt"]


def test_resume_missing_dir_rejected(action_model_dir, tmp_path):
    with pytest.raises(RunError, match="Cannot resume"):
        train(tiny_config(action_model_dir, tmp_path / "run"), resume=True)


def test_resume_other_env_kwargs_rejected(action_model_dir, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text(tiny_config(action_model_dir, run_dir).to_json())

    with pytest.raises(RunError, match="env_kwargs"):
        train(tiny_config(action_model_dir, run_dir, env_kwargs={"size": 4}), resume=True)


def test_output_path_is_file_rejected(action_model_dir, tmp_path):
    path = tmp_path / "run.txt"
    path.write_text("")

    with pytest.raises(RunError, match="is not a directory"):
        train(tiny_config(action_model_dir, path))


def test_bad_model_path_leaves_no_run_dir(tmp_path):
    run_dir = tmp_path / "run"

    with pytest.raises(ModelLoadError, match="does not exist"):
        train(tiny_config(tmp_path / "nope", run_dir))

    assert not run_dir.exists()


def test_bad_env_kwargs_leave_no_run_dir(action_model_dir, tmp_path):
    run_dir = tmp_path / "run"

    with pytest.raises(ValueError, match="size"):
        train(tiny_config(action_model_dir, run_dir, env_kwargs={"size": 99}))

    assert not run_dir.exists()


def test_unknown_env_rejected(action_model_dir, tmp_path):
    run_dir = tmp_path / "run"

    with pytest.raises(ConfigError, match="erlgym/Nope-v0"):
        train(tiny_config(action_model_dir, run_dir, env="erlgym/Nope-v0"))

    assert not run_dir.exists()


def test_indivisible_batch_leaves_no_run_dir(action_model_dir, tmp_path):
    run_dir = tmp_path / "run"

    with pytest.raises(ConfigError, match="micro_batches"):
        train(tiny_config(action_model_dir, run_dir, tasks_per_step=1, rollouts_per_task=3, micro_batches=2))

    assert not run_dir.exists()


# ---------------------------------------------------------------- ERLTrainer batches


def build_trainer(model_dir, output_dir, beta: float = 0.0, **trainer_options) -> ERLTrainer:
    loaded = load_model(str(model_dir))
    args = GRPOConfig(
        output_dir=str(output_dir), max_steps=1, per_device_train_batch_size=2, gradient_accumulation_steps=2,
        steps_per_generation=2, num_generations=2, beta=beta, loss_type="dapo", max_completion_length=64,
        use_cpu=True, report_to=[], disable_tqdm=True, logging_steps=1, save_strategy="no",
    )
    return ERLTrainer(
        pool=EnvPool(ACTION_ENV_ID, ACTION_ENV_KWARGS), task_seeds=[0, 1], settings=StepSettings(group_size=2),
        generation=GenerationConfig(max_new_tokens=8), memory=ReflectionMemory(), records_path=None,
        args=args, model=loaded.model, processing_class=loaded.tokenizer,
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM"),
        **trainer_options,
    )


@pytest.fixture(scope="module")
def trainer(action_model_dir, tmp_path_factory):
    return build_trainer(action_model_dir, tmp_path_factory.mktemp("trainer"))


def sample(prompt, completion, env_mask, advantage=1.0) -> TrainingSample:
    return TrainingSample(kind="first_attempt", task_seed=0, prompt_ids=prompt, completion_ids=completion,
                          env_mask=env_mask, reward=1.0, advantage=advantage)


def test_to_batch_pads_prompts_left(trainer):
    pad = trainer.processing_class.pad_token_id
    batch = trainer._to_batch([sample([5, 6, 7], [10, 11], [1, 1]), sample([8], [12], [1])])

    assert batch["prompt_ids"].tolist() == [[5, 6, 7], [pad, pad, 8]]
    assert batch["prompt_mask"].tolist() == [[1, 1, 1], [0, 0, 1]]


def test_to_batch_pads_completions_right(trainer):
    pad = trainer.processing_class.pad_token_id
    batch = trainer._to_batch([sample([5], [10, 11, 12, 13], [1, 1, 1, 1]), sample([8], [14, 15], [1, 1])])

    assert batch["completion_ids"].tolist() == [[10, 11, 12, 13], [14, 15, pad, pad]]
    assert batch["completion_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]


def test_to_batch_masks_observations(trainer):
    batch = trainer._to_batch([sample([5], [10, 11, 12, 13, 14], [1, 1, 0, 0, 1]), sample([8], [15, 16], [1, 0])])

    assert batch["tool_mask"].tolist() == [[1, 1, 0, 0, 1], [1, 0, 0, 0, 0]]
    assert int(batch["num_items_in_batch"]) == 4


def test_to_batch_keeps_advantages(trainer):
    batch = trainer._to_batch([sample([5], [10], [1], advantage=1.5), sample([8], [11], [1], advantage=-0.5)])

    assert batch["advantages"].tolist() == [1.5, -0.5]
    assert "ref_per_token_logps" not in batch


def test_to_batch_pads_to_micro_batches(trainer):
    samples = [sample([5], [10], [1]), sample([6], [11], [1]), sample([7], [12, 13], [1, 1])]

    batch = trainer._to_batch(samples)

    assert batch["completion_ids"].shape[0] == 4
    assert batch["advantages"][3].item() == 0.0
    assert batch["completion_mask"][3].tolist() == [0, 0]
    assert batch["tool_mask"][3].tolist() == [0, 0]
    assert batch["prompt_mask"][3].tolist() == [1]
    assert int(batch["num_items_in_batch"]) == 4


def test_to_batch_empty_step(trainer):
    batch = trainer._to_batch([])

    assert batch["completion_ids"].shape[0] == 2
    assert batch["advantages"].tolist() == [0.0, 0.0]
    assert int(batch["num_items_in_batch"]) == 0


def loss_gradients(trainer, samples) -> list[torch.Tensor]:
    """Return the gradients of the trainable weights for TRL's loss on ``samples``."""
    model = trainer.model
    model.eval()
    model.zero_grad()
    loss = trainer.compute_loss(model, trainer._to_batch(samples))
    loss.backward()
    gradients = [parameter.grad.clone() for parameter in model.parameters() if parameter.requires_grad]
    model.zero_grad()
    return gradients


def test_loss_ignores_observation_tokens(trainer):
    """The last completion token only enters the loss as a target, so masking it must remove it."""
    prompt, reply = [5, 6, 7, 8], [20, 21, 22]
    first = loss_gradients(trainer, [sample(prompt, reply + [30], [1, 1, 1, 0]), sample(prompt, reply, [1, 1, 1])])
    second = loss_gradients(trainer, [sample(prompt, reply + [31], [1, 1, 1, 0]), sample(prompt, reply, [1, 1, 1])])

    for left, right in zip(first, second):
        assert torch.allclose(left, right, atol=1e-7)


def test_loss_uses_reply_tokens(trainer):
    prompt, reply = [5, 6, 7, 8], [20, 21, 22]
    first = loss_gradients(trainer, [sample(prompt, reply + [30], [1, 1, 1, 1]), sample(prompt, reply, [1, 1, 1])])
    second = loss_gradients(trainer, [sample(prompt, reply + [31], [1, 1, 1, 1]), sample(prompt, reply, [1, 1, 1])])

    assert any(not torch.allclose(left, right, atol=1e-7) for left, right in zip(first, second))


def test_reference_logps_with_kl(action_model_dir, tmp_path):
    """With beta > 0 the batch carries reference log-probs; a fresh LoRA equals the base model."""
    kl_trainer = build_trainer(action_model_dir, tmp_path, beta=0.04)
    samples = [sample([5, 6, 7], [20, 21, 22], [1, 1, 0]), sample([8], [23], [1])]

    batch = kl_trainer._to_batch(samples)
    input_ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], dim=1)
    attention_mask = torch.cat([batch["prompt_mask"], batch["completion_mask"]], dim=1)
    with torch.no_grad():
        policy, _, _ = kl_trainer._get_per_token_logps_and_entropies(
            kl_trainer.model, input_ids, attention_mask, batch["completion_ids"].size(1))

    assert batch["ref_per_token_logps"].shape == batch["completion_ids"].shape
    assert torch.allclose(batch["ref_per_token_logps"], policy, atol=1e-5)


def test_resume_finished_run_rejected(action_model_dir, tmp_path):
    run_dir = tmp_path / "run"
    train(tiny_config(action_model_dir, run_dir, steps=1))

    with pytest.raises(RunError, match="already trained 1 steps"):
        train(tiny_config(action_model_dir, run_dir, steps=1), resume=True)


def test_resume_trims_samples(action_model_dir, tmp_path):
    run_dir = tmp_path / "run"
    train(tiny_config(action_model_dir, run_dir, steps=2, save_every=1, keep_checkpoints=5))
    shutil.rmtree(run_dir / "checkpoints" / "checkpoint-2")
    with open(run_dir / "samples.jsonl", "a") as handle:
        handle.write(json.dumps({"kind": "stale", "step": 2}) + "\n")

    train(tiny_config(action_model_dir, run_dir, steps=2, save_every=1), resume=True)
    records = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]
    assert all(record["kind"] != "stale" for record in records)
    assert sorted({record["step"] for record in records}) == [1, 2]
    assert read_status(run_dir)["status"] == "completed"
    assert read_status(run_dir).get("error") is None


# ---------------------------------------------------------------- merged rollout model


def policy_logits(model, input_ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=input_ids).logits


def test_rollout_model_follows_lora_updates(action_model_dir, tmp_path):
    trainer = build_trainer(action_model_dir, tmp_path)
    input_ids = torch.tensor([[5, 17, 42, 99, 7, 3]])
    generator = torch.Generator().manual_seed(0)
    lora_weights = [parameter for name, parameter in trainer.model.named_parameters() if "lora_B" in name]
    with torch.no_grad():
        for parameter in lora_weights:  # an update moves lora_B away from its zero start
            parameter.copy_(0.05 * torch.randn(parameter.shape, generator=generator))
    trainer.model.eval()

    assert trainer.engine.model is trainer.rollout_model
    assert not torch.allclose(policy_logits(trainer.rollout_model, input_ids),
                              policy_logits(trainer.model, input_ids), atol=1e-3)
    trainer.sync_rollout_model()
    torch.testing.assert_close(policy_logits(trainer.rollout_model, input_ids),
                               policy_logits(trainer.model, input_ids), atol=1e-4, rtol=1e-4)


def test_rollout_model_counts_every_lora_layer(action_model_dir, tmp_path):
    trainer = build_trainer(action_model_dir, tmp_path)
    lora_layers = [module for module in trainer.model.modules() if isinstance(module, LoraLayer)]

    assert copy_merged_weights(trainer.model, trainer.rollout_model) == len(lora_layers) > 0


def test_trim_padding_keeps_loss(trainer):
    """A micro-batch trimmed to its own longest sample has the loss of the untrimmed one."""
    samples = [sample([5, 6], [10, 11, 12], [1, 0, 1], advantage=1.0),
               sample([7, 8, 9], [13, 14], [1, 1], advantage=-1.0)]
    wide = trainer._to_batch(samples + [sample([4] * 9, [15] * 12, [1] * 12, advantage=0.5)])
    # The first two rows alone, still padded to the third row's width.
    narrow_rows = {key: value[:2] if isinstance(value, torch.Tensor) and value.dim() > 0 else value
                   for key, value in wide.items()}
    trimmed = trim_padding(narrow_rows)
    trainer.model.eval()
    trainer.current_gradient_accumulation_steps = 1

    assert trimmed["prompt_ids"].shape == (2, 3)
    assert trimmed["completion_ids"].shape == (2, 3)
    assert trimmed["tool_mask"].tolist() == [[1, 0, 1], [1, 1, 0]]
    with torch.no_grad():
        expected = GRPOTrainer.compute_loss(trainer, trainer.model, narrow_rows)
        actual = trainer.compute_loss(trainer.model, narrow_rows)
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-4)


def test_trim_padding_leaves_full_batch_alone(trainer):
    batch = trainer._to_batch([sample([5, 6], [10, 11], [1, 1]), sample([7, 8], [12, 13], [1, 1])])

    assert trim_padding(batch) is batch


# ---------------------------------------------------------------- budgets


@pytest.mark.parametrize("budget, reason", [({"max_generated_tokens": 1}, "token budget"),
                                            ({"max_train_seconds": 0.001}, "time budget")])
def test_budget_stops_after_first_step(action_model_dir, tmp_path, budget, reason):
    run_dir = tmp_path / "run"

    train(tiny_config(action_model_dir, run_dir, steps=3, **budget))
    status = read_status(run_dir)

    assert [record["step"] for record in read_metrics(run_dir)] == [1]
    assert status["status"] == "completed"
    assert status["steps"] == 1
    assert status["stop_reason"].startswith(reason)
    assert (run_dir / "final" / "adapter_model.safetensors").is_file()


def test_step_limit_is_stop_reason(erl_run):
    run_dir, _ = erl_run

    assert read_status(run_dir)["stop_reason"] == "step limit: 2 steps"


def test_negative_budget_rejected(action_model_dir, tmp_path):
    with pytest.raises(ConfigError, match="max_generated_tokens must be >= 0"):
        train(tiny_config(action_model_dir, tmp_path / "run", max_generated_tokens=-5))


def test_ablation_options_reach_the_step(action_model_dir, tmp_path):
    run_dir = tmp_path / "run"

    train(tiny_config(action_model_dir, run_dir, steps=1, retry_context="attempt", internalize=False,
                      memory_policy="top"))
    (record,) = read_metrics(run_dir)

    assert record["erl/num_reflections"] == 0
    assert record["samples/reflection"] == 0
    assert record["samples/internalized_retry"] == 0
    assert json.loads((run_dir / "final" / MEMORY_FILE).read_text())["policy"] == "top"
