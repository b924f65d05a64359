"""Tests of token-in/token-out rollouts: the trained ids are the sampled ids.

The policy is the tiny action model (see ``tiny_model.py``), which replies
``Action: <direction>``, so episodes on small FrozenLake maps last several turns.
"""

import gymnasium as gym
import pytest
import torch

from erlgym.erl.chat import encode_prompt
from erlgym.erl.models import load_model
from erlgym.erl.rollout import Episode, GenerationConfig, RolloutEngine, TurnState
from tiny_model import ACTION_ENV_ID, ACTION_ENV_KWARGS

IM_END = "<|im_end|>"
# A 4x4 lake without holes whose goal is at least six moves away, so no single reply ends an episode.
OPEN_LAKE = ["SFFF", "FFFF", "FFFF", "FFFG"]
SEEDS = [200, 201, 202, 203]


class RecordingEngine(RolloutEngine):
    """A rollout engine that records every generate call's contexts and outputs."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls: list[tuple[list[list[int]], list[list[int]]]] = []

    def generate(self, contexts, *args, **kwargs):
        outputs = super().generate(contexts, *args, **kwargs)
        self.calls.append(([list(ids) for ids in contexts], [list(ids) for ids in outputs]))
        return outputs


class ScriptedEngine(RolloutEngine):
    """A rollout engine whose replies are fixed id lists instead of model samples."""

    def __init__(self, *args, replies: list[list[int]], **kwargs):
        super().__init__(*args, **kwargs)
        self.replies = list(replies)

    def generate(self, contexts, *args, **kwargs):
        return [self.replies.pop(0) for _ in contexts]


@pytest.fixture(scope="module")
def action_model(action_model_dir):
    return load_model(str(action_model_dir))


def first_messages(env: gym.Env, seed: int) -> list[dict[str, str]]:
    observation, _ = env.reset(seed=seed)
    return [{"role": "system", "content": env.unwrapped.system_prompt},
            *env.unwrapped.few_shot_messages(), {"role": "user", "content": observation}]


def play(engine: RolloutEngine, seeds: list[int], **env_kwargs) -> list[Episode]:
    envs = [make_env(**env_kwargs) for _ in seeds]
    episodes = [engine.start_episode(env, seed, env.unwrapped.system_prompt, env.unwrapped.few_shot_messages())
                for env, seed in zip(envs, seeds)]
    return engine.run(episodes)


def mask_spans(ids: list[int], mask: list[int], value: int) -> list[list[int]]:
    """Return the maximal runs of ``ids`` whose mask equals ``value``, in order."""
    spans, current = [], None
    for token, bit in zip(ids, mask):
        if bit == value:
            current = [] if current is None else current
            current.append(token)
        elif current is not None:
            spans.append(current)
            current = None
    if current is not None:
        spans.append(current)
    return spans


def generated_turns(engine: RecordingEngine, episode: Episode) -> list[list[int]]:
    """Return, in order, the outputs of generate calls whose context was this episode's."""
    full = episode.prompt_ids + episode.completion_ids
    turns = []
    for contexts, outputs in engine.calls:
        for context, output in zip(contexts, outputs):
            if context[: len(episode.prompt_ids)] == episode.prompt_ids and full[: len(context)] == context:
                turns.append(output)
    return turns


def make_env(**env_kwargs) -> gym.Env:
    return gym.make(ACTION_ENV_ID, **(env_kwargs or ACTION_ENV_KWARGS))


def replay_observations(episode: Episode, tokenizer, turns: list[list[int]], **env_kwargs) -> list[str]:
    """Return every observation of a fresh env stepped with the episode's seed and decoded replies."""
    env = make_env(**env_kwargs)
    observation, _ = env.reset(seed=episode.seed)
    observations = [observation]
    for turn in turns:
        observation, *_ = env.step(tokenizer.decode(turn, skip_special_tokens=True))
        observations.append(observation)
    return observations


def replay_conversation(episode: Episode, tokenizer, turns: list[list[int]], **env_kwargs) -> list[dict[str, str]]:
    """Build the chat messages of the episode from a fresh env and the decoded replies."""
    observations = replay_observations(episode, tokenizer, turns, **env_kwargs)
    conversation = first_messages(make_env(**env_kwargs), episode.seed)
    for index, turn in enumerate(turns):
        if index > 0:
            conversation.append({"role": "user", "content": observations[index]})
        conversation.append({"role": "assistant", "content": tokenizer.decode(turn, skip_special_tokens=True)})
    return conversation


