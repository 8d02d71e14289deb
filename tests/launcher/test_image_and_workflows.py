"""The image, the workflows and the template's shell, checked by linters; CUDA kept consistent.

There is no Docker engine or GitHub runner here, so the Dockerfile goes
through hadolint, the workflows through GitHub's workflow schema, and every
shell script inline in the template through shellcheck.
"""

from __future__ import annotations

import os
import re
import runpy
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from protbench_nrp.manifest import cuda_node_selector_terms

from .conftest import LAUNCHER, REPO_ROOT, TEMPLATE

DOCKERFILE = REPO_ROOT / "Dockerfile"
WORKFLOWS = REPO_ROOT / ".github" / "workflows"
REBUILD = WORKFLOWS / "rebuild-docker.yaml"
TESTS = WORKFLOWS / "tests.yaml"


def tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is not installed; it comes with requirements.txt (make venv)"
    return path


def triggers(workflow: dict) -> dict:
    # YAML 1.1 reads the bare key `on` as the boolean true.
    on = workflow.get("on", workflow.get(True))
    return {name: None for name in on} if isinstance(on, list) else dict(on)


# -- CUDA: one build argument, read by the workflow; one launcher constant -----------------------

STEP_OUTPUT = re.compile(r"^\$\{\{ *steps\.([\w-]+)\.outputs\.([\w-]+) *\}\}$")


def workflow_cuda(rebuild_workflow: str, dockerfile: str, scratch: Path) -> str:
    """The CUDA_VERSION the workflow builds with for ``dockerfile``, found by running its step.

    The build argument must be the output of an earlier step; that step's
    ``run`` script is run with bash (as GitHub runs it) beside a copy of
    ``dockerfile``. Raises AssertionError, naming the fault, for a hard-coded value.
    """
    steps = yaml.safe_load(rebuild_workflow)["jobs"]["build"]["steps"]
    (build,) = [i for i, step in enumerate(steps) if "build-args" in step.get("with", {})]
    (argument,) = re.findall(r"^CUDA_VERSION=(.*)$", steps[build]["with"]["build-args"], flags=re.M)
    match = STEP_OUTPUT.match(argument.strip())
    assert match, (f"rebuild-docker.yaml hard-codes CUDA_VERSION={argument}; pass the output of a step "
                   f"that reads ARG CUDA_VERSION from the Dockerfile")
    step_id, output = match.groups()
    (reader,) = [step for step in steps[:build] if step.get("id") == step_id]
    scratch.mkdir(parents=True, exist_ok=True)
    (scratch / "Dockerfile").write_text(dockerfile)
    outputs = scratch / "github-output"
    outputs.write_text("")
    result = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", reader["run"]],
                            cwd=scratch, env={"PATH": os.environ["PATH"], "GITHUB_OUTPUT": str(outputs)},
                            capture_output=True, text=True)
    assert result.returncode == 0, f"step {step_id!r} failed: {result.stdout}{result.stderr}"
    values = dict(line.split("=", 1) for line in outputs.read_text().splitlines() if "=" in line)
    assert output in values, f"step {step_id!r} wrote no output {output!r}: {values}"
    return values[output]


def cuda_versions(dockerfile: str, rebuild_workflow: str, launcher: str, scratch: Path) -> dict[str, str]:
    """The CUDA version each of the three places states (the workflow's as it would build)."""
    (docker_default,) = re.findall(r"^ARG CUDA_VERSION=(\S+)$", dockerfile, flags=re.M)
    (constant,) = re.findall(r"^CUDA_VERSION = [\"']([^\"']+)[\"']", launcher, flags=re.M)
    return {"Dockerfile": docker_default, "workflow": workflow_cuda(rebuild_workflow, dockerfile, scratch),
            "launcher": constant}


def cuda_disagreements(versions: dict[str, str]) -> list[str]:
    """Why the three places disagree (empty when they agree)."""
    problems = []
    if versions["workflow"] != versions["Dockerfile"]:
        problems.append(f"rebuild-docker.yaml builds CUDA {versions['workflow']}, "
                        f"the Dockerfile defaults to {versions['Dockerfile']}")
    major_minor = ".".join(versions["Dockerfile"].split(".")[:2])
    if versions["launcher"] != major_minor:
        problems.append(f"run-umbrella-windows.py asks nodes for CUDA {versions['launcher']}, "
                        f"the image has {major_minor}")
    return problems


