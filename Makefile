# Two commands for a newcomer: `make app` (set up, then launch the dashboard) and `make test`
# (set up, then run the whole suite). Setup is a plain venv + pip, redone when pyproject.toml changes.
VENV ?= .venv
PY := $(VENV)/bin/python
SHARED_DATA := $(abspath ../shared/data)
# The data root: $DIGIT_LAB_DATA if set, else ../shared/data when present, else a per-user cache.
export DIGIT_LAB_DATA ?= $(if $(wildcard $(SHARED_DATA)/MNIST),$(SHARED_DATA),)
PORT ?= 8501

.PHONY: app test setup benchmark clean lock
app: $(VENV)/.installed
	$(VENV)/bin/streamlit run dashboard/app.py --server.port $(PORT)

test: $(VENV)/.installed
	$(PY) -m pytest

setup: $(VENV)/.installed

# Installs exactly the versions in constraints.txt (reproducible); `make lock` rewrites that file from a
# fresh resolve of pyproject.toml.
$(VENV)/.installed: pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $@

lock:
	rm -rf .lock-venv && python3 -m venv .lock-venv
	.lock-venv/bin/pip install --quiet -e ".[dev]"
	{ echo "# Every dependency pinned, as tested (Python 3.11, Linux x86_64). Used by \`make\` and CI through pip's -c."; \
	  echo "# Regenerate after changing pyproject.toml: make lock"; \
	  .lock-venv/bin/pip freeze --exclude-editable | grep -v '^digit-lab'; } > constraints.txt
	rm -rf .lock-venv

benchmark: $(VENV)/.installed  # about 3 hours on 2 CPU cores; each script prints its table with its reference
	$(PY) benchmarks/presets.py seed-mlp seed-cnn fast starter robust private
	$(PY) benchmarks/presets.py best --seeds 0 1 2 3 4
	$(PY) benchmarks/speed.py
	$(PY) benchmarks/predict.py
	$(PY) benchmarks/explain.py
	$(PY) benchmarks/drawings.py
	$(PY) benchmarks/pages.py --json benchmarks/results/pages.json
	$(PY) benchmarks/watch.py --json benchmarks/results/watch.json
	$(PY) benchmarks/load.py --sessions 10 --seconds 60 --json benchmarks/results/load.json
	if [ $$(nproc) -ge 2 ]; then $(PY) benchmarks/load.py --sessions 10 --seconds 60 --server-cores 1 \
	  --json benchmarks/results/load-server-cores1.json; fi  # the browsers on a core of their own

clean:
	rm -rf $(VENV) .pytest_cache .digit-lab/test-home
