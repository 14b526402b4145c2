# The two commands a new user needs: `make report` and `make test`. Both create .venv if missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PROFILE ?= demo
JOBS ?= 2

.PHONY: install test report study figures replicate lab bench clean-runs rehearsal

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,cluster]'
	$(BIN)/python -m ipykernel install --sys-prefix --name dml_core --display-name "dml_core (.venv)" > /dev/null
	touch $(STAMP)

install: $(STAMP)

## make test: the whole test suite (CPU, in one pytest-xdist worker per core; 7.5 min of pytest on a 2-core Intel Xeon VM, ~25-31 min on the slower 2-core machines; see the README), smoke notebooks and one demo training run per method included
test: $(STAMP)
	$(BIN)/python -m pytest -q -n auto --dist loadfile

## make report: the study on the embedded demo data (CPU), then its book (static HTML, offline):
## prints the path of runs/demo/report/index.html; the book is built even when a run failed
report: $(STAMP)
	$(BIN)/python -m dml_core.batch --profile $(PROFILE) --jobs $(JOBS); status=$$?; \
	$(BIN)/python -m dml_core.report.book --profile $(PROFILE) && exit $$status

## make study: what the README quotes: first the search of every method's loss hyper-parameters
## with the same budget on the validation classes (results/tuning/demo.json; resumable), the
## profiles regenerated from it, then the profile study (5 seeds, 24 epochs, the ablations);
## its per-seed values and tables into results/study/ (and docs/PROTOCOL.md's plateau table)
## and its figures into figures/; 35 min on a 2-core Intel Xeon VM with AVX-512 (search 13 min,
## batch 22 min), 57 min on a 2-core AMD EPYC VM (previous round), ~2-2.5 h on the slower
## 2-core machines
study: $(STAMP)
	$(BIN)/python -m dml_core.study.tuning --setting demo --jobs $(JOBS)
	$(BIN)/python -m dml_core.methods.fair --write
	$(BIN)/python -m dml_core.batch --profile study --jobs $(JOBS)
	$(BIN)/python -m dml_core.report.replicate --profile study --save --readme
	$(BIN)/python -m dml_core.methods.fair --write
	$(BIN)/python -m dml_core.report.figures --refresh --profile study

## make figures: the README's figures (figures/) from runs/$(FIGURES_PROFILE)/08_figures (never implicit)
FIGURES_PROFILE ?= study
figures: $(STAMP)
	$(BIN)/python -m dml_core.report.figures --refresh --profile $(FIGURES_PROFILE)

## make replicate: a fresh runs/study against the committed results/study/ (same machine: identical values; another: Holm-controlled tests, equivalence within 5 points; other pretrained weights: not comparable; prints its simulated false-alarm rate)
replicate: $(STAMP)
	$(BIN)/python -m dml_core.report.replicate --profile study

## make rehearsal: the whole full profile on stand-ins (real raw layouts, random weights in the published formats), 1 epoch of 2 steps per run, CPU, then its tables, figures and book; keeps its folder (printed; 19 GB); 12 min on 2 cores (up to ~25 when they are busy); then the ViT track's runs (tools.rehearsal --vit: every ViT trunk x method x data set of fair_vit, 40 runs) in a second folder (15 GB; 51 min on 2 busy cores)
rehearsal: $(STAMP)
	$(BIN)/python -m tools.rehearsal --jobs $(JOBS)
	$(BIN)/python -m tools.rehearsal --vit --jobs $(JOBS)

## make lab: JupyterLab on the notebooks with the project's kernel
lab: $(STAMP)
	$(BIN)/jupyter lab notebooks/

## make bench: evaluation at SOP scale against faiss (installs faiss-cpu, benchmark-only)
bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	$(BIN)/python benchmarks/eval_scale.py
