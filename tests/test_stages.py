"""The stage table: a Job's identity is checked when made, and "done" means one thing everywhere.

Every completion check runs on the same results tree twice: read from a
directory (LocalStore) and from a real S3 server on loopback with signature
checks on (BucketStore over moto, see tests/pod/s3server.py).
"""

from __future__ import annotations

import itertools
import json
from dataclasses import asdict
from pathlib import Path

import pytest

from protbench_nrp.layout import STAGES, Campaign, JobId
from protbench_nrp.records import Progress
from protbench_nrp.stages import (
    FINISHED_PHASE,
    STAGE_TABLE,
    is_complete,
    prerequisites,
    stage_of,
    window_record_complete,
)
from protbench_nrp.store import BucketStore, LocalStore, StoreError

REPO_ROOT = Path(__file__).resolve().parent.parent
CAMPAIGN = Campaign("villin", "amber14-vacuum")
N_WINDOWS = 5
#: 0.04 ns of 4 fs steps, a frame every 0.4 ps: 10 000 production steps.
WINDOW_ENV = {"PROTBENCH_TARGET": "villin", "PROTBENCH_FF": "amber14-vacuum",
              "PROTBENCH_N_WINDOWS": str(N_WINDOWS), "PROTBENCH_PRODUCTION_LENGTH": "0.04",
              "PROTBENCH_TIMESTEP": "4", "PROTBENCH_FRAME": "0.4"}
WINDOW_STEPS = 10_000
STEERED_ENV = {"PROTBENCH_TARGET": "villin", "PROTBENCH_FF": "amber14-vacuum",
               "PROTBENCH_N_WINDOWS": str(N_WINDOWS)}


# -- JobId -------------------------------------------------------------------------------------

@pytest.mark.parametrize("stage, replica, window, message", [
    ("pulling", 1, None, r"unknown stage 'pulling'; expected one of setup, steered, window"),
    ("setup", 1, None, r"a setup Job has no replica \(got replica=1\): setup is shared by every replica; "
                       r"leave replica None"),
    ("setup", None, 0, r"a setup Job has no window \(got window=0\).*leave window None"),
    ("steered", None, None, r"a steered Job needs a replica \(numbered from 1\); got None"),
    ("steered", 0, None, r"replicas are numbered from 1, got replica=0"),
    ("steered", 1, 3, r"a steered Job has no window \(got window=3\): steered MD of a replica saves "
                      r"the structures of all its windows; leave window None"),
    ("window", None, 3, r"a window Job needs a replica \(numbered from 1\); got None"),
    ("window", 1, None, r"a window Job needs a window \(an index from 0\); got None"),
    ("window", 1, -1, r"window index must be >= 0, got window=-1"),
    ("window", -2, 4, r"replicas are numbered from 1, got replica=-2"),
    ("window", "2", 4, r"replica must be a whole number or None, got '2' \(str\)"),
    ("window", 1, 2.0, r"window must be a whole number or None, got 2.0 \(float\)"),
    ("steered", True, None, r"replica must be a whole number or None, got True \(bool\)"),
])
def test_a_job_that_cannot_exist_is_refused_naming_the_field_and_the_fix(stage, replica, window, message):
    with pytest.raises(ValueError, match=message):
        JobId(stage, replica, window)


@pytest.mark.parametrize("job, words", [
    (JobId("setup"), "setup"),
    (JobId("steered", 2), "replica 2 steered MD"),
    (JobId("window", 1, 7), "replica 1 window 07"),
    (JobId("window", 3, 30), "replica 3 window 30"),
])
def test_a_job_describes_itself_as_messages_name_it(job, words):
    assert job.describe() == words
    assert str(job) == words


def test_a_job_id_is_one_value_that_paths_and_names_accept_in_place_of_three_arguments():
    job = JobId("window", 2, 7)
    assert JobId.of(job) is job
    assert JobId.of("window", 2, 7) == job
    assert hash(JobId("window", 2, 7)) == hash(job)
    assert CAMPAIGN.manifest(job) == CAMPAIGN.manifest("window", 2, 7)
    assert CAMPAIGN.required_files(job, n_windows=3) == CAMPAIGN.required_files("window", 2, 7, n_windows=3)
    with pytest.raises(ValueError, match="not both"):
        JobId.of(job, 2)


