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
from accelerate.utils import gather_object
from datasets import Dataset
from peft.tuners.lora import LoraLayer
from safetensors.torch import load_file, save_file
from transformers import TrainerCallback
from trl import GRPOConfig, GRPOTrainer
from trl.trainer.utils import pad

from erlgym.erl.algorithm import DISTILLED_RETRY, INTERNALIZED_RETRY, EnvPool, StepSettings, TrainingSample, collect_step
from erlgym.erl.config import ConfigError
from erlgym.erl.errors import RunError
from erlgym.erl.memory import ReflectionMemory
from erlgym.erl.prefill import CONTROLLER_STATE_FILE, TemplatePrefill, load_controller_states, save_controller_states
from erlgym.erl.ppo import LastHiddenStates, PPOSettings, ValueHead, completion_states, decoder_of, turn_gae, turn_starts
from erlgym.erl.rollout import GenerationConfig, RolloutEngine

logger = logging.getLogger(__name__)

MEMORY_FILE = "erl_memory.json"
VALUE_HEAD_FILE = "value_head.safetensors"
DISTILL_TOP_K = 64
"""Teacher tokens per position that self-distillation matches; the rest of the vocabulary is dropped."""


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
        self.total_tokens += record.get("tokens/generated_tokens", 0.0)
        self.total_seconds += record["time/step_s"]
        if self.max_tokens and self.total_tokens >= self.max_tokens:
            self.stop_reason = f"token budget: {int(self.total_tokens):,} of {self.max_tokens:,} tokens generated"
        elif self.max_seconds and self.total_seconds >= self.max_seconds:
            self.stop_reason = f"time budget: {self.total_seconds:.0f} of {self.max_seconds:g} s trained"
        if args.world_size > 1 and (self.max_tokens or self.max_seconds):
            # Step seconds are measured per process: the main process decides for all, so
            # that no process enters a step the others skip.
            from accelerate.utils import broadcast_object_list

            decision = [self.stop_reason]
            broadcast_object_list(decision)
            self.stop_reason = decision[0]
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
    passes. Every tensor whose second dimension is as wide as the completions is trimmed
    with them.
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
        if not isinstance(value, torch.Tensor) or value.dim() < 2:
            continue
        if key in ("prompt_ids", "prompt_mask"):
            trimmed[key] = value[:, prompt_start:]
        elif value.size(1) == width:
            trimmed[key] = value[:, :completion_end]
    return trimmed


def _log_rest(top_logps: torch.Tensor) -> torch.Tensor:
    """log(1 − Σ p) over the last dimension: the log-probability of every token outside the top k."""
    return torch.log1p(-top_logps.exp().sum(-1).clamp(max=1.0 - 1e-6))


def completion_log_softmax(model, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, completion_ids: torch.Tensor,
                           completion_mask: torch.Tensor) -> torch.Tensor:
    """Full next-token log-probabilities at every completion position: (batch, completion width, vocabulary)."""
    width = completion_ids.size(1)
    outputs = model(input_ids=torch.cat([prompt_ids, completion_ids], dim=1),
                    attention_mask=torch.cat([prompt_mask, completion_mask], dim=1), logits_to_keep=width + 1)
    return torch.log_softmax(outputs.logits[:, :-1].float(), dim=-1)


