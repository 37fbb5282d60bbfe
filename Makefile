# Freeze or Fine-tune. On a fresh machine:   make book   (build the book)   make test   (run every test)
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SHARED_DATA := $(abspath ../shared/data)
# The offline copies of the benchmark data beside the checkout; elsewhere the loader uses the hub.
export MTL_DATA_DIR ?= $(if $(wildcard $(SHARED_DATA)),$(SHARED_DATA),)
export HF_HUB_DISABLE_PROGRESS_BARS := 1
SCRATCH := $(CURDIR)/.scratch
# Where `make install` takes torch from. Empty: the indexes pip is set up with. On PyPI,
# torch==2.13.0 for Linux x86_64 is the CUDA build (several GB of CUDA libraries); a machine
# without a GPU takes the CPU build with  make install TORCH_INDEX=https://download.pytorch.org/whl/cpu
# (the GitHub workflows do).
TORCH_INDEX ?=
TORCH := torch==2.13.0

.PHONY: install book test lint unit notebooks-smoke nbval gpu-structure linkcheck browser notebooks bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first, pinned, from TORCH_INDEX when set: an unpinned torch pulls another build
	$(BIN)/python -m pip install -q $(TORCH) $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/python -m pip install -q -e ".[model,book,test]"
	touch $(STAMP)

install: $(STAMP)

book: $(STAMP)
	bash scripts/fetch_mathjax.sh
	$(BIN)/jupyter-book build . --warningiserror --nitpick --keep-going

test: lint unit nbval gpu-structure book linkcheck browser

# ruff: pyflakes, pycodestyle (lines up to 120) and bugbear on every Python file (pyproject.toml [tool.ruff]).
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

unit: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest tests -m "not browser"

# Every notebook runs once, in book order, in the smoke profile. papermill only injects the parameter
# (--prepare-only: no kernel), then nbval executes the prepared copies. --nbval-lax: run every cell,
# compare the outputs of the cells tagged nbval-check-output only (nbval reads its cell tags:
# nbval-check-output, nbval-ignore-output, nbval-skip). The copies sit inside the checkout, in
# .scratch/nbval, where a kernel finds the book's root, its data and its stored records as from
# notebooks/. A selection:  make nbval NBVAL_NOTEBOOKS="notebooks/01_model_tour.ipynb"
NBVAL_NOTEBOOKS ?= $(sort $(wildcard notebooks/[0-9][0-9]_*.ipynb))
NBVAL_DIR := $(SCRATCH)/nbval
nbval: $(STAMP)
	rm -rf $(NBVAL_DIR)
	$(BIN)/python scripts/run_notebooks.py --profile smoke --prepare-only --out $(NBVAL_DIR) $(notdir $(NBVAL_NOTEBOOKS))
	HF_HUB_OFFLINE=1 MTL_RESULTS_DIR=$(NBVAL_DIR)/results \
	  $(BIN)/python -m pytest --nbval-lax --nbval-current-env -p no:cacheprovider \
	  $(addprefix $(NBVAL_DIR)/,$(notdir $(NBVAL_NOTEBOOKS)))

# Every notebook runs once with the gpu profile's structure (5 seeds, 4 sweep points, 2 sweep seeds, its
# epochs and batch sizes, None sizes meaning "all rows") on the CPU, every row count capped at
# GPU_STRUCTURE_ROWS (MTL_CAP_ROWS, mtl_helpers/profiles.py): the code paths a Colab reader's
# profile = "gpu" takes, in minutes. 16 rows: the smoke profile's sizes, which every chapter accepts;
# the cost grows with the rows (5 seeds x 3 epochs per arm). papermill executes copies into
# .scratch/gpu-structure (the stored notebooks stay as they are), the records go to its results/,
# and times.json holds the wall times.
GPU_STRUCTURE_ROWS ?= 16
GPU_STRUCTURE_NOTEBOOKS ?= $(NBVAL_NOTEBOOKS)
GPU_STRUCTURE_DIR := $(SCRATCH)/gpu-structure
gpu-structure: $(STAMP)
	rm -rf $(GPU_STRUCTURE_DIR)
	HF_HUB_OFFLINE=1 CUDA_VISIBLE_DEVICES= MTL_CAP_ROWS=$(GPU_STRUCTURE_ROWS) \
	  MTL_RESULTS_DIR=$(GPU_STRUCTURE_DIR)/results \
	  $(BIN)/python scripts/run_notebooks.py --profile gpu --out $(GPU_STRUCTURE_DIR) \
	  --times $(GPU_STRUCTURE_DIR)/times.json $(notdir $(GPU_STRUCTURE_NOTEBOOKS))

# Links: Sphinx's linkcheck (local files always; http(s) only with MTL_LINKCHECK_EXTERNAL=1, see
# book/_ext/link_policy.py), then every relative link and #anchor of the built HTML.
linkcheck: $(STAMP)
	bash scripts/fetch_mathjax.sh
	$(BIN)/jupyter-book build . --builder custom --custom-builder linkcheck --warningiserror --nitpick --keep-going
	$(BIN)/python scripts/check_links.py _build/html

# MTL_CHROMIUM and MTL_CHROMEDRIVER name a browser and its driver (CI); otherwise Debian's chromium.
browser: $(STAMP)
	$(if $(MTL_CHROMIUM),,bash scripts/ensure_chromium.sh)
	$(BIN)/python -m pytest tests/test_book.py -m browser

# Re-execute every notebook in place with the cpu profile, from no stored runs: the outputs the book shows.
notebooks: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python scripts/run_notebooks.py --profile cpu --fresh --times results/cpu/notebook_times.json

# make bench BENCH_DEVICE=cuda BENCH_ARGS="--with-book": the GPU section on a GPU (auto: cuda when torch sees one)
BENCH_DEVICE ?= auto
BENCH_ARGS ?=
bench: $(STAMP)
	$(BIN)/python -m pip install -q -e ".[bench]"
	HF_HUB_OFFLINE=1 $(BIN)/python -m bench.layer_cache --device $(BENCH_DEVICE)
	HF_HUB_OFFLINE=1 $(BIN)/python -m bench.run --device $(BENCH_DEVICE) $(BENCH_ARGS)

clean:
	rm -rf _build $(SCRATCH)
