"""The ERL trainer: TRL's GRPOTrainer with erlgym's multi-turn rollouts and per-kind advantages.

TRL's GRPOTrainer supplies the clipped policy-gradient loss, the optimizer and
scheduler, LoRA through PEFT, accelerate integration, checkpoints and logging.
:class:`ERLTrainer` replaces only ``_generate_and_score_completions``: instead of one
completion per prompt scored by reward functions, it runs an ERL step
(:func:`erlgym.erl.algorithm.collect_step`) and hands TRL the resulting sequences with
their own advantages and an ``env_mask`` (TRL's ``tool_mask``) that keeps observation
tokens out of the loss.

NOTE: this relies on GRPOTrainer internals (``_generate_and_score_completions``,
``_metrics``, the output keys ``_compute_loss`` reads) as of TRL 1.16; pyproject pins
that minor version.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from peft.tuners.lora import LoraLayer
from transformers import TrainerCallback
from trl import GRPOConfig, GRPOTrainer
from trl.trainer.utils import pad

from erlgym.erl.algorithm import EnvPool, StepSettings, TrainingSample, collect_step
from erlgym.erl.memory import ReflectionMemory
from erlgym.erl.rollout import GenerationConfig, RolloutEngine

logger = logging.getLogger(__name__)

MEMORY_FILE = "erl_memory.json"


class MetricsFileCallback(TrainerCallback):
    """Append each step's logged metrics to ``metrics.jsonl``, report them to ``on_step``, and enforce budgets.

    With ``max_tokens`` or ``max_seconds`` above 0, training stops after the step in
    which the run's generated tokens or step seconds reach the limit. The totals start
    from the lines already in ``path``, so a resumed run counts its earlier steps.
    """

    def __init__(self, path: Path, on_step: Callable[[dict[str, Any]], None] | None = None,
                 max_tokens: int = 0, max_seconds: float = 0.0):
        self.path = path
        self.on_step = on_step
        self.max_tokens = max_tokens
        self.max_seconds = max_seconds
        self.step_started = time.perf_counter()
        self.total_tokens = 0.0
        self.total_seconds = 0.0
        self.stop_reason: str | None = None
        if path.exists():
            for line in path.read_text().splitlines():
                if line.strip():
                    record = json.loads(line)
                    self.total_tokens += record.get("tokens/generated_tokens", 0.0)
                    self.total_seconds += record.get("time/step_s", 0.0)

    def on_step_begin(self, args, state, control, **kwargs):
        self.step_started = time.perf_counter()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or "loss" not in logs:
            return
        record = {"step": state.global_step, "time/step_s": time.perf_counter() - self.step_started}
        record.update({key: value for key, value in logs.items() if isinstance(value, (int, float))})
        # Every process decides on the logged (gathered) token count, so all stop together.
        # NOTE: step seconds are measured per process, so a time budget across processes
        # may stop them one step apart.
        self.total_tokens += record.get("tokens/generated_tokens", 0.0)
        self.total_seconds += record["time/step_s"]
        if self.max_tokens and self.total_tokens >= self.max_tokens:
            self.stop_reason = f"token budget: {int(self.total_tokens):,} of {self.max_tokens:,} tokens generated"
        elif self.max_seconds and self.total_seconds >= self.max_seconds:
            self.stop_reason = f"time budget: {self.total_seconds:.0f} of {self.max_seconds:g} s trained"
        if self.stop_reason is not None:
            control.should_training_stop = True
        if not state.is_world_process_zero:
            return
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        if self.on_step is not None:
            self.on_step(record)


@torch.no_grad()
def copy_merged_weights(peft_model: torch.nn.Module, target: torch.nn.Module) -> int:
    """Set each LoRA-wrapped linear layer of ``target`` to base weight + LoRA delta; return how many were set.

    ``target`` is a plain copy of the model taken before PEFT wrapped it, so its module
    names are the PEFT base model's. Only LoRA layers are copied: every other weight is
    frozen under LoRA and stays equal to the copy's.
    """
    target_modules = dict(target.named_modules())
    merged = 0
    for name, module in peft_model.get_base_model().named_modules():
        if not isinstance(module, LoraLayer):
            continue
        weight = module.get_base_layer().weight.float()
        for adapter in module.active_adapters:
            if adapter in module.lora_A:
                weight = weight + module.get_delta_weight(adapter).float()
        target_modules[name].weight.copy_(weight)
        merged += 1
    return merged


def environment_reward(completions: list[Any], **kwargs: Any) -> list[float]:
    """Read episode rewards back from the rollout (``kwargs["episode_reward"]``).

    GRPOTrainer requires a reward source. In erlgym the environments compute rewards
    during the rollout, and :class:`ERLTrainer` turns them into advantages itself, so
    the trainer's collection step does not call this function.
    """
    return [float(value) for value in kwargs.get("episode_reward", [0.0] * len(completions))]


def trim_padding(batch: dict[str, Any]) -> dict[str, Any]:
    """Drop the prompt columns no row attends to and the completion columns past every row's end.

    ``_to_batch`` pads a whole step to its longest sample; TRL then splits it into
    micro-batches that keep that width. Trimming each micro-batch to its own longest
    sample leaves the loss unchanged and skips the padded positions' forward and backward
    passes. Every two-dimensional tensor as wide as the completions is trimmed with them.
    """
    prompt_used = batch["prompt_mask"].any(dim=0).nonzero()
    completion_used = batch["completion_mask"].any(dim=0).nonzero()
    prompt_start = int(prompt_used[0]) if len(prompt_used) else batch["prompt_mask"].size(1) - 1
    completion_end = int(completion_used[-1]) + 1 if len(completion_used) else 1
    width = batch["completion_ids"].size(1)
    if prompt_start == 0 and completion_end == width:
        return batch
    trimmed = dict(batch)
    for key, value in batch.items():
        if not isinstance(value, torch.Tensor) or value.dim() != 2:
            continue
        if key in ("prompt_ids", "prompt_mask"):
            trimmed[key] = value[:, prompt_start:]
        elif value.size(1) == width:
            trimmed[key] = value[:, :completion_end]
    return trimmed


class ERLTrainer(GRPOTrainer):
    """GRPOTrainer whose batches are ERL (or GRPO-baseline) steps over Gymnasium text environments.

    Args:
        pool: environment copies for rollouts.
        task_seeds: the seeds that define training tasks, in dataset order.
        settings: what one collection step does (group size, reflection on or off).
        generation: sampling settings for rollouts and reflections.
        memory: the reflection memory; restored from a checkpoint on resume.
        records_path: JSONL file that receives sample transcripts and reflections.
        args, model, processing_class, peft_config, callbacks: as for GRPOTrainer.
    """

    def __init__(self, *, pool: EnvPool, task_seeds: list[int], settings: StepSettings,
                 generation: GenerationConfig, memory: ReflectionMemory, records_path: Path | None,
                 args: GRPOConfig, model, processing_class, peft_config=None, callbacks=None,
                 merged_rollouts: bool = True):
        dataset = Dataset.from_dict({
            "prompt": [f"{pool.env_id} task {seed}" for seed in task_seeds],
            "task_seed": list(task_seeds),
        })
        # Generating through unmerged LoRA layers adds two small matmuls per linear layer,
        # in float32 when PEFT keeps the adapters in float32. A plain copy taken before PEFT
        # wraps the model samples instead, with the adapters merged in before every step.
        rollout_model = None
        if peft_config is not None and merged_rollouts:
            rollout_model = copy.deepcopy(model).eval().requires_grad_(False)
        super().__init__(model=model, reward_funcs=[environment_reward], args=args, train_dataset=dataset,
                         processing_class=processing_class, peft_config=peft_config, callbacks=callbacks)
        self.pool = pool
        self.settings = settings
        self.memory = memory
        self.records_path = records_path
        self.rollout_model = rollout_model.to(self.accelerator.device) if rollout_model is not None else None
        self.engine = RolloutEngine(self.model if self.rollout_model is None else self.rollout_model,
                                    processing_class, generation)
        self.last_step_metrics: dict[str, float] = {}

    def sync_rollout_model(self) -> None:
        """Copy the current policy into the rollout model (base weights plus merged LoRA deltas)."""
        if self.rollout_model is not None:
            copy_merged_weights(self.accelerator.unwrap_model(self.model), self.rollout_model)

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        self.sync_rollout_model()
        seeds = list(dict.fromkeys(int(row["task_seed"]) for row in inputs))  # unique, in order
        result = collect_step(self.engine, self.pool, seeds, self.memory, self.settings,
                              step=self.state.global_step + 1)
        self.last_step_metrics = dict(result.metrics)
        for name, value in result.metrics.items():
            self._metrics["train"][name].append(value)
        self._write_records(result.records)
        return self._to_batch(result.samples)

    def _write_records(self, records: list[dict[str, Any]]) -> None:
        if self.records_path is None or not self.accelerator.is_main_process:
            return
        with open(self.records_path, "a", encoding="utf-8") as handle:
            for record in records:
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")

    def _to_batch(self, samples: list[TrainingSample]) -> dict[str, Any]:
        """Pad samples into the tensors GRPOTrainer's loss reads.

        The batch is padded with empty samples (every mask 0, advantage 0) to a multiple
        of ``steps_per_generation``, because TRL splits it into that many equal
        micro-batches and drops a remainder.
        """
        chunks = self.args.steps_per_generation
        pad_id = self.processing_class.pad_token_id
        samples = list(samples)
        filler = math.ceil(max(len(samples), 1) / chunks) * chunks - len(samples)
        empty = TrainingSample(kind="padding", task_seed=-1, prompt_ids=[pad_id], completion_ids=[pad_id],
                               env_mask=[0], reward=0.0)
        samples.extend([empty] * filler)
        real = [sample.kind != "padding" for sample in samples]

        device = self.accelerator.device
        prompt_ids = pad([torch.tensor(s.prompt_ids) for s in samples], padding_value=pad_id, padding_side="left")
        prompt_mask = pad([torch.tensor([int(r)] * len(s.prompt_ids)) for s, r in zip(samples, real)],
                          padding_value=0, padding_side="left")
        # Padding samples keep one attended prompt token so that no row is fully masked.
        prompt_mask[:, -1] = 1
        completion_ids = pad([torch.tensor(s.completion_ids) for s in samples], padding_value=pad_id,
                             padding_side="right")
        completion_mask = pad([torch.tensor([int(r)] * len(s.completion_ids)) for s, r in zip(samples, real)],
                              padding_value=0, padding_side="right")
        env_mask = pad([torch.tensor(s.env_mask) for s in samples], padding_value=0, padding_side="right")
        advantages = torch.tensor([s.advantage for s in samples], dtype=torch.float32)

        num_items_in_batch = self.accelerator.gather((completion_mask * env_mask).sum().to(device)).sum()
        batch = {
            "prompt_ids": prompt_ids.to(device),
            "prompt_mask": prompt_mask.to(device),
            "completion_ids": completion_ids.to(device),
            "completion_mask": completion_mask.to(device),
            "tool_mask": env_mask.to(device),
            "advantages": advantages.to(device),
            "num_items_in_batch": num_items_in_batch,
        }
        if self.beta != 0.0:
            batch["ref_per_token_logps"] = self._reference_logps(batch)
        return batch

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        return super().compute_loss(model, trim_padding(inputs), return_outputs=return_outputs,
                                    num_items_in_batch=num_items_in_batch)

    @torch.no_grad()
    def _reference_logps(self, batch: dict[str, Any]) -> torch.Tensor:
        """Per-token log-probabilities under the reference policy, for the KL term."""
        input_ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], dim=1)
        attention_mask = torch.cat([batch["prompt_mask"], batch["completion_mask"]], dim=1)
        logits_to_keep = batch["completion_ids"].size(1)
        if self.ref_model is not None:
            logps, _, _ = self._get_per_token_logps_and_entropies(
                self.ref_model, input_ids, attention_mask, logits_to_keep,
                batch_size=self.args.per_device_train_batch_size)
            return logps
        model = self.accelerator.unwrap_model(self.model)
        with model.disable_adapter():
            logps, _, _ = self._get_per_token_logps_and_entropies(
                self.model, input_ids, attention_mask, logits_to_keep,
                batch_size=self.args.per_device_train_batch_size)
        return logps

    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        if self.accelerator.is_main_process:
            checkpoint = Path(self.args.output_dir) / f"checkpoint-{self.state.global_step}"
            if checkpoint.is_dir():
                self.memory.save(checkpoint / MEMORY_FILE)
