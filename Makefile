# Two commands for a newcomer: `make app` (set up, then launch the dashboard) and `make test`
# (set up, then run the whole suite). Setup is a plain venv + pip, redone when pyproject.toml changes.
VENV ?= .venv
PY := $(VENV)/bin/python
SHARED_DATA := $(abspath ../shared/data)
# The data root: $DIGIT_LAB_DATA if set, else ../shared/data when present, else a per-user cache.
export DIGIT_LAB_DATA ?= $(if $(wildcard $(SHARED_DATA)/MNIST),$(SHARED_DATA),)
PORT ?= 8501

.PHONY: app test setup benchmark clean
app: $(VENV)/.installed
	$(VENV)/bin/streamlit run dashboard/app.py --server.port $(PORT)

test: $(VENV)/.installed
	$(PY) -m pytest

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

benchmark: $(VENV)/.installed
	$(PY) benchmarks/presets.py

clean:
	rm -rf $(VENV) .pytest_cache .digit-lab/test-home
