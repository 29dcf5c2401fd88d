# Developer entry points. CI runs `make test` then `make test-slow` (.ci/run); tests/README.md describes the suite.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Extra pytest arguments: make test PYTEST_ARGS="-x -k blocks"
PYTEST := $(PY) -m pytest -p no:cacheprovider $(PYTEST_ARGS)

export TF_CPP_MIN_LOG_LEVEL ?= 3

.PHONY: venv test test-slow test-all demo bench bench-search clean

venv: $(VENV)/.stamp

# requirements-dev.txt is a `pip freeze`; --no-deps skips the resolver, which backtracks for a very long time on
# tensorflow-model-optimization's absl-py~=1.2 pin. Refreshes in place: packages dropped from the lock stay.
$(VENV)/.stamp: setup.py requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q --no-deps -r requirements-dev.txt
	$(VENV)/bin/pip install -q --no-deps -e .
	touch $@

# pytest-xdist: one worker per core (most of a test's time is single-threaded graph building). TEST_WORKERS=0 runs
# everything in this process.
TEST_WORKERS ?= 2
test: venv
	$(PYTEST) -n $(TEST_WORKERS) -m "not slow" tests

# pytest exits 5 when nothing is selected; no slow tests yet is not a failure. --dist loadgroup keeps the users of
# one cached training fixture (pytest.mark.xdist_group) on one worker, so the other worker is not left waiting.
test-slow: venv
	$(PYTEST) -n $(TEST_WORKERS) --dist loadgroup -m slow tests || [ $$? -eq 5 ]

test-all: venv
	$(PYTEST) tests

# The demo's recipe is its flagfile; DEMO_ARGS adds flags (make demo DEMO_ARGS="--train_steps=50").
DEMO_FLAGS ?= configs/detection_retinanet_spinenet_mobile_49xs_shapes128.flags
demo: venv
	$(PY) -m spinenet_tf.demo --flagfile=$(DEMO_FLAGS) --model_dir=runs/demo $(DEMO_ARGS)

# The search benchmarks train dozens of proxy RetinaNets (hours on 2 cores): `make bench-search` runs them.
SEARCH_BENCH := bench/search_proxy.py bench/search.py
bench: venv
	@set -e; for script in $(filter-out $(SEARCH_BENCH),$(sort $(wildcard bench/*.py))); do \
		echo "== $$script"; $(PY) $$script; done

bench-search: venv
	@set -e; for script in $(SEARCH_BENCH); do echo "== $$script"; $(PY) $$script; done

clean:
	rm -rf $(VENV)