def test_paths_of_a_job_that_cannot_exist_are_refused_too():
    with pytest.raises(ValueError, match="a setup Job has no replica"):
        CAMPAIGN.manifest("setup", 2)
    with pytest.raises(ValueError, match="a window Job needs a window"):
        CAMPAIGN.output_files("window", 2)


# -- the table ---------------------------------------------------------------------------------

def test_the_table_lists_every_stage_in_running_order_each_needing_the_one_before():
    assert tuple(stage.name for stage in STAGE_TABLE) == STAGES
    assert [stage.needs for stage in STAGE_TABLE] == [None, "setup", "steered"]
    assert stage_of(JobId("steered", 1)) is STAGE_TABLE[1]
    with pytest.raises(ValueError, match="unknown stage 'pulling'"):
        stage_of("pulling")


def test_every_stage_script_is_in_the_repository_and_only_the_window_script_is_a_setting():
    for stage in STAGE_TABLE:
        assert (REPO_ROOT / stage.script).is_file(), stage.script
    assert [stage.script_for("umbrella-scripts/mine.py") for stage in STAGE_TABLE] == [
        "umbrella-scripts/setup-umbrella-system.py", "umbrella-scripts/run-steered-md.py",
        "umbrella-scripts/mine.py"]
    assert stage_of("window").script_for("") == "umbrella-scripts/run-umbrella-window.py"


def test_each_input_names_the_job_that_writes_it():
    window = stage_of("window")
    assert [(i.path, i.producer) for i in window.inputs(CAMPAIGN, JobId("window", 2, 4))] == [
        ("villin-amber14-vacuum/setup/", JobId("setup")),
        ("villin-amber14-vacuum/replica-2/villin-amber14-vacuum-equilibration-1.xml", JobId("steered", 2)),
        ("villin-amber14-vacuum/replica-2/villin-amber14-vacuum-window-04.pdb", JobId("steered", 2)),
    ]
    assert stage_of("setup").inputs(CAMPAIGN, JobId("setup")) == []
    assert window.outputs(CAMPAIGN, JobId("window", 2, 4), N_WINDOWS) == [
        "villin-amber14-vacuum/replica-2/window-04/"]
    assert stage_of("steered").required_files(CAMPAIGN, JobId("steered", 1), 2) == [
        "villin-amber14-vacuum/setup/", "villin-amber14-vacuum/replica-1/steered-md/",
        "villin-amber14-vacuum/replica-1/villin-amber14-vacuum-equilibration-1.xml",
        "villin-amber14-vacuum/replica-1/villin-amber14-vacuum-window-00.pdb",
        "villin-amber14-vacuum/replica-1/villin-amber14-vacuum-window-01.pdb"]
    assert stage_of("setup").progress_file(CAMPAIGN, JobId("setup")) is None


@pytest.mark.parametrize("job, needed", [
    (JobId("setup"), ()),
    (JobId("steered", 3), (JobId("setup"),)),
    (JobId("window", 3, 9), (JobId("setup"), JobId("steered", 3))),
])
def test_a_job_needs_every_earlier_job_of_its_replica(job, needed):
    assert prerequisites(job) == needed


def test_a_stage_refuses_a_job_of_another_stage():
    with pytest.raises(ValueError, match="not a Job of the window stage"):
        stage_of("window").is_complete(LocalStore("/nonexistent"), CAMPAIGN, JobId("steered", 1), {})


# -- one results tree, two stores ----------------------------------------------------------------

