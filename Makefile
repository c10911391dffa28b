# Two entry points for a fresh machine: `make demo` (the main job) and `make test`.
PYTHON ?= python3
STAMP := .make/installed

.PHONY: install system-deps vllm-env demo test lint typecheck

# torch is pinned to the CPU wheel this machine provides; on a GPU machine install
# your CUDA torch first and this step keeps it (the package asks for a range).
$(STAMP): pyproject.toml
	$(PYTHON) -m pip install --quiet "torch==2.13.0"
	$(PYTHON) -m pip install --quiet -e ".[dev,browser,serve,train]"
	@mkdir -p .make && touch $(STAMP)

install: $(STAMP)

# Debian's Chromium for the browser environment (Playwright cannot download one here).
system-deps:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

# vLLM's own Python environment (it pins its own torch); the vllm-marked tests serve from it.
vllm-env:
	bash scripts/setup_vllm_env.sh

demo: install
	HF_HUB_OFFLINE=1 archer quickstart

lint: install
	ruff check .
	ruff format --check .

# mypy cannot follow setuptools' package-dir mapping, so it checks a tree of links
# laid out the way the package installs.
TYPECHECK_TREE := .make/typecheck
typecheck: install
	@rm -rf $(TYPECHECK_TREE) && mkdir -p $(TYPECHECK_TREE)/archer_agents
	@for f in archer_agents/*; do ln -s "$(CURDIR)/$$f" $(TYPECHECK_TREE)/archer_agents/; done
	@for d in tools environments training; do ln -s "$(CURDIR)/$$d" $(TYPECHECK_TREE)/archer_agents/$$d; done
	cd $(TYPECHECK_TREE) && $(PYTHON) -m mypy --config-file "$(CURDIR)/pyproject.toml" -p archer_agents

test: install system-deps vllm-env lint typecheck
	HF_HUB_OFFLINE=1 $(PYTHON) -m pytest
