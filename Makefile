# lbedge developer entry points. `make test` works on a fresh machine: it creates .venv,
# installs the pinned CPU build of torch and the package with its test extras, then runs pytest.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.lbedge-installed
# torch is pinned: an unpinned torch pulls a multi-GB CUDA build.
TORCH  := torch==2.13.0

.PHONY: test venv clean help

help:
	@echo "make test   create .venv if missing, install lbedge[torch,quantize,train,test,audio,hub], run the tests"
	@echo "make venv   only create/refresh the environment"
	@echo "make clean  remove .venv and caches"

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[torch,quantize,train,test,audio,hub]" "$(TORCH)"
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q -ra

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
