# Two commands do all set-up: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench clean

$(BIN)/python:
	@echo "make: creating the virtual environment $(VENV) with $(PYTHON)"
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml
	@echo "make: installing into $(VENV), once (about 2-3 minutes; torch is the large download):"
	@echo "make:   1/3 pip (upgrade)"
	$(BIN)/pip install --quiet --upgrade pip
	@echo "make:   2/3 torch==2.13.0 (CPU build; the large download, most of the time)"
	$(BIN)/pip install --quiet torch==2.13.0
	@echo "make:   3/3 ncollapse (editable) with numpy, scipy, matplotlib, tqdm, scikit-learn, pytest and the extras: theory (cvxpy, Clarabel, SCS), lm (tokenizers), integrations (lightning, transformers, accelerate, tensorboard)"
	$(BIN)/pip install --quiet -e '.[dev,theory,lm,integrations]'
	touch $(STAMP)
	@echo "make: $(VENV) is ready"

demo: $(STAMP)
	@echo "make: running the demo (a few CPU minutes): digits-LT, CE and CAL models, a UFM sweep -> runs/demo/report.html"
	@echo "make: (an earlier runs/demo is kept: replace it with make demo DEMO_ARGS=--force)"
	$(BIN)/ncollapse demo $(DEMO_ARGS)

test: $(STAMP)
	@echo "make: running the test suite (a few minutes on 2 cores)"
	$(BIN)/python -m pytest -q tests

bench: $(STAMP)
	for b in benchmarks/bench_*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) runs .pytest_cache
