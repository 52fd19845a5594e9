# Two commands on a fresh machine: `make studio` and `make test`. Everything else is set up here.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CHROMIUM ?= /usr/bin/chromium
WORKSPACE ?= demo_workspace
PYTEST_ARGS ?=

.PHONY: install studio test browser clean demo

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch pinned first: they install from this machine's disk (an unpinned torch pulls GBs)
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP) browser

# Debian's Chromium for the Playwright tests (no browser download at test time).
browser:
	@test -x $(CHROMIUM) || { command -v apt-get >/dev/null && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-dejavu-core >/dev/null) ; } || \
	  echo "warning: could not install chromium; browser tests will be skipped"

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

# Builds the demo workspace from SynthBooru (once, ~25 s) and opens the studio on it at
# http://127.0.0.1:$(PORT) (a non-loopback HOST needs AUTH=user:pass).
PORT ?= 7860
HOST ?= 127.0.0.1
studio: install
	$(PY) launch.py --workspace $(WORKSPACE) --demo --host $(HOST) --port $(PORT) $(if $(AUTH),--auth $(AUTH))

clean:
	rm -rf $(VENV) .pytest_cache
