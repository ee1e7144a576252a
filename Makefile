# The README's commands. Each creates .venv/ when missing and installs the pinned dependencies.
#   make demo   run the main job on the embedded sample case
#   make test-fast  for every edit (at most 4 minutes on 2 cores): ruff check ., then the suite
#               without the tests marked slow (Testing/slow_tests.txt), on 2 workers
#   make test   everything (what CI's .ci/run calls): ruff check ., the whole test suite, slow
#               tests included, then the Slicer-versions subset (make test-slicer-python, below)
#   make bench  print the benchmark tables (lungmask timed on 40 slices and extrapolated;
#               bench/bench_segment_qct.py without options times all 400, about 8 minutes;
#               bench/bench_outputs.py: writing a full-size case's outputs against analysing it;
#               bench/bench_cohort.py: a cohort on Dask, 1 worker against 2, cases per hour and memory)
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# The second test environment: the package versions a real 3D Slicer 5.10 ships
# (requirements/slicer-python.txt: numpy 2.0.2, scipy 1.13.1, pydicom 2.4.4, ...; no torch,
# pandas, matplotlib, tqdm, scikit-learn), in which the tests marked slicer_python run (reading,
# quality control, classical segmentation, densitometry, DICOM writing, the module's core test).
# Slicer 5.10's own Python is 3.12; this machine has no python3.12 on its PATH, so the
# environment uses 3.11 (the wheels pinned there exist for both; SLICER_PYTHON=python3.12
# where it is available, after make clean).
SLICER_PYTHON ?= python3.11
SLICER_VENV := .venv-slicer
SLICER_PY := $(SLICER_VENV)/bin/python
SLICER_STAMP := $(SLICER_VENV)/.installed

.PHONY: demo test test-fast test-slicer-python bench check-layers clean dicom3tools

$(STAMP): pyproject.toml requirements/lock.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c requirements/lock.txt -e ".[headless,backbones,test]"
	$(PY) -m pip check
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/emphysema-xai demo --out emphysema-xai-demo

$(SLICER_STAMP): pyproject.toml requirements/slicer-python.txt requirements/slicer-module-installs.txt
	test -x $(SLICER_PY) || $(SLICER_PYTHON) -m venv $(SLICER_VENV)
	$(SLICER_PY) -m pip install --quiet --no-deps -r requirements/slicer-python.txt
	$(SLICER_PY) -m pip install --quiet --no-deps -r requirements/slicer-module-installs.txt
	$(SLICER_PY) -m pip install --quiet --no-deps -e .
	touch $(SLICER_STAMP)

test: $(STAMP) $(SLICER_STAMP) dicom3tools
	$(VENV)/bin/ruff check . && EMPHYSEMA_XAI_REQUIRE_DCIODVFY=1 $(PY) -m pytest -n 2 --dist loadfile && $(SLICER_PY) -m pytest --slicer-python

# the edit loop: every test but those listed in Testing/slow_tests.txt (conftest.py marks them
# slow; Testing/test_tooling.py keeps at least one fast test per library sub-package)
test-fast: $(STAMP)
	$(VENV)/bin/ruff check . && $(PY) -m pytest -n 2 --dist loadfile -m "not slow"

# dciodvfy, the DICOM validator the tests run on every DICOM object the project writes
# (Debian's dicom3tools; needs apt-get and root, as on this project's machines)
dicom3tools:
	command -v dciodvfy >/dev/null || apt-get install -y -q dicom3tools >/dev/null \
		|| (apt-get update -q >/dev/null && apt-get install -y -q dicom3tools >/dev/null)

# --slicer-python (conftest.py): only the tests marked slicer_python, only the files that declare
# the marker are imported, and the versions installed are checked against the list
test-slicer-python: $(SLICER_STAMP)
	$(SLICER_PY) -m pytest --slicer-python

bench: $(STAMP)
	$(PY) bench/bench_read.py
	$(PY) bench/bench_phantom.py
	$(PY) bench/bench_segment_qct.py --lungmask-slices 40
	$(PY) bench/bench_classify.py
	$(PY) bench/bench_explain.py --lungmask-slices 40
	$(PY) bench/bench_pattern_baselines.py
	$(PY) bench/bench_module.py
	$(PY) bench/bench_outputs.py
	$(PY) bench/bench_cohort.py

# the layer order of docs/architecture.md (also part of make test and make test-fast)
check-layers: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider Testing/test_imports.py

clean:
	rm -rf $(VENV) $(SLICER_VENV) emphysema-xai-demo .pytest_cache
