"""Tests of the PPO update: GAE over turns, the value head's inputs, and PPO training runs."""

import json
import shutil

import pytest
import torch
from peft import LoraConfig
from safetensors.torch import load_file, save_file

from erlgym.erl.algorithm import INTERNALIZED_RETRY, TrainingSample
from erlgym.erl.config import ConfigError
from erlgym.erl.models import load_model
from erlgym.erl.ppo import LastHiddenStates, PPOSettings, completion_states, decoder_of, turn_gae, turn_starts
from erlgym.erl.run import RunError, train
from erlgym.erl.trainer import VALUE_HEAD_FILE
from test_trainer import build_trainer
from tiny_model import tiny_train_config


# ---------------------------------------------------------------- GAE over turns


def test_turn_starts_after_each_observation():
    assert turn_starts([1, 1, 0, 0, 1, 1, 0, 1]) == [0, 4, 7]


def test_turn_starts_single_turn():
    assert turn_starts([1, 1, 1]) == [0]


def test_turn_starts_empty():
    assert turn_starts([]) == []


def test_gae_zero_values_decay_by_lambda():
    advantages, returns = turn_gae([0.0, 0.0, 0.0], reward=1.0, gamma=1.0, lam=0.95)

    assert advantages == pytest.approx([0.95**2, 0.95, 1.0])
    assert returns == pytest.approx(advantages)


def test_gae_by_hand():
    # t=1: δ = 1 − 0.2 = 0.8. t=0: δ = 0.9·0.2 − 0.5 = −0.32, A = −0.32 + 0.9·0.5·0.8 = 0.04.
    advantages, returns = turn_gae([0.5, 0.2], reward=1.0, gamma=0.9, lam=0.5)

    assert advantages == pytest.approx([0.04, 0.8])
    assert returns == pytest.approx([0.54, 1.0])


def test_gae_lambda_one_is_return_minus_value():
    values = [0.3, -0.1, 0.7, 0.2]
    advantages, returns = turn_gae(values, reward=2.0, gamma=0.8, lam=1.0)

    expected_returns = [2.0 * 0.8 ** (len(values) - 1 - t) for t in range(len(values))]
    assert returns == pytest.approx(expected_returns)
    assert advantages == pytest.approx([r - v for r, v in zip(expected_returns, values)])


def test_gae_with_lambda_zero_is_one_step_td():
    values = [0.3, 0.6]
    advantages, _ = turn_gae(values, reward=1.0, gamma=1.0, lam=0.0)

    assert advantages == pytest.approx([0.6 - 0.3, 1.0 - 0.6])


# ---------------------------------------------------------------- hidden states


def test_completion_states_are_the_states_before_each_token(action_model_dir):
    loaded = load_model(str(action_model_dir), "float32")
    model = loaded.model.eval()
    prompt = torch.tensor([[5, 6, 7, 8]])
    completion = torch.tensor([[9, 10, 11]])
    with LastHiddenStates(decoder_of(model)) as capture, torch.no_grad():
        model(torch.cat([prompt, completion], dim=1))
    states = completion_states(capture.stacked(), prompt.size(1), completion.size(1))

    for j in range(completion.size(1)):
        # The state that predicts completion token j has read the prompt and tokens before j.
        with LastHiddenStates(decoder_of(model)) as prefix, torch.no_grad():
            model(torch.cat([prompt, completion[:, :j]], dim=1))
        assert torch.allclose(states[0, j], prefix.stacked()[0, -1], atol=1e-5)


def test_hidden_states_are_captured_through_peft(action_model_dir):
    from peft import get_peft_model

    loaded = load_model(str(action_model_dir), "float32")
    model = get_peft_model(loaded.model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear",
                                                     task_type="CAUSAL_LM"))
    with LastHiddenStates(decoder_of(model)) as capture, torch.no_grad():
        model(torch.tensor([[5, 6, 7]]))
        model(torch.tensor([[8, 9, 10]]))

    assert capture.stacked().shape == (2, 3, model.config.hidden_size)


