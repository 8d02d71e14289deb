"""The results layout and Job naming: one place, and every name it makes is valid."""

import itertools
import re

import pytest

from protbench_nrp.layout import (
    LABEL_PREFIX,
    Campaign,
    job_annotations,
    job_labels,
    job_name,
    label_value,
    window_tag,
)

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def test_seed_layout_of_a_window():
    campaign = Campaign("gb3", "null-0.0.3-pair-opc3")
    files = campaign.window_files(2, 7)
    assert str(campaign.system_xml) == ("gb3-null-0.0.3-pair-opc3/setup/"
                                        "gb3-null-0.0.3-pair-opc3-umbrella-openmm-system.xml")
    assert str(files.directory) == "gb3-null-0.0.3-pair-opc3/replica-2/window-07"
    assert str(files.production("out")) == (
        "gb3-null-0.0.3-pair-opc3/replica-2/window-07/gb3-null-0.0.3-pair-opc3-production.out"
    )
    assert str(campaign.manifest("window", 2, 7)) == (
        "gb3-null-0.0.3-pair-opc3/replica-2/gb3-null-0.0.3-pair-opc3-2-07.yaml"
    )
    assert campaign.required_files("window", 2, 7) == [
        "gb3-null-0.0.3-pair-opc3/setup/",
        "gb3-null-0.0.3-pair-opc3/replica-2/gb3-null-0.0.3-pair-opc3-equilibration-1.xml",
        "gb3-null-0.0.3-pair-opc3/replica-2/gb3-null-0.0.3-pair-opc3-window-07.pdb",
        "gb3-null-0.0.3-pair-opc3/replica-2/window-07/",
    ]


def test_inputs_name_the_stage_that_writes_them():
    campaign = Campaign("villin", "amber14-vacuum")
    assert campaign.stage_inputs("setup") == []
    assert campaign.stage_inputs("steered", 2) == [("villin-amber14-vacuum/setup/", "setup")]
    assert campaign.stage_inputs("window", 2, 4) == [
        ("villin-amber14-vacuum/setup/", "setup"),
        ("villin-amber14-vacuum/replica-2/villin-amber14-vacuum-equilibration-1.xml", "steered"),
        ("villin-amber14-vacuum/replica-2/villin-amber14-vacuum-window-04.pdb", "steered"),
    ]
    # a pod copies its inputs, then its own earlier outputs to resume from
    assert campaign.required_files("window", 2, 4)[:3] == [p for p, _ in campaign.stage_inputs("window", 2, 4)]


def test_a_pod_uploads_only_its_own_outputs():
    campaign = Campaign("villin", "amber14-vacuum")
    assert campaign.output_files("window", 1, 3) == ["villin-amber14-vacuum/replica-1/window-03/"]
    steered = campaign.output_files("steered", 2, n_windows=3)
    assert "villin-amber14-vacuum/setup/" not in steered
    assert steered[-1] == "villin-amber14-vacuum/replica-2/villin-amber14-vacuum-window-02.pdb"


def test_seed_job_name_is_kept_when_valid():
    assert job_name("jm", "gb3", "null-0.0.3-pair-opc3", replica=1, window=5) == "pb-jm-gb3-null-003-pair-opc3-1-05"
    assert job_name("jm", "gb3", "null-0.0.3-pair-opc3", "setup") == "pb-jm-gb3-null-003-pair-opc3-setup"
    assert (job_name("jm", "gb3", "null-0.0.3-pair-opc3", "steered", replica=2)
            == "pb-jm-gb3-null-003-pair-opc3-2-steered")


@pytest.mark.parametrize("initials,target,ff", [
    ("JM", "gb3", "null-0.0.3-pair-opc3"),
    ("JMW", "GB3_Long.Target", "Null_0.0.3.Pair_OPC3-with-a-very-long-suffix-indeed-v1.2.3"),
    ("xy", "ubiquitin", "openff_unconstrained-2.1.0_tip3p-fb"),
    ("A", "t", "f" * 120),
])
def test_93_names_valid_and_unique(initials, target, ff):
    names = {job_name(initials, target, ff, replica=r, window=w)
             for r, w in itertools.product(range(1, 4), range(31))}
    assert len(names) == 93
    for name in names:
        assert len(name) <= 63 and DNS_LABEL.match(name), name


def test_names_that_map_to_the_same_characters_do_not_collide():
    a = job_name("jm", "gb3", "my_ff", replica=1, window=0)
    b = job_name("jm", "gb3", "my-ff", replica=1, window=0)
    c = job_name("JM", "gb3", "my-ff", replica=1, window=0)
    assert a != b
    assert b == c  # initials are case-insensitive people, not identities
    assert job_name("jm", "gb3", "FF", replica=1, window=0) != job_name("jm", "gb3", "ff", replica=1, window=0)


def test_labels_select_a_campaign_and_annotations_keep_the_identity():
    ff = "Null_0.0.3.Pair_OPC3-with-a-very-long-suffix-indeed-v1.2.3-and-even-longer-than-that"
    labels = job_labels("JM", "gb3", ff, replica=3, window=12)
    for value in labels.values():
        assert len(value) <= 63 and LABEL_VALUE.match(value), value
    other = job_labels("JM", "gb3", ff + "x", replica=3, window=12)
    assert labels[f"{LABEL_PREFIX}/campaign"] != other[f"{LABEL_PREFIX}/campaign"]
    assert labels[f"{LABEL_PREFIX}/window"] == "12"
    notes = job_annotations("JM", "gb3", ff, replica=3, window=12)
    assert notes[f"{LABEL_PREFIX}/ff"] == ff
    assert label_value("gb3") == "gb3"


@pytest.mark.parametrize("bad", ["", "a/b", " gb3"])
def test_bad_names_are_refused(bad):
    with pytest.raises(ValueError, match="results directory"):
        Campaign(bad, "ff")


def test_bad_indices_are_refused():
    campaign = Campaign("gb3", "ff")
    with pytest.raises(ValueError, match="replicas are numbered from 1"):
        campaign.replica_dir(0)
    with pytest.raises(ValueError, match="window index"):
        window_tag(-1)
    with pytest.raises(ValueError, match="unknown stage"):
        campaign.manifest("pulling", 1)
