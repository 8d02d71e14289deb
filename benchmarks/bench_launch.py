#!/usr/bin/env python3
"""How long the launcher takes for a 93-Job campaign, apart from kubectl.

A temporary git repository with a bare remote holds a copy of the real
launcher; a kubectl stand-in on PATH records each apply. Each round first
times the stand-in alone (93 ``kubectl apply -f`` calls: the baseline any
launcher pays), then the whole launch (Python start-up, git checks, 93
renders, schema and policy checks, 93 provenance files, 93 applies). The
launcher's own time is the difference. Prints medians and ratios; exits 1
when the launcher's own time exceeds BUDGET_S.
"""

from __future__ import annotations

import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT / "umbrella-scripts"))
sys.path.insert(0, str(REPO_ROOT))

from tests.registry import Registry  # noqa: E402  (the launch pins IMAGE against it, on loopback)

ROUNDS = 5
BUDGET_S = 2.0
LAUNCHER = "run-umbrella-windows.py"
STAND_IN = """#!/bin/sh
# kubectl stand-in: keeps a copy of each applied file, answers like kubectl.
n=$(ls "{log}" | wc -l)
cp "$3" "{log}/applied-$n.yaml"
echo "job.batch/$(sed -n 's/^  name: //p' "$3" | head -n 1) created"
"""


def git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def make_repository(root: Path, registry: Registry) -> Path:
    """A clone of the launcher's files, committed and pushed to a bare remote.

    IMAGE names an image of ``registry`` and PROTEINBENCHMARK_REPO a local bare
    repository, so the launch pins both without the internet.
    """
    work, remote = root / "work", root / "remote.git"
    work.mkdir()
    for name in (LAUNCHER, "k8s_template.yaml", ".gitignore"):
        shutil.copy2(REPO_ROOT / name, work / name)
    shutil.copytree(REPO_ROOT / "umbrella-scripts", work / "umbrella-scripts",
                    ignore=shutil.ignore_patterns("__pycache__"))
    window_script = work / "umbrella-scripts" / "run-umbrella-window.py"
    if not window_script.exists():
        window_script.write_text("print('window')\n")
    identity = ["-c", "user.name=bench", "-c", "user.email=bench@example.invalid"]
    upstream, proteinbenchmark = root / "proteinbenchmark-work", root / "proteinbenchmark.git"
    upstream.mkdir()
    git(upstream, "init", "--quiet", "-b", "main")
    git(upstream, *identity, "commit", "--quiet", "--allow-empty", "-m", "proteinbenchmark")
    git(root, "clone", "--quiet", "--bare", str(upstream), str(proteinbenchmark))
    registry.push("openforcefield/proteinbenchmark-nrp", "latest")
    launcher = work / LAUNCHER
    text = launcher.read_text()
    for name, value in (("REPO_URL", str(remote)), ("PROTEINBENCHMARK_REPO", str(proteinbenchmark)),
                        ("IMAGE", f"{registry.host}/openforcefield/proteinbenchmark-nrp:latest")):
        text = re.sub(rf"^{name} = .*$", f"{name} = {value!r}", text, count=1, flags=re.M)
    launcher.write_text(text)
    git(root, "init", "--quiet", "--bare", str(remote))
    git(work, "init", "--quiet", "-b", "main")
    git(work, "add", "-A")
    git(work, *identity, "commit", "--quiet", "-m", "bench")
    git(work, "remote", "add", "origin", str(remote))
    git(work, "push", "--quiet", "origin", "main")
    return work


def install_stand_in(root: Path, log: Path) -> Path:
    bin_dir = root / "bin"
    bin_dir.mkdir()
    kubectl = bin_dir / "kubectl"
    kubectl.write_text(STAND_IN.format(log=log))
    kubectl.chmod(0o755)
    return bin_dir


def reset(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir()


def time_stand_in(kubectl: Path, manifest: Path, log: Path, calls: int) -> float:
    reset(log)
    start = time.perf_counter()
    for _ in range(calls):
        subprocess.run([str(kubectl), "apply", "-f", str(manifest)], capture_output=True, check=True)
    return time.perf_counter() - start


def time_launch(work: Path, env: dict, log: Path) -> float:
    reset(log)
    shutil.rmtree(work / "results", ignore_errors=True)
    start = time.perf_counter()
    result = subprocess.run([sys.executable, str(work / LAUNCHER), "--skip-preflight"], cwd=work, env=env,
                            capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if result.returncode != 0 or len(list(log.iterdir())) != 93:
        sys.exit(f"launch failed:\n{result.stderr}")
    return elapsed


def time_in_process(work: Path) -> float:
    """Build, render and check 93 Jobs inside one Python (no start-up, git or kubectl)."""
    import runpy

    from protbench_nrp.jobs import build_jobs
    from protbench_nrp.launcher import check_manifests
    from protbench_nrp.manifest import load_template, render_manifest

    config = runpy.run_path(str(work / LAUNCHER))["campaign_config"]()
    start = time.perf_counter()
    template = load_template(work / "k8s_template.yaml")
    jobs = build_jobs(config, "0" * 40)
    check_manifests(jobs, [render_manifest(job, config, template) for job in jobs], work / "k8s_template.yaml")
    return time.perf_counter() - start


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        registry = Registry().start()
        work = make_repository(root, registry)
        log = root / "log"
        bin_dir = install_stand_in(root, log)
        env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
        time_launch(work, env, log)  # warm the file cache and byte-code once
        sample = next((work / "results").rglob("*.yaml"))
        baseline, total, own = [], [], []
        for _ in range(ROUNDS):
            baseline.append(time_stand_in(bin_dir / "kubectl", sample, log, 93))
            total.append(time_launch(work, env, log))
            own.append(total[-1] - baseline[-1])
        in_process = statistics.median(time_in_process(work) for _ in range(ROUNDS))

    print(f"93-Job launch, median of {ROUNDS} rounds on {os.cpu_count()} cores")
    print(f"  kubectl stand-in alone (baseline): {statistics.median(baseline):6.3f} s")
    print(f"  whole launch:                      {statistics.median(total):6.3f} s  "
          f"({statistics.median(total) / statistics.median(baseline):.2f} x baseline)")
    print(f"  launcher's own time:               {statistics.median(own):6.3f} s  "
          f"({statistics.median(own) / statistics.median(baseline):.2f} x baseline; budget {BUDGET_S} s)")
    print(f"  of which build+render+schema+policy in-process: {in_process:6.3f} s")
    return 0 if statistics.median(own) < BUDGET_S else 1


if __name__ == "__main__":
    sys.exit(main())
