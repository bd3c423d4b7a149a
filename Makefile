# metaqa — `make help` lists the targets.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: help install demo test test-slow test-all lint bench-reader reference-readers bench-train bench-export bench-ood bench-synth bench-pipeline bench-compress bench-scale clean

help:  ## list targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0   # first and alone: the CPU wheel, never a CUDA build
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)  ## create/refresh .venv (torch 2.13.0 first, then -e .[dev])

demo: $(STAMP)  ## the main job on the embedded sample: prep -> train MiniLM -> eval on held-out themes
	$(BIN)/metaqa demo

test: $(STAMP)  ## fast tests (what CI runs)
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)  ## tests that use the packaged MiniLM weights / shared data
	$(BIN)/python -m pytest -q -m slow

test-all: $(STAMP)  ## every test
	$(BIN)/python -m pytest -q -m 'slow or not slow'

lint: $(STAMP)  ## pyflakes + import order (ruff)
	$(BIN)/ruff check --select F,I metaqa tests scripts

bench-reader: $(STAMP)  ## fine-tune MiniLM on the first 2k / 8k SQuAD v1.1 questions (needs ../shared/data)
	$(BIN)/python scripts/bench_reader.py --subsets 2000 8000

reference-readers: $(STAMP)  ## train (or resume) minilm_squad2 + minilm_squad1 on the full data, score them (hours on CPU; needs ../shared/data)
	$(BIN)/python scripts/bench_reader.py --reference minilm_squad2 minilm_squad1

bench-train: $(STAMP)  ## metaqa train vs HF Trainer (run_qa.py recipe), windows/s and dev F1 (needs ../shared/data)
	$(BIN)/pip install -q -e '.[bench]'
	$(BIN)/python scripts/bench_train.py

bench-export: $(STAMP)  ## export variants vs transformers.pipeline, MiniLM + bert-mini (needs ../shared/data)
	$(BIN)/python scripts/bench_export.py

bench-ood: $(STAMP)  ## the OOD protocol (conf/experiment/ood.yaml), CPU size: from minilm_squad2 when it exists (needs ../shared/data)
	$(BIN)/python scripts/bench_ood.py

bench-synth: $(STAMP)  ## synthetic QA throughput and quality (needs ../shared/data)
	$(BIN)/python scripts/bench_synth.py

bench-pipeline: $(STAMP)  ## retrieval + reader pipeline: paragraph accuracy, F1, latency (needs ../shared/data)
	$(BIN)/python scripts/bench_pipeline.py

clean:  ## remove outputs and caches (keeps .venv)
	rm -rf outputs .pytest_cache

bench-compress: $(STAMP)  ## compressed students of minilm_squad2 vs the teacher and transformers.pipeline (needs the reference reader)
	$(BIN)/python scripts/bench_compress.py

bench-scale: $(STAMP)  ## Ray Data 1 vs 2 actors vs one process on 20k questions; the service at concurrency 1/8/32
	$(BIN)/python scripts/bench_scale.py