@pytest.fixture(scope="module")
def recorded(action_model):
    torch.manual_seed(0)
    engine = RecordingEngine(action_model.model, action_model.tokenizer,
                             GenerationConfig(max_new_tokens=8, temperature=1.0))
    episodes = play(engine, SEEDS)
    return engine, episodes


def test_recorded_episodes_multi_turn(recorded):
    _, episodes = recorded

    # The checks below need episodes with observation turns between replies.
    assert max(episode.turns for episode in episodes) >= 3
    assert len({tuple(episode.prompt_ids) for episode in episodes}) == len(episodes)


def test_generated_ids_have_env_mask_one(recorded):
    engine, episodes = recorded

    for episode in episodes:
        turns = generated_turns(engine, episode)
        assert len(turns) == episode.turns
        assert mask_spans(episode.completion_ids, episode.env_mask, 1) == turns


def test_env_mask_length_matches_completion(recorded):
    _, episodes = recorded

    for episode in episodes:
        assert len(episode.env_mask) == len(episode.completion_ids)
        assert sum(episode.env_mask) == episode.generated_tokens


def test_observation_spans_decode_to_turns(recorded, action_model):
    engine, episodes = recorded
    tokenizer = action_model.tokenizer

    for episode in episodes:
        turns = generated_turns(engine, episode)
        observations = replay_observations(episode, tokenizer, turns)
        observation_spans = mask_spans(episode.completion_ids, episode.env_mask, 0)
        # Every reply but the last is followed by the next observation.
        assert len(observation_spans) == episode.turns - 1
        for span, turn, observation in zip(observation_spans, turns, observations[1:]):
            ended_with_eos = turn[-1] in engine.stop_ids
            expected = engine.turn_template.user_turn_text(observation, ended_with_eos)
            assert tokenizer.decode(span) == expected
            assert span == tokenizer(expected, add_special_tokens=False)["input_ids"]


def test_prompt_ids_encode_first_messages(recorded, action_model):
    _, episodes = recorded
    env = make_env()

    for episode in episodes:
        assert episode.prompt_ids == encode_prompt(action_model.tokenizer, first_messages(env, episode.seed))


def test_decoded_episode_matches_template(recorded, action_model):
    engine, episodes = recorded
    tokenizer = action_model.tokenizer

    for episode in episodes:
        turns = generated_turns(engine, episode)
        conversation = replay_conversation(episode, tokenizer, turns)
        rendered = tokenizer.apply_chat_template(conversation, tokenize=False)
        decoded = tokenizer.decode(episode.prompt_ids + episode.completion_ids)
        # The render closes the last reply, but the episode keeps it as sampled.
        closing = "\n" if turns[-1][-1] in engine.stop_ids else IM_END + "\n"
        assert decoded + closing == rendered


def test_truncated_replies_match_template(action_model):
    """Replies cut at max_new_tokens get the full closing text, as the template renders it."""
    torch.manual_seed(1)
    tokenizer = action_model.tokenizer
    engine = RecordingEngine(action_model.model, tokenizer, GenerationConfig(max_new_tokens=2, temperature=1.0))

    (episode,) = play(engine, [210], desc=OPEN_LAKE, max_steps=3)
    turns = generated_turns(engine, episode)
    conversation = replay_conversation(episode, tokenizer, turns, desc=OPEN_LAKE, max_steps=3)
    rendered = tokenizer.apply_chat_template(conversation, tokenize=False)

    assert episode.turns == 3
    assert all(len(turn) == 2 for turn in turns)
    assert not any(turn[-1] in engine.stop_ids for turn in turns)
    assert tokenizer.decode(episode.prompt_ids + episode.completion_ids) + IM_END + "\n" == rendered


def test_episodes_end(recorded):
    _, episodes = recorded

    for episode in episodes:
        assert episode.done
        assert 1 <= episode.turns <= episode.env.unwrapped.step_limit
        assert episode.feedback
        assert len(episode.replies) == episode.turns
        assert len(episode.action_valid) == episode.turns


def test_success_matches_reward(recorded):
    _, episodes = recorded

    for episode in episodes:
        assert episode.success == (episode.reward == 1.0)
        assert episode.feedback.startswith("Succeeded" if episode.success else "Failed")


