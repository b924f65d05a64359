"""Tests of the reflection memory: threshold, capacity, scope and the JSON file."""

import json

import pytest

from erlgym.erl.memory import MemoryItem, ReflectionMemory
from erlgym.erl.run import RunError, train
from erlgym.erl.trainer import MEMORY_FILE
from tiny_model import tiny_train_config


def item(text: str, reward: float, seed: int = 0, step: int = 1) -> MemoryItem:
    return MemoryItem(text=text, task_seed=seed, retry_reward=reward, step=step)


def test_offer_below_threshold_rejected():
    memory = ReflectionMemory(capacity=4, threshold=1.0)

    kept = memory.offer(item("go right", 0.5))

    assert kept is False
    assert len(memory) == 0
    assert memory.texts() == []


def test_offer_at_threshold_kept():
    memory = ReflectionMemory(capacity=4, threshold=1.0)

    kept = memory.offer(item("go right", 1.0))

    assert kept is True
    assert memory.texts() == ["go right"]


def test_offer_above_threshold_kept():
    memory = ReflectionMemory(capacity=4, threshold=0.5)

    assert memory.offer(item("go down", 0.75)) is True
    assert memory.texts() == ["go down"]


def test_negative_threshold_keeps_failed_retries():
    memory = ReflectionMemory(capacity=4, threshold=-1.0)

    assert memory.offer(item("anything", 0.0)) is True
    assert memory.offer(item("penalized", -0.5)) is True
    assert memory.texts() == ["anything", "penalized"]


def test_capacity_drops_oldest():
    memory = ReflectionMemory(capacity=2, threshold=0.0)

    for index in range(4):
        memory.offer(item(f"advice {index}", 1.0, seed=index))

    assert len(memory) == 2
    assert memory.texts() == ["advice 2", "advice 3"]
    assert [kept.task_seed for kept in memory.items] == [2, 3]


def test_capacity_zero_keeps_nothing():
    memory = ReflectionMemory(capacity=0, threshold=0.0)

    kept = memory.offer(item("go right", 1.0))

    assert kept is False
    assert len(memory) == 0


def test_negative_capacity_rejected():
    with pytest.raises(ValueError, match="-1"):
        ReflectionMemory(capacity=-1)


def test_save_load_roundtrip(tmp_path):
    memory = ReflectionMemory(capacity=3, threshold=0.5)
    memory.offer(item("go right first", 1.0, seed=7, step=2))
    memory.offer(item("avoid the hole below", 0.5, seed=9, step=3))
    path = tmp_path / "memory.json"

    memory.save(path)
    loaded = ReflectionMemory.load(path)

    assert loaded.capacity == 3
    assert loaded.threshold == 0.5
    assert list(loaded.items) == list(memory.items)


def test_load_keeps_capacity_limit(tmp_path):
    memory = ReflectionMemory(capacity=2, threshold=0.0)
    memory.offer(item("first", 1.0))
    memory.offer(item("second", 1.0))
    path = tmp_path / "memory.json"
    memory.save(path)

    loaded = ReflectionMemory.load(path)
    loaded.offer(item("third", 1.0))

    assert loaded.texts() == ["second", "third"]


def test_save_writes_json_fields(tmp_path):
    memory = ReflectionMemory(capacity=2, threshold=1.0)
    memory.offer(item("go right", 1.0, seed=4, step=5))
    path = tmp_path / "memory.json"

    memory.save(path)
    payload = json.loads(path.read_text())

    assert payload["capacity"] == 2
    assert payload["threshold"] == 1.0
    assert payload["items"] == [{"text": "go right", "task_seed": 4, "retry_reward": 1.0, "step": 5}]


def test_empty_memory_roundtrip(tmp_path):
    path = tmp_path / "memory.json"

    ReflectionMemory(capacity=0, threshold=1.0).save(path)
    loaded = ReflectionMemory.load(path)

    assert loaded.capacity == 0
    assert len(loaded) == 0
    assert loaded.offer(item("go right", 1.0)) is False


def test_top_policy_keeps_highest_rewards():
    memory = ReflectionMemory(capacity=2, threshold=0.0, policy="top")
    for step, reward in enumerate([0.9, 0.2, 0.5, 0.1]):
        memory.offer(MemoryItem(f"advice {step}", task_seed=step, retry_reward=reward, step=step))

    assert sorted(item.retry_reward for item in memory.items) == [0.5, 0.9]