def test_no_forward_pass_is_an_error(action_model_dir):
    loaded = load_model(str(action_model_dir), "float32")
    with LastHiddenStates(decoder_of(loaded.model)) as capture:
        pass

    with pytest.raises(RuntimeError, match="No forward pass"):
        capture.stacked()


# ---------------------------------------------------------------- PPO batches


@pytest.fixture(scope="module")
def ppo_trainer(action_model_dir, tmp_path_factory):
    return build_trainer(action_model_dir, tmp_path_factory.mktemp("ppo-trainer"),
                         ppo=PPOSettings(gamma=1.0, gae_lambda=1.0))


def test_ppo_batch_has_per_token_advantages(ppo_trainer):
    samples = [
        TrainingSample("first_attempt", 0, [5, 6, 7], [10, 11, 20, 21, 12], [1, 1, 0, 0, 1], reward=1.0),
        TrainingSample("first_attempt", 0, [8], [13, 14], [1, 1], reward=0.0),
    ]
    batch = ppo_trainer._to_batch(samples)

    assert batch["advantages"].shape == batch["completion_ids"].shape
    # A new value head reads 0 everywhere, so with λ = γ = 1 every turn's advantage is its
    # episode's reward before whitening: the successful episode's tokens rank above the other's.
    advantages = batch["advantages"]
    assert advantages[0, 0] == advantages[0, 4]
    assert advantages[0, 0] > advantages[1, 0]
    # The value targets sit at each turn's first token.
    assert batch["value_mask"][0].tolist() == [1, 0, 0, 0, 1]
    assert batch["value_mask"][1].tolist()[:2] == [1, 0]
    assert batch["returns"][0, 0] == pytest.approx(1.0)
    assert batch["returns"][1, 0] == pytest.approx(0.0)


def test_ppo_batch_keeps_internalized_weights(ppo_trainer):
    samples = [
        TrainingSample("first_attempt", 0, [5, 6], [10, 11], [1, 1], reward=1.0),
        TrainingSample("first_attempt", 0, [5, 6], [12, 13], [1, 1], reward=0.0),
        TrainingSample(INTERNALIZED_RETRY, 0, [5, 6], [14, 15], [1, 1], reward=1.0, advantage=1.0),
    ]
    batch = ppo_trainer._to_batch(samples)
    row = next(i for i, ids in enumerate(batch["completion_ids"].tolist()) if ids[:2] == [14, 15])

    assert batch["advantages"][row, :2].tolist() == [1.0, 1.0]
    assert batch["value_mask"][row].sum() == 0


def test_ppo_loss_trains_the_value_head(ppo_trainer):
    samples = [
        TrainingSample("first_attempt", 0, [5, 6, 7], [10, 11, 20, 21, 12], [1, 1, 0, 0, 1], reward=1.0),
        TrainingSample("first_attempt", 0, [8], [13, 14], [1, 1], reward=0.0),
    ]
    batch = ppo_trainer._to_batch(samples)
    ppo_trainer.value_head.zero_grad(set_to_none=True)
    ppo_trainer.current_gradient_accumulation_steps = 1  # set by the training loop
    loss = ppo_trainer.compute_loss(ppo_trainer.model, batch)
    loss.backward()

    # The head starts at 0 and one return is 1, so the squared error has a gradient.
    assert ppo_trainer.value_head.linear.bias.grad is not None
    assert ppo_trainer.value_head.linear.bias.grad.abs().item() > 0
    ppo_trainer.value_head.zero_grad(set_to_none=True)
    ppo_trainer.model.zero_grad(set_to_none=True)


def test_ppo_optimizer_includes_the_value_head(ppo_trainer):
    ppo_trainer.optimizer = None
    optimizer = ppo_trainer.create_optimizer()
    optimized = {id(parameter) for group in optimizer.param_groups for parameter in group["params"]}

    assert all(id(parameter) in optimized for parameter in ppo_trainer.value_head.parameters())
    ppo_trainer.optimizer = None


# ---------------------------------------------------------------- PPO runs


