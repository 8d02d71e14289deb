"""Job names: unique, valid DNS-1123 labels, descriptive, whatever the force field is called."""

from __future__ import annotations

import itertools
import re

import pytest

from protbench_nrp.jobs import CampaignConfig, build_jobs
from protbench_nrp.manifest import load_template, render_manifest

from .conftest import REPO_ROOT, TEMPLATE, documents

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")

AWKWARD_FFS = [
    "null-0.0.3-pair-opc3",
    "Protein.Specific_0.0.3-Sage-Pairwise-NAGL-OPC3-with-an-unreasonably-long-suffix-for-testing",
    "ff14SB_tip3p",
    "ff14SB-tip3p",
    "a.b_c.D",
    "openff_unconstrained-2.2.0.offxml",
]


def config(initials: str, ff: str, target: str = "gb3") -> CampaignConfig:
    return CampaignConfig(initials=initials, target=target, ff=ff, n_replicas=3, n_windows=31,
                          bucket="proteinbenchmark-jm-bucket", rclone_remote="nrp", rclone_secret="jm-rclone-config",
                          openeye_secret="oe-license", image="ghcr.io/openforcefield/proteinbenchmark-nrp:latest",
                          repo_url="https://github.com/openforcefield/proteinbenchmark-nrp.git",
                          proteinbenchmark_ref="main", cuda_version="12.4")


@pytest.mark.parametrize("initials, ff", list(itertools.product(["jm", "JMW"], AWKWARD_FFS)))
def test_93_names_are_unique_valid_and_traceable(initials, ff):
    jobs = build_jobs(config(initials, ff), "0" * 40)
    names = [job.name for job in jobs]
    assert len(names) == 93 and len(set(names)) == 93
    for job in jobs:
        assert DNS_LABEL.match(job.name) and len(job.name) <= 63, job.name
        assert job.name.startswith(f"pb-{initials.lower()}-")
        assert job.name.endswith(f"-{job.replica}-{job.window:02d}")


def test_names_stay_apart_across_force_fields_that_map_to_the_same_characters():
    # ff14SB_tip3p and ff14SB-tip3p differ only by a character Kubernetes names cannot hold.
    names = {ff: {job.name for job in build_jobs(config("jm", ff), "0" * 40)} for ff in AWKWARD_FFS}
    for first, second in itertools.combinations(AWKWARD_FFS, 2):
        assert not names[first] & names[second], (first, second)


def test_the_seed_naming_holds_for_plain_names():
    jobs = build_jobs(config("jm", "null-0.0.3-pair-opc3"), "0" * 40)
    assert jobs[0].name == "pb-jm-gb3-null-003-pair-opc3-1-00"
    assert jobs[-1].name == "pb-jm-gb3-null-003-pair-opc3-3-30"


@pytest.mark.parametrize("ff", AWKWARD_FFS[1:3])
def test_labels_are_valid_and_annotations_keep_the_full_identity(ff):
    template = load_template(REPO_ROOT / TEMPLATE)
    campaign = config("JMW", ff)
    job = build_jobs(campaign, "0" * 40)[40]
    manifest = render_manifest(job, campaign, template)
    for key, value in manifest["metadata"]["labels"].items():
        assert LABEL_VALUE.match(value) and len(value) <= 63, (key, value)
    notes = manifest["metadata"]["annotations"]
    assert notes["protbench.openforcefield.org/ff"] == ff
    assert notes["protbench.openforcefield.org/initials"] == "JMW"


def test_the_launcher_script_names_awkward_campaigns_uniquely(launcher_repo):
    launcher_repo.set_constants(INITIALS="JMW", FF=AWKWARD_FFS[1], TARGET="GB3")
    result = launcher_repo.run("--dry-run")
    assert result.returncode == 0, result.stderr
    manifests = documents(result.stdout)
    names = [m["metadata"]["name"] for m in manifests]
    assert len(manifests) == 93 and len(set(names)) == 93
    assert all(DNS_LABEL.match(n) and len(n) <= 63 for n in names)
    campaigns = {m["metadata"]["labels"]["protbench.openforcefield.org/campaign"] for m in manifests}
    assert len(campaigns) == 1 and LABEL_VALUE.match(campaigns.pop())