def test_top_policy_newer_wins_tie():
    memory = ReflectionMemory(capacity=1, threshold=0.0, policy="top")
    memory.offer(MemoryItem("old", task_seed=0, retry_reward=1.0, step=1))

    assert memory.offer(MemoryItem("new", task_seed=1, retry_reward=1.0, step=2))
    assert memory.texts() == ["new"]


def test_policy_survives_save_and_load(tmp_path):
    memory = ReflectionMemory(capacity=3, threshold=0.5, policy="top")
    memory.offer(MemoryItem("advice", task_seed=0, retry_reward=1.0, step=1))
    memory.save(tmp_path / "memory.json")

    assert ReflectionMemory.load(tmp_path / "memory.json").policy == "top"


def test_unknown_policy_rejected():
    with pytest.raises(ValueError, match="memory policy must be one of latest, top"):
        ReflectionMemory(policy="oldest")


def test_task_scope_filters_by_seed():
    memory = ReflectionMemory(capacity=4, threshold=0.0, scope="task")
    memory.offer(item("for task 1", 1.0, seed=1))
    memory.offer(item("for task 2", 1.0, seed=2))
    memory.offer(item("also for task 1", 1.0, seed=1))

    assert memory.texts([1]) == ["for task 1", "also for task 1"]
    assert memory.texts([2]) == ["for task 2"]
    assert memory.texts([3]) == []
    assert memory.texts({1, 2}) == ["for task 1", "for task 2", "also for task 1"]
    assert memory.texts() == ["for task 1", "for task 2", "also for task 1"]


def test_global_scope_ignores_seeds():
    memory = ReflectionMemory(capacity=4, threshold=0.0)
    memory.offer(item("for task 1", 1.0, seed=1))
    memory.offer(item("for task 2", 1.0, seed=2))

    assert memory.scope == "global"
    assert memory.texts([3]) == ["for task 1", "for task 2"]


def test_task_scope_shares_capacity():
    memory = ReflectionMemory(capacity=2, threshold=0.0, scope="task")
    memory.offer(item("for task 1", 1.0, seed=1))
    memory.offer(item("for task 2", 1.0, seed=2))
    memory.offer(item("for task 3", 1.0, seed=3))

    assert len(memory) == 2
    assert memory.texts([1]) == []
    assert memory.texts([3]) == ["for task 3"]


def test_scope_survives_save_and_load(tmp_path):
    memory = ReflectionMemory(capacity=3, threshold=0.5, scope="task")
    memory.offer(item("advice", 1.0, seed=4))
    memory.save(tmp_path / "memory.json")

    loaded = ReflectionMemory.load(tmp_path / "memory.json")

    assert loaded.scope == "task"
    assert json.loads((tmp_path / "memory.json").read_text())["scope"] == "task"
    assert loaded.texts([4]) == ["advice"]
    assert loaded.texts([5]) == []


def test_load_file_without_scope(tmp_path):
    """A memory file written before scopes existed has no ``scope`` or ``policy`` key."""
    path = tmp_path / "memory.json"
    path.write_text(json.dumps({"capacity": 2, "threshold": 1.0, "items": [
        {"text": "go right", "task_seed": 4, "retry_reward": 1.0, "step": 5}]}))

    loaded = ReflectionMemory.load(path)

    assert loaded.scope == "global"
    assert loaded.policy == "latest"
    assert loaded.texts([9]) == ["go right"]


def test_unknown_scope_rejected():
    with pytest.raises(ValueError, match="memory scope must be one of global, task, got 'stream'"):
        ReflectionMemory(scope="stream")


def test_resumed_run_keeps_task_scope(action_model_dir, tmp_path):
    run_dir = tmp_path / "run"
    train(tiny_train_config(action_model_dir, output_dir=str(run_dir), steps=1, memory_scope="task"))

    train(tiny_train_config(action_model_dir, output_dir=str(run_dir), steps=2, memory_scope="task"), resume=True)

    assert ReflectionMemory.load(run_dir / "checkpoints" / "checkpoint-1" / MEMORY_FILE).scope == "task"
    assert ReflectionMemory.load(run_dir / "final" / MEMORY_FILE).scope == "task"


def test_resume_with_other_scope_rejected(action_model_dir, tmp_path):
    run_dir = tmp_path / "run"
    train(tiny_train_config(action_model_dir, output_dir=str(run_dir), steps=1))

    with pytest.raises(RunError, match="memory_scope='task'"):
        train(tiny_train_config(action_model_dir, output_dir=str(run_dir), steps=2, memory_scope="task"),
              resume=True)