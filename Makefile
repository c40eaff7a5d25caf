# The two set-up commands of the README: `make demo` and `make test`.
# Both create (or reuse) the virtual environment in $(VENV) and install what they need.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo demo-codec test test-fast system-tools eval bench proto check-proto clean-venv

$(STAMP): requirements.txt requirements-dev.txt constraints.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip<27"
	$(PY) -m pip install --quiet -r requirements-dev.txt -c constraints.txt
	$(PY) -m pip install --quiet --no-deps facenet-pytorch==2.6.0
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

venv: $(STAMP)

# The whole system: embedded Redis, analysis server, one edge agent on two simulated cameras.
# Prints the dashboard address and the API key; Ctrl-C stops everything.
demo: $(STAMP)
	$(PY) -m demo

# The codec alone on the sample faces (bytes per layer, verification accuracy).
demo-codec: $(STAMP)
	$(PY) -m facecodec.demo

# System programs the tests drive, from Debian when missing: Chromium (the dashboard's browser
# test; Playwright's own browser download does not work here), and for the compose smoke test a
# Docker engine (docker.io: dockerd is started by the test itself when none answers),
# docker-compose, and mmdebstrap (stand-in base images where Docker Hub cannot be reached).
# Checked on every run, installed only when absent.
SYSTEM_TOOLS := chromium dockerd docker-compose mmdebstrap
system-tools:
	@missing=""; for t in $(SYSTEM_TOOLS); do command -v $$t >/dev/null 2>&1 || missing="$$missing $$t"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing$$missing with apt-get"; \
	  $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium docker.io docker-compose mmdebstrap >/dev/null; \
	fi

test: $(STAMP) system-tools
	PYTHON=$(PY) proto/generate.sh --check
	$(PY) -m pytest -q

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

# Full-LFW figures (needs ../shared/datasets/lfw): features cache, then every results file.
# Fitting models is separate (`python -m train ...`, see README), so `make eval` never changes them.
eval: $(STAMP)
	$(PY) -m eval prepare
	$(PY) -m eval rate-accuracy
	$(PY) -m eval reconstruction
	$(PY) -m eval rate-distortion --images 600
	$(PY) -m eval figures

proto: $(STAMP)
	PYTHON=$(PY) proto/generate.sh

clean-venv:
	rm -rf $(VENV)
