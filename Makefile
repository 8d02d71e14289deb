# `make demo` runs the bundled villin campaign locally; `make test` runs the tests.
# Both create .venv and install requirements.txt into it first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum < requirements.txt | cut -d' ' -f1)

.PHONY: venv opencl demo test bench clean

$(STAMP): requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	rm -f $(VENV)/.installed-*
	touch $@

venv: $(STAMP)

# OpenMM's OpenCL platform on the CPU (pocl) runs the GPU kernels CUDA shares, in float32, for
# the tests. Installed as root with apt when OpenMM lists no OpenCL; quietly left alone otherwise
# (outside CI those tests then skip; under CI=true they fail).
OPENCL_LISTED = $(BIN)/python -c "import openmm, sys; sys.exit(all(openmm.Platform.getPlatform(i).getName() != 'OpenCL' for i in range(openmm.Platform.getNumPlatforms())))"
opencl: $(STAMP)
	@if ! $(OPENCL_LISTED) 2>/dev/null && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "Installing pocl-opencl-icd and ocl-icd-libopencl1 for the OpenCL tests"; \
		DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
			pocl-opencl-icd ocl-icd-libopencl1 >/dev/null; \
	fi

demo: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python ./run-umbrella-windows.py --local --demo --max-parallel "$$(nproc 2>/dev/null || echo 2)"
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python umbrella-scripts/analyze-umbrella-windows.py -o demo-results --target villin --ff amber14-vacuum --report
	@echo "Demo results: $(CURDIR)/demo-results/villin-amber14-vacuum (each Job's log is the *.log beside its outputs)"
	@echo "PMF plot:     $(CURDIR)/demo-results/villin-amber14-vacuum/analysis/villin-amber14-vacuum-pmf.png"
	@echo "Report:       $(CURDIR)/demo-results/villin-amber14-vacuum/analysis/villin-amber14-vacuum-report.html"

test: $(STAMP) opencl
	$(BIN)/ruff check .
	.ci/ensure-chromium
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -n auto --dist loadfile tests

bench: $(STAMP)
	@for b in benchmarks/bench_*.py; do echo "== $$b"; PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache
