"""Template mistakes (schema, NRP policy, placeholders) are caught before anything reaches the cluster."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
import yaml

from protbench_nrp import policy
from protbench_nrp.manifest import load_template

from .conftest import REPO_ROOT, TEMPLATE, assert_refused_untouched


def container(template: dict, name: str) -> dict:
    pod = template["spec"]["template"]["spec"]
    return next(c for c in (pod.get("initContainers") or []) + pod["containers"] if c["name"] == name)


def set_cpu_limit(t, value="3"):
    container(t, "main")["resources"]["limits"]["cpu"] = value


def inflate_rclone_memory(t):
    container(t, "init-rclone")["resources"]["limits"]["memory"] = "1Gi"


def shrink_main_memory_limit(t):
    container(t, "main")["resources"]["limits"]["memory"] = "4Gi"


def drop_git_cpu_limit(t):
    del container(t, "init-git")["resources"]["limits"]["cpu"]


def drop_gpu(t):
    for part in ("requests", "limits"):
        del container(t, "main")["resources"][part]["nvidia.com/gpu"]


def two_gpu_limit(t):
    container(t, "main")["resources"]["limits"]["nvidia.com/gpu"] = "2"


def sleep_in_init(t):
    container(t, "init-git")["args"] = ["echo ready; sleep infinity"]


def sleep_in_pre_stop(t):
    container(t, "main")["lifecycle"] = {"preStop": {"exec": {"command": ["/bin/sh", "-c", "sleep  Infinity"]}}}


def unknown_field(t):
    container(t, "main")["resourcez"] = {}


def wrong_type(t):
    t["spec"]["backoffLimit"] = "fifty"


def no_main_container(t):
    container(t, "main")["name"] = "simulation"


def unfilled_placeholder(t):
    t["metadata"]["namespace"] = "set-by-the-launcher"


def template_sets_launcher_env(t):
    container(t, "init-git").setdefault("env", []).append({"name": "PROTBENCH_WINDOW", "value": "00"})


def unknown_secret_volume(t):
    t["spec"]["template"]["spec"]["volumes"].append({"name": "extra", "secret": {"secretName": "set-by-the-launcher"}})


def not_a_job(t):
    t["kind"] = "Pod"


CASES = {
    "cpu limit too high": (set_cpu_limit,
                           "NRP policy: container 'main': cpu limit 3 is more than 20 % above its request 2"),
    "memory limit too high": (inflate_rclone_memory,
                              "init container 'init-rclone': memory limit 1Gi is more than 20 % above its "
                              "request 512Mi"),
    "limit below request": (shrink_main_memory_limit, "memory limit 4Gi is below its request 8Gi"),
    "missing limit": (drop_git_cpu_limit, "init container 'init-git': no cpu limit"),
    "no gpu": (drop_gpu, "container 'main' requests no GPU"),
    "gpu limit differs": (two_gpu_limit, "nvidia.com/gpu limit 2 differs from its request 1"),
    "sleep infinity in args": (sleep_in_init, "init container 'init-git' runs 'sleep infinity'"),
    "sleep infinity in preStop": (sleep_in_pre_stop, "container 'main' runs 'sleep infinity'"),
    "unknown field": (unknown_field, "Kubernetes schema: spec.template.spec.containers.0: Additional properties "
                                     "are not allowed ('resourcez' was unexpected) [93 of 93 Jobs"),
    "wrong type": (wrong_type, "Kubernetes schema: spec.backoffLimit: 'fifty' is not of type 'integer'"),
    "no main container": (no_main_container, "no container named 'main'"),
    "placeholder left": (unfilled_placeholder, "marks metadata.namespace as 'set-by-the-launcher'"),
    "template sets launcher env": (template_sets_launcher_env,
                                   "k8s_template.yaml sets PROTBENCH_WINDOW in container 'init-git'"),
    "unknown secret volume": (unknown_secret_volume, "volume 'extra' has secretName 'set-by-the-launcher'"),
    "not a job": (not_a_job, "must be one 'apiVersion: batch/v1', 'kind: Job' document"),
}


@pytest.mark.parametrize("edit, message", CASES.values(), ids=CASES.keys())
def test_template_violation_is_refused_before_any_side_effect(launcher_repo, edit, message):
    template = yaml.safe_load((launcher_repo.dir / TEMPLATE).read_text())
    edit(template)
    (launcher_repo.dir / "bad-template.yaml").write_text(yaml.safe_dump(template, sort_keys=False))
    launcher_repo.set_constants(TEMPLATE_PATH="bad-template.yaml")
    assert_refused_untouched(launcher_repo, launcher_repo.run(), message)


def test_missing_template_is_refused(launcher_repo):
    launcher_repo.set_constants(TEMPLATE_PATH="no-such-template.yaml")
    result = launcher_repo.run("--dry-run")
    assert result.returncode == 1
    assert "no-such-template.yaml does not exist" in result.stderr


def test_checked_in_template_renders_policy_clean_jobs(launcher_repo):
    result = launcher_repo.run("--dry-run", "--stage", "setup")
    assert result.returncode == 0, result.stderr
    assert policy.lint(yaml.safe_load(result.stdout)) == []


def test_checked_in_template_leaves_every_user_specific_value_to_the_launcher():
    template = load_template(REPO_ROOT / TEMPLATE)
    pod = template["spec"]["template"]["spec"]
    assert template["metadata"]["name"] == "set-by-the-launcher"
    assert container(template, "main")["image"] == "set-by-the-launcher"
    assert {v["name"]: v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v} == {
        "rclone-config": "set-by-the-launcher", "openeye-license": "set-by-the-launcher"}
    assert pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"] == []


@pytest.mark.parametrize("text, value", [
    ("2", "2"), (2, "2"), ("2400m", "2.4"), ("500m", "0.5"), ("0.5", "0.5"), ("8Gi", str(8 * 2**30)),
    ("9600Mi", str(9600 * 2**20)), ("1G", "1000000000"), ("1e3", "1000"), ("128974848", "128974848"),
])
def test_quantities_parse_like_kubernetes(text, value):
    assert policy.parse_quantity(text) == Decimal(value)


@pytest.mark.parametrize("text", ["", "two", "2 Gi", "8GB", "1.2.3", True])
def test_malformed_quantities_are_rejected(text):
    with pytest.raises(ValueError, match="is not a Kubernetes quantity"):
        policy.parse_quantity(text)


def test_limit_of_exactly_twenty_percent_passes_and_a_hair_more_fails():
    template = load_template(REPO_ROOT / TEMPLATE)
    set_cpu_limit(template, "2400m")
    assert not [p for p in policy.lint(template) if "cpu" in p]
    set_cpu_limit(template, "2401m")
    assert [p for p in policy.lint(template) if "cpu limit 2401m" in p]


def test_malformed_quantity_in_the_template_is_a_policy_finding():
    template = load_template(REPO_ROOT / TEMPLATE)
    set_cpu_limit(template, "lots")
    assert any("'lots' is not a Kubernetes quantity" in p for p in policy.lint(template))


def test_extra_env_clashing_with_a_template_variable_names_extra_env(launcher_repo):
    template = yaml.safe_load((launcher_repo.dir / TEMPLATE).read_text())
    container(template, "main")["env"].append({"name": "OMP_NUM_THREADS", "value": "2"})
    (launcher_repo.dir / "threads-template.yaml").write_text(yaml.safe_dump(template, sort_keys=False))
    launcher_repo.set_constants(TEMPLATE_PATH="threads-template.yaml", EXTRA_ENV={"OMP_NUM_THREADS": "4"})
    result = launcher_repo.run("--dry-run")
    assert result.returncode == 1 and result.stdout == ""
    assert ("EXTRA_ENV sets OMP_NUM_THREADS, which k8s_template.yaml already sets in container 'main'; "
            "remove it from EXTRA_ENV") in result.stderr, result.stderr


def test_a_kubernetes_version_without_schema_is_a_clear_refusal(launcher_repo):
    manifest_py = launcher_repo.dir / "umbrella-scripts" / "protbench_nrp" / "manifest.py"
    text = manifest_py.read_text()
    assert 'KUBERNETES_VERSION = "' in text
    manifest_py.write_text(re.sub(r'^KUBERNETES_VERSION = "[^"]*"', 'KUBERNETES_VERSION = "0.1"', text,
                                  flags=re.M))
    result = launcher_repo.run("--dry-run")
    assert result.returncode == 1 and result.stdout == ""
    assert "Traceback" not in result.stderr, result.stderr
    assert "refused: cannot check the manifests against the Kubernetes schema: kubernetes-validate" in result.stderr
    assert "has no schema for Kubernetes 0.1; upgrade it (pip install -U kubernetes-validate)" in result.stderr
