# Two entry points for a newcomer: `make demo` and `make test`. Both create .venv and install pinned deps.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
STAMP := $(VENV)/.installed
DEMO_OUT ?= demo_out

.PHONY: install demo test lint bench clean

install: $(STAMP)

# torch/torchvision pinned by constraints.txt on every pip call: a loose torch pulls GBs of CUDA wheels.
$(STAMP): setup.py constraints.txt $(wildcard clipgs/render/csrc/*.cpp)
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -c constraints.txt torch==2.13.0
	$(PIP) install -c constraints.txt -e '.[test]'
	$(PY) -c "from clipgs.render import cpu_kernel; cpu_kernel.load(); print('CPU rasterizer:', cpu_kernel.library_path())"
	touch $(STAMP)

demo: install
	$(VENV)/bin/clipgs demo --out $(DEMO_OUT)

lint: install
	$(VENV)/bin/ruff check clipgs clipgs_ros tests benchmarks setup.py

test: install lint
	$(PY) -m pytest -q tests

bench: install
	$(PY) benchmarks/render.py

clean:
	rm -rf $(VENV) $(DEMO_OUT) build install log *.egg-info
