# geopatra: two commands do everything, each making its own .venv.
#   make demo   install, train both models on the bundled data, test them, run MD from each checkpoint
#   make test   install and run the test suite (CI runs exactly this)
#   make bench       comparison benchmarks, fast mode on CPU (minutes), then experiments/results/README.md
#                    (the equal-time race itself is long: python -m experiments.accuracy_race --cells ...)
#   make bench-full  the same in full mode on a GPU; on a machine that brings its own torch:
#                    make bench-full BENCH_PY=python
#   make long-range  the long-range (donor-bridge-acceptor) study, fast mode on CPU (< 1 h)

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
GEOPATRA := $(VENV)/bin/geopatra
STAMP  := $(VENV)/.installed
DEMO_RUNS := runs/demo

.PHONY: demo test install bench bench-full long-range clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# torch first, pinned to the local CPU wheel: a bare requirement could pull a multi-GB CUDA build.
$(STAMP): pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev,label,openmm]"
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(VENV)/bin/pytest -q

# The MD runs may exit non-zero (3: exploded, 4: unphysical, see geopatra/md.py) and both are always shown.
demo: $(STAMP)
	$(GEOPATRA) summary bundled
	$(GEOPATRA) fit --config configs/sgdml_demo.yaml
	$(GEOPATRA) test --config configs/sgdml_demo.yaml --ckpt_path $(DEMO_RUNS)/sgdml/checkpoints/last.ckpt
	$(GEOPATRA) fit --config configs/geopatra_demo.yaml
	$(GEOPATRA) test --config configs/geopatra_demo.yaml --ckpt_path $(DEMO_RUNS)/geopatra/checkpoints/last.ckpt
	$(GEOPATRA) compare $(DEMO_RUNS)/sgdml $(DEMO_RUNS)/geopatra
	-$(GEOPATRA) md --checkpoint $(DEMO_RUNS)/sgdml/checkpoints/last.ckpt --ensemble nve \
		--temperature 300 --timestep 0.5 --steps 2000 --output $(DEMO_RUNS)/sgdml/md
	-$(GEOPATRA) md --checkpoint $(DEMO_RUNS)/geopatra/checkpoints/last.ckpt --ensemble nve \
		--temperature 300 --timestep 0.5 --steps 2000 --output $(DEMO_RUNS)/geopatra/md

# Benchmarks: the sgdml and MACE venvs (experiments/.venv-*) are made by the scripts on first use.
BENCH_PY   ?= $(PY)
BENCH_DEPS := $(if $(filter $(PY),$(BENCH_PY)),$(STAMP))
BENCH_ENV  := OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE
BENCH_FULL := --full --device cuda --threads 8

bench: $(BENCH_DEPS)
	$(BENCH_ENV) $(BENCH_PY) -m experiments.learning_curves --fast
	$(BENCH_ENV) $(BENCH_PY) -m experiments.training_cost --fast
	$(BENCH_ENV) $(BENCH_PY) -m experiments.inference --fast
	$(BENCH_PY) -m experiments.preconditioners --fast
	$(BENCH_ENV) $(BENCH_PY) -m experiments.accuracy_race --fast
	$(BENCH_PY) -m experiments.summary

bench-full: $(BENCH_DEPS)
	$(BENCH_PY) -m experiments.learning_curves $(BENCH_FULL)
	$(BENCH_PY) -m experiments.training_cost $(BENCH_FULL)
	$(BENCH_PY) -m experiments.inference $(BENCH_FULL)
	$(BENCH_PY) -m experiments.preconditioners --threads 8
	$(BENCH_PY) -m experiments.summary

# Labelling needs tblite and RDKit (the "label" extra, installed by $(STAMP)).
long-range: $(STAMP)
	$(BENCH_ENV) nice -n 10 $(PY) -m experiments.long_range.run --fast

clean:
	rm -rf $(DEMO_RUNS) .pytest_cache
