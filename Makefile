# The two commands a fresh machine needs: `make serve` and `make test`.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
HOST   ?= 127.0.0.1
PORT   ?= 8000

.PHONY: install serve test migrate bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	# torch first, at the exact pin: pip then takes the local CPU wheel instead of a CUDA build.
	$(PY) -m pip install --disable-pip-version-check -q torch==2.13.0
	$(PY) -m pip install --disable-pip-version-check -q -e '.[dev,bench]'
	touch $(STAMP)

install: $(STAMP)

migrate: install
	$(VENV)/bin/adaptinf migrate

serve: install
	$(VENV)/bin/adaptinf serve --host $(HOST) --port $(PORT)

test: install
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

bench: install
	$(PY) bench/features.py
	$(PY) bench/selection.py
	$(PY) bench/lifelong.py

clean:
	rm -rf $(VENV) adaptinf-data .pytest_cache