def test_context_limit_ends_episode(action_model):
    torch.manual_seed(0)
    prompt_length = len(encode_prompt(action_model.tokenizer, first_messages(make_env(desc=OPEN_LAKE), 220)))
    limit = prompt_length + 100
    engine = RecordingEngine(action_model.model, action_model.tokenizer,
                             GenerationConfig(max_new_tokens=8, temperature=1.0, max_context_tokens=limit))

    (episode,) = play(engine, [220], desc=OPEN_LAKE)

    assert episode.done
    assert not episode.success
    assert episode.turns < episode.env.unwrapped.step_limit
    assert episode.feedback.startswith(f"Failed: the conversation reached the context limit of {limit} tokens")
    assert len(episode.prompt_ids) + len(episode.completion_ids) <= limit
    for contexts, _ in engine.calls:
        assert len(contexts[0]) + engine.config.max_new_tokens <= limit


def test_context_limit_keeps_last_reply(action_model):
    """The observation that would pass the limit is not appended, so the episode ends on a reply."""
    torch.manual_seed(0)
    prompt_length = len(encode_prompt(action_model.tokenizer, first_messages(make_env(desc=OPEN_LAKE), 220)))
    engine = RecordingEngine(action_model.model, action_model.tokenizer,
                             GenerationConfig(max_new_tokens=8, temperature=1.0,
                                              max_context_tokens=prompt_length + 10))

    (episode,) = play(engine, [220], desc=OPEN_LAKE)

    assert episode.turns == 1
    assert episode.env_mask == [1] * len(episode.completion_ids)
    assert episode.messages[-1]["role"] == "assistant"


def test_generate_keeps_first_stop_id(action_model):
    torch.manual_seed(0)
    engine = RolloutEngine(action_model.model, action_model.tokenizer,
                           GenerationConfig(max_new_tokens=8, temperature=1.0))
    env = make_env()
    contexts = [encode_prompt(action_model.tokenizer, first_messages(env, seed)) for seed in range(230, 238)]

    outputs = engine.generate(contexts)

    assert len(outputs) == len(contexts)
    assert any(output[-1] in engine.stop_ids for output in outputs)
    for output in outputs:
        assert 1 <= len(output) <= 8
        assert not any(token in engine.stop_ids for token in output[:-1])
        assert output[-1] in engine.stop_ids or len(output) == 8


def test_generate_batch_matches_single(action_model):
    """Left padding: a context generates the same greedy ids alone and next to a longer one."""
    engine = RolloutEngine(action_model.model, action_model.tokenizer,
                           GenerationConfig(max_new_tokens=8, temperature=0.0))
    env = make_env()
    long_context = encode_prompt(action_model.tokenizer, first_messages(env, 240))
    short_context = long_context[:40]

    alone = engine.generate([short_context])
    together = engine.generate([short_context, long_context])

    assert together[0] == alone[0]
    assert together[1] == engine.generate([long_context])[0]


def test_generate_empty_batch(action_model):
    engine = RolloutEngine(action_model.model, action_model.tokenizer, GenerationConfig())

    assert engine.generate([]) == []


def test_generate_restores_train_mode(action_model):
    engine = RolloutEngine(action_model.model, action_model.tokenizer,
                           GenerationConfig(max_new_tokens=2, temperature=0.0))
    action_model.model.train()
    try:
        engine.generate([[1, 2, 3]])
        assert action_model.model.training
        assert engine.generation_seconds > 0
    finally:
        action_model.model.eval()


def test_stop_ids_include_tokenizer_eos(action_model):
    engine = RolloutEngine(action_model.model, action_model.tokenizer, GenerationConfig())

    assert action_model.tokenizer.eos_token_id in engine.stop_ids


def test_other_stop_id_keeps_terminator(action_model):
    """A reply that stops on a generation-config eos other than the turn terminator is still closed."""
    tokenizer = action_model.tokenizer
    end_of_text = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    reply = tokenizer("Action: Right", add_special_tokens=False)["input_ids"] + [end_of_text]
    original = action_model.model.generation_config.eos_token_id
    action_model.model.generation_config.eos_token_id = [tokenizer.eos_token_id, end_of_text]
    try:
        engine = ScriptedEngine(action_model.model, tokenizer, GenerationConfig(max_new_tokens=8),
                                replies=[reply, reply])
    finally:
        action_model.model.generation_config.eos_token_id = original

    (episode,) = play(engine, [250], desc=OPEN_LAKE, max_steps=2)
    (observation_span,) = mask_spans(episode.completion_ids, episode.env_mask, 0)

    assert end_of_text in engine.stop_ids
    assert tokenizer.decode(observation_span).startswith(IM_END + "\n<|im_start|>user\n")