def repo_texts() -> dict[str, str]:
    return {"Dockerfile": DOCKERFILE.read_text(), "workflow": REBUILD.read_text(),
            "launcher": (REPO_ROOT / LAUNCHER).read_text()}


def disagreements(texts: dict[str, str], scratch: Path) -> list[str]:
    try:
        versions = cuda_versions(texts["Dockerfile"], texts["workflow"], texts["launcher"], scratch)
    except AssertionError as error:
        return [str(error).splitlines()[0]]
    return cuda_disagreements(versions)


def test_dockerfile_workflow_and_launcher_agree_on_cuda(tmp_path):
    assert disagreements(repo_texts(), tmp_path) == []


def test_the_workflow_follows_the_dockerfile(tmp_path):
    texts = repo_texts()
    current = cuda_versions(texts["Dockerfile"], texts["workflow"], texts["launcher"], tmp_path)["Dockerfile"]
    texts["Dockerfile"] = texts["Dockerfile"].replace(f"ARG CUDA_VERSION={current}", "ARG CUDA_VERSION=12.6.3")
    texts["launcher"] = re.sub(r'^CUDA_VERSION = "[^"]*"', 'CUDA_VERSION = "12.6"', texts["launcher"], flags=re.M)
    versions = cuda_versions(texts["Dockerfile"], texts["workflow"], texts["launcher"], tmp_path)
    assert versions == {"Dockerfile": "12.6.3", "workflow": "12.6.3", "launcher": "12.6"}
    assert cuda_disagreements(versions) == []


@pytest.mark.parametrize("place, old, new, expected", [
    ("launcher", r'^CUDA_VERSION = "[^"]*"', 'CUDA_VERSION = "12.6"', "asks nodes for CUDA 12.6"),
    ("Dockerfile", r"^ARG CUDA_VERSION=\S+", "ARG CUDA_VERSION=11.8.0", "the image has 11.8"),
    ("workflow", r"^( *)CUDA_VERSION=\$\{\{.*\}\}$", r"\1CUDA_VERSION={current}", "hard-codes CUDA_VERSION="),
    ("workflow", r"s/\^ARG CUDA_VERSION=//p", "s/^ARG MICROMAMBA_VERSION=//p", "rebuild-docker.yaml builds CUDA"),
], ids=["launcher", "Dockerfile", "workflow hard-codes it", "workflow reads another line"])
def test_a_cuda_disagreement_is_caught(tmp_path, place, old, new, expected):
    texts = repo_texts()
    current = re.search(r"^ARG CUDA_VERSION=(\S+)$", texts["Dockerfile"], flags=re.M).group(1)
    changed, count = re.subn(old, new.replace("{current}", current), texts[place], flags=re.M)
    assert count == 1, f"{old!r} not found once in {place}"
    texts[place] = changed
    problems = disagreements(texts, tmp_path)
    assert any(expected in problem for problem in problems), problems


def test_dockerfile_states_cuda_once_and_uses_it_for_base_image_and_conda_pin():
    text = DOCKERFILE.read_text()
    (version,) = re.findall(r"^ARG CUDA_VERSION=(\S+)$", text, flags=re.M)
    assert text.count(version) == 1  # only in the ARG
    (base,) = re.findall(r"^FROM (\S+)", text, flags=re.M)
    assert base.startswith("mambaorg/micromamba:") and "cuda-${CUDA_VERSION}" in base
    assert '"cuda-version=${CUDA_VERSION%.*}"' in text
    for package in ("rclone", "git"):
        assert re.search(rf"micromamba install[^\n]*(\n[^\n]*)*\b{package}\b", text)


def test_image_user_is_the_uid_the_template_runs_as():
    (user,) = re.findall(r"^USER (\S+)$", DOCKERFILE.read_text(), flags=re.M)
    security = yaml.safe_load((REPO_ROOT / TEMPLATE).read_text())["spec"]["template"]["spec"]["securityContext"]
    assert user == f"{security['runAsUser']}:{security['runAsGroup']}" == "57439:57439"


