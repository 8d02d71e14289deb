"""--local, --status, --relaunch, preflight and the scripts' own skip checks give the stage table's answer.

Each case builds one results tree and asks every reader whether the Job is
done; they must all say what :func:`protbench_nrp.stages.is_complete` says.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pytest

from protbench_nrp import launcher, status
from protbench_nrp.cluster import ClusterJob, ClusterView
from protbench_nrp.jobs import CampaignConfig, JobSpec, build_jobs
from protbench_nrp.layout import Campaign, JobId
from protbench_nrp.local import LocalJob
from protbench_nrp.preflight import MissingInput, find_missing
from protbench_nrp.records import Progress
from protbench_nrp.stages import is_complete, production_steps
from protbench_nrp.steered import steered_products_exist
from protbench_nrp.store import LocalStore
from protbench_nrp.systems import SetupFiles

CAMPAIGN = Campaign("villin", "amber14-vacuum")
N_WINDOWS = 4
#: A short production, so a record can be written with the steps the settings ask for.
EXTRA_ENV = {"PROTBENCH_PRODUCTION_LENGTH": "0.04", "PROTBENCH_TIMESTEP": "4", "PROTBENCH_FRAME": "0.4"}


def _config(root: Path, stage: str, **changes) -> CampaignConfig:
    fields = dict(initials="jm", target=CAMPAIGN.target, ff=CAMPAIGN.ff, n_replicas=1, n_windows=N_WINDOWS,
                  local_result_dir=root, stage=stage, extra_env=dict(EXTRA_ENV),
                  bucket="protbench-results", rclone_remote="nrp", rclone_secret="rclone-config",
                  openeye_secret="oe-license", image="registry.invalid/protbench:test",
                  repo_url="https://git.invalid/protbench.git", proteinbenchmark_ref="main",
                  proteinbenchmark_repo="https://git.invalid/proteinbenchmark.git", cuda_version="12.4")
    fields.update(changes)
    return CampaignConfig(**fields)


def _job(root: Path, stage: str, window: int | None = None, **changes) -> JobSpec:
    windows = (window,) if window is not None else None
    (job,) = [job for job in build_jobs(_config(root, stage, windows=windows, **changes), "0" * 40)
              if job.window == window]
    return job


def _write(root: Path, relative, data: bytes = b"product\n") -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _setup(root: Path, empty=(), absent=()) -> None:
    for product in (CAMPAIGN.contacts_file, CAMPAIGN.minimized_pdb, CAMPAIGN.system_xml):
        if product.name not in absent:
            _write(root, product, b"" if product.name in empty else b"product\n")


def _steered(root: Path, empty=(), absent=()) -> None:
    _setup(root)
    products = [CAMPAIGN.steered_state(1)] + [CAMPAIGN.window_pdb(1, w) for w in range(N_WINDOWS)]
    for product in products:
        if product.name not in absent:
            _write(root, product, b"" if product.name in empty else b"product\n")


def _window(root: Path, phase: str, steps_factor: float = 1.0) -> None:
    _steered(root)
    job = _job(root, "window", 0)
    wanted = production_steps(CAMPAIGN, job.id, job.env)
    total = int(wanted * steps_factor)
    Progress.now(phase, total if phase == "finished" else total // 2, total, 50.0).write(
        root / CAMPAIGN.window_files(1, 0).progress)


def answers(root: Path, job: JobSpec) -> dict[str, bool]:
    """Whether the Job is done, as each reader of the results says it."""
    store = LocalStore(root)
    reading = status.read_all_progress(store, CAMPAIGN, [job])[job.name]
    row = status.gather_status([job], CAMPAIGN, {job.name: reading}, ClusterView(None), time.time())[0]
    said = {
        "table": is_complete(store, CAMPAIGN, job.id, job.env).done,
        "--local": LocalJob(job, root).is_finished(),
        "--status": row.state == "finished",
        "--relaunch": launcher._is_finished(job, reading),
    }
    if job.stage in NEXT_STAGE:  # preflight of the Jobs that read its outputs finds none missing
        config = _config(root, NEXT_STAGE[job.stage])
        said["preflight"] = not [missing for missing in find_missing(build_jobs(config, "0" * 40), config, store)
                                 if missing.stage == job.stage]
    if job.stage == "setup":
        said["setup script"] = SetupFiles(root, CAMPAIGN).is_complete()
    if job.stage == "steered":
        said["steered script"] = steered_products_exist(root, CAMPAIGN, 1, N_WINDOWS)
    return said


NEXT_STAGE = {"setup": "steered", "steered": "window"}
MINIMIZED, CONTACTS = CAMPAIGN.minimized_pdb.name, CAMPAIGN.contacts_file.name
STATE, MIDDLE = CAMPAIGN.steered_state(1).name, CAMPAIGN.window_pdb(1, 2).name

CASES = {
    "setup with its three outputs": ("setup", lambda root: _setup(root), True),
    "setup with an empty minimized structure": ("setup", lambda root: _setup(root, empty=(MINIMIZED,)), False),
    "setup without its native contacts": ("setup", lambda root: _setup(root, absent=(CONTACTS,)), False),
    "steered MD with every window structure": ("steered", lambda root: _steered(root), True),
    "steered MD missing a middle window structure": ("steered", lambda root: _steered(root, absent=(MIDDLE,)),
                                                      False),
    "steered MD with an empty equilibrated state": ("steered", lambda root: _steered(root, empty=(STATE,)), False),
    "a window finished with the steps it asks for": ("window", lambda root: _window(root, "finished"), True),
    "a window finished, its production lengthened since": ("window", lambda root: _window(root, "finished", 0.5),
                                                            False),
    "a window finished, its production shortened since": ("window", lambda root: _window(root, "finished", 2.0),
                                                           True),
    "a window in production": ("window", lambda root: _window(root, "production"), False),
}


@pytest.mark.parametrize("stage, arrange, done", CASES.values(), ids=CASES.keys())
def test_every_reader_of_the_results_gives_the_stage_tables_answer(tmp_path, stage, arrange, done):
    arrange(tmp_path)
    job = _job(tmp_path, stage, 0 if stage == "window" else None)
    said = answers(tmp_path, job)
    assert said == {reader: done for reader in said}


def test_status_says_why_a_finished_window_whose_production_was_lengthened_runs_on(tmp_path):
    _window(tmp_path, "finished", 0.5)
    job = _job(tmp_path, "window", 0)
    reading = status.read_all_progress(LocalStore(tmp_path), CAMPAIGN, [job])[job.name]
    row = status.gather_status([job], CAMPAIGN, {job.name: reading}, ClusterView(None), time.time())[0]
    assert row.state == "running"
    assert "but its settings now ask for" in row.note and "runs on from its last checkpoint" in row.note


COMPLETE_BUT_NOT_DONE = {
    "setup with an empty minimized structure": ("setup", lambda root: _setup(root, empty=(MINIMIZED,)), MINIMIZED),
    "steered MD missing a middle window structure": ("steered", lambda root: _steered(root, absent=(MIDDLE,)),
                                                      MIDDLE),
    "a window without a progress record": ("window", lambda root: _steered(root), "no progress record"),
    "a window in production": ("window", lambda root: _window(root, "production"), "is in production"),
}


@pytest.mark.parametrize("stage, arrange, missing", COMPLETE_BUT_NOT_DONE.values(),
                         ids=COMPLETE_BUT_NOT_DONE.keys())
def test_status_shows_a_complete_job_whose_results_are_not_done_as_unfinished_and_says_what_to_do(
        tmp_path, stage, arrange, missing):
    arrange(tmp_path)
    job = _job(tmp_path, stage, 0 if stage == "window" else None)
    reading = status.read_all_progress(LocalStore(tmp_path), CAMPAIGN, [job])[job.name]
    cluster = ClusterView({job.name: ClusterJob(job.name, "Complete")})
    row = status.gather_status([job], CAMPAIGN, {job.name: reading}, cluster, time.time())[0]
    assert row.state != "finished" and row.job_state == "Complete"
    assert row.note.startswith("Job Complete, but its results are not: ")
    assert missing in row.note
    assert row.note.endswith(status.relaunch_command(job, extend=True))
    assert f"--extend --stage {stage}" in row.note
    assert status.trouble_notes([row]) == ["1 Jobs Complete on the cluster whose results are not done; each row "
                                           "names what is missing and the --extend command that replaces the Job"]


def test_status_shows_a_finished_window_whose_settings_cannot_be_read_here_as_unfinished_saying_why(tmp_path):
    _window(tmp_path, "finished")
    job = _job(tmp_path, "window", 0)
    job = dataclasses.replace(job, env={**job.env, "PROTBENCH_TIMESTEP": "four"})
    reading = status.read_all_progress(LocalStore(tmp_path), CAMPAIGN, [job])[job.name]
    row = status.gather_status([job], CAMPAIGN, {job.name: reading}, ClusterView(None), time.time())[0]
    assert row.state != "finished"
    assert not launcher._is_finished(job, reading) and not LocalJob(job, tmp_path).is_finished()
    assert row.note.startswith("finished by its record; its settings cannot be read here: ")
    assert "PROTBENCH_TIMESTEP" in row.note


def test_preflight_misses_exactly_the_steered_outputs_the_table_lacks(tmp_path):
    _steered(tmp_path, absent=(MIDDLE,), empty=(CAMPAIGN.window_pdb(1, 3).name,))
    steered = _job(tmp_path, "steered")
    completion = is_complete(LocalStore(tmp_path), CAMPAIGN, steered.id, steered.env)
    windows = build_jobs(_config(tmp_path, "window"), "0" * 40)

    missing = find_missing(windows, _config(tmp_path, "window"), LocalStore(tmp_path))

    assert missing == [MissingInput(str(CAMPAIGN.window_pdb(1, 2)), "steered", 1),
                       MissingInput(str(CAMPAIGN.window_pdb(1, 3)), "steered", 1)]
    assert not completion.done
    assert MIDDLE in completion.reason and CAMPAIGN.window_pdb(1, 3).name in completion.reason


IMPOSSIBLE = {
    "setup of a replica": dict(stage="setup", replica=2, window=None),
    "steered MD of a window": dict(stage="steered", replica=1, window=3),
    "a window without a replica": dict(stage="window", replica=None, window=0),
    "replica 0": dict(stage="window", replica=0, window=0),
    "an unknown stage": dict(stage="analysis", replica=None, window=None),
}


@pytest.mark.parametrize("identity", IMPOSSIBLE.values(), ids=IMPOSSIBLE.keys())
def test_a_jobspec_of_a_job_that_cannot_exist_is_refused_where_it_is_built(tmp_path, identity):
    job = _job(tmp_path, "window", 0)
    with pytest.raises(ValueError):
        dataclasses.replace(job, **identity)


def test_a_jobspecs_identity_is_its_stage_replica_and_window(tmp_path):
    job = _job(tmp_path, "window", 3)
    assert job.id == JobId("window", 1, 3)
    assert job.id.describe() == "replica 1 window 03"