def test_shared_prefix_matches_full_context(action_model):
    """Greedy replies are the same whether the shared prompt prefix is cached or recomputed."""
    tokenizer = action_model.tokenizer
    env = make_env()
    contexts = [encode_prompt(tokenizer, first_messages(env, seed)) for seed in (260, 261, 262)]
    # Rows of different lengths, so that padding sits between the prefix and the rest.
    contexts[1] = contexts[1] + tokenizer("Action: Up", add_special_tokens=False)["input_ids"]
    engine = RolloutEngine(action_model.model, tokenizer, GenerationConfig(max_new_tokens=8, temperature=0.0))

    prefix = engine.build_prefix(contexts)
    with_prefix = engine.generate(contexts, prefix=prefix)
    without_prefix = engine.generate(contexts)

    assert prefix is not None
    assert all(context[: len(prefix.ids)] == prefix.ids for context in contexts)
    assert with_prefix == without_prefix


def test_shared_prefix_run_matches_plain_run(action_model):
    def greedy_episodes(share_prefix: bool) -> list[Episode]:
        engine = RolloutEngine(action_model.model, action_model.tokenizer,
                               GenerationConfig(max_new_tokens=8, temperature=0.0, share_prefix=share_prefix))
        return play(engine, [270, 271, 272])

    shared = greedy_episodes(True)
    plain = greedy_episodes(False)

    for left, right in zip(shared, plain):
        assert left.completion_ids == right.completion_ids
        assert left.env_mask == right.env_mask


def test_reused_cache_run_matches_plain_run(action_model):
    """Greedy episodes are the same whether earlier turns come from the cache or are encoded again."""
    def greedy_episodes(reuse_cache: bool, share_prefix: bool) -> list[Episode]:
        engine = RolloutEngine(action_model.model, action_model.tokenizer,
                               GenerationConfig(max_new_tokens=8, temperature=0.0, share_prefix=share_prefix,
                                                reuse_cache=reuse_cache))
        return play(engine, [280, 281, 282, 283, 284, 285])

    plain = greedy_episodes(reuse_cache=False, share_prefix=False)
    # Episodes of different lengths, so rows leave the cached batch between turns.
    assert len({episode.turns for episode in plain}) > 1
    assert max(episode.turns for episode in plain) > 2
    for share_prefix in (False, True):
        reused = greedy_episodes(reuse_cache=True, share_prefix=share_prefix)
        for left, right in zip(reused, plain):
            assert left.completion_ids == right.completion_ids
            assert left.env_mask == right.env_mask


def test_turn_state_rejects_context_that_does_not_extend(action_model):
    tokenizer = action_model.tokenizer
    engine = RolloutEngine(action_model.model, tokenizer, GenerationConfig(max_new_tokens=4, temperature=0.0))
    context = encode_prompt(tokenizer, first_messages(make_env(), 290))
    state = TurnState()
    (reply,) = engine.generate([context], state=state)

    with pytest.raises(ValueError, match="does not extend"):
        engine.generate([context[:-1] + reply], state=state)
    with pytest.raises(ValueError, match="2 contexts for a turn state of 1 rows"):
        engine.generate([context + reply, context + reply], state=state)
    assert engine.generate([context + reply + [tokenizer.eos_token_id]], state=state)


def test_turn_state_masks_tokens_after_a_stop(tiny_model_dir):
    """Rows that stop early leave sampled padding in the state; the next turn must not attend to it."""
    loaded = load_model(str(tiny_model_dir))
    tokenizer = loaded.tokenizer
    engine = RolloutEngine(loaded.model, tokenizer, GenerationConfig(max_new_tokens=6, temperature=0.0))
    contexts = [tokenizer(text, add_special_tokens=False)["input_ids"]
                for text in ("the lake is frozen", "a box on a goal", "move left then down", "up")]
    unstopped = engine.generate(contexts)
    # Stop on the second token of the first row, so rows end after different numbers of tokens.
    engine.stop_ids = {unstopped[0][1]}
    state = TurnState()
    replies = engine.generate(contexts, state=state)
    assert len({len(reply) for reply in replies}) > 1

    state.select([0, 1, 3])
    observations = [tokenizer(text, add_special_tokens=False)["input_ids"]
                    for text in ("you fell", "the box moved to the wall", "no effect")]
    next_contexts = [contexts[row] + replies[row] + observation
                     for row, observation in zip([0, 1, 3], observations)]

    assert engine.generate(next_contexts, state=state) == engine.generate(next_contexts)
