"""The image names every third-party module the pods' scripts import (followed through the library).

No image is built here; instead the imports of every script a pod runs are
followed with ``ast`` through the ``protbench_nrp`` modules they import, and
each third-party module must map to a package the Dockerfile's
``ARG POD_PACKAGES`` names. proteinbenchmark's own environment does not name
``click``, so a module missing there is a pod that dies at its first import.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

from protbench_nrp.jobs import STAGE_SCRIPTS

from .conftest import REPO_ROOT, WINDOW_SCRIPT

DOCKERFILE = REPO_ROOT / "Dockerfile"
SCRIPTS_DIR = REPO_ROOT / "umbrella-scripts"
LIBRARY = "protbench_nrp"

#: Top-level import name -> the conda package that provides it (they differ: yaml is pyyaml).
PACKAGE_OF_MODULE = {
    "click": "click",
    "numpy": "numpy",
    "openmm": "openmm",
    "yaml": "pyyaml",
    "boto3": "boto3",
    "botocore": "botocore",
    "mdtraj": "mdtraj",
    "pymbar": "pymbar",
    "scipy": "scipy",
    "matplotlib": "matplotlib",
    "rich": "rich",
    "openff": "openff-toolkit",
}

#: Modules a pod has without the image naming them, and why.
PROVIDED_OTHERWISE = {
    "proteinbenchmark": "run-job.sh pip-installs it at the launch's pinned commit",
}

#: Packages the pods need that no script of ours imports: proteinbenchmark imports
#: openff.nagl for NAGL force fields such as null-0.0.3-pair-opc3.
REQUIRED_WITHOUT_IMPORT = {"openff-nagl": "NAGL force fields (e.g. null-0.0.3-pair-opc3) assign charges with it"}

#: Pod-side helpers run by the pod's shell scripts (python "$here/...").
POD_HELPERS = ("umbrella-scripts/protbench_nrp/runrecord.py",)


def pod_scripts() -> list[Path]:
    """Every Python script a pod runs: each stage's script and the pod's helpers."""
    return [REPO_ROOT / path for path in (WINDOW_SCRIPT, *STAGE_SCRIPTS.values(), *POD_HELPERS)]


def _library_module(name: str) -> Path | None:
    """The file of ``protbench_nrp.<name>`` (a dotted name below the library), if it is one."""
    parts = name.split(".")
    if parts[0] != LIBRARY:
        return None
    path = SCRIPTS_DIR.joinpath(*parts)
    if path.with_suffix(".py").is_file():
        return path.with_suffix(".py")
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    return None


def _imports(path: Path) -> list[str]:
    """Absolute dotted names ``path`` imports, relative imports resolved within the library."""
    tree = ast.parse(path.read_text(), filename=str(path))
    inside = path.is_relative_to(SCRIPTS_DIR / LIBRARY)
    package = ".".join(path.relative_to(SCRIPTS_DIR).with_suffix("").parts[:-1]) if inside else ""
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            names.append(module)
            # `from protbench_nrp import window` imports a module, not a name
            names += [f"{module}.{alias.name}" for alias in node.names
                      if _library_module(f"{module}.{alias.name}")]
    return names


def third_party_imports(scripts: list[Path]) -> dict[str, set[str]]:
    """Top-level third-party modules imported by ``scripts``, transitively, with who imports each."""
    found: dict[str, set[str]] = {}
    seen: set[Path] = set()
    todo = list(scripts)
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in _imports(path):
            top = name.split(".")[0]
            library = _library_module(name)
            if library:
                todo.append(library)
            elif top != LIBRARY and top not in sys.stdlib_module_names and top != "__future__":
                found.setdefault(top, set()).add(str(path.relative_to(REPO_ROOT)))
    return found


def dockerfile_packages(text: str) -> set[str]:
    """The package names of ``ARG POD_PACKAGES="..."`` (version pins dropped)."""
    match = re.search(r'^ARG POD_PACKAGES="([^"]*)"', text, flags=re.MULTILINE)
    assert match, "the Dockerfile has no ARG POD_PACKAGES=\"...\" line naming the pods' packages"
    return {re.split(r"[=<>!~ ]", item, maxsplit=1)[0] for item in match.group(1).split()}


def missing_from_image(imports: dict[str, set[str]], packages: set[str]) -> list[str]:
    """Why the image would lack a module a pod imports (empty when it has them all)."""
    problems = []
    for module, importers in sorted(imports.items()):
        if module in PROVIDED_OTHERWISE:
            continue
        package = PACKAGE_OF_MODULE.get(module)
        if package is None:
            problems.append(f"{module} (imported by {', '.join(sorted(importers))}) has no entry in "
                            f"PACKAGE_OF_MODULE: add the package that provides it there and to POD_PACKAGES")
        elif package not in packages:
            problems.append(f"{module} (imported by {', '.join(sorted(importers))}) comes from {package}, "
                            f"which the Dockerfile's POD_PACKAGES does not name")
    problems += [f"{package} is not in POD_PACKAGES: {why}" for package, why in REQUIRED_WITHOUT_IMPORT.items()
                 if package not in packages]
    return problems


def test_the_image_names_every_package_the_pods_scripts_import():
    imports = third_party_imports(pod_scripts())
    assert {"click", "numpy", "openmm"} <= set(imports)  # the walk reached the library
    assert missing_from_image(imports, dockerfile_packages(DOCKERFILE.read_text())) == []


def test_the_walk_follows_relative_and_package_imports_into_the_library():
    imports = third_party_imports([REPO_ROOT / WINDOW_SCRIPT])
    # run-umbrella-window.py imports numpy only through protbench_nrp (engine.py, `from .x import`)
    assert "numpy" in imports
    assert any(importer.startswith("umbrella-scripts/protbench_nrp/") for importer in imports["numpy"])


@pytest.mark.parametrize("removed, expected", [
    ("click", "umbrella-scripts/run-umbrella-window.py, umbrella-scripts/setup-umbrella-system.py) comes from click"),
    ("openmm", "comes from openmm, which the Dockerfile's POD_PACKAGES does not name"),
    ("openff-nagl", "openff-nagl is not in POD_PACKAGES: NAGL force fields"),
])
def test_a_package_missing_from_the_dockerfile_is_caught(removed, expected):
    text = DOCKERFILE.read_text()
    line = re.search(r'^ARG POD_PACKAGES="([^"]*)"', text, flags=re.MULTILINE).group(1)
    kept = " ".join(item for item in line.split() if re.split(r"[=<>!~]", item)[0] != removed)
    assert kept != line, f"{removed} is not in POD_PACKAGES"
    problems = missing_from_image(third_party_imports(pod_scripts()),
                                  dockerfile_packages(text.replace(line, kept)))
    assert any(expected in problem for problem in problems), problems


def test_an_import_without_a_known_package_is_caught(tmp_path):
    script = SCRIPTS_DIR / "protbench_nrp" / "engine.py"
    imports = third_party_imports([script])
    imports["somethingnew"] = {"umbrella-scripts/x.py"}
    problems = missing_from_image(imports, dockerfile_packages(DOCKERFILE.read_text()))
    assert any("somethingnew (imported by umbrella-scripts/x.py) has no entry in PACKAGE_OF_MODULE" in p
               for p in problems), problems


def test_the_install_uses_the_named_packages():
    text = DOCKERFILE.read_text()
    assert re.search(r"micromamba install[^\n]*(\n[^\n]*)*\$\{POD_PACKAGES\}", text)


# -- the rebuild workflow tests the image before it pushes it --------------------------------

REBUILD = REPO_ROOT / ".github" / "workflows" / "rebuild-docker.yaml"
SMOKE_SCRIPT = REPO_ROOT / ".github" / "image-smoke-test.sh"


def _steps() -> list[dict]:
    import yaml

    return yaml.safe_load(REBUILD.read_text())["jobs"]["build"]["steps"]


def _index(steps: list[dict], predicate, what: str) -> int:
    found = [i for i, step in enumerate(steps) if predicate(step)]
    assert len(found) == 1, f"rebuild-docker.yaml has {len(found)} steps that {what}"
    return found[0]


def test_the_workflow_builds_smoke_tests_then_pushes_the_image():
    steps = _steps()
    build = _index(steps, lambda s: "docker buildx build --load" in s.get("run", ""), "build for the smoke test")
    smoke = _index(steps, lambda s: ".github/image-smoke-test.sh" in s.get("run", ""), "run the smoke test")
    push = _index(steps, lambda s: s.get("with", {}).get("push") is True, "push")
    assert build < smoke < push
    tag = "$SMOKE_TAG"
    assert f'--tag "{tag}"' in steps[build]["run"] and f'"{tag}"' in steps[smoke]["run"]
    assert "--user 57439:57439" in steps[smoke]["run"]  # as the pods run


def test_the_smoke_build_and_the_push_get_the_same_build_arguments():
    steps = _steps()
    (push,) = [s for s in steps if s.get("with", {}).get("push") is True]
    (build,) = [s for s in steps if "docker buildx build --load" in s.get("run", "")]
    pushed = dict(line.split("=", 1) for line in push["with"]["build-args"].splitlines() if "=" in line)
    passed = dict(re.findall(r'--build-arg (\w+)="\$(\w+)"', build["run"]))
    assert set(passed) == set(pushed)
    for name, variable in passed.items():
        assert build["env"][variable] == pushed[name], name


def test_the_smoke_script_passes_shellcheck():
    import shutil
    import subprocess

    shellcheck = shutil.which("shellcheck")
    assert shellcheck, "shellcheck is not on PATH; run the tests with .venv/bin on PATH (make test)"
    result = subprocess.run([shellcheck, "--severity", "style", str(SMOKE_SCRIPT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_the_smoke_script_runs_a_toy_campaign_with_the_project_environment_standing_in_for_the_image(tmp_path):
    import os
    import subprocess

    # openff.nagl and OpenMM's CUDA plugin exist only in the image.
    env = {**os.environ, "SMOKE_SKIP_MODULES": "openff.nagl", "SMOKE_REQUIRE_CUDA_PLUGIN": "0",
           "TMPDIR": str(tmp_path), "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(["bash", str(SMOKE_SCRIPT), str(REPO_ROOT)], env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "import protbench_nrp.window: ok" in result.stdout
    assert "platforms" in result.stdout and "CPU" in result.stdout
    assert "toy window finished" in result.stdout and '"phase": "finished"' in result.stdout
    assert list(tmp_path.iterdir()) == []  # its work directory is removed


def test_the_smoke_script_fails_when_a_module_is_missing(tmp_path):
    import os
    import subprocess

    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "TMPDIR": str(tmp_path)}
    result = subprocess.run(["bash", str(SMOKE_SCRIPT), str(REPO_ROOT)], env=env, capture_output=True,
                            text=True, timeout=120)
    # openff.nagl is not installed here, as in an image built without it
    assert result.returncode == 1
    assert "cannot import openff.nagl" in result.stderr and "POD_PACKAGES" in result.stderr


def test_every_run_step_of_the_workflows_passes_shellcheck():
    import shutil
    import subprocess

    import yaml

    shellcheck = shutil.which("shellcheck")
    assert shellcheck, "shellcheck is not on PATH; run the tests with .venv/bin on PATH (make test)"
    checked = 0
    for workflow in sorted((REPO_ROOT / ".github" / "workflows").glob("*.y*ml")):
        for job in yaml.safe_load(workflow.read_text())["jobs"].values():
            for step in job["steps"]:
                if "run" not in step:
                    continue
                # GitHub substitutes ${{ ... }} before the shell sees the script
                script = re.sub(r"\$\{\{[^}]*\}\}", "github-expression", step["run"])
                result = subprocess.run([shellcheck, "--shell", "bash", "--severity", "style", "-"], input=script,
                                        capture_output=True, text=True, check=False)
                step_name = step.get('name', step['run'][:40])
                assert result.returncode == 0, f"{workflow.name}: {step_name}:\n{result.stdout}"
                checked += 1
    assert checked >= 3  # the CUDA reader, the smoke build and the smoke test at least
