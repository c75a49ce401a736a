# Two entry points for a newcomer: `make demo` and `make test`. Both create .venv and install pinned deps.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
STAMP := $(VENV)/.installed
DEMO_OUT ?= demo_out

.PHONY: install demo test lint bench gpu-check clean

install: $(STAMP)

# torch/torchvision pinned by constraints.txt on every pip call: a loose torch pulls GBs of CUDA wheels.
$(STAMP): setup.py constraints.txt $(wildcard clipgs/render/csrc/*.cpp clipgs/data/synthetic/csrc/*.cpp clipgs/mapping/csrc/*.cpp clipgs/semantics/csrc/*.cpp)
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -c constraints.txt torch==2.13.0
	$(PIP) install -c constraints.txt -e '.[test]'
	$(PY) -c "from clipgs.render import cpu_kernel; cpu_kernel.load(); print('CPU rasterizer:', cpu_kernel.library_path())"
	$(PY) -c "from clipgs.data.synthetic import raycast; assert raycast.compiled_available(); print('ray caster built')"
	$(PY) -c "from clipgs.mapping import icp; assert icp.compiled_available(); print('ICP built')"
	$(PY) -c "from clipgs.mapping import fused_ssim; assert fused_ssim.available(); print('SSIM built')"
	$(PY) -c "from clipgs.semantics import segmentation as s; assert s.compiled_available(); print('segmentation built')"
	touch $(STAMP)

demo: install
	$(VENV)/bin/clipgs demo --out $(DEMO_OUT)

lint: install
	$(VENV)/bin/ruff check clipgs clipgs_ros tests benchmarks setup.py

test: install lint
	$(PY) -m pytest -q tests

bench: install
	$(PY) benchmarks/render.py

# The first Python whose PyTorch sees a CUDA GPU: the venv's, else the system python3 (where GPU machines keep
# their CUDA PyTorch); else the venv's, which says there is no GPU and exits 0. clipgs runs from this tree.
GPU_PYTHON ?= $(shell for py in $(PY) $(PYTHON); do $$py -c "import torch, sys; sys.exit(not torch.cuda.is_available())" \
                2>/dev/null && { echo $$py; exit 0; }; done; [ -x $(PY) ] && echo $(PY) || echo $(PYTHON))
GPU_CHECK_ARGS ?=
gpu-check:
	PYTHONPATH=$(CURDIR)$${PYTHONPATH:+:$$PYTHONPATH} $(GPU_PYTHON) benchmarks/gpu_check.py $(GPU_CHECK_ARGS)

clean:
	rm -rf $(VENV) $(DEMO_OUT) build install log *.egg-info