def read_metrics(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def erl_ppo_run(action_model_dir, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("erl-ppo") / "run"
    return train(tiny_train_config(action_model_dir, output_dir=str(run_dir), update="ppo", steps=2))


def test_erl_ppo_run_logs_value_metrics(erl_ppo_run):
    records = read_metrics(erl_ppo_run)

    assert [record["step"] for record in records] == [1, 2]
    for record in records:
        assert record["ppo/value_loss"] >= 0
        assert "ppo/value_mean" in record
        assert "ppo/return_mean" in record


def test_erl_ppo_run_saves_a_trained_value_head(erl_ppo_run):
    checkpoint = erl_ppo_run / "checkpoints" / "checkpoint-2"
    head = load_file(checkpoint / VALUE_HEAD_FILE)

    # The head starts at exactly 0; two updates move it.
    assert float(sum(tensor.abs().sum() for tensor in head.values())) > 0


def test_ppo_baseline_run(action_model_dir, tmp_path):
    run_dir = train(tiny_train_config(action_model_dir, output_dir=str(tmp_path / "run"), method="grpo",
                                      update="ppo", steps=1))
    record = read_metrics(run_dir)[0]

    assert record["erl/num_reflections"] == 0
    # Under PPO no sample is dropped for a zero group advantage.
    assert record["samples/trained"] == record["samples/first_attempt"]


def test_ppo_resume_restores_the_value_head(action_model_dir, tmp_path):
    run_dir = tmp_path / "run"
    config = tiny_train_config(action_model_dir, output_dir=str(run_dir), update="ppo", steps=1)
    train(config)
    # Mark the saved head: a resumed run that loads it starts from a bias of 5.
    path = run_dir / "checkpoints" / "checkpoint-1" / VALUE_HEAD_FILE
    head = load_file(path)
    head["linear.bias"] = torch.tensor([5.0])
    save_file(head, str(path))

    config.steps = 2
    train(config, resume=True)
    resumed = load_file(run_dir / "checkpoints" / "checkpoint-2" / VALUE_HEAD_FILE)

    # One Adam step at learning rate 2e-4 moves the bias by about 2e-4.
    assert resumed["linear.bias"].item() == pytest.approx(5.0, abs=1e-2)


def test_resume_with_another_update_rejected(action_model_dir, tmp_path):
    run_dir = tmp_path / "run"
    train(tiny_train_config(action_model_dir, output_dir=str(run_dir), steps=1))

    with pytest.raises(RunError, match="update"):
        train(tiny_train_config(action_model_dir, output_dir=str(run_dir), update="ppo", steps=2), resume=True)


@pytest.mark.parametrize("field, value", [("update", "a2c"), ("gamma", 1.5), ("gae_lambda", -0.1),
                                          ("value_coef", -1.0)])
def test_bad_ppo_settings_rejected(action_model_dir, field, value):
    with pytest.raises(ConfigError, match=field):
        tiny_train_config(action_model_dir, **{field: value}).validate()


@pytest.fixture(scope="module")
def one_step_ppo_run(action_model_dir, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("ppo-one-step") / "run"
    train(tiny_train_config(action_model_dir, output_dir=str(run_dir), update="ppo", steps=1))
    return run_dir


@pytest.mark.parametrize("damage", ["corrupt", "missing"])
def test_resume_with_damaged_value_head_rejected(action_model_dir, one_step_ppo_run, tmp_path, damage):
    run_dir = tmp_path / "run"
    shutil.copytree(one_step_ppo_run, run_dir)
    path = run_dir / "checkpoints" / "checkpoint-1" / VALUE_HEAD_FILE
    if damage == "corrupt":
        path.write_bytes(b"garbage")
    else:
        path.unlink()
    metrics_before = (run_dir / "metrics.jsonl").read_text()

    with pytest.raises(RunError, match="value head") as raised:
        train(tiny_train_config(action_model_dir, output_dir=str(run_dir), update="ppo", steps=2), resume=True)

    assert "checkpoint-1" in str(raised.value)
    assert (run_dir / "metrics.jsonl").read_text() == metrics_before


def test_resume_with_changed_setting_rejected(action_model_dir, one_step_ppo_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(one_step_ppo_run, run_dir)

    with pytest.raises(RunError, match="gamma=0.5"):
        train(tiny_train_config(action_model_dir, output_dir=str(run_dir), update="ppo", steps=2, gamma=0.5),
              resume=True)
