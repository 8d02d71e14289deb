"""``--follow --print-follower-job``: the follower as a CPU-only Job in the namespace.

The manifests come from the real launcher script in a real git repository
(pushed to its bare remote, IMAGE pinned against the loopback registry), and
are held to the checks the campaign's Jobs pass: the strict Kubernetes schema
(kubernetes-validate) and NRP's policy. Broken copies show those checks refuse.
"""

from __future__ import annotations

import copy

import pytest

from protbench_nrp import policy
from protbench_nrp.follower_job import FollowerJobError, check_follower_manifests
from protbench_nrp.jobs import EXIT_REFUSED, EXIT_STOPPED
from protbench_nrp.layout import follower_name, job_name
from protbench_nrp.manifest import schema_errors

from tests.launcher.conftest import LauncherRepo, documents


@pytest.fixture(scope="module")
def printed(tmp_path_factory, launcher_template):
    repo = LauncherRepo(tmp_path_factory.mktemp("follower"), template=launcher_template)
    try:
        result = repo.run("--follow", "--print-follower-job", "--windows", "0,3", "--poll", "60",
                          "--max-gpu-hours", "250")
        calls = repo.kubectl_calls()
    finally:
        repo.registry.stop()
    assert result.returncode == 0, result.stdout + result.stderr
    return repo, result, documents(result.stdout), calls


def by_kind(manifests: list[dict]) -> dict[str, dict]:
    return {m["kind"]: m for m in manifests}


def test_it_prints_a_service_account_a_role_its_binding_a_claim_and_the_job(printed):
    repo, result, manifests, calls = printed
    assert [m["kind"] for m in manifests] == ["ServiceAccount", "Role", "RoleBinding", "PersistentVolumeClaim", "Job"]
    name = follower_name("tst", "gb3", "null-0.0.3-pair-opc3")
    assert {m["metadata"]["name"] for m in manifests} == {name}
    assert name.endswith("-follow") and name != job_name("tst", "gb3", "null-0.0.3-pair-opc3", "setup")
    # not a campaign Job: the follower's own `kubectl get -l …/campaign=…` must not see itself
    job = manifests[-1]
    for labels in (job["metadata"]["labels"], job["spec"]["template"]["metadata"]["labels"]):
        assert list(labels) == ["protbench.openforcefield.org/follower"], labels
    # printing submits nothing and writes no result
    assert not [c for c in calls if c.startswith(("create", "apply", "delete"))], calls
    assert not repo.results.exists() or not any(repo.results.rglob("*.yaml"))
    assert "kubectl apply -f -" in result.stderr


def test_every_manifest_passes_the_schema_and_nrp_policy(printed):
    _, _, manifests, _ = printed
    for manifest in manifests:
        assert schema_errors(manifest) == [], manifest["kind"]
    job = by_kind(manifests)["Job"]
    assert policy.lint(job, gpu=False) == []
    assert policy.lint_role(by_kind(manifests)["Role"], by_kind(manifests)["RoleBinding"]) == []
    check_follower_manifests(manifests)  # raises on any finding


def test_the_role_grants_only_the_followers_calls_in_its_namespace(printed):
    _, _, manifests, _ = printed
    kinds = by_kind(manifests)
    granted = {(group, resource): set(rule["verbs"]) for rule in kinds["Role"]["rules"]
               for group in rule["apiGroups"] for resource in rule["resources"]}
    assert granted == {("batch", "jobs"): {"get", "list", "watch", "create", "delete"},
                       ("", "pods"): {"get", "list", "watch", "delete"}}
    assert kinds["RoleBinding"]["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                               "name": kinds["Role"]["metadata"]["name"]}
    assert kinds["RoleBinding"]["subjects"] == [{"kind": "ServiceAccount",
                                                 "name": kinds["ServiceAccount"]["metadata"]["name"]}]
    assert "ClusterRole" not in {m["kind"] for m in manifests}


def test_the_job_is_cpu_only_and_runs_the_follower_on_the_pushed_commit(printed):
    repo, _, manifests, _ = printed
    job = by_kind(manifests)["Job"]
    spec = job["spec"]
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never" and pod["serviceAccountName"] == job["metadata"]["name"]
    assert spec["podReplacementPolicy"] == "Failed"
    rules = spec["podFailurePolicy"]["rules"]
    assert rules[0] == {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}
    assert rules[1]["action"] == "FailJob" and rules[1]["onExitCodes"]["values"] == [EXIT_REFUSED, EXIT_STOPPED]
    containers = pod["initContainers"] + pod["containers"]
    assert not any(policy.GPU_RESOURCE in str(c["resources"]) for c in containers)
    assert "nodeSelector" not in pod and "affinity" not in pod  # no GPU node asked for
    git = pod["initContainers"][0]
    assert git["name"] == "init-git"
    assert {e["name"]: e["value"] for e in git["env"]}["PROTBENCH_SCRIPT_COMMIT"] == repo.head()
    follower = pod["containers"][0]
    assert "@sha256:" in follower["image"]  # IMAGE pinned, as a launch pins it
    script = follower["args"][0]
    assert ("exec python run-umbrella-windows.py --follow --stage window --windows 0,3 --poll 60 "
            "--max-attempts 4 --max-gpu-hours 250") in script
    assert "sleep infinity" not in script and ".sha256" in script
    # the rclone secret mounted as the campaign's pods mount it, the results on the claim
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["rclone-config"]["secret"]["secretName"] == "jm-rclone-config"
    assert volumes["results"]["persistentVolumeClaim"]["claimName"] == job["metadata"]["name"]
    mounts = {m["name"]: m for m in follower["volumeMounts"]}
    assert mounts["rclone-config"] == {"name": "rclone-config", "mountPath": "/secrets", "readOnly": True}
    assert mounts["results"]["mountPath"] == "/opt/repo/results"
    assert {e["name"]: e["value"] for e in follower["env"]}["RCLONE_CONFIG"] == "/secrets/rclone.conf"


def _broken(manifests, kind, change):
    broken = copy.deepcopy(manifests)
    change(next(m for m in broken if m["kind"] == kind))
    return broken


def _double_limits(job):
    follower = job["spec"]["template"]["spec"]["containers"][0]
    follower["resources"]["limits"]["memory"] = "8Gi"  # 2 x the 4Gi request


def _wildcard(role):
    role["rules"][0]["verbs"] = ["*"]


def _secrets(role):
    role["rules"].append({"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]})


def _cluster_role(binding):
    binding["roleRef"] = {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"}


def _gpu(job):
    resources = job["spec"]["template"]["spec"]["containers"][0]["resources"]
    resources["requests"]["nvidia.com/gpu"] = resources["limits"]["nvidia.com/gpu"] = "1"


def _sleep(job):
    job["spec"]["template"]["spec"]["containers"][0]["args"] = ["sleep infinity"]


def _schema(job):
    job["spec"]["template"]["spec"]["restartPolicy"] = "Always"
    job["spec"]["template"]["spec"]["restartpolicy"] = "Never"  # an unknown field: the strict schema


@pytest.mark.parametrize("kind, change, needles", [
    ("Job", _double_limits, ["Job", "NRP policy", "memory limit 8Gi is more than 20 % above its request 4Gi"]),
    ("Role", _wildcard, ["NRP policy", "grants '*'"]),
    ("Role", _secrets, ["NRP policy", "grants get on secrets"]),
    ("RoleBinding", _cluster_role, ["NRP policy", "only a RoleBinding of the follower's own Role"]),
    ("Job", _gpu, ["NRP policy", "asks for a GPU (nvidia.com/gpu); this Job is CPU-only"]),
    ("Job", _sleep, ["NRP policy", "runs 'sleep infinity'"]),
    ("Job", _schema, ["Kubernetes schema", "restartpolicy"]),
])
def test_a_broken_follower_manifest_is_refused_by_the_same_checks(printed, kind, change, needles):
    _, _, manifests, _ = printed
    with pytest.raises(FollowerJobError) as refused:
        check_follower_manifests(_broken(manifests, kind, change))
    for needle in needles:
        assert needle in str(refused.value), str(refused.value)


def test_print_follower_job_goes_with_follow_only(launcher_repo):
    result = launcher_repo.run("--print-follower-job")
    assert result.returncode == 2 and "and --print-follower-job go with --follow" in result.stderr, result.stderr
    assert launcher_repo.kubectl_calls() == []
