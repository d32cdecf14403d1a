# mednext-bench: the user's verbs. Every target below bootstraps .venv on a fresh machine.
#
#   TORCH    the torch requirement installed first (default: the CPU build this project is
#            tested with). GPU users pick their own, e.g. TORCH='torch==2.14.1'.
#   PROFILE  quick (default: phantoms, CPU budget) | paper (real data, full schedule) | smoke
#   BACKEND  local (default) | slurm
#   RECIPE   paper (default: the learning rates of the paper's text) | official-code (those of the
#            official trainers); reports of official-code go to results/<study>-<profile>-official-code
#   DATA     folder of converted raw datasets (nnU-Net layout) for PROFILE=paper
#   WORK     where preprocessed data, runs and predictions go (default ./work)

PYTHON  ?= python3
VENV    ?= .venv
TORCH   ?= torch==2.13.0
PROFILE ?= quick
BACKEND ?= local
RECIPE  ?= paper
WORK    ?= work
DATA    ?=
CLUSTER ?=
PYTEST_ARGS ?=

PY    := $(VENV)/bin/python
STAMP := $(VENV)/.installed
BENCH := $(VENV)/bin/mednext-bench
RUNARGS = --profile $(PROFILE) --recipe $(RECIPE) --backend $(BACKEND) --work $(WORK) $(if $(DATA),--data $(DATA)) $(if $(CLUSTER),--cluster $(CLUSTER))

.DEFAULT_GOAL := help
.PHONY: help install test test-all test-slurm reproduce-table2 reproduce-table2-plus ablations report \
        sanity bench bench-models bench-metrics bench-faults bench-paper-shapes bench-fastpath \
        bench-train models clean

help:  ## list the targets
	@grep -E '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 24

# torch first, from $(TORCH); then the project under constraints.txt plus a pin of the torch that
# was just installed, so that no dependency (nnunetv2 -> timm -> torchvision) can replace it.
# The registry's torchvision does not load beside a CPU torch: it is removed when it fails to import.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check "$(TORCH)"
	$(PY) -m pip freeze --disable-pip-version-check | grep -i '^torch==' > $(VENV)/torch-pin.txt
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -c $(VENV)/torch-pin.txt -e '.[dev]'
	$(PY) -c 'import torchvision' >/dev/null 2>&1 || $(PY) -m pip uninstall --quiet -y torchvision
	$(PY) -c 'import torch, nnunetv2, monai; print("torch", torch.__version__, "| cuda", torch.cuda.is_available())'
	touch $(STAMP)

install: $(STAMP)  ## create .venv with torch ($(TORCH)) and the pinned dependencies

test: $(STAMP)  ## the default test suite (a few minutes on 2 CPU cores)
	$(PY) -m pytest $(PYTEST_ARGS)

test-all: $(STAMP)  ## every test, including the slow ones (not SLURM)
	$(PY) -m pytest -m 'not slurm' $(PYTEST_ARGS)

test-slurm: $(STAMP)  ## the SLURM tests against the local single-node cluster
	bash scripts/slurm-local.sh start
	$(PY) -m pytest -m slurm $(PYTEST_ARGS); rc=$$?; bash scripts/slurm-local.sh stop; exit $$rc

reproduce-table2: $(STAMP)  ## Table 2: 15 models x 4 datasets, then the reports (PROFILE, BACKEND, DATA)
	$(BENCH) run --study table2 $(RUNARGS)

reproduce-table2-plus: $(STAMP)  ## Table 2 + three rows beyond the paper (nnU-Net ResEnc, ResEnc L as it plans itself, MedNeXt-B + GRN); reuses Table 2's runs
	$(BENCH) run --study table2-plus $(RUNARGS)

ablations: $(STAMP)  ## Table 1 (right): the MedNeXt-B ablations on BTCV and AMOS22, then the reports
	$(BENCH) run --study ablations $(RUNARGS)

report: $(STAMP)  ## rebuild every report from the stored per-case tables (no training)
	$(BENCH) report --study table2 --profile $(PROFILE) --recipe $(RECIPE) --work $(WORK)
	$(BENCH) report --study ablations --profile $(PROFILE) --recipe $(RECIPE) --work $(WORK)

sanity: $(STAMP)  ## learning check: MedNeXt-S and nnU-Net on the KiTS19 phantom -> results/sanity.csv
	$(BENCH) sanity --work $(WORK)

models: $(STAMP)  ## print the model registry (parameters, GMACs, recipe)
	$(BENCH) models

bench: bench-models bench-metrics bench-faults bench-paper-shapes bench-fastpath bench-train  ## all benchmarks

bench-models: $(STAMP)  ## parameters, GMACs at 128^3, CPU step time and memory (25-minute budget) -> results/bench/models.csv
	$(PY) -m harness.bench.models

bench-fastpath: $(STAMP)  ## MedNeXt channels-last vs official layer order vs MONAI, one process -> results/bench/fastpath.csv
	$(PY) -m harness.bench.fastpath

bench-train: $(STAMP)  ## training through the real trainer, 5 epochs, with and without data loading -> results/bench/train.csv
	$(PY) -m harness.bench.train --work $(WORK)

bench-faults: $(STAMP)  ## kills, corrupt checkpoints, full disk, two launchers, data loss, bad inputs -> results/bench/faults.csv
	$(PY) -m harness.bench.faults

bench-paper-shapes: $(STAMP)  ## every Table 2 entry at 128^3 x 2 / 512^2 x 14 through the trainer and predictor (CPU: about 90 min, budgeted) -> results/bench/paper_shapes.csv
	$(PY) -m harness.bench.paper_shapes --work $(WORK)

bench-metrics: $(STAMP)  ## surface metrics: reference engine vs fast path on a liver-sized object
	$(PY) -m harness.bench.metrics

clean:  ## remove .venv and what the harness made in WORK (never converted datasets, never a folder it did not create)
	@if [ -f "$(WORK)/.mednext-bench.json" ]; then \
	  for d in datasets runs logs locks jobs reports sanity bench; do rm -rf "$(WORK)/$$d"; done; \
	  rm -f "$(WORK)/.mednext-bench.json"; \
	  rmdir "$(WORK)" 2>/dev/null || echo "kept $(WORK): it holds more than the harness's own folders (e.g. converted datasets in nnUNet_raw)"; \
	elif [ -e "$(WORK)" ]; then echo "not cleaning $(WORK): mednext-bench did not create it (no .mednext-bench.json)"; fi
	rm -rf $(VENV)
