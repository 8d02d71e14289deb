"""The rendered Job's lifecycle settings: new pods, not restarts; the failure policy; TTL; CUDA nodes."""

from __future__ import annotations

import pytest
import yaml

from protbench_nrp import exits, policy
from protbench_nrp.manifest import CUDA_LABEL_FAMILIES, cuda_node_selector_terms, schema_errors

from .conftest import documents


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    from .conftest import LauncherRepo

    repo = LauncherRepo(tmp_path_factory.mktemp("lifecycle"))
    result = repo.run("--dry-run", "--replicas", "1", "--windows", "0")
    assert result.returncode == 0, result.stderr
    (job,) = documents(result.stdout)
    return job


def test_the_rendered_job_replaces_pods_with_the_tables_failure_policy_and_passes_the_schema(rendered):
    spec = rendered["spec"]
    assert spec["template"]["spec"]["restartPolicy"] == "Never"
    assert spec["podFailurePolicy"] == exits.pod_failure_policy()
    assert spec["podFailurePolicy"]["rules"][0] == {
        "action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}
    assert spec["podReplacementPolicy"] == "Failed"  # required by a podFailurePolicy, and no two uploaders
    assert spec["backoffLimit"] == 10
    assert spec["ttlSecondsAfterFinished"] == 7 * 24 * 3600
    assert schema_errors(rendered) == []
    assert policy.lint(rendered) == []


def test_a_policy_rule_the_schema_rejects_is_caught(rendered):
    broken = yaml.safe_load(yaml.safe_dump(rendered))
    broken["spec"]["podFailurePolicy"]["rules"][1]["onExitCodes"]["values"] = ["66"]
    assert any("podFailurePolicy.rules.1.onExitCodes.values.0" in error for error in schema_errors(broken))


def admits(terms, labels) -> bool:
    """Whether a node with ``labels`` satisfies required node affinity ``terms`` (ORed terms, ANDed expressions)."""
    def holds(expression):
        value = labels.get(expression["key"])
        if value is None:
            return False
        if expression["operator"] == "In":
            return value in expression["values"]
        assert expression["operator"] == "Gt"
        return int(value) > int(expression["values"][0])
    return any(all(holds(e) for e in term["matchExpressions"]) for term in terms)


@pytest.mark.parametrize("family", CUDA_LABEL_FAMILIES, ids=["cuda.runtime", "cuda.runtime-version"])
def test_cuda_affinity_admits_a_new_enough_node_of_either_label_family(family):
    major_label, minor_label = family

    def node(major, minor):
        return {major_label: str(major), minor_label: str(minor)}

    terms = cuda_node_selector_terms("12.4")
    assert [admits(terms, node(*v)) for v in [(12, 4), (12, 6), (13, 0), (14, 2)]] == [True] * 4
    assert [admits(terms, node(*v)) for v in [(12, 3), (12, 0), (11, 8), (11, 9)]] == [False] * 4
    assert not admits(terms, {})


def test_cuda_families_are_never_mixed_within_one_term():
    (old_major, old_minor), (new_major, new_minor) = CUDA_LABEL_FAMILIES
    terms = cuda_node_selector_terms("12.4")
    # the major of one family and the minor of the other prove nothing about one runtime
    assert not admits(terms, {old_major: "12", new_minor: "9"})
    assert not admits(terms, {new_major: "12", old_minor: "9"})
    both = {old_major: "12", old_minor: "2", new_major: "12", new_minor: "6"}
    assert admits(terms, both)  # a node publishing both: the newer family's 12.6 qualifies


def test_the_rendered_affinity_holds_both_families(rendered):
    required = rendered["spec"]["template"]["spec"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert required == cuda_node_selector_terms("12.4")
    keys = {e["key"] for term in required for e in term["matchExpressions"]}
    assert keys == {label for family in CUDA_LABEL_FAMILIES for label in family}
