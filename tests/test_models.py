"""Tests of model specs: local folders, GGUF paths, the cached default model and tokenizer setup.

No test downloads the real default model: the "default" spec is tested against a
cache folder that already contains the tiny model.
"""

import hashlib
import shutil

import pytest
import torch
from transformers import LlamaForCausalLM

from erlgym.erl.models import (
    DEFAULT_MODEL_NAME,
    ModelLoadError,
    cache_dir,
    load_model,
    prepare_tokenizer,
    sha256_of,
)
from tiny_model import build_tiny_model, build_tiny_tokenizer


def test_load_model_tiny_folder(tiny_model_dir):
    loaded = load_model(str(tiny_model_dir))

    assert isinstance(loaded.model, LlamaForCausalLM)
    assert loaded.spec == str(tiny_model_dir)
    assert loaded.tokenizer.chat_template is not None
    assert next(loaded.model.parameters()).dtype == torch.float32


def test_load_model_prepares_tokenizer(tiny_model_dir):
    loaded = load_model(str(tiny_model_dir))

    assert loaded.tokenizer.pad_token is not None
    assert loaded.tokenizer.padding_side == "left"


def test_load_model_bfloat16(tiny_model_dir):
    loaded = load_model(str(tiny_model_dir), dtype="bfloat16")

    assert next(loaded.model.parameters()).dtype == torch.bfloat16


def test_load_model_generates(tiny_model_dir):
    loaded = load_model(str(tiny_model_dir))
    ids = loaded.tokenizer("Action:", return_tensors="pt")["input_ids"]

    output = loaded.model.generate(ids, max_new_tokens=3, do_sample=False)

    assert output.shape[1] > ids.shape[1]


def test_fake_gguf_file_rejected(tmp_path):
    path = tmp_path / "model.gguf"
    path.write_bytes(b"this is not a GGUF file")

    with pytest.raises(ModelLoadError, match="Could not load the GGUF file") as error:
        load_model(str(path))

    assert str(path) in str(error.value)


def test_folder_with_fake_gguf_rejected(tmp_path):
    (tmp_path / "weights.gguf").write_bytes(b"\x00" * 64)

    with pytest.raises(ModelLoadError, match="weights.gguf"):
        load_model(str(tmp_path))


def test_folder_with_two_ggufs_rejected(tmp_path):
    (tmp_path / "a.gguf").write_bytes(b"\x00")
    (tmp_path / "b.gguf").write_bytes(b"\x00")

    with pytest.raises(ModelLoadError, match="exactly one .gguf file") as error:
        load_model(str(tmp_path))

    assert str(tmp_path) in str(error.value)


def test_folder_without_config_rejected(tmp_path):
    with pytest.raises(ModelLoadError, match="neither a model folder"):
        load_model(str(tmp_path))


def test_non_gguf_file_rejected(tmp_path):
    path = tmp_path / "model.bin"
    path.write_bytes(b"\x00")

    with pytest.raises(ModelLoadError, match="neither a model folder") as error:
        load_model(str(path))

    assert str(path) in str(error.value)


def test_missing_relative_path_rejected(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    with pytest.raises(ModelLoadError, match=r"Model path \./nope does not exist"):
        load_model("./nope")


def test_missing_nested_path_rejected(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    with pytest.raises(ModelLoadError, match="runs/old/final does not exist"):
        load_model("runs/old/final")


def test_tokenizer_without_chat_template_rejected(tmp_path):
    tokenizer = build_tiny_tokenizer()
    tokenizer.chat_template = None
    build_tiny_model(tokenizer).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)

    with pytest.raises(ModelLoadError, match="no chat template"):
        load_model(str(tmp_path))


def test_default_spec_uses_cache(tiny_model_dir, tmp_path, monkeypatch):
    cached = tmp_path / "models" / DEFAULT_MODEL_NAME
    shutil.copytree(tiny_model_dir, cached)
    monkeypatch.setenv("ERLGYM_CACHE", str(tmp_path))

    loaded = load_model("default")

    assert loaded.spec == "default"
    assert isinstance(loaded.model, LlamaForCausalLM)
    assert loaded.model.config.hidden_size == 32


def test_cache_dir_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("ERLGYM_CACHE", str(tmp_path / "cache"))

    assert cache_dir() == tmp_path / "cache"


def test_cache_dir_default_under_home(tmp_path, monkeypatch):
    monkeypatch.delenv("ERLGYM_CACHE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))

    assert cache_dir() == tmp_path / ".cache" / "erlgym"


def test_prepare_tokenizer_sets_pad_to_eos():
    tokenizer = build_tiny_tokenizer()
    tokenizer.pad_token = None
    tokenizer.padding_side = "right"

    prepare_tokenizer(tokenizer)

    assert tokenizer.pad_token == tokenizer.eos_token
    assert tokenizer.pad_token_id == tokenizer.eos_token_id
    assert tokenizer.padding_side == "left"


def test_prepare_tokenizer_keeps_pad():
    tokenizer = build_tiny_tokenizer()
    tokenizer.pad_token = "<|endoftext|>"

    prepare_tokenizer(tokenizer)

    assert tokenizer.pad_token == "<|endoftext|>"
    assert tokenizer.padding_side == "left"


def test_sha256_of_file(tmp_path):
    path = tmp_path / "blob"
    data = bytes(range(256)) * 5000
    path.write_bytes(data)

    assert sha256_of(path) == hashlib.sha256(data).hexdigest()