def test_cuda_affinity_admits_exactly_the_nodes_with_a_new_enough_runtime():
    from tests.launcher.test_job_lifecycle import admits

    def node(major, minor):
        return {"nvidia.com/cuda.runtime.major": str(major), "nvidia.com/cuda.runtime.minor": str(minor)}

    terms = cuda_node_selector_terms("12.4")
    assert [admits(terms, node(*v)) for v in [(12, 4), (12, 6), (13, 0), (14, 2)]] == [True] * 4
    assert [admits(terms, node(*v)) for v in [(12, 3), (12, 0), (11, 8), (11, 9)]] == [False] * 4
    assert not admits(terms, {})  # a node without a GPU operator's labels
    terms = cuda_node_selector_terms("12.0")
    assert admits(terms, node(12, 0)) and admits(terms, node(13, 1)) and not admits(terms, node(11, 8))


# -- linters ------------------------------------------------------------------------------------

def test_dockerfile_passes_hadolint():
    result = subprocess.run([tool("hadolint"), str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_workflows_are_valid_github_workflows():
    files = sorted(str(p) for p in WORKFLOWS.glob("*.y*ml"))
    assert {Path(f).name for f in files} >= {"rebuild-docker.yaml", "tests.yaml"}
    result = subprocess.run([tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", *files],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_tests_workflow_runs_the_readme_test_command_on_push_and_pull_request():
    workflow = yaml.safe_load(TESTS.read_text())
    assert {"push", "pull_request"} <= set(triggers(workflow))
    runs = [step.get("run", "") for job in workflow["jobs"].values() for step in job["steps"]]
    assert "make test" in runs
    assert "make test" in (REPO_ROOT / "README.md").read_text()


def test_rebuild_workflow_is_manual_and_pushes_the_image_pods_pull():
    workflow = yaml.safe_load(REBUILD.read_text())
    assert "workflow_dispatch" in triggers(workflow)
    (build,) = [step["with"] for step in workflow["jobs"]["build"]["steps"] if "build-args" in step.get("with", {})]
    assert build["push"] is True
    image = runpy.run_path(str(REPO_ROOT / LAUNCHER))["IMAGE"]
    repository, _, tag = image.rpartition(":")
    assert workflow["env"]["IMAGE"] == repository
    assert f"${{{{ env.IMAGE }}}}:{tag}" in build["tags"]


def inline_scripts(template: dict) -> list[tuple[str, str, str]]:
    """(where, shell, script) for every ``sh -c``/``bash -c`` script in containers and hooks."""
    found = []
    pod = template["spec"]["template"]["spec"]
    for container in (pod.get("initContainers") or []) + pod["containers"]:
        command = list(container.get("command") or []) + list(container.get("args") or [])
        hook = ((container.get("lifecycle") or {}).get("preStop") or {}).get("exec", {}).get("command") or []
        for where, argv in ((container["name"], command), (f"{container['name']} preStop", hook)):
            if len(argv) >= 3 and Path(argv[0]).name in ("sh", "bash") and argv[1] == "-c":
                found.append((where, Path(argv[0]).name, argv[2]))
    return found


def test_every_inline_shell_script_in_the_template_passes_shellcheck():
    scripts = inline_scripts(yaml.safe_load((REPO_ROOT / TEMPLATE).read_text()))
    assert len(scripts) >= 4, scripts  # init-git, init-rclone, main and its preStop hook at least
    for where, shell, script in scripts:
        result = subprocess.run([tool("shellcheck"), "--shell", shell, "-"], input=script,
                                capture_output=True, text=True)
        assert result.returncode == 0, f"{where}:\n{result.stdout}{result.stderr}"


def test_template_names_nothing_user_specific():
    text = (REPO_ROOT / TEMPLATE).read_text()
    constants = runpy.run_path(str(REPO_ROOT / LAUNCHER))
    for name in ("BUCKET", "RCLONE_SECRET", "OPENEYE_SECRET", "REPO_URL", "IMAGE", "PROTEINBENCHMARK_REF"):
        if name == "PROTEINBENCHMARK_REF" and constants[name] == "main":
            continue  # "main" is also the container's name
        assert constants[name] not in text, name
    assert f"{constants['RCLONE_REMOTE']}:" not in text
    assert constants["CUDA_VERSION"] not in text
    assert "github.com" not in text
