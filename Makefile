# Two commands on a fresh machine:  `make demo`  and  `make test`.
PYTHON_VERSION ?= 3.10.13
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_OUT ?= out/demo

.PHONY: env demo lint test bench bench-scale clean

$(STAMP): pyproject.toml
	@if [ ! -x $(PY) ]; then \
	  if command -v pyenv >/dev/null 2>&1 && pyenv prefix $(PYTHON_VERSION) >/dev/null 2>&1; then \
	    "$$(pyenv prefix $(PYTHON_VERSION))/bin/python" -m venv $(VENV); \
	  elif command -v python3.10 >/dev/null 2>&1; then python3.10 -m venv $(VENV); \
	  else echo "error: Python 3.10 is required (lava-nc 0.10 supports only 3.10); install it or pyenv $(PYTHON_VERSION)" >&2; exit 1; fi; \
	fi
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test]"
	@touch $(STAMP)

env: $(STAMP)

demo: $(STAMP)
	$(PY) -m neurocomp.demo --out $(DEMO_OUT)

# the layering contracts of pyproject.toml ([tool.importlinter]): arrows point down the pipeline only
lint: $(STAMP)
	$(VENV)/bin/lint-imports --no-cache --no-logo

test: lint
	$(PY) -m pytest -q

# the zoo and the default model (bench/results.*), then the scale section's 32x32 and 64x64 nets
# (bench/scale.*): under 20 minutes on 2 cores
bench: $(STAMP)
	$(PY) bench/run.py
	$(PY) bench/scale.py --nets small

# every net of the scale section, the 2x128x128 ones included (bench/scale.*; far longer than make bench)
bench-scale: $(STAMP)
	$(PY) bench/scale.py

clean:
	rm -rf out .pytest_cache
