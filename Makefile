# `make demo` runs the bundled villin campaign locally; `make test` runs the tests.
# Both create .venv and install requirements.txt into it first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum < requirements.txt | cut -d' ' -f1)

.PHONY: venv demo test bench clean

$(STAMP): requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	rm -f $(VENV)/.installed-*
	touch $@

venv: $(STAMP)

demo: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python ./run-umbrella-windows.py --local --demo --max-parallel "$$(nproc 2>/dev/null || echo 2)"
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python umbrella-scripts/analyze-umbrella-windows.py -o demo-results --target villin --ff amber14-vacuum --report
	@echo "Demo results: $(CURDIR)/demo-results/villin-amber14-vacuum (each Job's log is the *.log beside its outputs)"
	@echo "PMF plot:     $(CURDIR)/demo-results/villin-amber14-vacuum/analysis/villin-amber14-vacuum-pmf.png"
	@echo "Report:       $(CURDIR)/demo-results/villin-amber14-vacuum/analysis/villin-amber14-vacuum-report.html"

test: $(STAMP)
	.ci/ensure-chromium
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest tests

bench: $(STAMP)
	@for b in benchmarks/bench_*.py; do echo "== $$b"; PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache
