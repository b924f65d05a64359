"""Tests of internalization by self-distillation: samples, teacher distributions, the loss, and a run."""

import json

import pytest
import torch

from erlgym.erl.algorithm import (DISTILLED_RETRY, INTERNALIZED_RETRY, RETRY, EnvPool, StepSettings,
                                  TrainingSample, collect_step)
from erlgym.erl.memory import ReflectionMemory
from erlgym.erl.models import load_model
from erlgym.erl.prompts import RETRY_NOTE_HEADER
from erlgym.erl.rollout import GenerationConfig, RolloutEngine
from erlgym.erl.run import train
from erlgym.erl.trainer import DISTILL_TOP_K, trim_padding
from test_trainer import build_trainer
from tiny_model import ACTION_ENV_ID, ACTION_ENV_KWARGS, tiny_train_config


@pytest.fixture(scope="module")
def action_model(action_model_dir):
    return load_model(str(action_model_dir))


@pytest.fixture(scope="module")
def distill_step(action_model):
    torch.manual_seed(0)
    pool = EnvPool(ACTION_ENV_ID, ACTION_ENV_KWARGS)
    engine = RolloutEngine(action_model.model, action_model.tokenizer,
                           GenerationConfig(max_new_tokens=8, temperature=1.0))
    settings = StepSettings(group_size=3, reflection_max_new_tokens=10, internalization="distill")
    result = collect_step(engine, pool, [100, 101, 102], ReflectionMemory(), settings, step=1)
    pool.close()
    return result


def test_distill_step_replaces_internalized_retries(distill_step):
    distilled = [s for s in distill_step.samples if s.kind == DISTILLED_RETRY]

    assert distilled, "no retry succeeded, so the step has nothing to distill"
    assert not [s for s in distill_step.samples if s.kind == INTERNALIZED_RETRY]
    # Kept although their advantage is 0: their loss is a divergence.
    assert all(s.advantage == 0.0 for s in distilled)


def test_distilled_retry_prompts(distill_step, action_model):
    decode = action_model.tokenizer.decode
    retries = {(s.task_seed, tuple(s.completion_ids)): s for s in distill_step.samples if s.kind == RETRY}
    for sample in (s for s in distill_step.samples if s.kind == DISTILLED_RETRY):
        assert RETRY_NOTE_HEADER not in decode(sample.prompt_ids)
        assert RETRY_NOTE_HEADER in decode(sample.teacher_prompt_ids)
        # The teacher prompt is the retry's own prompt.
        assert retries[(sample.task_seed, tuple(sample.completion_ids))].prompt_ids == sample.teacher_prompt_ids


# ---------------------------------------------------------------- teacher distributions and loss


@pytest.fixture(scope="module")
def trainer(action_model_dir, tmp_path_factory):
    trainer = build_trainer(action_model_dir, tmp_path_factory.mktemp("distill-trainer"))
    trainer.current_gradient_accumulation_steps = 1  # set by the training loop
    return trainer


def distilled(prompt, teacher_prompt, completion, env_mask) -> TrainingSample:
    return TrainingSample(DISTILLED_RETRY, 0, prompt, completion, env_mask, reward=1.0,
                          teacher_prompt_ids=teacher_prompt)


def test_distilled_rows_leave_the_policy_loss(trainer):
    batch = trainer._to_batch([
        TrainingSample("first_attempt", 0, [5, 6], [10, 11], [1, 1], reward=1.0, advantage=1.0),
        distilled([5, 6], [7, 8, 5, 6], [12, 13, 20, 14], [1, 1, 0, 1]),
    ])
    row = batch["distill_mask"].any(dim=1).nonzero().item()

    assert batch["tool_mask"][row].sum() == 0
    assert batch["distill_mask"][row].tolist() == [1, 1, 0, 1]
    assert batch["teacher_ids"].shape == (*batch["completion_ids"].shape, DISTILL_TOP_K)
    # Top-k log-probabilities of a distribution: sorted, and their probabilities sum to at most 1.
    top = batch["teacher_logps"][row, 0]
    assert torch.all(top[:-1] >= top[1:])
    assert 0 < top.exp().sum() <= 1 + 1e-5


def test_distill_loss_zero_for_same_prompt(trainer):
    batch = trainer._to_batch([
        TrainingSample("first_attempt", 0, [5, 6], [10, 11], [1, 1], reward=1.0, advantage=1.0),
        distilled([5, 6, 7], [5, 6, 7], [12, 13, 14], [1, 1, 1]),
    ])
    loss = trainer._distill_loss(trainer.model, trim_padding(batch))

    assert loss.item() == pytest.approx(0.0, abs=1e-5)


def test_distill_loss_is_positive_and_trains_the_policy(trainer):
    batch = trainer._to_batch([
        TrainingSample("first_attempt", 0, [5, 6], [10, 11], [1, 1], reward=1.0, advantage=1.0),
        distilled([5, 6, 7], [30, 31, 32, 33, 5, 6, 7], [12, 13, 14], [1, 1, 1]),
    ])
    trainer.model.zero_grad(set_to_none=True)
    loss = trainer._distill_loss(trainer.model, trim_padding(batch))
    loss.backward()
    lora_grads = [p.grad for name, p in trainer.model.named_parameters() if "lora_" in name and p.grad is not None]

    assert loss.item() > 0
    assert lora_grads and any(grad.abs().sum() > 0 for grad in lora_grads)
    trainer.model.zero_grad(set_to_none=True)


def test_trim_padding_trims_teacher_tensors(trainer):
    batch = trainer._to_batch([
        TrainingSample("first_attempt", 0, [5, 6], [10, 11, 12, 13, 14], [1, 1, 1, 1, 1], reward=1.0, advantage=1.0),
        distilled([5, 6], [7, 5, 6], [12, 13], [1, 1]),
    ])
    # The first row is the long one; a micro-batch of the short row alone is trimmed to width 2.
    row = batch["distill_mask"].any(dim=1).nonzero().item()
    single = {key: value[row: row + 1] if isinstance(value, torch.Tensor) and value.dim() else value
              for key, value in batch.items()}
    trimmed = trim_padding(single)

    assert trimmed["completion_ids"].size(1) == 2
    assert trimmed["teacher_ids"].shape[1] == 2
    assert trimmed["teacher_logps"].shape[1] == 2


# ---------------------------------------------------------------- run


def test_distill_run_logs_the_divergence(action_model_dir, tmp_path):
    run_dir = train(tiny_train_config(action_model_dir, output_dir=str(tmp_path / "run"),
                                      internalization="distill", memory_threshold=0.0, steps=2))
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]

    assert [record["step"] for record in records] == [1, 2]
    distilled_steps = [record for record in records if record["samples/distilled_retry"] > 0]
    assert distilled_steps, "no retry succeeded in two steps"
    assert all(record["distill/kl"] >= 0 for record in distilled_steps)
    assert all(record["samples/internalized_retry"] == 0 for record in records)
