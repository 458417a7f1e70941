# The two commands of the README:
#   make demo   set up everything and run the demo study on the embedded corpus -> reports/
#   make test   set up everything and run all tests (export check, notebooks, pytest)
# Both create .venv on first use. TORCH selects the torch build: the default is the CPU wheel that
# these machines carry; GPU users either use environment.yml or e.g.
#   make test TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
# Also: make bench (lasr bench -> reports/bench.{md,json}), make lab (JupyterLab on the notebooks), make wheel (dist/lasr-*.whl), make docs and make preview
# (the documentation site; they need Quarto: https://quarto.org/docs/get-started/).
SHELL := /bin/bash
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.13.0
STAMP := $(VENV)/.lasr-installed
# Installs skip compiling every module of every package (most are never imported: 3/4 of the install time); Python
# compiles a module when it is first imported and keeps its bytecode, which a PYTHONDONTWRITEBYTECODE of the caller's
# environment (set on some CI images) would forbid, making every process compile torch again: make's commands run
# without it, and the install ends by importing what the commands use once
unexport PYTHONDONTWRITEBYTECODE
PIP := $(BIN)/python -m pip install -q --no-compile

.PHONY: install slurm demo test test-fast export clean-nbs lab wheel docs preview bench

$(STAMP): settings.ini setup.py
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first and pinned, so that nothing later resolves an (unpinned) CUDA build
	$(PIP) $(TORCH)
	$(PIP) -e ".[dev]"
	# hear21passt declares torchaudio (which would force an old torch, ~7 GB) and timm>0.5 breaks
	# its imports: both go in without their declared dependencies
	$(PIP) --no-deps hear21passt==0.0.26 timm==0.5.4
	# (in two processes at once: compiling is most of an import's first time, and it runs on one core)
	$(BIN)/python -c "import lasr.train, lasr.index, lasr.bench, hear21passt.models.passt" & p=$$!; \
	  $(BIN)/python -c "import lasr.cli, lasr.study, papermill, seaborn, transformers.models.roberta" && wait $$p
	touch $@

install: $(STAMP)

# runs at once in the demo: one per GPU, else two, each with half of the CPU cores (the same tables as one at a time)
DEMO_JOBS ?= $(shell n=$$(nvidia-smi -L 2>/dev/null | grep -c '^GPU'); [ "$$n" -gt 0 ] 2>/dev/null && echo $$n || echo 2)

demo: install
	$(BIN)/lasr reproduce --preset demo --out reports --jobs $(DEMO_JOBS)

# the launcher tests start a one-node SLURM cluster: Debian's slurm-wlm and munge, installed here when missing (root)
slurm:
	@if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing slurm-wlm and munge (apt-get) for the SLURM tests"; \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get install -y -qq slurm-wlm munge >/dev/null 2>&1 || \
	      { apt-get update -qq && apt-get install -y -qq slurm-wlm munge >/dev/null; }; \
	  else echo "slurm-wlm and munge are missing and cannot be installed here (not root): the SLURM tests will be skipped"; fi; \
	fi

test: install slurm
	$(BIN)/python -m pytest -q --durations=20 tests/test_export.py
	$(BIN)/nbdev_test --n_workers 2 --timing
	# two workers, one test file each at a time (test_package.py and test_study.py, which check the pip route,
	# together), in the order of tests/conftest.py: much of a test's time is process start-up, imports and
	# subprocesses, which overlap well on two cores; tests marked `alone` (the real-size paper dry run, ~22 GB) run
	# afterwards by themselves
	$(BIN)/python -m pytest -q --durations=20 -n 2 --dist loadfile --no-loadscope-reorder -m "not alone" tests --ignore=tests/test_export.py
	$(BIN)/python -m pytest -q --durations=20 -m alone tests --ignore=tests/test_export.py

bench: install
	$(BIN)/lasr bench --out reports

# JupyterLab (the lab extra) goes in on the first `make lab`: the tests and the demo do not need it
lab: install
	test -x $(BIN)/jupyter-lab || $(PIP) -e ".[dev,lab]"
	$(BIN)/jupyter lab nbs

wheel: install
	$(BIN)/python -m pip wheel --no-deps --no-build-isolation -w dist .

# nbdev_docs also regenerates README.md from settings.ini's readme_nb (index.ipynb); README.md is
# written by hand, so it is kept as it is
docs: install
	@command -v quarto >/dev/null || { echo "make docs needs Quarto on PATH: https://quarto.org/docs/get-started/"; exit 2; }
	cp README.md $(VENV)/README.md.keep
	$(BIN)/nbdev_docs; rc=$$?; mv $(VENV)/README.md.keep README.md; exit $$rc

preview: install
	@command -v quarto >/dev/null || { echo "make preview needs Quarto on PATH: https://quarto.org/docs/get-started/"; exit 2; }
	$(BIN)/nbdev_preview

export: install
	$(BIN)/nbdev_export

clean-nbs: install
	$(BIN)/nbdev_clean