class ERLTrainer(GRPOTrainer):
    """GRPOTrainer whose batches are ERL (or GRPO-baseline) steps over Gymnasium text environments.

    Args:
        pool: environment copies for rollouts.
        task_seeds: the seeds that define training tasks, in dataset order.
        settings: what one collection step does (group size, reflection on or off).
        generation: sampling settings for rollouts and reflections.
        memory: the reflection memory; restored from a checkpoint on resume.
        records_path: JSONL file that receives sample transcripts and reflections.
        ppo: PPO settings; with them, advantages come from a value head and GAE over turns
            (:mod:`erlgym.erl.ppo`) instead of group normalization.
        action_templates, reflection_templates: STATe templates prefilled into turns and
            reflections (:mod:`erlgym.erl.prefill`); their controllers are checkpointed.
        template_records_path: JSONL file that receives one record per templated trajectory.
        args, model, processing_class, peft_config, callbacks: as for GRPOTrainer.
    """

    def __init__(self, *, pool: EnvPool, task_seeds: list[int], settings: StepSettings,
                 generation: GenerationConfig, memory: ReflectionMemory, records_path: Path | None,
                 args: GRPOConfig, model, processing_class, peft_config=None, callbacks=None,
                 merged_rollouts: bool = True, ppo: PPOSettings | None = None,
                 action_templates: TemplatePrefill | None = None, reflection_templates: TemplatePrefill | None = None,
                 template_records_path: Path | None = None):
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
        self.action_templates = action_templates
        self.reflection_templates = reflection_templates
        self.template_records_path = template_records_path
        self.rollout_model = rollout_model.to(self.accelerator.device) if rollout_model is not None else None
        self.engine = RolloutEngine(self.model if self.rollout_model is None else self.rollout_model,
                                    processing_class, generation)
        self.last_step_metrics: dict[str, float] = {}
        self.ppo = ppo
        self.value_head: ValueHead | None = None
        if settings.internalization == "distill" and self.accelerator.num_processes > 1:
            raise ConfigError(
                "internalization 'distill' runs on one process: its loss needs a second forward pass, which "
                "distributed data parallel does not allow before the backward pass. Use internalization 'reward' "
                "or one process.")
        if ppo is not None:
            hidden_size = self.accelerator.unwrap_model(self.model).config.get_text_config().hidden_size
            self.value_head = ValueHead(hidden_size).to(self.accelerator.device)
            self.add_callback(_ValueHeadStep(self))

    def sync_rollout_model(self) -> None:
        """Copy the current policy into the rollout model (base weights plus merged LoRA deltas)."""
        if self.rollout_model is not None:
            copy_merged_weights(self.accelerator.unwrap_model(self.model), self.rollout_model)

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        self.sync_rollout_model()
        seeds = list(dict.fromkeys(int(row["task_seed"]) for row in inputs))  # unique, in order
        result = collect_step(self.engine, self.pool, seeds, self.memory, self.settings,
                              step=self.state.global_step + 1, action_templates=self.action_templates,
                              reflection_templates=self.reflection_templates)
        # Each process collects its own tasks, so every process logs the metrics reduced over all of them.
        per_process = gather_object([(len(result.samples), dict(result.metrics))])
        self.last_step_metrics = self._reduce_process_metrics([metrics for _, metrics in per_process])
        for name, value in self.last_step_metrics.items():
            self._metrics["train"][name].append(value)
        self._write_records(result.records)
        # Every process's templated trajectories go into one file, for the analysis.
        template_records = (gather_object(result.template_records) if self.accelerator.num_processes > 1
                            else result.template_records)
        self._write_records(template_records, self.template_records_path)

        # TRL's loss gathers one value per batch row from every process, and all_gather needs
        # equal shapes, so every process pads its batch to the largest sample count.
        return self._to_batch(result.samples, min_rows=max(count for count, _ in per_process))

    @staticmethod
    def _reduce_process_metrics(per_process: list[dict[str, float]]) -> dict[str, float]:
        """Combine the step metrics of every process, given in process order, into one dict.

        Counts (``tokens/*``, ``samples/*``, ``erl/num_reflections``, ``erl/memory_kept``) are
        summed and every other metric is averaged. A metric that some processes lack (the
        retry metrics exist only on steps with a failed attempt) is reduced over the
        processes that have it. Keys come out sorted, and the reduction runs in process
        order, so every process computes the same dict. One process's metrics come out
        unchanged.
        """
        reduced = {}
        for name in sorted(set().union(*per_process)):
            values = [metrics[name] for metrics in per_process if name in metrics]
            total = sum(values[1:], values[0])
            counted = name.startswith(("tokens/", "samples/")) or name in ("erl/num_reflections", "erl/memory_kept")
            reduced[name] = total if counted else total / len(values)
        return reduced

    def _write_records(self, records: list[dict[str, Any]], path: Path | None = None) -> None:
        """Append ``records`` to ``path`` (default: the samples file) as JSON lines, on the main process only."""
        path = path or self.records_path
        if path is None or not records or not self.accelerator.is_main_process:
            return
        with open(path, "a", encoding="utf-8") as handle:
            for record in records:
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")

    def _to_batch(self, samples: list[TrainingSample], min_rows: int = 0) -> dict[str, Any]:
        """Pad samples into the tensors GRPOTrainer's loss reads.

        The batch is padded with empty samples (every mask 0, advantage 0) to at least
        ``min_rows`` rows, rounded up to a multiple of ``steps_per_generation``, because TRL
        splits it into that many equal micro-batches and drops a remainder.
        """
        chunks = self.args.steps_per_generation
        pad_id = self.processing_class.pad_token_id
        samples = list(samples)
        filler = math.ceil(max(len(samples), min_rows, 1) / chunks) * chunks - len(samples)
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
        # Distilled retries train through their own divergence loss, so TRL's loss skips them.
        distilled = torch.tensor([s.kind == DISTILLED_RETRY for s in samples])
        distill_mask = env_mask * distilled.unsqueeze(1)
        env_mask = env_mask * ~distilled.unsqueeze(1)

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
        if self.value_head is not None:
            batch.update(self._ppo_targets(samples, batch))
        if distilled.any():
            batch["distill_mask"] = distill_mask.to(device)
            batch["teacher_ids"], batch["teacher_logps"] = self._teacher_top_k(samples, batch)
        return batch

    @torch.no_grad()
    def _teacher_top_k(self, samples: list[TrainingSample], batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """Compute the policy's top-k next-token log-probabilities over each distilled retry, with the reflection in its prompt.

        Returns token ids and log-probabilities of shape (batch, completion width, k); rows
        that are not distilled retries hold zeros.
        """
        width = batch["completion_ids"].size(1)
        rows = [row for row, sample in enumerate(samples) if sample.kind == DISTILLED_RETRY]
        pad_id = self.processing_class.pad_token_id
        teacher_prompts = pad([torch.tensor(samples[row].teacher_prompt_ids) for row in rows],
                              padding_value=pad_id, padding_side="left").to(self.accelerator.device)
        prompt_mask = pad([torch.ones(len(samples[row].teacher_prompt_ids), dtype=torch.long) for row in rows],
                          padding_value=0, padding_side="left").to(self.accelerator.device)
        with self.accelerator.autocast():
            logps = completion_log_softmax(self.model, teacher_prompts, prompt_mask, batch["completion_ids"][rows],
                                           batch["completion_mask"][rows])
        top_logps, top_ids = logps.topk(DISTILL_TOP_K, dim=-1)
        ids = torch.zeros(len(samples), width, DISTILL_TOP_K, dtype=torch.long, device=top_ids.device)
        values = torch.zeros(len(samples), width, DISTILL_TOP_K, device=top_logps.device)
        ids[rows], values[rows] = top_ids, top_logps.float()
        return ids, values

    def _distill_loss(self, model, inputs: dict[str, Any]) -> torch.Tensor:
        """KL(teacher ‖ policy) over the teacher's top-k tokens and the rest, averaged over distilled reply tokens.

        The policy reads the retry without the reflection, so minimizing this moves its
        token distributions toward those it has with the reflection in context.
        """
        mask = inputs["distill_mask"]
        rows = mask.any(dim=1)
        if not rows.any():
            return torch.zeros((), device=mask.device)
        with self.accelerator.autocast():
            student = completion_log_softmax(model, inputs["prompt_ids"][rows], inputs["prompt_mask"][rows],
                                             inputs["completion_ids"][rows], inputs["completion_mask"][rows])
        student_top = student.float().gather(-1, inputs["teacher_ids"][rows])
        teacher_top = inputs["teacher_logps"][rows]
        per_token = (teacher_top.exp() * (teacher_top - student_top)).sum(-1)
        # The tokens outside the teacher's top k form one more outcome, so the divergence is
        # that of two distributions over k + 1 outcomes: 0 exactly when the policies agree.
        teacher_rest = _log_rest(teacher_top)
        per_token = per_token + teacher_rest.exp() * (teacher_rest - _log_rest(student_top))
        token_mask = mask[rows].float()
        kl = (per_token * token_mask).sum() / token_mask.sum().clamp(min=1.0)
        self._metrics["train"]["distill/kl"].append(float(kl.detach()))
        return kl

    @torch.no_grad()
    def _ppo_targets(self, samples: list[TrainingSample], batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Per-token advantages by GAE over turns, and the value targets at each turn's start.

        First attempts, retries and reflections (one turn) get GAE advantages, whitened over
        their reply tokens. Internalized retries keep their reward as a constant weight:
        they are supervised toward the retry, not scored by the value head. Returns
        ``advantages`` (batch × completion width), ``returns`` and ``value_mask`` (1 where a
        turn starts, so where the value loss reads the head).
        """
        prompt_width, width = batch["prompt_ids"].size(1), batch["completion_ids"].size(1)
        input_ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], dim=1)
        attention_mask = torch.cat([batch["prompt_mask"], batch["completion_mask"]], dim=1)
        with LastHiddenStates(decoder_of(self.accelerator.unwrap_model(self.model))) as capture:
            self._get_per_token_logps_and_entropies(self.model, input_ids, attention_mask, width,
                                                    batch_size=self.args.per_device_train_batch_size)
        values = self.value_head(completion_states(capture.stacked(), prompt_width, width)).float().cpu()

        advantages = torch.zeros(len(samples), width)
        returns = torch.zeros(len(samples), width)
        value_mask = torch.zeros(len(samples), width)
        scored = torch.zeros(len(samples), width, dtype=torch.bool)
        for row, sample in enumerate(samples):
            if sample.kind == "padding":
                continue
            if sample.kind in (INTERNALIZED_RETRY, DISTILLED_RETRY):
                advantages[row, : len(sample.completion_ids)] = sample.advantage
                continue
            starts = turn_starts(sample.env_mask)
            turn_advantages, turn_returns = turn_gae([float(values[row, j]) for j in starts], sample.reward,
                                                     self.ppo.gamma, self.ppo.gae_lambda)
            for start, end, advantage, target in zip(starts, starts[1:] + [len(sample.completion_ids)],
                                                     turn_advantages, turn_returns):
                advantages[row, start:end] = advantage
                returns[row, start] = target
                value_mask[row, start] = 1.0
            scored[row, : len(sample.env_mask)] = torch.tensor(sample.env_mask, dtype=torch.bool)
        if scored.sum() > 1:
            selected = advantages[scored]
            advantages[scored] = (selected - selected.mean()) / (selected.std() + 1e-8)
        turn_starts_mask = value_mask.bool()
        sums = torch.tensor([values[turn_starts_mask].sum(), returns[turn_starts_mask].sum(), turn_starts_mask.sum()],
                            device=self.accelerator.device)
        value_sum, return_sum, count = self.accelerator.reduce(sums, reduction="sum").tolist()
        self._metrics["train"]["ppo/value_mean"].append(value_sum / max(count, 1.0))
        self._metrics["train"]["ppo/return_mean"].append(return_sum / max(count, 1.0))
        device = self.accelerator.device
        return {"advantages": advantages.to(device), "returns": returns.to(device), "value_mask": value_mask.to(device)}

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = trim_padding(inputs)
        if self.value_head is None:
            loss = super().compute_loss(model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)
            if "distill_mask" in inputs:
                loss = loss + self._distill_loss(model, inputs) / self.current_gradient_accumulation_steps
            return loss
        # The value head reads the decoder output of the policy loss's own forward pass.
        with LastHiddenStates(decoder_of(self.accelerator.unwrap_model(model))) as capture:
            loss = super().compute_loss(model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)
        values = self.value_head(completion_states(capture.stacked(), inputs["prompt_ids"].size(1),
                                                   inputs["completion_ids"].size(1)))
        mask = inputs["value_mask"]
        value_loss = 0.5 * (((values - inputs["returns"]) ** 2) * mask).sum() / mask.sum().clamp(min=1.0)
        self._metrics["train"]["ppo/value_loss"].append(
            float(self.accelerator.reduce(value_loss.detach(), reduction="mean")))
        loss = loss + self.ppo.value_coef * value_loss / self.current_gradient_accumulation_steps
        if "distill_mask" in inputs:
            loss = loss + self._distill_loss(model, inputs) / self.current_gradient_accumulation_steps
        return loss

    def create_optimizer(self, model=None):
        optimizer = super().create_optimizer(model)
        if self.value_head is not None:
            optimizer.add_param_group({"params": list(self.value_head.parameters()), "weight_decay": 0.0})
        return optimizer

    def load_value_head(self, checkpoint: Path) -> bool:
        """Restore the value head saved in ``checkpoint``; return False when the run has no value head.

        Raises:
            RunError: the checkpoint's value head file is missing or unreadable.
        """
        path = checkpoint / VALUE_HEAD_FILE
        if self.value_head is None:
            return False
        if not path.exists():
            raise RunError(f"{checkpoint} has no {VALUE_HEAD_FILE}, so the PPO value head cannot be restored. "
                           "Restore the file, or delete this checkpoint to resume from the one before it.")
        try:
            self.value_head.load_state_dict(load_file(str(path), device=str(self.accelerator.device)))
        except Exception as error:  # safetensors raises its own error type for corrupt files
            raise RunError(f"Cannot read the PPO value head {path}: {error}. Restore the file, or delete "
                           f"{checkpoint.name} to resume from the checkpoint before it.") from error
        return True

    def load_template_controllers(self, checkpoint: Path) -> bool:
        """Restore the template controllers saved in ``checkpoint``; return False when the run uses no templates.

        Raises:
            RunError: the checkpoint's controller file is missing, unreadable or for other libraries.
        """
        if self.action_templates is None and self.reflection_templates is None:
            return False
        path = checkpoint / CONTROLLER_STATE_FILE
        try:
            found = load_controller_states(path, self.action_templates, self.reflection_templates)
        except (OSError, ValueError, KeyError, TypeError) as error:  # JSON, TemplateError and shape errors
            raise RunError(f"Cannot read the template controllers {path}: {error}. Restore the file, or delete "
                           f"{checkpoint.name} to resume from the checkpoint before it.") from error
        if not found:
            raise RunError(f"{checkpoint} has no {CONTROLLER_STATE_FILE}, so the template controllers cannot be "
                           "restored. Restore the file, or delete this checkpoint to resume from the one before it.")
        return True

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
                # NOTE: under accelerate launch each process has its own controllers, updated with
                # its own tasks' rewards; only the main process's state is saved and restored.
                save_controller_states(checkpoint / CONTROLLER_STATE_FILE, self.action_templates,
                                       self.reflection_templates)
                if self.value_head is not None:
                    save_file({name: tensor.detach().contiguous().cpu()
                               for name, tensor in self.value_head.state_dict().items()},
                              str(checkpoint / VALUE_HEAD_FILE))


class _ValueHeadStep(TrainerCallback):
    """Prepare and finish the value head's part of each optimizer step.

    The value head lives outside the model the Trainer wraps, so neither gradient
    averaging across processes, gradient clipping nor ``model.zero_grad`` reaches it.
    """

    def __init__(self, trainer: ERLTrainer):
        self.trainer = trainer

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        parameters = [p for p in self.trainer.value_head.parameters() if p.grad is not None]
        if self.trainer.accelerator.num_processes > 1:
            for parameter in parameters:
                parameter.grad = self.trainer.accelerator.reduce(parameter.grad, reduction="mean")
        if parameters and args.max_grad_norm and args.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(parameters, args.max_grad_norm)

    def on_optimizer_step(self, args, state, control, **kwargs):
        self.trainer.value_head.zero_grad(set_to_none=True)
