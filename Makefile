# Two commands on a fresh machine:  `make demo`  and  `make test`.
# .venv: Python 3.10 with everything (Lava's last releases run on 3.10 only: neurocomp[lava]).
# .venv-core: the core beside a current stack (Python 3.11, torch 2.13, numpy 2, SpikingJelly 2.0), no Lava.
PYTHON_VERSION ?= 3.10.13
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CORE_PYTHON_VERSION ?= 3.11.7
CORE_VENV := .venv-core
CORE_PY := $(CORE_VENV)/bin/python
CORE_STAMP := $(CORE_VENV)/.installed
CORE_STACK ?= torch==2.13.0 "numpy>=2,<3" spikingjelly==2.0.0
DEMO_OUT ?= out/demo

.PHONY: env env-core demo lint test test-core bench bench-scale clean

# torch is named beside the extra (which pins it on 3.10) so that pip does not first fetch the newest torch
# wheel (~900 MB) only to read its requirements
$(STAMP): pyproject.toml
	@if [ ! -x $(PY) ]; then \
	  if command -v pyenv >/dev/null 2>&1 && pyenv prefix $(PYTHON_VERSION) >/dev/null 2>&1; then \
	    "$$(pyenv prefix $(PYTHON_VERSION))/bin/python" -m venv $(VENV); \
	  elif command -v python3.10 >/dev/null 2>&1; then python3.10 -m venv $(VENV); \
	  else echo "error: Python 3.10 is required (lava-nc 0.10 supports only 3.10); install it or pyenv $(PYTHON_VERSION)" >&2; exit 1; fi; \
	fi
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test,lava]" torch==2.3.1
	@touch $(STAMP)

$(CORE_STAMP): pyproject.toml
	@if [ ! -x $(CORE_PY) ]; then \
	  if command -v pyenv >/dev/null 2>&1 && pyenv prefix $(CORE_PYTHON_VERSION) >/dev/null 2>&1; then \
	    "$$(pyenv prefix $(CORE_PYTHON_VERSION))/bin/python" -m venv $(CORE_VENV); \
	  elif command -v python3.11 >/dev/null 2>&1; then python3.11 -m venv $(CORE_VENV); \
	  else echo "error: the core environment needs Python 3.11 (SpikingJelly 2.0 needs >= 3.11); install it or pyenv $(CORE_PYTHON_VERSION)" >&2; exit 1; fi; \
	fi
	$(CORE_PY) -m pip install -q --upgrade pip
	$(CORE_PY) -m pip install -q $(CORE_STACK) -e ".[test]"
	@touch $(CORE_STAMP)

env: $(STAMP)

env-core: $(CORE_STAMP)

demo: $(STAMP)
	$(PY) -m neurocomp.demo --out $(DEMO_OUT)

# the layering contracts of pyproject.toml ([tool.importlinter]): arrows point down the pipeline only
lint: $(STAMP)
	$(VENV)/bin/lint-imports --no-cache --no-logo

# .venv runs every test but the modern stack's (SpikingJelly 2.x cannot be installed on Python 3.10)
test: lint
	$(PY) -m pytest -q -m "not modern"
	$(MAKE) test-core

# the core tests beside the current stack: the tests marked lava (they run Lava in-process) or clock_driven
# (models in SpikingJelly's old API, which 2.x removed) are deselected, by marker (pyproject.toml); the
# lava_bridge test runs Lava from here through .venv's Python (NEUROCOMP_LAVA_PYTHON)
test-core: $(CORE_STAMP) $(STAMP)
	NEUROCOMP_LAVA_PYTHON=$(CURDIR)/$(PY) $(CORE_PY) -m pytest -q -m "not lava and not clock_driven"

# the zoo and the default model (bench/results.*), sharded Lava runs with CPU use per worker
# (bench/sharding.*), then every net of the scale section, 32x32 to 2x128x128 (bench/scale.*)
bench: $(STAMP)
	$(PY) bench/run.py
	$(PY) bench/sharding.py
	$(PY) bench/scale.py

# the scale section alone
bench-scale: $(STAMP)
	$(PY) bench/scale.py

clean:
	rm -rf out .pytest_cache
