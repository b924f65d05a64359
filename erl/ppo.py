"""PPO pieces: a value head on the policy, advantages by GAE over turns, and hidden-state capture.

TRL 1.16 has no PPO trainer, so erlgym's PPO update reuses the GRPO machinery: the same
rollouts, the same clipped token loss, with two changes.

- Advantages come from a learned value function instead of the group mean. A linear
  value head reads the policy's last hidden state where each turn's reply is about to
  start. That state has read the task, the earlier turns and the current observation.
  Generalized advantage estimation (GAE) runs over the turns of an episode, and every
  token of a turn's reply gets that turn's advantage.
- The loss adds ``value_coef`` times the squared error between the value head and the
  GAE returns. The head reads the same forward pass as the policy loss: a forward hook
  on the decoder keeps its last hidden state, so the value costs one small matmul.

Rewards are sparse: an episode's reward is credited to its last turn, and the value
after the last turn is 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class PPOSettings:
    """Settings of the PPO update: the discount, GAE's λ and the value loss weight."""

    gamma: float = 1.0
    gae_lambda: float = 0.95
    value_coef: float = 0.5


class ValueHead(nn.Module):
    """A linear map from a hidden state to a scalar value, starting at 0 for every input."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.linear = nn.Linear(hidden_size, 1)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.linear(hidden.to(self.linear.weight.dtype)).squeeze(-1)


def turn_starts(env_mask: Sequence[int]) -> list[int]:
    """Completion indices where a model reply starts: the first model token and every model token after an observation."""
    return [index for index, value in enumerate(env_mask)
            if value and (index == 0 or not env_mask[index - 1])]


def turn_gae(values: Sequence[float], reward: float, gamma: float, lam: float) -> tuple[list[float], list[float]]:
    """GAE over one episode's turns with ``reward`` on the last turn; return (advantages, returns).

    ``values[t]`` is the value of the state before turn t. With δ_t = r_t + γ V_{t+1} − V_t
    (V after the last turn is 0), the advantage is A_t = Σ_k (γλ)^k δ_{t+k} and the
    value target is A_t + V_t.
    """
    advantages = [0.0] * len(values)
    running = 0.0
    for t in reversed(range(len(values))):
        next_value = values[t + 1] if t + 1 < len(values) else 0.0
        step_reward = reward if t == len(values) - 1 else 0.0
        delta = step_reward + gamma * next_value - values[t]
        running = delta + gamma * lam * running
        advantages[t] = running
    returns = [advantage + value for advantage, value in zip(advantages, values)]
    return advantages, returns


def decoder_of(model: nn.Module) -> nn.Module:
    """Return the transformer body of a causal LM (unwrapping PEFT), whose output is the last hidden state."""
    if hasattr(model, "get_base_model"):
        model = model.get_base_model()
    return model.get_decoder()


class LastHiddenStates:
    """Keep the last hidden state of every forward pass through ``decoder`` while the context is open."""

    def __init__(self, decoder: nn.Module):
        self.decoder = decoder
        self.outputs: list[torch.Tensor] = []
        self._handle = None

    def __enter__(self) -> "LastHiddenStates":
        self._handle = self.decoder.register_forward_hook(self._keep)
        return self

    def __exit__(self, *exc_info) -> None:
        self._handle.remove()

    def _keep(self, module, args, output) -> None:
        hidden = output.last_hidden_state if hasattr(output, "last_hidden_state") else output[0]
        self.outputs.append(hidden)

    def stacked(self) -> torch.Tensor:
        """Return the captured states of all forward passes, concatenated along the batch dimension."""
        if not self.outputs:
            raise RuntimeError("No forward pass ran through the decoder while the hidden states were captured.")
        return torch.cat(self.outputs, dim=0)


def completion_states(hidden: torch.Tensor, prompt_width: int, completion_width: int) -> torch.Tensor:
    """Hidden states that predict each completion token: position P + j − 1 for completion index j."""
    return hidden[:, prompt_width - 1: prompt_width - 1 + completion_width]
