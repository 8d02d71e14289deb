#!/usr/bin/env bash
# Smoke test of the pods' image, run inside the freshly built image by
# .github/workflows/rebuild-docker.yaml before it is pushed (and, with the
# project's .venv standing in for the image, by tests/launcher/test_image_imports.py):
#
#   1. every module the pods' scripts need imports (the Dockerfile's POD_PACKAGES);
#   2. OpenMM lists its platforms: CPU must load, and the CUDA plugin must be
#      in the image (no GPU on the build runner, so it may not load there);
#   3. a toy campaign runs a few steps on the CPU platform through the pods'
#      own scripts: setup, the steered MD of one replica, one window.
#
# Usage: image-smoke-test.sh REPO_DIR   (the checkout, mounted into the container)
# Outside the image (the test): SMOKE_SKIP_MODULES names modules only the image
# has (openff.nagl), SMOKE_REQUIRE_CUDA_PLUGIN=0 accepts a CPU-only OpenMM.
# Exit status: 0 passed; 1 a check failed (the message says which).
set -euo pipefail

repo=${1:?usage: image-smoke-test.sh REPO_DIR}
scripts=$repo/umbrella-scripts
work=$(mktemp -d "${TMPDIR:-/tmp}/image-smoke.XXXXXX")
trap 'rm -rf "$work"' EXIT

echo "== imports"
python - "$scripts" <<'PY'
import importlib
import os
import sys

sys.path.insert(0, sys.argv[1])
skipped = os.environ.get("SMOKE_SKIP_MODULES", "").split()
for name in ("click", "numpy", "openmm", "openmm.app", "openff.nagl", "protbench_nrp.window",
             "protbench_nrp.steered", "protbench_nrp.systems", "protbench_nrp.runrecord"):
    if name in skipped:
        print(f"import {name}: skipped (SMOKE_SKIP_MODULES)")
        continue
    try:
        importlib.import_module(name)
    except ImportError as error:
        sys.exit(f"image-smoke-test: cannot import {name}: {error}; name its package in the "
                 f"Dockerfile's POD_PACKAGES")
    print(f"import {name}: ok")
PY

echo "== OpenMM platforms"
python - <<'PY'
import os
import sys

import openmm

names = [openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())]
print(f"OpenMM {openmm.__version__}: platforms {', '.join(names)}")
for failure in openmm.Platform.getPluginLoadFailures():
    print(f"  plugin not loaded (expected for CUDA without a GPU): {failure.splitlines()[0]}")
if "CPU" not in names:
    sys.exit("image-smoke-test: OpenMM has no CPU platform")
plugins = openmm.Platform.getDefaultPluginsDirectory()
if os.environ.get("SMOKE_REQUIRE_CUDA_PLUGIN", "1") == "1" and not any(
        "CUDA" in name for name in os.listdir(plugins)):
    sys.exit(f"image-smoke-test: no CUDA plugin in {plugins}: the image has a CPU-only OpenMM")
PY

echo "== a toy campaign on the CPU platform"
# villin in vacuum (OpenMM's own files), 3 windows, lengths of a few hundred steps.
export PROTBENCH_TARGET=villin PROTBENCH_FF=amber14-vacuum PROTBENCH_N_WINDOWS=3
export PROTBENCH_PLATFORM=CPU OPENMM_CPU_THREADS=2
export PROTBENCH_CV_START=1.0 PROTBENCH_CV_END=0.96 PROTBENCH_UMBRELLA_K=300 PROTBENCH_STEERED_K=5000
export PROTBENCH_PULL_LENGTH=0.01 PROTBENCH_PULL_FRAME=0.2 PROTBENCH_PULL_TIMESTEP=4
export PROTBENCH_EQUIL_LENGTH=0.0004 PROTBENCH_EQUIL_TIMESTEP=2 PROTBENCH_EQUIL_FRAME=0.2
export PROTBENCH_PRODUCTION_LENGTH=0.0008 PROTBENCH_FRAME=0.2 PROTBENCH_CHECKPOINT=0.4 PROTBENCH_SAVE_STATE=0.4
PROTBENCH_STAGE=setup python "$scripts/setup-umbrella-system.py" -o "$work"
PROTBENCH_STAGE=steered PROTBENCH_REPLICA=1 python "$scripts/run-steered-md.py" -o "$work"
PROTBENCH_STAGE=window PROTBENCH_REPLICA=1 PROTBENCH_WINDOW=01 python "$scripts/run-umbrella-window.py" -o "$work"
progress=$(find "$work" -path '*window-01*' -name '*progress.json' -print -quit)
[[ -n $progress ]] || { echo "image-smoke-test: the toy window left no progress record" >&2; exit 1; }
grep -q '"phase": "finished"' "$progress" ||
    { echo "image-smoke-test: the toy window did not finish: $(cat "$progress")" >&2; exit 1; }
echo "toy window finished: $(tr -d '\n' <"$progress")"
echo "image smoke test passed"
