"""Language-modeling corpora: WikiText-103 (paper Table 8) and an offline stand-in.

``load_lm_corpus`` returns an :class:`LMCorpus` whose ``train`` / ``val`` are
LongTensors ``[n, seq_len]`` made by chunking one token stream per split into
non-overlapping windows (the remainder is dropped).

Where the data comes from, in order:

1. raw files in ``data_dir`` (``wiki.train.raw`` / ``wiki.valid.raw``, or the
   ``.tokens`` variants, directly in ``data_dir`` or in a ``wikitext-103-raw``
   style sub-folder); without ``data_dir``, ``<repo>/data/text/`` is searched;
2. ``datasets.load_dataset('wikitext', 'wikitext-103-raw-v1')`` -- online
   only when the hub endpoint answers a quick TCP check (so a machine with no
   network fails in about a second rather than through the client's retries);
   offline only from the local HF cache, and only when the HF offline
   variables are set (so ``datasets`` itself never goes to the network);
3. otherwise (offline, or 1-2 failed) a warning is logged and a **stand-in**
   is used, chosen by ``standin`` / ``$RKSP_LM_STANDIN`` (default ``'pydoc-topics'``;
   ``'auto'``: ``'news-articles'`` when ``make fetch-corpus`` has cached it, else
   ``'pydoc-topics'``): 12.7 MB of English news prose (docs/lm-corpus.md,
   :mod:`rksp.data.lm_corpus`), or Python's own documentation prose
   (``pydoc_data.topics``; about 0.47 MB, ~0.1M tokens).  Its ``data_name``
   says which and "NOT WikiText-103"; ``is_standin`` is True.

"Offline" is ``offline=True`` or, when ``offline`` is None, any of
``HF_DATASETS_OFFLINE`` / ``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE`` set to a
true value.  These are checked before anything touches the network.

Tokenizer: ``tokenizer='gpt2'`` uses GPT-2's BPE (``AutoTokenizer``) for real
WikiText when it can be loaded (from the local cache when offline).  The
stand-in, or real text whose GPT-2 tokenizer cannot be loaded, uses a
byte-level BPE trained with HF ``tokenizers`` on the training split
(``vocab_size`` merges target, ``min_frequency=2``; deterministic).  The
trained tokenizer is cached as JSON under ``data/cache/`` (git-ignored), keyed
by its settings and a hash of its training text.  ``tokenizer='bpe'`` forces
the trained BPE; a path to a local tokenizer folder / ``tokenizer.json`` uses
that tokenizer.  ``LMCorpus.vocab_size`` is the tokenizer's real size (a small
corpus may stop short of the requested ``vocab_size``).

Every corpus reports ``unigram_ppl``: the add-one unigram perplexity of the
validation targets under the training token counts (to read beside a model's).

Other names: ``'wikitext-2'`` (same logic, ``wikitext-2-raw-v1``),
``'news-articles'`` / ``'pydoc-topics'`` (the stand-ins, asked for directly;
:func:`load_prose_corpus` splits the former by document) and ``'local-text'``
(every ``*.txt`` / ``*.rst`` / ``*.md`` file under ``data_dir``, e.g. an
unpacked text collection; last 10% of files in sorted order are validation;
labelled as a stand-in too).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import torch

from .. import defaults
from ..atomic import atomic_write
from ..errors import RKSPInputError
from .hub import hf_dataset_cached, hub_reachable, is_offline, try_hf_dataset
from .lm_corpus import (CORPORA, corpus_path, file_sha256, read_documents, split_documents, standin_choice,
                        text_dir, unigram_perplexity_from_counts)

__all__ = [
    "LMCorpus",
    "load_lm_corpus",
    "load_prose_corpus",
    "standin_documents",
    "train_bpe_tokenizer",
    "get_bpe_tokenizer",
    "is_offline",
    "hub_reachable",
    "hf_dataset_cached",
    "try_hf_dataset",
    "default_cache_dir",
    "STANDIN_VAL_FRACTION",
    "BPE_MIN_FREQUENCY",
]

log = logging.getLogger(__name__)

STANDIN_VAL_FRACTION = 0.10   # (ours) last 10% of documents (sorted order) -> val
BPE_MIN_FREQUENCY = 2         # (ours) a merge needs a pair seen at least twice
BPE_MAX_TRAIN_CHARS = 50_000_000  # (ours) cap on BPE training text for real corpora
EOS_TOKEN = "<|endoftext|>"
_ENCODE_BATCH = 2_000

_REPO_ROOT = Path(__file__).resolve().parents[2]

_WIKITEXT = {
    # name -> (HF config, pretty name, sub-folder candidates)
    "wikitext-103": ("wikitext-103-raw-v1", "WikiText-103",
                     ("wikitext-103-raw", "wikitext-103-raw-v1", "wikitext-103", "wikitext-103-v1")),
    "wikitext-2": ("wikitext-2-raw-v1", "WikiText-2",
                   ("wikitext-2-raw", "wikitext-2-raw-v1", "wikitext-2", "wikitext-2-v1")),
}
_ALIASES = {
    "wikitext-103": "wikitext-103", "wikitext103": "wikitext-103", "wikitext_103": "wikitext-103",
    "wikitext-103-raw-v1": "wikitext-103",
    "wikitext-2": "wikitext-2", "wikitext2": "wikitext-2", "wikitext_2": "wikitext-2",
    "wikitext-2-raw-v1": "wikitext-2",
    "pydoc-topics": "pydoc-topics", "pydoc_topics": "pydoc-topics", "standin": "pydoc-topics",
    "news-articles": "news-articles", "news_articles": "news-articles", "newsarticles": "news-articles",
    "local-text": "local-text", "local_text": "local-text",
}


# --------------------------------------------------------------------------- #
# result type
# --------------------------------------------------------------------------- #
@dataclass
class LMCorpus:
    """A tokenized LM corpus chunked into ``[n, seq_len]`` windows."""

    train: torch.Tensor          # LongTensor [n_train, seq_len]
    val: torch.Tensor            # LongTensor [n_val, seq_len]
    vocab_size: int              # the tokenizer's real vocabulary size
    data_name: str               # e.g. "WikiText-103 (...)" or "... stand-in (offline; NOT WikiText-103)"
    tokenizer_name: str
    is_standin: bool
    note: str = ""
    seq_len: int = 0
    n_train_tokens: int = 0      # length of the train stream before chunking
    n_val_tokens: int = 0
    tokenizer: Any = field(default=None, repr=False, compare=False)
    unigram_ppl: float = float("nan")   # add-one unigram perplexity of the val targets val[:, 1:] (train counts)
    train_counts: Any = field(default=None, repr=False, compare=False)   # token counts of the train stream

    kind = "lm"

    def unigram_ppl_of(self, windows) -> float:
        """Add-one unigram perplexity (train counts) of the targets ``windows[:, 1:]``: the positions a
        model's validation loss reads, so it stands beside that perplexity (e.g. ``val[:n_val]``)."""
        return unigram_perplexity_from_counts(self.train_counts, torch.as_tensor(windows)[:, 1:].numpy())

    def encode(self, text: str) -> List[int]:
        return _encode_batch(self.tokenizer, [text])[0]

    def decode(self, ids: Sequence[int]) -> str:
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        return self.tokenizer.decode(list(ids))


# --------------------------------------------------------------------------- #
# helpers
# --------------------------------------------------------------------------- #
def default_cache_dir() -> Path:
    """``$RKSP_CACHE_DIR`` if set, else ``<repo>/data/cache`` (git-ignored)."""
    env = os.environ.get("RKSP_CACHE_DIR")
    return Path(env) if env else _REPO_ROOT / "data" / "cache"


def _sha(parts: Iterable[str]) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode("utf-8", "surrogatepass"))
        h.update(b"\x00")
    return h.hexdigest()


def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def _atomic_save_npy(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: np.save(tmp, arr), suffix=".tmp.npy")


def standin_documents(val_fraction: float = STANDIN_VAL_FRACTION) -> Tuple[List[str], List[str]]:
    """Python's ``pydoc_data.topics.topics`` texts, split by sorted topic name.

    Returns ``(train_docs, val_docs)``; the last ``val_fraction`` of the topics
    (at least one) in sorted-key order are validation.
    """
    from pydoc_data.topics import topics  # stdlib: real English documentation prose

    keys = sorted(topics)
    n_val = max(1, int(round(val_fraction * len(keys))))
    docs = [topics[k].strip() + "\n\n" for k in keys]
    return docs[: len(keys) - n_val], docs[len(keys) - n_val:]


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int = 8192,
                        min_frequency: int = BPE_MIN_FREQUENCY):
    """Train a byte-level BPE (GPT-2 style) with HF ``tokenizers``.

    Deterministic for a given text and settings.  ``<|endoftext|>`` is id 0.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    if vocab_size < 257:
        raise ValueError(f"vocab_size must be >= 257 for a byte-level BPE (256 bytes + EOS), got {vocab_size}")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=int(vocab_size),
        min_frequency=int(min_frequency),
        special_tokens=[EOS_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer=trainer)
    return tok


def get_bpe_tokenizer(texts: Sequence[str], vocab_size: int = 8192, tag: str = "corpus",
                      cache_dir: Optional[os.PathLike] = None, min_frequency: int = BPE_MIN_FREQUENCY,
                      save: bool = True):
    """A byte-level BPE trained on ``texts``, cached as JSON in ``cache_dir``.

    The cache key holds ``tag``, ``vocab_size``, ``min_frequency``, the
    ``tokenizers`` version and a hash of the training text.  ``save=False``
    trains without writing (the caller writes once its checks pass).
    Returns ``(tokenizer, path_of_cached_json)``.
    """
    import tokenizers
    from tokenizers import Tokenizer

    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    digest = _sha(texts)[:12]
    fname = f"bpe-{tag}-v{int(vocab_size)}-mf{int(min_frequency)}-tk{tokenizers.__version__}-{digest}.json"
    path = cache / "tokenizers" / fname
    if path.is_file():
        try:
            return Tokenizer.from_file(str(path)), path
        except Exception as e:  # corrupt cache: retrain
            log.warning("could not read cached tokenizer %s (%s); retraining", path, e)
    tok = train_bpe_tokenizer(texts, vocab_size, min_frequency)
    if save:
        _cache_write(path, lambda: _atomic_write_text(path, tok.to_str()))
    return tok, path


def _cache_write(path: Path, write) -> None:
    try:
        write()
    except OSError as e:  # read-only checkout: keep going uncached
        log.warning("could not cache %s: %s", path, e)


def _is_hf_tokenizer(tok) -> bool:
    return not hasattr(tok, "encode_batch")


def _encode_batch(tok, texts: List[str]) -> List[List[int]]:
    if _is_hf_tokenizer(tok):
        return tok(texts, add_special_tokens=False)["input_ids"]
    return [e.ids for e in tok.encode_batch(texts, add_special_tokens=False)]


def _vocab_size_of(tok) -> int:
    if _is_hf_tokenizer(tok):
        return int(len(tok))
    return int(tok.get_vocab_size())


def _encode_stream(tok, docs: Iterable[str], max_tokens: Optional[int]) -> np.ndarray:
    """Concatenate the token ids of ``docs``; stop once ``max_tokens`` are reached."""
    out: List[np.ndarray] = []
    count = 0
    batch: List[str] = []

    def flush() -> None:
        nonlocal count, batch
        if batch:
            for ids in _encode_batch(tok, batch):
                if ids:
                    out.append(np.asarray(ids, dtype=np.int32))  # int32: half the memory of int64
                    count += len(ids)
            batch = []

    for d in docs:
        if not d:
            continue
        batch.append(d)
        if len(batch) >= _ENCODE_BATCH:
            flush()
            if max_tokens is not None and count >= max_tokens:
                break
    else:
        flush()
    stream = np.concatenate(out) if out else np.zeros(0, dtype=np.int32)
    if max_tokens is not None:
        stream = stream[:max_tokens]
    return stream


def _chunk(stream: np.ndarray, seq_len: int, split: str, data_name: str) -> torch.Tensor:
    n = len(stream) // seq_len
    if n < 1:
        raise ValueError(
            f"{data_name}: the {split} split has only {len(stream)} tokens, fewer than "
            f"seq_len={seq_len}; use a shorter seq_len or a larger max_tokens"
        )
    return torch.from_numpy(np.ascontiguousarray(stream[: n * seq_len], dtype=np.int64).reshape(n, seq_len))


# --------------------------------------------------------------------------- #
# sources
# --------------------------------------------------------------------------- #
def _find_raw_files(data_dir: Path, subdirs: Sequence[str]) -> Optional[Tuple[Path, Path]]:
    for d in [data_dir, *(data_dir / s for s in subdirs)]:
        for ext in ("raw", "tokens"):
            tr, va = d / f"wiki.train.{ext}", d / f"wiki.valid.{ext}"
            if tr.is_file() and va.is_file():
                return tr, va
    return None


def _iter_lines(path: Path) -> Iterable[str]:
    with open(path, encoding="utf-8") as f:
        for line in f:
            yield line


def _load_hf_wikitext(config: str) -> Tuple[List[str], List[str]]:
    import datasets  # imported lazily: slow, and only needed online

    ds = datasets.load_dataset("wikitext", config)
    return list(ds["train"]["text"]), list(ds["validation"]["text"])


def _local_text_documents(data_dir: Path, val_fraction: float = STANDIN_VAL_FRACTION) -> Tuple[List[str], List[str]]:
    files = sorted(p for p in data_dir.rglob("*") if p.is_file() and p.suffix in (".txt", ".rst", ".md"))
    if len(files) < 2:
        raise ValueError(f"local-text: need at least 2 .txt/.rst/.md files under {data_dir}, found {len(files)}")
    n_val = max(1, int(round(val_fraction * len(files))))
    docs = [p.read_text(encoding="utf-8", errors="replace").strip() + "\n\n" for p in files]
    return docs[: len(files) - n_val], docs[len(files) - n_val:]


def _resolve_tokenizer(tokenizer: Any, train_docs_for_bpe, vocab_size: int, tag: str,
                       cache_dir, offline: bool, allow_gpt2: bool) -> Tuple[Any, str, str]:
    """Returns (tokenizer object, tokenizer_name, note)."""
    if tokenizer is not None and not isinstance(tokenizer, str):
        return tokenizer, getattr(tokenizer, "name_or_path", type(tokenizer).__name__), ""
    spec = tokenizer or "bpe"
    if spec not in ("gpt2", "bpe"):
        p = Path(spec)
        if p.is_file():
            from tokenizers import Tokenizer
            return Tokenizer.from_file(str(p)), f"local tokenizer file {p.name}", ""
        if p.is_dir():
            from transformers import AutoTokenizer
            return AutoTokenizer.from_pretrained(str(p), local_files_only=True), f"local tokenizer {p.name}", ""
        raise ValueError(f"tokenizer must be 'gpt2', 'bpe', a tokenizer object or a local path; got {spec!r}")
    note = ""
    if spec == "gpt2" and allow_gpt2:
        try:
            from transformers import AutoTokenizer
            # local cache only when offline or the hub does not answer (no retry waits)
            local_only = bool(offline) or not hub_reachable()
            tok = AutoTokenizer.from_pretrained("gpt2", local_files_only=local_only)
            tok.model_max_length = int(1e12)  # we chunk ourselves; silence the length warning
            return tok, "gpt2 (GPT-2 byte-level BPE, 50257)", ""
        except Exception as e:  # offline without a local copy: OSError
            note = f"GPT-2 tokenizer unavailable ({type(e).__name__}); trained a byte-level BPE instead. "
            warnings.warn(
                f"GPT-2 tokenizer could not be loaded ({type(e).__name__}); "
                f"training a byte-level BPE (vocab {vocab_size}) on the training text instead",
                RuntimeWarning, stacklevel=3,
            )
    elif spec == "gpt2":
        note = "GPT-2 BPE not used for the stand-in; trained a byte-level BPE on its training split. "
    docs = train_docs_for_bpe()
    tok, path = get_bpe_tokenizer(docs, vocab_size, tag=tag, cache_dir=cache_dir)
    name = f"byte-level BPE trained on {tag} (requested vocab {vocab_size}, actual {tok.get_vocab_size()})"
    return tok, name, note + f"tokenizer cached at {path}."


def _cap_chars(lines: Iterable[str], max_chars: int) -> List[str]:
    out, n = [], 0
    for line in lines:
        out.append(line)
        n += len(line)
        if n >= max_chars:
            break
    return out


# --------------------------------------------------------------------------- #
# main entry point
# --------------------------------------------------------------------------- #
def load_lm_corpus(
    name: str = "wikitext-103",
    seq_len: int = 256,
    max_tokens: Optional[int] = None,
    data_dir: Optional[os.PathLike] = None,
    tokenizer: Any = "gpt2",
    offline: Optional[bool] = None,
    vocab_size: int = defaults.LM_CORPUS_VOCAB,
    seed: int = 0,
    cache_dir: Optional[os.PathLike] = None,
    standin: Optional[str] = None,
) -> LMCorpus:
    """Load a language-modeling corpus as ``[n, seq_len]`` token windows.

    Parameters
    ----------
    name: ``'wikitext-103'`` (default), ``'wikitext-2'``, ``'news-articles'`` /
        ``'pydoc-topics'`` (the offline stand-ins) or ``'local-text'`` (text files in ``data_dir``).
    seq_len: window length; each split's stream is cut into ``len // seq_len``
        non-overlapping windows.
    max_tokens: cap on each split's token stream (None: all of it).
    data_dir: folder holding ``wiki.train.raw`` / ``wiki.valid.raw`` (or
        ``.tokens``), the text files for ``'local-text'``, or ``documents.jsonl`` for a stand-in.
    tokenizer: ``'gpt2'``, ``'bpe'``, a local tokenizer path, or a tokenizer object.
    offline: force offline (True) / online (False); None reads the HF_* env vars.
    vocab_size: target size of a trained BPE (ignored for GPT-2).
    seed: permutes the order of the train windows (val keeps stream order), so
        ``train[:k]`` is a sample from across the corpus.
    cache_dir: tokenizer / token-stream cache (default ``data/cache``).
    standin: the WikiText fallback, ``'auto'`` / ``'news-articles'`` / ``'pydoc-topics'``
        (None: ``$RKSP_LM_STANDIN``, else ``'pydoc-topics'``; see the module docstring).
    """
    if not isinstance(seq_len, int) or seq_len < 2:
        raise ValueError(f"seq_len must be an integer >= 2, got {seq_len!r}")
    if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < seq_len):
        raise ValueError(f"max_tokens must be None or an integer >= seq_len={seq_len}, got {max_tokens!r}")
    key = _ALIASES.get(str(name).lower())
    if key is None:
        raise ValueError(f"unknown corpus {name!r}; choose from {sorted(set(_ALIASES.values()))}")
    off = is_offline(offline)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()

    if key == "local-text":
        if data_dir is None:
            raise ValueError("name='local-text' needs data_dir (a folder of .txt/.rst/.md files)")
        d = Path(data_dir)
        tr_docs, va_docs = _local_text_documents(d)
        label = f"local text files in {d.name}/ (stand-in; NOT WikiText-103)"
        return _build(tr_docs, va_docs, label, True,
                      f"{len(tr_docs)} train / {len(va_docs)} val files from {d}.",
                      seq_len, max_tokens, tokenizer, vocab_size, f"local-{d.name}", cache, off, seed,
                      allow_gpt2=False)

    if key in CORPORA:
        return load_prose_corpus(key, seq_len, max_tokens, data_dir, tokenizer, vocab_size, seed, cache)
    if key == "pydoc-topics":
        return _standin(seq_len, max_tokens, tokenizer, vocab_size, cache, off, seed,
                        pretty="WikiText-103", reason="asked for directly")

    config, pretty, subdirs = _WIKITEXT[key]
    # 1. raw files on disk
    dirs: List[Path] = [text_dir(data_dir)]
    for d in dirs:
        if d.is_dir():
            found = _find_raw_files(d, subdirs)
            if found is not None:
                tr_path, va_path = found
                src = f"file:{tr_path.resolve()}:{tr_path.stat().st_size}:{va_path.stat().st_size}"
                return _build_real(
                    lambda: _iter_lines(tr_path), lambda: _iter_lines(va_path), src,
                    f"{pretty} ({tr_path.parent.name}/{tr_path.name})",
                    f"raw files {tr_path} / {va_path}.",
                    seq_len, max_tokens, tokenizer, vocab_size, config, cache, off, seed)
    reasons = []
    if data_dir is not None:
        reasons.append(f"no wiki.train/valid .raw/.tokens files under {data_dir}")
    # 2. datasets hub (online, or its local cache when offline)
    got = try_hf_dataset(lambda: _load_hf_wikitext(config), "wikitext", off,
                         f"load_dataset('wikitext', '{config}')", reasons)
    if got is not None:
        tr, va = got
        return _build_real(
            lambda: iter(tr), lambda: iter(va), f"hf:{config}:{len(tr)}:{len(va)}",
            f"{pretty} ({config})", f"datasets.load_dataset('wikitext', '{config}').",
            seq_len, max_tokens, tokenizer, vocab_size, config, cache, off, seed)
    # 3. stand-in
    reason = "; ".join(reasons)
    choice = standin_choice(standin)
    what = (CORPORA[choice].source.split(" shipped")[0] if choice in CORPORA
            else "Python's own documentation text; `make fetch-corpus` gives real news prose instead")
    msg = (f"{pretty} is not available ({reason}). Falling back to the {choice} stand-in "
           f"({what}). Results are NOT {pretty} results.")
    log.warning(msg)
    warnings.warn(msg, RuntimeWarning, stacklevel=2)
    if choice in CORPORA:
        return load_prose_corpus(choice, seq_len, max_tokens, None, tokenizer, vocab_size, seed, cache,
                                 reason=reason)
    return _standin(seq_len, max_tokens, tokenizer, vocab_size, cache, off, seed, pretty=pretty, reason=reason)


def _standin(seq_len, max_tokens, tokenizer, vocab_size, cache, off, seed, pretty, reason) -> LMCorpus:
    tr_docs, va_docs = standin_documents()
    label = f"pydoc-topics stand-in (offline; NOT {pretty})"
    note = (f"Stand-in for {pretty} ({reason}): the {len(tr_docs) + len(va_docs)} documentation topics of "
            f"Python's pydoc_data.topics (stdlib), sorted by name; last {len(va_docs)} topics are validation.")
    return _build(tr_docs, va_docs, label, True, note, seq_len, max_tokens, tokenizer, vocab_size,
                  "pydoc-topics", cache, off, seed, allow_gpt2=False)


def _build(tr_docs, va_docs, label, is_standin, note, seq_len, max_tokens, tokenizer, vocab_size,
           tag, cache, off, seed, allow_gpt2) -> LMCorpus:
    tok, tok_name, tok_note = _resolve_tokenizer(tokenizer, lambda: tr_docs, vocab_size, tag, cache, off, allow_gpt2)
    tr = _encode_stream(tok, tr_docs, max_tokens)
    va = _encode_stream(tok, va_docs, max_tokens)
    return _finish(tr, va, label, is_standin, (note + " " + tok_note).strip(), seq_len, tok, tok_name, seed)


def _build_real(train_lines, val_lines, src, label, note, seq_len, max_tokens, tokenizer, vocab_size,
                config, cache, off, seed) -> LMCorpus:
    tok, tok_name, tok_note = _resolve_tokenizer(
        tokenizer, lambda: _cap_chars(train_lines(), BPE_MAX_TRAIN_CHARS), vocab_size, config, cache, off,
        allow_gpt2=True)
    # token streams of real corpora are slow to make: cache them as .npy
    key = _sha([src, tok_name, tok_note, json.dumps(_vocab_size_of(tok)), str(max_tokens)])[:16]
    streams = []
    for split, lines in (("train", train_lines), ("valid", val_lines)):
        path = cache / "token-streams" / f"{config}-{split}-{key}.npy"
        arr = None
        if path.is_file():
            try:
                arr = np.load(path).astype(np.int32)
            except Exception:
                arr = None
        if arr is None:
            arr = _encode_stream(tok, lines(), max_tokens)
            dtype = np.uint16 if _vocab_size_of(tok) <= 65535 else np.int32
            _cache_write(path, lambda: _atomic_save_npy(path, arr.astype(dtype)))
        streams.append(arr)
    return _finish(streams[0], streams[1], label, False, (note + " " + tok_note).strip(), seq_len, tok, tok_name, seed)


def _finish(tr: np.ndarray, va: np.ndarray, label: str, is_standin: bool, note: str, seq_len: int,
            tok, tok_name: str, seed: int) -> LMCorpus:
    train = _chunk(tr, seq_len, "train", label)
    val = _chunk(va, seq_len, "val", label)
    perm = np.random.default_rng(seed).permutation(train.shape[0])
    train = train[torch.from_numpy(perm)]
    vocab = _vocab_size_of(tok)
    counts = np.bincount(np.asarray(tr, dtype=np.int64), minlength=vocab)
    return LMCorpus(
        train=train, val=val, vocab_size=vocab, data_name=label, tokenizer_name=tok_name,
        is_standin=is_standin, note=note, seq_len=seq_len, n_train_tokens=int(len(tr)),
        n_val_tokens=int(len(va)), tokenizer=tok, train_counts=counts,
        unigram_ppl=unigram_perplexity_from_counts(counts, val[:, 1:].numpy()),
    )


def load_prose_corpus(name: str = defaults.LM_STANDIN_CORPUS, seq_len: int = 256, max_tokens: Optional[int] = None,
                      data_dir: Optional[os.PathLike] = None, tokenizer: Any = "bpe",
                      vocab_size: int = defaults.LM_CORPUS_VOCAB, seed: int = 0,
                      cache_dir: Optional[os.PathLike] = None, reason: str = "asked for directly") -> LMCorpus:
    """A fetched real-prose corpus (:data:`rksp.data.lm_corpus.CORPORA`) as ``[n, seq_len]`` windows.

    Reads ``documents.jsonl`` (``data_dir`` or ``<text dir>/<name>/``), splits it **by document**
    (:func:`~rksp.data.lm_corpus.split_documents`: fixed seed ``LM_CORPUS_SPLIT_SEED``, share
    ``LM_CORPUS_VAL_FRACTION``), trains one byte-level BPE on the training documents (``'gpt2'`` /
    ``'bpe'``; a tokenizer object or local path is used as given), and caches the tokenizer and both
    token streams under ``cache_dir``. A corpus file that is missing, empty, not UTF-8, or shorter
    than one window in either split raises one :class:`RKSPInputError` line, and nothing is cached.
    ``seed`` permutes the train windows, as in :func:`load_lm_corpus`.
    """
    if name not in CORPORA:
        raise RKSPInputError(f"unknown prose corpus {name!r}; choose from {sorted(CORPORA)}")
    spec, path = CORPORA[name], corpus_path(name, data_dir)
    docs, doc_note = read_documents(path, name)
    tr_docs, va_docs = split_documents(docs)
    for split, ds in (("train", tr_docs), ("validation", va_docs)):
        n_bytes = sum(len(d.encode("utf-8")) for d in ds)
        if n_bytes < seq_len:        # a byte-level BPE token covers at least one byte
            raise RKSPInputError(f"{name}: the {split} documents of {path} hold {n_bytes} bytes, "
                                 f"fewer than one window of seq_len={seq_len} tokens")
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    t0 = time.perf_counter()
    tok_path: Optional[Path] = None
    if tokenizer is None or tokenizer in ("gpt2", "bpe"):
        tok, tok_path = get_bpe_tokenizer(tr_docs, vocab_size, tag=name, cache_dir=cache, save=False)
        tok_name = (f"byte-level BPE trained on the {name} train documents "
                    f"(requested vocab {vocab_size}, actual {tok.get_vocab_size()})")
        tok_id = tok_path.name
    else:
        tok, tok_name, _ = _resolve_tokenizer(tokenizer, lambda: tr_docs, vocab_size, name, cache, True, False)
        tok_id = tok_name
    key = _sha([file_sha256(path), str(defaults.LM_CORPUS_SPLIT_SEED), str(defaults.LM_CORPUS_VAL_FRACTION),
                tok_id])[:16]
    paths = [cache / "token-streams" / f"{name}-{split}-{key}.npy" for split in ("train", "valid")]
    try:
        streams = [np.load(p).astype(np.int32) for p in paths]
        cached = True
    except (OSError, ValueError):
        streams, cached = [_encode_stream(tok, ds, None) for ds in (tr_docs, va_docs)], False
    for split, s in zip(("train", "validation"), streams):
        if len(s) < seq_len:
            raise RKSPInputError(f"{name}: the {split} split of {path} has {len(s)} tokens, "
                                 f"fewer than one window (seq_len={seq_len})")
    if tok_path is not None and not tok_path.is_file():   # checks passed: now cache
        _cache_write(tok_path, lambda: _atomic_write_text(tok_path, tok.to_str()))
    if not cached:
        dtype = np.uint16 if _vocab_size_of(tok) <= 65535 else np.int32
        for p, s in zip(paths, streams):
            _cache_write(p, lambda: _atomic_save_npy(p, s.astype(dtype)))
    log.info("%s: tokenizer and token streams ready in %.1f s (%s)", name, time.perf_counter() - t0,
             "cached" if cached else "built")
    tr, va = (s[:max_tokens] if max_tokens is not None else s for s in streams)
    note = (f"Stand-in for WikiText-103 ({reason}): {spec.source}; {doc_note} from {path}, split by document "
            f"(seed {defaults.LM_CORPUS_SPLIT_SEED}): {len(tr_docs)} train / {len(va_docs)} validation. "
            f"Licence: {spec.licence}. Tokenizer: {tok_name}" + (f", cached at {tok_path}." if tok_path else "."))
    return _finish(tr, va, spec.label, True, note, seq_len, tok, tok_name, seed)
