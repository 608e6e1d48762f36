# `make demo` and `make test` work on a fresh machine: they create .venv when it is missing.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.avfix-installed
# These exact releases lie on the CI machines' disk; other versions download several GB.
TORCH  := torch==2.14.1 torchvision==0.29.1 torchaudio==2.11.0

.PHONY: install test demo bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Two test processes (pytest-xdist): every test works in its own tmp_path, and many wait on child
# processes. A module's tests stay in one process (--dist loadscope), so its module-scoped fixtures are
# made once. 2-core machine, 2026-12-02: one process 10.8 min, two 6.7-7.1 (morning); on the afternoon's
# host, about half as fast, two 13.9 min, with loadscope 13.2. `make test PYTEST_ARGS=` runs one process.
PYTEST_ARGS ?= -n 2 --dist loadscope

test: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS)

demo: $(STAMP)
	$(VENV)/bin/avfix demo

bench: $(STAMP)
	$(PY) benchmarks/extract.py

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
