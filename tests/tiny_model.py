"""A tiny randomly initialized chat model built in-process, so tests need no download.

The tokenizer is a byte-level BPE trained by the ``tokenizers`` library on a few
environment-like sentences, with ChatML special tokens and chat template (the format
SmolLM2 uses). The model is a two-layer Llama.

A random model never names a valid action, so every reward is 0. The action model
(:func:`save_action_model`) is the same architecture fine-tuned for a few dozen
supervised steps to reply ``Action: <direction>`` with a random direction, so that on
small FrozenLake maps some episodes succeed and some fail.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

import gymnasium as gym
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

import erlgym.envs  # noqa: F401  (registers the erlgym environments)
from erlgym.erl.config import TrainConfig

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

_CORPUS = [
    "You are in a grid. Move up, down, left or right to reach the goal. Action: Right",
    "P _ _ O\n_ O _ _\n_ _ _ G\nYou moved down. You fell into a hole. Action: Up Action: Left",
    "Failed: step limit reached. Succeeded in 3 moves. Invalid action: no action found.",
    "Advice from your previous attempt: avoid the hole, go right first, then down.",
    "# # # #\n# @ $ . #\nThe box is on the target. Push the box. Wall. Floor.",
    "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789 .,:;!?'\"()[]<>{}|_-+*/=#@$%&",
]


def build_tiny_tokenizer(vocab_size: int = 400, extra_corpus: Sequence[str] = ()) -> PreTrainedTokenizerFast:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tokenizer.train_from_iterator((_CORPUS + list(extra_corpus)) * 4, trainer=trainer)
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<|im_start|>", eos_token="<|im_end|>",
        pad_token="<|im_end|>", unk_token="<|endoftext|>",
    )
    wrapped.chat_template = CHATML_TEMPLATE
    return wrapped


def build_tiny_model(tokenizer: PreTrainedTokenizerFast, seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def save_tiny_model(folder: Path) -> Path:
    """Write the tiny model and tokenizer as a Hugging Face folder and return it."""
    tokenizer = build_tiny_tokenizer()
    model = build_tiny_model(tokenizer)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


ACTION_ENV_ID = "erlgym/FrozenLake-v0"
ACTION_ENV_KWARGS = {"size": [2, 3]}
DIRECTIONS = ("Right", "Down", "Left", "Up")
IGNORE_INDEX = -100
"""Label of tokens the loss skips: the default ``ignore_index`` of PyTorch's cross-entropy."""


def frozen_lake_texts(seeds: Sequence[int] = range(16)) -> list[str]:
    """Collect FrozenLake system prompt, few-shot turns, observations and feedback as tokenizer corpus."""
    from erlgym.erl.prompts import REFLECTION_SYSTEM_PROMPT, RETRY_NOTE_HEADER

    env = gym.make(ACTION_ENV_ID, **ACTION_ENV_KWARGS)
    texts = [env.unwrapped.system_prompt, REFLECTION_SYSTEM_PROMPT, RETRY_NOTE_HEADER]
    texts += [message["content"] for message in env.unwrapped.few_shot_messages()]
    for seed in seeds:
        observation, _ = env.reset(seed=seed)
        texts.append(observation)
        for direction in DIRECTIONS:
            observation, _, terminated, truncated, info = env.step(f"Action: {direction}")
            texts += [observation, info.get("episode_feedback", "")]
            if terminated or truncated:
                break
    env.close()
    return texts


def build_action_tokenizer() -> PreTrainedTokenizerFast:
    """Build the tiny tokenizer with FrozenLake texts in its corpus, so prompts take few tokens."""
    return build_tiny_tokenizer(vocab_size=1000, extra_corpus=frozen_lake_texts())


def train_action_replies(model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast, steps: int = 40,
                         batch_size: int = 4, learning_rate: float = 1e-2, seed: int = 0) -> list[float]:
    """Fine-tune ``model`` to answer FrozenLake first prompts with ``Action: <direction>``.

    Each example is a real first prompt (system prompt, few-shot turns, observation)
    followed by a reply that names one of the four directions at random. The loss
    covers the reply only. Returns the loss of every step.
    """
    from erlgym.erl.chat import encode_prompt

    rng = random.Random(seed)
    torch.manual_seed(seed)
    env = gym.make(ACTION_ENV_ID, **ACTION_ENV_KWARGS)
    examples = []
    for task_seed in range(16):
        observation, _ = env.reset(seed=task_seed)
        messages = [{"role": "system", "content": env.unwrapped.system_prompt},
                    *env.unwrapped.few_shot_messages(), {"role": "user", "content": observation}]
        prompt_ids = encode_prompt(tokenizer, messages)
        reply = f"Action: {rng.choice(DIRECTIONS)}{tokenizer.eos_token}"
        reply_ids = tokenizer(reply, add_special_tokens=False)["input_ids"]
        examples.append((prompt_ids + reply_ids, [IGNORE_INDEX] * len(prompt_ids) + reply_ids))
    env.close()

    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate)
    model.train()
    losses = []
    for _ in range(steps):
        batch = rng.sample(examples, batch_size)
        width = max(len(ids) for ids, _ in batch)
        input_ids = torch.full((batch_size, width), tokenizer.pad_token_id, dtype=torch.long)
        labels = torch.full((batch_size, width), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((batch_size, width), dtype=torch.long)
        for row, (ids, targets) in enumerate(batch):
            input_ids[row, : len(ids)] = torch.tensor(ids)
            labels[row, : len(targets)] = torch.tensor(targets)
            attention_mask[row, : len(ids)] = 1
        loss = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    model.eval()
    return losses


def save_action_model(folder: Path) -> Path:
    """Write the fine-tuned action model and its tokenizer as a Hugging Face folder and return it."""
    tokenizer = build_action_tokenizer()
    model = build_tiny_model(tokenizer)
    train_action_replies(model, tokenizer)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def tiny_train_config(model_dir, **overrides) -> TrainConfig:
    """Return a training configuration for the action model: 2 steps of 2 tasks × 2 attempts, short replies."""
    values = dict(model=str(model_dir), env=ACTION_ENV_ID, env_kwargs=dict(ACTION_ENV_KWARGS), steps=2,
                  tasks_per_step=2, rollouts_per_task=2, micro_batches=2, max_new_tokens=8,
                  reflection_max_new_tokens=8, save_every=1, temperature=1.0, dtype="float32")
    values.update(overrides)
    return TrainConfig(**values)
