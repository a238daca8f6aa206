"""The loader's specs and the FFN layout of the supported architectures."""

import os

import pytest
import torch
from transformers import (
    Gemma3ForCausalLM,
    Gemma3TextConfig,
    GPT2Config,
    GPT2LMHeadModel,
    MistralConfig,
    MistralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)

from emolib.lm import models

SMALL = dict(
    vocab_size=128,
    hidden_size=32,
    intermediate_size=48,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=8,
)


@pytest.mark.parametrize(
    "cls,cfg",
    [
        (MistralForCausalLM, MistralConfig),
        (Qwen2ForCausalLM, Qwen2Config),
        (Qwen3ForCausalLM, Qwen3Config),
        (Gemma3ForCausalLM, Gemma3TextConfig),
    ],
)
def test_ffn_layout_of_supported_architectures(cls, cfg):
    model = cls(cfg(**SMALL))
    mlps = models.ffn_layers(model)
    assert len(mlps) == 2 and models.ffn_shape(model) == (2, 48)
    assert all(m.down_proj.in_features == 48 for m in mlps)


def test_unsupported_architecture_fails_clearly():
    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=64))
    with pytest.raises(ValueError, match="unsupported model type 'gpt2'.*llama, mistral, qwen2"):
        models.ffn_layers(model)


def test_model_specs(tmp_path):
    assert models.check_model_spec("smollm2-135m-instruct") == "preset"
    assert models.check_model_spec("meta-llama/Llama-3.1-8B-Instruct") == "hub"
    assert models.check_model_spec(str(tmp_path)) == "dir"
    with pytest.raises(ValueError, match="unknown model 'llama'"):
        models.check_model_spec("llama")
    with pytest.raises(ValueError, match="GGUF file not found"):
        models.check_model_spec(str(tmp_path / "x.gguf"))


def test_presets_resolve_to_installed_files():
    for name in ("smollm2-135m-instruct", "gemma3-270m"):
        path = models.gguf_path(models.PRESETS[name])
        assert path.is_file() and path.stat().st_size > 50_000_000


def test_tiny_random_llama(tiny):
    model, tok = tiny
    assert type(model).__name__ == "LlamaForCausalLM" and models.ffn_shape(model) == (4, 128)
    assert tok.pad_token_id is not None and not model.training
    assert models.resolve_dtype("auto", "cpu") == (torch.bfloat16 if models.cpu_has_fast_bf16() else torch.float32)
    assert models.resolve_dtype("auto", "cuda") == torch.bfloat16


def test_embedded_models_load_with_their_ffn():
    """The two models that install with the book: a Llama (SiLU) and a Gemma3 (GELU) layout."""
    smol, tok = models.load_model("smollm2-135m-instruct", device="cpu")
    assert type(smol).__name__ == "LlamaForCausalLM" and models.ffn_shape(smol) == (30, 1536)
    assert models.is_instruct("smollm2-135m-instruct", tok) and tok.chat_template
    assert "SiLU" in type(models.ffn_layers(smol)[0].act_fn).__name__
    gemma, gtok = models.load_model("gemma3-270m", device="cpu")
    assert type(gemma).__name__ == "Gemma3ForCausalLM" and models.ffn_shape(gemma) == (18, 2048)
    assert not models.is_instruct("gemma3-270m", gtok)
    assert "GELU" in type(models.ffn_layers(gemma)[0].act_fn).__name__
    with torch.inference_mode():  # a real model, not noise: it prefers a sensible continuation
        ids = gtok("The capital of France is", return_tensors="pt")["input_ids"]
        top = gemma(ids).logits[0, -1].topk(5).indices.tolist()
    assert " Paris" in [gtok.decode([t]) for t in top]


def test_auto_dtype_follows_the_cpus_bf16_capability(monkeypatch):
    """auto = bfloat16 where the CPU has AMX or AVX512-BF16, float32 where it has neither; bfloat16 on CUDA."""
    import torch.cpu as cpu

    for amx, avx512bf16, want in (
        (True, False, torch.bfloat16),
        (False, True, torch.bfloat16),
        (False, False, torch.float32),
    ):
        monkeypatch.setattr(cpu, "_is_amx_tile_supported", lambda v=amx: v, raising=False)
        monkeypatch.setattr(cpu, "_is_avx512_bf16_supported", lambda v=avx512bf16: v, raising=False)
        assert models.resolve_dtype("auto", "cpu") == want
        assert models.resolve_dtype("auto", "cuda") == torch.bfloat16
        assert models.resolve_dtype("float32", "cpu") == torch.float32
    assert "[" in models.cpu_description()


def test_set_threads_uses_every_core_unless_omp_num_threads_says(monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        models.set_threads()
        assert torch.get_num_threads() == 1
        monkeypatch.delenv("OMP_NUM_THREADS")
        models.set_threads()
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        assert torch.get_num_threads() == cores
    finally:
        torch.set_num_threads(before)
