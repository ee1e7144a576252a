# The README's commands. Each creates .venv/ when missing and installs the pinned dependencies.
#   make demo   run the main job on the embedded sample case
#   make test   ruff check ., then the whole test suite
#   make bench  print the benchmark tables (lungmask timed on 40 slices and extrapolated;
#               bench/bench_segment_qct.py without options times all 400, about 8 minutes;
#               bench/bench_outputs.py: writing a full-size case's outputs against analysing it)
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test bench check-layers clean

$(STAMP): pyproject.toml requirements/lock.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c requirements/lock.txt -e ".[headless,backbones,test]"
	$(PY) -m pip check
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/emphysema-xai demo --out emphysema-xai-demo

test: $(STAMP)
	$(VENV)/bin/ruff check . && $(PY) -m pytest

bench: $(STAMP)
	$(PY) bench/bench_read.py
	$(PY) bench/bench_phantom.py
	$(PY) bench/bench_segment_qct.py --lungmask-slices 40
	$(PY) bench/bench_classify.py
	$(PY) bench/bench_explain.py --lungmask-slices 40
	$(PY) bench/bench_pattern_baselines.py
	$(PY) bench/bench_outputs.py

check-layers:
	$(PYTHON) ../shared/tools/check_layers.py .

clean:
	rm -rf $(VENV) emphysema-xai-demo .pytest_cache