@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A real S3 server (moto) on loopback, signatures checked; see tests/pod/s3server.py."""
    from tests.pod.s3server import MotoServer

    server = MotoServer(tmp_path_factory.mktemp("moto") / "moto_server.log").start()
    try:
        yield server
    finally:
        server.stop()


_buckets = itertools.count()


@pytest.fixture(params=["local", "bucket"])
def store_of(request, tmp_path):
    """Turns a results tree on disk into the store under test: the directory, or a bucket holding it."""
    def make(root: Path):
        if request.param == "local":
            return LocalStore(root)
        from tests.pod.s3server import Bucket

        bucket = Bucket(request.getfixturevalue("s3"), f"stages-{next(_buckets)}").create()
        bucket.put_tree(root)
        return BucketStore(bucket.client, bucket.name)

    return make


def _write(root: Path, relative, text: str = "x\n") -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _setup_tree(root: Path) -> Path:
    for relative in (CAMPAIGN.contacts_file, CAMPAIGN.minimized_pdb, CAMPAIGN.system_xml):
        _write(root, relative)
    return root


def _steered_tree(root: Path, replica: int, windows=range(N_WINDOWS), state: bool = True) -> Path:
    _setup_tree(root)
    if state:
        _write(root, CAMPAIGN.steered_state(replica))
    for window in windows:
        _write(root, CAMPAIGN.window_pdb(replica, window))
    _write(root, CAMPAIGN.steered_files(replica).progress, json.dumps({"phase": "finished"}))
    return root


def _window_tree(root: Path, record: str | None, replica: int = 1, window: int = 3) -> Path:
    _steered_tree(root, replica)
    _write(root, CAMPAIGN.window_files(replica, window).production("out"))
    if record is not None:
        _write(root, CAMPAIGN.window_files(replica, window).progress, record)
    return root


def _progress(phase: str, step: int, total_steps: int) -> str:
    """The text of a progress record, as the window script writes it."""
    record = Progress.now(phase, step, total_steps, 120.0, timestep_fs=4.0, frame_ps=0.4)
    return json.dumps({"kind": "progress", **asdict(record)})


def test_setup_is_done_when_its_three_outputs_are_in_place(tmp_path, store_of):
    store = store_of(_setup_tree(tmp_path / "results"))
    done = is_complete(store, CAMPAIGN, JobId("setup"), {})
    assert done and done.done
    assert "setup is done" in done.reason


@pytest.mark.parametrize("lost", ["contacts_file", "minimized_pdb", "system_xml"])
def test_setup_lacking_any_output_is_not_done_and_says_which(tmp_path, store_of, lost):
    root = _setup_tree(tmp_path / "results")
    (root / getattr(CAMPAIGN, lost)).unlink()
    store = store_of(root)
    done = is_complete(store, CAMPAIGN, JobId("setup"), {})
    assert not done
    assert getattr(CAMPAIGN, lost).name in done.reason
    assert store.describe(CAMPAIGN.setup_dir) in done.reason


def test_setup_of_an_empty_tree_is_not_done(tmp_path, store_of):
    (tmp_path / "results").mkdir()
    assert not is_complete(store_of(tmp_path / "results"), CAMPAIGN, JobId("setup"), {})


def test_steered_md_is_done_when_its_state_and_every_window_structure_are_in_place(tmp_path, store_of):
    store = store_of(_steered_tree(tmp_path / "results", replica=2))
    done = is_complete(store, CAMPAIGN, JobId("steered", 2), STEERED_ENV)
    assert done, done.reason
    assert f"all {N_WINDOWS} window structures" in done.reason


def test_steered_md_missing_one_middle_window_structure_is_not_done(tmp_path, store_of):
    root = _steered_tree(tmp_path / "results", replica=2, windows=[0, 1, 3, 4])
    done = is_complete(store_of(root), CAMPAIGN, JobId("steered", 2), STEERED_ENV)
    assert not done
    assert "villin-amber14-vacuum-window-02.pdb" in done.reason
    assert "replica 2 steered MD is not done" in done.reason


def test_steered_md_without_its_equilibrated_state_is_not_done(tmp_path, store_of):
    root = _steered_tree(tmp_path / "results", replica=1, state=False)
    done = is_complete(store_of(root), CAMPAIGN, JobId("steered", 1), STEERED_ENV)
    assert not done
    assert CAMPAIGN.steered_state(1).name in done.reason


def test_steered_md_of_one_replica_says_nothing_of_another(tmp_path, store_of):
    store = store_of(_steered_tree(tmp_path / "results", replica=1))
    assert is_complete(store, CAMPAIGN, JobId("steered", 1), STEERED_ENV)
    assert not is_complete(store, CAMPAIGN, JobId("steered", 2), STEERED_ENV)


def test_steered_md_is_judged_by_the_windows_its_job_saves(tmp_path, store_of):
    store = store_of(_steered_tree(tmp_path / "results", replica=1))
    assert not is_complete(store, CAMPAIGN, JobId("steered", 1), {**STEERED_ENV, "PROTBENCH_N_WINDOWS": "6"})
    assert is_complete(store, CAMPAIGN, JobId("steered", 1), {**STEERED_ENV, "PROTBENCH_N_WINDOWS": "4"})


def test_steered_md_with_an_unreadable_window_count_is_not_done_and_names_the_variable(tmp_path, store_of):
    store = store_of(_steered_tree(tmp_path / "results", replica=1))
    done = is_complete(store, CAMPAIGN, JobId("steered", 1), {**STEERED_ENV, "PROTBENCH_N_WINDOWS": "five"})
    assert not done
    assert "PROTBENCH_N_WINDOWS" in done.reason


def test_steered_md_is_judged_from_the_bucket_by_one_listing_however_many_windows(tmp_path, s3):
    from tests.pod.s3server import Bucket

    root = _steered_tree(tmp_path / "results", replica=1, windows=range(31))
    bucket = Bucket(s3, "stages-one-listing").create()
    bucket.put_tree(root)
    calls = []
    bucket.client.meta.events.register("before-call.s3", lambda model, **_: calls.append(model.name))
    assert is_complete(BucketStore(bucket.client, bucket.name), CAMPAIGN, JobId("steered", 1),
                       {**STEERED_ENV, "PROTBENCH_N_WINDOWS": "31"})
    assert calls == ["ListObjectsV2"]


def test_a_window_is_done_when_its_record_says_finished_with_the_steps_its_settings_ask(tmp_path, store_of):
    store = store_of(_window_tree(tmp_path / "results", _progress(FINISHED_PHASE, WINDOW_STEPS, WINDOW_STEPS)))
    done = is_complete(store, CAMPAIGN, JobId("window", 1, 3), WINDOW_ENV)
    assert done, done.reason
    assert f"all {WINDOW_STEPS} production steps" in done.reason


def test_a_window_without_a_progress_record_has_not_started(tmp_path, store_of):
    store = store_of(_window_tree(tmp_path / "results", None))
    done = is_complete(store, CAMPAIGN, JobId("window", 1, 3), WINDOW_ENV)
    assert not done
    assert "has not started" in done.reason
    assert store.describe(CAMPAIGN.window_files(1, 3).progress) in done.reason


@pytest.mark.parametrize("phase, step", [
    # only the window script, after its final checkpoint, says "finished"
    ("production", WINDOW_STEPS),
    ("production", WINDOW_STEPS - 1),
    ("equilibration", 0),
    ("blew-up", 400),
])
def test_a_window_whose_record_is_not_finished_is_not_done(tmp_path, store_of, phase, step):
    store = store_of(_window_tree(tmp_path / "results", _progress(phase, step, WINDOW_STEPS)))
    done = is_complete(store, CAMPAIGN, JobId("window", 1, 3), WINDOW_ENV)
    assert not done
    assert f"is in {phase}, step {step} of {WINDOW_STEPS}" in done.reason


def test_a_finished_window_whose_settings_now_ask_for_a_longer_production_is_not_done(tmp_path, store_of):
    store = store_of(_window_tree(tmp_path / "results", _progress(FINISHED_PHASE, WINDOW_STEPS, WINDOW_STEPS)))
    longer = {**WINDOW_ENV, "PROTBENCH_PRODUCTION_LENGTH": "0.08"}
    done = is_complete(store, CAMPAIGN, JobId("window", 1, 3), longer)
    assert not done
    assert f"finished {WINDOW_STEPS} production steps, but its settings now ask for {2 * WINDOW_STEPS}" in done.reason


@pytest.mark.parametrize("garbled, why", [
    ('{"phase": "finished", "step": 10000', "Expecting"),
    ("[1, 2]", "not a JSON object"),
    ('{"phase": "finished", "step": 10000}', "lacks"),
    ("", "Expecting value"),
])
def test_a_window_with_an_unreadable_progress_record_is_not_done(tmp_path, store_of, garbled, why):
    store = store_of(_window_tree(tmp_path / "results", garbled))
    done = is_complete(store, CAMPAIGN, JobId("window", 1, 3), WINDOW_ENV)
    assert not done
    assert "does not read" in done.reason and why in done.reason


@pytest.mark.parametrize("production_length_ns, done, words", [
    ("0.02", True, f"{WINDOW_STEPS} production steps, more than the {WINDOW_STEPS // 2} its settings now ask for"),
    ("0.04", True, f"all {WINDOW_STEPS} production steps"),
    ("0.08", False, f"but its settings now ask for {2 * WINDOW_STEPS}: it runs on from its last checkpoint"),
], ids=["shortened since: done", "as asked: done", "lengthened since (--extend): not done"])
def test_a_finished_window_is_done_when_it_ran_at_least_the_production_its_settings_ask_now(
        tmp_path, store_of, production_length_ns, done, words):
    # A shortened production: the window script sees itself finished and keeps its record,
    # so a table asking for exactly the new length would rerun it forever.
    store = store_of(_window_tree(tmp_path / "results", _progress(FINISHED_PHASE, WINDOW_STEPS, WINDOW_STEPS)))
    env = {**WINDOW_ENV, "PROTBENCH_PRODUCTION_LENGTH": production_length_ns}
    completion = is_complete(store, CAMPAIGN, JobId("window", 1, 3), env)
    assert completion.done is done
    assert words in completion.reason


@pytest.mark.parametrize("name, text", [
    ("PROTBENCH_TIMESTEP", "four"),
    ("PROTBENCH_TIMESTEP", "-4"),
    ("PROTBENCH_PRODUCTION_LENGTH", "a hundred"),
])
def test_a_finished_window_whose_settings_do_not_read_is_not_done(tmp_path, store_of, name, text):
    store = store_of(_window_tree(tmp_path / "results", _progress(FINISHED_PHASE, WINDOW_STEPS, WINDOW_STEPS)))
    done = is_complete(store, CAMPAIGN, JobId("window", 1, 3), {**WINDOW_ENV, name: text})
    assert not done
    assert name in done.reason


def test_a_window_is_judged_by_its_own_identity_not_the_environment(tmp_path, store_of):
    root = _window_tree(tmp_path / "results", _progress(FINISHED_PHASE, WINDOW_STEPS, WINDOW_STEPS))
    store = store_of(root)
    elsewhere = {**WINDOW_ENV, "PROTBENCH_REPLICA": "2", "PROTBENCH_WINDOW": "04"}
    assert is_complete(store, CAMPAIGN, JobId("window", 1, 3), elsewhere)
    assert not is_complete(store, CAMPAIGN, JobId("window", 1, 4), WINDOW_ENV)


def test_a_bucket_that_cannot_be_read_is_an_error_not_a_job_to_redo(s3):
    store = BucketStore(s3.client(), "no-such-bucket")
    for job, env in ((JobId("setup"), {}), (JobId("steered", 1), STEERED_ENV), (JobId("window", 1, 3), WINDOW_ENV)):
        with pytest.raises(StoreError, match="s3://no-such-bucket/results"):
            is_complete(store, CAMPAIGN, job, env)


def test_refused_keys_are_an_error_not_a_job_to_redo(tmp_path, s3):
    from tests.pod.s3server import Bucket

    bucket = Bucket(s3, "stages-refused").create()
    bucket.put_tree(_setup_tree(tmp_path / "results"))
    store = BucketStore(s3.client(secret_access_key="not-the-secret"), bucket.name)
    with pytest.raises(StoreError, match="SignatureDoesNotMatch|Forbidden|403"):
        is_complete(store, CAMPAIGN, JobId("setup"), {})


def test_a_record_already_read_is_judged_as_the_store_check_judges_it():
    job = JobId("window", 1, 3)
    finished = Progress.now(FINISHED_PHASE, WINDOW_STEPS, WINDOW_STEPS, 120.0)
    assert window_record_complete(CAMPAIGN, job, WINDOW_ENV, finished)
    assert not window_record_complete(CAMPAIGN, job, {**WINDOW_ENV, "PROTBENCH_PRODUCTION_LENGTH": "0.08"},
                                      finished)
    assert not window_record_complete(CAMPAIGN, job, WINDOW_ENV,
                                      Progress.now("production", WINDOW_STEPS, WINDOW_STEPS, 120.0))
    with pytest.raises(ValueError, match="not a Job of the window stage"):
        window_record_complete(CAMPAIGN, JobId("steered", 1), WINDOW_ENV, finished)
