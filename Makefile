# Toylab: everything a fresh clone needs, from scratch.
#   make run    set up and run the flagship experiment (grokking) on the embedded default (./runs)
#   make test   set up and run the test-suite
#   make bench  print the benchmark tables
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv run test bench clean

venv: $(STAMP)

# torch==2.13.0 is the CPU build on local disk; constraints.txt pins what was tested
# (and keeps setuptools below 81 while other packages resolve, for Sacred).
$(STAMP): setup.cfg pyproject.toml constraints.txt
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found: install Python 3.11 or run 'make PYTHON=python3 ...'"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=24"
	$(PY) -m pip install --quiet -c constraints.txt -e ".[test]"
	touch $(STAMP)

run: venv
	$(PY) experiments/grokking.py

test: venv
	$(PY) -m pytest -q

bench: venv
	$(PY) benchmarks/grokking_speed.py
	$(PY) benchmarks/transformer_speed.py

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
