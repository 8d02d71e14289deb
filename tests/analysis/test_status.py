"""Status of a campaign: progress records, Kubernetes states, and the table people read."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import boto3
import pytest
from rich.console import Console

from protbench_nrp import science, status
from protbench_nrp.cluster import parse_cluster_list
from protbench_nrp.jobs import CampaignConfig, JobSpec
from protbench_nrp.layout import job_name
from protbench_nrp.records import Progress
from protbench_nrp.store import BucketStore, LocalStore

from .conftest import DATA_DIR

NOW = 1_800_000_000.0
KUBECTL_ANSWER = DATA_DIR / "kubectl-get-jobs-pods.json"
MINUTE, HOUR = 60.0, 3600.0


def make_config(root: Path, **changes) -> CampaignConfig:
    fields = dict(initials="jm", target="synthetic", ff="double-well", n_replicas=2, n_windows=4,
                  local_result_dir=root, bucket="protbench-results")
    fields.update(changes)
    return CampaignConfig(**fields)


#: What a window Job of the ``synthetic`` target (in no catalog) carries, as the launcher
#: requires: its thermodynamic state, so the stage table can read its settings.
#: A production of 1000 steps of 4 fs, so their finished 1000-step records are done; their
#: records carry the frame they ran with, so their stall thresholds do not come from here.
WINDOW_ENV = {"PROTBENCH_TEMPERATURE": "300", "PROTBENCH_PRESSURE": "1",
              "PROTBENCH_PRODUCTION_LENGTH": "0.004", "PROTBENCH_FRAME": "0.4"}


def window_job(config: CampaignConfig, replica: int, window: int, **env) -> JobSpec:
    return JobSpec("window", replica, window,
                   job_name(config.initials, config.target, config.ff, "window", replica, window),
                   config.script_path, {**WINDOW_ENV, **env}, config.campaign.manifest("window", replica, window))


def all_jobs(config: CampaignConfig, **env) -> list[JobSpec]:
    return [window_job(config, r, w, **env) for r in (1, 2) for w in range(4)]


def write_progress(root: Path, config: CampaignConfig, replica: int, window: int, phase: str,
                   step: int, total: int, ns_per_day: float, age_s: float, now: float = NOW):
    path = root / config.campaign.window_files(replica, window).progress
    frame_ps = science.EQUIL_FRAME_PS if phase == "equilibration" else science.FRAME_PS
    Progress(phase, step, total, ns_per_day, now - age_s, frame_ps=frame_ps).write(path)
    return path


def rows_by_window(rows):
    return {(row.replica, row.window): row for row in rows}


def render(rows, title="t", notes=()):
    console = Console(file=io.StringIO(), width=220)
    status.render_status(rows, status.campaign_totals(rows), title, list(notes), console)
    return console.file.getvalue()


def line_of(text: str, name: str) -> str:
    """The table row of Job ``name``, or the one line starting with ``name``."""
    lines = [line for line in text.splitlines()
             if line.startswith(f"│ {name} │") or line.startswith(name)]
    assert len(lines) == 1, f"{name} should be on exactly one line of\n{text}"
    return lines[0]


# -- local progress only ---------------------------------------------------------------------------


@pytest.fixture
def local_campaign(tmp_path):
    """Windows finished, running, stalled, missing, equilibrating, slow and unreadable."""
    root = tmp_path / "results"
    config = make_config(root)
    write_progress(root, config, 1, 0, "finished", 125_000_000, 125_000_000, 120.0, 3 * HOUR)
    write_progress(root, config, 1, 1, "production", 500_000, 1_000_000, 100.0, 20.0)
    write_progress(root, config, 1, 2, "production", 300_000, 1_000_000, 100.0, 2 * HOUR)
    # (1, 3): nothing yet
    write_progress(root, config, 2, 0, "equilibration", 100_000, 250_000, 50.0, 5.0)
    # 2 ns/day: a 100 ps frame takes 72 min, so an hour without news is normal.
    write_progress(root, config, 2, 1, "production", 1_000, 1_000_000, 2.0, 1 * HOUR)
    write_progress(root, config, 2, 2, "production", 2_000, 1_000_000, 100.0, 31 * MINUTE)
    path = root / config.campaign.window_files(2, 3).progress
    path.parent.mkdir(parents=True)
    path.write_text('{"kind": "progress", "phase": "produ')
    return root, config


def test_each_window_gets_its_state_from_its_progress(local_campaign):
    root, config = local_campaign
    jobs = all_jobs(config, PROTBENCH_PRODUCTION_LENGTH="10")
    progress = status.read_all_progress(LocalStore(root), config.campaign, jobs)
    cluster = status.ClusterView(None, "not asked")
    rows = rows_by_window(status.gather_status(jobs, config.campaign, progress, cluster, NOW))
    assert {key: row.state for key, row in rows.items()} == {
        (1, 0): "finished", (1, 1): "running", (1, 2): "stalled", (1, 3): "missing",
        (2, 0): "running", (2, 1): "running", (2, 2): "stalled", (2, 3): "unreadable"}
    assert all(row.job_state == "?" and row.restarts is None for row in rows.values())

    running = rows[1, 1]
    assert (running.step, running.total_steps, running.ns_per_day) == (500_000, 1_000_000, 100.0)
    assert running.age_s == pytest.approx(20.0)
    # 500 000 steps of 4 fs = 2 ns left at 100 ns/day: 0.02 days.
    assert running.eta_s == pytest.approx(0.02 * 86400)
    # Equilibration: 150 000 steps of 1 fs at 50 ns/day, then 10 ns of 4 fs steps at 200 ns/day.
    assert rows[2, 0].eta_s == pytest.approx((0.15 / 50 + 10 / 200) * 86400)
    assert rows[2, 0].phase == "equilibration"

    assert rows[1, 2].stall_after_s == status.STALL_AFTER_S
    assert rows[1, 2].note == "no progress for 2h00m"
    assert rows[2, 1].stall_after_s == pytest.approx(3 * 0.1 / 2.0 * 86400)
    assert rows[2, 3].note == "progress record unreadable (see below)"
    assert rows[2, 3].error.startswith(f"{root / config.campaign.window_files(2, 3).progress}: ")

    totals = status.campaign_totals(list(rows.values()))
    assert totals.counts["finished"] == 1 and totals.counts["running"] == 3
    assert totals.counts["stalled"] == 2 and totals.counts["missing"] == 1
    assert totals.counts["unreadable"] == 1
    assert totals.ns_per_day == pytest.approx(100.0 + 50.0 + 2.0)


@pytest.mark.parametrize("phase, step, state", [("finished", 1000, "finished"),
                                                ("production", 1000, "stalled"),
                                                ("production", 999, "stalled")])
def test_only_a_finished_record_finishes_a_window(tmp_path, phase, step, state):
    # The window script writes "finished" after its final checkpoint (and restores it if a
    # kill lost it); a "production" record, even of the last step, still needs its pod.
    config = make_config(tmp_path)
    write_progress(tmp_path, config, 1, 0, phase, step, 1000, 100.0, 5 * HOUR)
    job = window_job(config, 1, 0)
    reading = status.read_all_progress(LocalStore(tmp_path), config.campaign, [job])[job.name]
    row = status.window_status(job, reading, status.ClusterView(None), NOW)
    assert row.state == state
    assert (row.note == "") == (state == "finished"), row.note


def test_the_table_shows_every_window_and_the_totals(local_campaign):
    root, config = local_campaign
    jobs = all_jobs(config, PROTBENCH_PRODUCTION_LENGTH="10")
    progress = status.read_all_progress(LocalStore(root), config.campaign, jobs)
    rows = status.gather_status(jobs, config.campaign, progress, status.ClusterView(None), NOW)
    text = render(rows, "synthetic-double-well: results in here", ["kubectl is not on PATH"])
    assert "synthetic-double-well: results in here" in text
    expected = {
        "pb-jm-synthetic-double-well-1-00": ["finished", "done", "100%", "3h00m ago"],
        "pb-jm-synthetic-double-well-1-01": ["running", "500000/1000000", "50%", "100.0", "28m48s", "20s ago"],
        "pb-jm-synthetic-double-well-1-02": ["stalled", "30%", "2h00m ago", "no progress for 2h00m"],
        "pb-jm-synthetic-double-well-1-03": ["missing"],
        "pb-jm-synthetic-double-well-2-00": ["running", "equilibration", "40%", "1h16m", "5s ago"],
        "pb-jm-synthetic-double-well-2-01": ["running", "2.0", "1h00m ago"],
        "pb-jm-synthetic-double-well-2-02": ["stalled", "31m00s ago"],
        "pb-jm-synthetic-double-well-2-03": ["unreadable", "progress record unreadable"],
    }
    for name, cells in expected.items():
        line = line_of(text, name)
        for cell in cells:
            assert cell in line, f"{cell!r} missing from the row of {name}:\n{line}"
    assert "8 windows: 1 finished, 3 running, 2 stalled, 1 missing, 1 unreadable; 152.0 ns/day in all" in text
    assert "note: kubectl is not on PATH" in text
    assert f"error: pb-jm-synthetic-double-well-2-03: {root}" in text


def test_show_status_without_kubectl_says_so_and_shows_local_progress(local_campaign, tmp_path,
                                                                       monkeypatch, capsys):
    root, config = local_campaign
    # Ages are relative to the real clock here, as show_status reads it.
    now = time.time()
    write_progress(root, config, 1, 1, "production", 500_000, 1_000_000, 100.0, 20.0, now=now)
    write_progress(root, config, 1, 2, "production", 300_000, 1_000_000, 100.0, 2 * HOUR, now=now)
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    assert status.show_status(all_jobs(config), config) == 0
    out = capsys.readouterr().out
    assert "kubectl is not on PATH: cluster state unknown, showing results only" in out
    assert f"synthetic-double-well: results in {root}" in out
    assert "running" in line_of(out, "pb-jm-synthetic-double-well-1-01")
    assert "stalled" in line_of(out, "pb-jm-synthetic-double-well-1-02")
    assert "missing" in line_of(out, "pb-jm-synthetic-double-well-1-03")
    assert "stalled windows (no progress for longer than 30m00s)" in out


def _setup_and_steered_results(root: Path):
    """Setup done; replica 1's pull done; replica 2 equilibrated and mid-pull; replica 3 not begun."""
    config = make_config(root, stage="steered", n_replicas=3)
    campaign = config.campaign
    env = {"PROTBENCH_N_WINDOWS": str(config.n_windows)}  # 4 windows
    # Setup is done when all three of its outputs are there (stages.STAGE_TABLE).
    products = [campaign.contacts_file, campaign.minimized_pdb, campaign.system_xml,
                campaign.steered_state(1), campaign.steered_state(2)]
    products += [campaign.window_pdb(1, w) for w in range(4)]
    products += [campaign.window_pdb(2, w) for w in range(3)]  # window 03 not reached yet
    for product in products:
        (root / product).parent.mkdir(parents=True, exist_ok=True)
        (root / product).write_text("product")
    jobs = [JobSpec("setup", None, None, job_name("jm", "synthetic", "double-well", "setup"),
                    "umbrella-scripts/setup-system.py", env, campaign.manifest("setup"))]
    jobs += [JobSpec("steered", r, None, job_name("jm", "synthetic", "double-well", "steered", r),
                     "umbrella-scripts/run-steered-md.py", env, campaign.manifest("steered", r))
             for r in (1, 2, 3)]
    return config, jobs


def test_setup_and_steered_jobs_are_finished_when_all_their_products_exist(tmp_path):
    root = tmp_path / "results"
    config, jobs = _setup_and_steered_results(root)
    progress = status.read_all_progress(LocalStore(root), config.campaign, jobs)
    rows = status.gather_status(jobs, config.campaign, progress, status.ClusterView(None), NOW)
    # Replica 2 has its equilibrated state but its pull has not saved every window yet.
    assert [row.state for row in rows] == ["finished", "finished", "missing", "missing"]
    assert "4 Jobs: 2 finished, 0 running, 0 stalled, 2 missing" in render(rows)


def test_from_the_bucket_steered_md_is_finished_by_its_last_window_structure(s3_server, tmp_path):
    root = tmp_path / "results"
    config, jobs = _setup_and_steered_results(root)
    client = boto3.client("s3")
    client.create_bucket(Bucket=config.bucket)
    for path in root.rglob("*"):
        if path.is_file():
            client.upload_file(str(path), config.bucket, f"results/{path.relative_to(root).as_posix()}")
    progress = status.read_all_progress(BucketStore(client, config.bucket),
                                        config.campaign, jobs)
    rows = status.gather_status(jobs, config.campaign, progress, status.ClusterView(None), NOW,
                                bucket=True)
    assert [row.state for row in rows] == ["finished", "finished", "missing", "missing"]


def test_brackets_in_messages_are_shown_as_written(tmp_path):
    config = make_config(tmp_path)
    reading = status.ProgressReading(None, "[Errno 13] Permission denied: '[bold]x'")
    row = status.window_status(window_job(config, 1, 0), reading, status.ClusterView(None), NOW)
    text = render([row], notes=["kubectl could not run ([Errno 2] No such file)"])
    assert "[Errno 13] Permission denied: '[bold]x'" in text
    assert "note: kubectl could not run ([Errno 2] No such file)" in text


# -- with the cluster ---------------------------------------------------------------------------


def test_kubectl_list_maps_to_job_states():
    jobs = parse_cluster_list(json.loads(KUBECTL_ANSWER.read_text()))
    prefix = "pb-jm-synthetic-double-well-"
    summary = {name[len(prefix):]: (job.state, job.detail, job.restarts, job.failed_pods)
               for name, job in jobs.items()}
    assert summary == {
        "1-00": ("Complete", "", 1, 0),
        "1-01": ("Running", "", 2, 1),
        "1-02": ("Failed", "BackoffLimitExceeded", 0, 51),
        "1-03": ("Pending", "Unschedulable", 0, 0),
        "2-00": ("Pending", "init: init-rclone", 0, 0),
        "2-01": ("Pending", "CrashLoopBackOff", 5, 0),
        "2-03": ("Suspended", "", 0, 0),
    }


@pytest.mark.parametrize("payload", [[], {"kind": "List"}, {"items": "x"}])
def test_a_payload_that_is_not_a_list_is_refused(payload):
    with pytest.raises(ValueError, match="List with 'items'"):
        parse_cluster_list(payload)


@pytest.fixture
def cluster_campaign(tmp_path):
    root = tmp_path / "results"
    config = make_config(root)
    now = time.time()
    write_progress(root, config, 1, 0, "finished", 1000, 1000, 120.0, 3 * HOUR, now)
    write_progress(root, config, 1, 1, "production", 500, 1000, 100.0, 10.0, now)
    write_progress(root, config, 1, 2, "production", 300, 1000, 100.0, 2 * HOUR, now)
    write_progress(root, config, 1, 3, "production", 300, 1000, 100.0, 3 * HOUR, now)
    write_progress(root, config, 2, 1, "production", 100, 1000, 100.0, 1 * HOUR, now)
    write_progress(root, config, 2, 2, "production", 200, 1000, 100.0, 2 * HOUR, now)
    return root, config


def test_status_with_the_cluster_combines_job_states_and_progress(cluster_campaign, fake_kubectl,
                                                                   capsys):
    root, config = cluster_campaign
    selector = status.campaign_selector(config)
    assert selector == "protbench.openforcefield.org/campaign=jm-synthetic-double-well"
    calls = fake_kubectl(selector, KUBECTL_ANSWER)
    cluster = status.query_cluster(selector)
    assert cluster.reachable and cluster.note == ""
    jobs = all_jobs(config)
    progress = status.read_all_progress(LocalStore(root), config.campaign, jobs)
    rows = rows_by_window(status.gather_status(jobs, config.campaign, progress, cluster, time.time()))
    assert {key: (row.state, row.job_state, row.restarts) for key, row in rows.items()} == {
        (1, 0): ("finished", "Complete", 1),
        (1, 1): ("running", "Running", 3),
        (1, 2): ("failed", "Failed", 51),
        (1, 3): ("pending", "Pending", 0),       # old progress, but waiting for a GPU: not a stall
        (2, 0): ("pending", "Pending", 0),
        (2, 1): ("pending", "Pending", 5),
        (2, 2): ("stalled", "no Job", None),
        (2, 3): ("pending", "Suspended", 0),
    }
    assert rows[2, 2].note == "no progress for 2h00m; no Job on the cluster: relaunch it"

    assert status.show_status(jobs, config) == 0
    out = capsys.readouterr().out
    assert "Pending (Unschedulable)" in line_of(out, "pb-jm-synthetic-double-well-1-03")
    assert "Failed (BackoffLimitExceeded)" in line_of(out, "pb-jm-synthetic-double-well-1-02")
    assert "Pending (CrashLoopBackOff)" in line_of(out, "pb-jm-synthetic-double-well-2-01")
    assert "8 windows: 1 finished, 1 running, 1 stalled, 0 missing, 4 pending, 1 failed" in out
    assert "cluster" not in out.split("8 windows")[1]  # no note about an unreachable cluster
    assert calls.read_text().splitlines() == [f"get jobs,pods -l {selector} -o json"] * 2


def test_a_failing_kubectl_leaves_the_results_view(cluster_campaign, fake_kubectl, monkeypatch,
                                                   capsys):
    root, config = cluster_campaign
    fake_kubectl(status.campaign_selector(config), KUBECTL_ANSWER)
    monkeypatch.setenv("FAKE_KUBECTL_ERROR", "Unable to connect to the server: dial tcp: i/o timeout")
    assert status.show_status(all_jobs(config), config) == 0
    out = capsys.readouterr().out
    assert ("kubectl get failed (Unable to connect to the server: dial tcp: i/o timeout): cluster "
            "unreachable, showing results only") in out
    assert "running" in line_of(out, "pb-jm-synthetic-double-well-1-01")
    assert "stalled" in line_of(out, "pb-jm-synthetic-double-well-1-02")


def test_unusable_kubectl_output_is_reported(cluster_campaign, fake_kubectl, tmp_path):
    _, config = cluster_campaign
    garbage = tmp_path / "garbage.json"
    garbage.write_text("<html>proxy error</html>")
    fake_kubectl(status.campaign_selector(config), garbage)
    cluster = status.query_cluster(status.campaign_selector(config))
    assert not cluster.reachable
    assert cluster.note.startswith("kubectl returned unusable output")


def test_kubectl_can_be_left_out(cluster_campaign, fake_kubectl, capsys):
    root, config = cluster_campaign
    calls = fake_kubectl(status.campaign_selector(config), KUBECTL_ANSWER)
    assert status.show_status(all_jobs(config), config, use_kubectl=False) == 0
    assert "cluster not asked" in capsys.readouterr().out
    assert not calls.exists()


# -- from the bucket ------------------------------------------------------------------------


def test_status_reads_progress_objects_from_the_bucket(s3_server, tmp_path, monkeypatch, capsys):
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    root = tmp_path / "results"
    config = make_config(tmp_path / "nowhere")
    now = time.time()
    write_progress(root, config, 1, 0, "finished", 1000, 1000, 120.0, 3 * HOUR, now)
    # An hour old: stalled in a pod, but the bucket only hears at the pod's uploads every
    # 30 minutes, so from there it is still running until three uploads are missed.
    write_progress(root, config, 1, 1, "production", 500, 1000, 100.0, 1 * HOUR, now)
    write_progress(root, config, 1, 2, "production", 500, 1000, 100.0, 2 * HOUR, now)
    client = boto3.client("s3")
    client.create_bucket(Bucket=config.bucket)
    keys = []
    for path in root.rglob("*.json"):
        key = f"results/{path.relative_to(root).as_posix()}"
        client.upload_file(str(path), config.bucket, key)
        keys.append(key)
    fetched = []
    client.meta.events.register("before-parameter-build.s3.GetObject",
                                lambda params, **_: fetched.append(params["Key"]))
    jobs = all_jobs(config)
    progress = status.read_all_progress(BucketStore(client, config.bucket), config.campaign, jobs)
    assert sorted(fetched) == sorted(f"results/{config.campaign.window_files(r, w).progress}"
                                     for r in (1, 2) for w in range(4))
    assert progress[jobs[1].name].progress.step == 500

    monkeypatch.setenv("PROTBENCH_STATUS_SOURCE", "bucket")  # as the launcher's --status calls it
    assert status.show_status(jobs, config) == 0
    out = capsys.readouterr().out
    assert "kubectl is not on PATH" in out
    assert f"results in s3://{config.bucket}/results" in out
    assert "finished" in line_of(out, "pb-jm-synthetic-double-well-1-00")
    assert "running" in line_of(out, "pb-jm-synthetic-double-well-1-01")
    assert "stalled" in line_of(out, "pb-jm-synthetic-double-well-1-02")
    assert "missing" in line_of(out, "pb-jm-synthetic-double-well-2-00")


def test_from_the_bucket_the_stall_threshold_follows_the_pod_uploads(tmp_path):
    config = make_config(tmp_path)
    progress = Progress("production", 500, 1000, 100.0, NOW - 2 * HOUR)
    reading = status.ProgressReading(progress)
    cluster = status.ClusterView(None)
    default = window_job(config, 1, 1)
    assert status.stall_threshold_s(default, progress, bucket=True) == 90 * MINUTE
    assert status.window_status(default, reading, cluster, NOW, bucket=True).state == "stalled"
    hourly = window_job(config, 1, 1, PROTBENCH_SYNC_MINUTES="60")
    assert status.window_status(hourly, reading, cluster, NOW, bucket=True).state == "running"
    # Uploads only when the pod ends: the bucket cannot tell a stall.
    final_only = window_job(config, 1, 1, PROTBENCH_SYNC_MINUTES="0")
    assert status.window_status(final_only, reading, cluster, NOW, bucket=True).state == "running"
    assert status.window_status(final_only, reading, cluster, NOW).state == "stalled"


def test_bucket_errors_show_as_unreadable_rows(s3_server, tmp_path):
    # A bucket gone after --status opened it (show_status refuses one missing from the start).
    config = make_config(tmp_path, bucket="no-such-bucket")
    jobs = all_jobs(config)[:1]
    progress = status.read_all_progress(BucketStore(boto3.client("s3"), config.bucket), config.campaign, jobs)
    out = render(status.gather_status(jobs, config.campaign, progress, status.ClusterView(None), NOW))
    assert "unreadable" in line_of(out, "pb-jm-synthetic-double-well-1-00")
    error = line_of(out, "error: pb-jm-synthetic-double-well-1-00")
    assert "s3://no-such-bucket/results/synthetic-double-well/replica-1/window-00" in error
    assert "NoSuchBucket" in error


def test_status_from_a_bucket_that_does_not_exist_is_refused_naming_it(s3_server, tmp_path, capsys):
    config = make_config(tmp_path, bucket="no-such-bucket")
    assert status.show_status(all_jobs(config), config, use_kubectl=False, source="bucket") == 2
    captured = capsys.readouterr()
    assert "bucket 'no-such-bucket' at" in captured.err and "does not exist" in captured.err
    assert "check BUCKET ('no-such-bucket') in run-umbrella-windows.py" in captured.err
    assert "pb-jm-synthetic-double-well-1-00" not in captured.out  # no table of unreadable rows


@pytest.mark.parametrize("source,bucket,message", [
    ("s3", "b", "status source 's3' is unknown; use 'local' or 'bucket'"),
    ("bucket", "", "reading status from the bucket needs BUCKET set in run-umbrella-windows.py"),
])
def test_bad_status_settings_are_refused(tmp_path, capsys, source, bucket, message):
    config = make_config(tmp_path, bucket=bucket)
    assert status.show_status(all_jobs(config), config, use_kubectl=False, source=source) == 2
    assert message in capsys.readouterr().err


def test_durations_read_naturally():
    assert [status.format_duration(s) for s in (None, 5, 95, 3 * 3600 + 61, 90000)] == [
        "", "5s", "1m35s", "3h01m", "1d01h"]


def test_bucket_status_without_credentials_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RCLONE_CONFIG", str(tmp_path / "no-rclone.conf"))
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name, raising=False)
    config = make_config(tmp_path, rclone_remote="nrp")
    assert status.show_status(all_jobs(config), config, use_kubectl=False, source="bucket") == 2
    err = capsys.readouterr().err
    assert "no credentials for the bucket" in err and "AWS_ACCESS_KEY_ID" in err


def launcher_checkout(tmp_path: Path, n_replicas: int = 1, n_windows: int = 3) -> Path:
    """The real launcher, template and package in a checkout of their own, set to a synthetic campaign."""
    import re
    import shutil

    repo = Path(__file__).resolve().parents[2]
    checkout = tmp_path / "checkout"
    shutil.copytree(repo / "umbrella-scripts", checkout / "umbrella-scripts",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(repo / "k8s_template.yaml", checkout)
    launcher = (repo / "run-umbrella-windows.py").read_text()
    for constant, value in (("TARGET", '"synthetic"'), ("FF", '"double-well"'), ("N_REPLICAS", str(n_replicas)),
                            ("N_WINDOWS", str(n_windows)), ("INITIALS", '"jm"'), ("EXTRA_ENV", repr(WINDOW_ENV))):
        launcher, count = re.subn(rf"^{constant} = .*$", f"{constant} = {value}", launcher, flags=re.M)
        assert count == 1, constant
    (checkout / "run-umbrella-windows.py").write_text(launcher)
    return checkout


#: kubectl as it answers with no cluster to reach (its words when no kubeconfig points at one),
#: recording each call: a local campaign's status must never run it.
REFUSING_KUBECTL = """#!/bin/sh
echo "$*" >> "{log}"
echo "The connection to the server localhost:8080 was refused - did you specify the right host or port?" >&2
exit 1
"""


def launcher_path(tmp_path: Path, kubectl: bool = False) -> tuple[Path, Path]:
    """A PATH directory with Python, and a refusing kubectl when asked; and the kubectl's call log."""
    import sys

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    if not (bin_dir / "python3").exists():
        (bin_dir / "python3").symlink_to(sys.executable)
    log = tmp_path / "kubectl-calls"
    if kubectl:
        (bin_dir / "kubectl").write_text(REFUSING_KUBECTL.format(log=log))
        (bin_dir / "kubectl").chmod(0o755)
    return bin_dir, log


def run_launcher(checkout: Path, bin_dir: Path, *args: str, **env: str):
    import subprocess
    import sys

    return subprocess.run([sys.executable, str(checkout / "run-umbrella-windows.py"), *args],
                          capture_output=True, text=True, cwd=checkout, timeout=120,
                          env={"PATH": str(bin_dir), "HOME": str(checkout.parent), **env})


def test_the_launchers_status_option_shows_the_table(tmp_path):
    """The documented entry: ``./run-umbrella-windows.py --status`` in a checkout of its own."""
    checkout = launcher_checkout(tmp_path)
    config = make_config(checkout / "results", n_replicas=1, n_windows=3)
    now = time.time()
    write_progress(config.local_result_dir, config, 1, 0, "finished", 1000, 1000, 120.0, HOUR, now)
    write_progress(config.local_result_dir, config, 1, 1, "production", 400, 1000, 90.0, 30.0, now)
    bin_dir, _log = launcher_path(tmp_path)  # a PATH with Python but no kubectl
    result = run_launcher(checkout, bin_dir, "--status")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "finished" in line_of(out, "pb-jm-synthetic-double-well-1-00")
    assert "running" in line_of(out, "pb-jm-synthetic-double-well-1-01")
    assert "missing" in line_of(out, "pb-jm-synthetic-double-well-1-02")
    assert "3 windows: 1 finished, 1 running, 0 stalled, 1 missing; 90.0 ns/day in all" in out
    assert "kubectl is not on PATH" in out


def cells_by_job(text: str) -> dict[str, list[str]]:
    """Each table row of ``text`` by its Job: the cells after the name, stripped."""
    rows = [[cell.strip() for cell in line.strip("│").split("│")] for line in text.splitlines()
            if line.startswith("│ pb-")]
    return {row[0]: row[1:] for row in rows}


def header_of(text: str) -> list[str]:
    """The column headers of the one table in ``text``."""
    (line,) = [line for line in text.splitlines() if line.startswith("┃ Job ")]
    return [cell.strip() for cell in line.strip("┃").split("┃")]


def test_a_local_campaigns_status_runs_no_kubectl_and_shows_every_stage_with_local_columns(tmp_path):
    checkout = launcher_checkout(tmp_path, n_replicas=2, n_windows=3)
    root = checkout / "results"
    config = make_config(root, n_windows=3)
    campaign = config.campaign
    # setup done; replica 1's pull done; replica 2 pulling (its record); window 1-00 done, 1-01 running
    for product in [campaign.contacts_file, campaign.minimized_pdb, campaign.system_xml, campaign.steered_state(1),
                    *(campaign.window_pdb(1, w) for w in range(3)), campaign.steered_state(2)]:
        (root / product).parent.mkdir(parents=True, exist_ok=True)
        (root / product).write_text("product")
    now = time.time()
    Progress("pulling", 400, 1000, 40.0, now - 20.0).write(root / campaign.steered_files(2).progress)
    write_progress(root, config, 1, 0, "finished", 1000, 1000, 120.0, HOUR, now)
    write_progress(root, config, 1, 1, "production", 400, 1000, 90.0, 30.0, now)
    bin_dir, kubectl_log = launcher_path(tmp_path, kubectl=True)
    assert run_launcher(checkout, bin_dir, "--status").returncode == 0
    assert kubectl_log.exists()  # the stand-in is on PATH: a cluster campaign's --status asks it
    kubectl_log.unlink()

    result = run_launcher(checkout, bin_dir, "--local", "--status")

    assert result.returncode == 0, result.stderr
    assert not kubectl_log.exists(), kubectl_log.read_text()
    out = result.stdout
    assert "refused" not in out + result.stderr and "kubectl" not in out
    assert header_of(out) == ["Job", "stage", "R", "W", "state", "phase", "steps", "done", "ns/day", "ETA",
                              "updated", "note"]
    name = "pb-jm-synthetic-double-well-"
    cells = cells_by_job(out)
    assert list(cells) == [f"{name}{job}" for job in ("setup", "1-steered", "2-steered", "1-00", "1-01", "1-02",
                                                        "2-00", "2-01", "2-02")]
    assert cells[f"{name}setup"][:4] == ["setup", "", "", "finished"]
    assert cells[f"{name}1-steered"][:4] == ["steered", "1", "", "finished"]
    assert cells[f"{name}2-steered"][:8] == ["steered", "2", "", "running", "pulling", "400/1000", "40%", "40.0"]
    assert cells[f"{name}1-00"][:5] == ["window", "1", "00", "finished", "finished"]
    assert cells[f"{name}1-01"][:5] == ["window", "1", "01", "running", "production"]
    for window in ("1-02", "2-00", "2-01", "2-02"):
        assert cells[f"{name}{window}"][3] == "missing"
    assert "9 Jobs: 3 finished, 2 running, 0 stalled, 4 missing; 130.0 ns/day in all" in out


def test_a_local_or_demo_campaign_without_results_says_so_once_with_the_command_to_run(tmp_path):
    checkout = launcher_checkout(tmp_path)
    bin_dir, kubectl_log = launcher_path(tmp_path, kubectl=True)
    for options, folder, command in (
            (["--local", "--status"], "results/synthetic-double-well", "./run-umbrella-windows.py --local"),
            (["--demo", "--status"], "demo-results/villin-amber14-vacuum", "./run-umbrella-windows.py --demo --local")):
        result = run_launcher(checkout, bin_dir, *options)
        assert result.returncode == 0, result.stderr
        assert result.stdout == f"no results yet under {checkout / folder}: run {command} first\n"
        assert result.stderr == ""
    (checkout / "results" / "synthetic-double-well").mkdir(parents=True)  # an empty folder holds nothing either
    assert run_launcher(checkout, bin_dir, "--local", "--status").stdout.startswith("no results yet under")
    assert not kubectl_log.exists()


def test_a_local_campaigns_status_refuses_the_bucket_as_its_source(tmp_path):
    checkout = launcher_checkout(tmp_path)
    bin_dir, kubectl_log = launcher_path(tmp_path, kubectl=True)
    for args, env in ((["--demo", "--status", "--status-source", "bucket"], {}),
                      (["--local", "--status"], {"PROTBENCH_STATUS_SOURCE": "bucket"})):
        result = run_launcher(checkout, bin_dir, *args, **env)
        assert result.returncode == 2
        assert ("--status-source bucket (or PROTBENCH_STATUS_SOURCE=bucket) follows a cluster campaign; a --local "
                "or --demo one has its results in LOCAL_RESULT_DIR only: drop it") in " ".join(result.stderr.split())
    assert run_launcher(checkout, bin_dir, "--dry-run", "--local").returncode == 2  # still one mode at a time
    assert not kubectl_log.exists()


def test_a_cluster_status_with_an_empty_results_folder_says_where_else_to_look(tmp_path, capsys):
    config = make_config(tmp_path / "results")
    assert status.show_status(all_jobs(config), config, use_kubectl=False) == 0
    out = capsys.readouterr().out
    assert "missing" in line_of(out, "pb-jm-synthetic-double-well-1-00")  # the Jobs are still listed
    assert (f"note: no results under {tmp_path / 'results' / 'synthetic-double-well'} yet: follow a cluster "
            f"campaign from the bucket with --status-source bucket") in " ".join(out.split())


# -- run records: pods, GPUs, GPU-hours and NRP's usage rule ---------------------------------------

GIB = 2**30


def write_run_record(root: Path, config: CampaignConfig, replica: int, window: int, pod: str, *,
                     started: float, ended: float, finished: bool = True, first=None, last=None,
                     gpu="NVIDIA A100-SXM4-80GB", gpus: int = 1, utilization=None, samples: int = 0,
                     peak_memory=None, memory_request=8 * GIB, exit_status=0):
    path = root / config.campaign.run_record("window", replica, window, pod)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"kind": "run-record", "version": 1, "pod": pod, "node": "node-1", "stage": "window",
              "replica": replica, "window": window, "started_unix": started, "updated_unix": ended,
              "finished_unix": ended if finished else None,
              "gpu": {"model": gpu, "driver": "550.54", "count": gpus, "uuids": []} if gpu else None,
              "first_step": first and {"phase": first[0], "step": first[1]},
              "last_step": last and {"phase": last[0], "step": last[1]},
              "exit_status": exit_status if finished else None,
              "gpu_utilization_mean_percent": utilization, "gpu_utilization_samples": samples,
              "peak_memory_bytes": peak_memory, "memory_request_bytes": memory_request}
    path.write_text(json.dumps(record))
    return path


def usage_rows(root: Path, config: CampaignConfig, jobs: list[JobSpec]):
    reader = LocalStore(root)
    progress = status.read_all_progress(reader, config.campaign, jobs)
    rows = status.gather_status(jobs, config.campaign, progress, status.ClusterView(None), NOW)
    return status.with_usage(rows, status.read_all_run_records(reader, config.campaign, jobs))


@pytest.fixture
def recorded_campaign(tmp_path):
    """Window 1-00: preempted after 600k steps, resumed from its checkpoint at 500k on another GPU.
    Window 1-01: one pod, idling its GPU and using a tenth of its memory. Window 1-02: lost with
    its node (no final record). The rest: no records."""
    root = tmp_path / "results"
    config = make_config(root)
    write_progress(root, config, 1, 0, "finished", 1_000_000, 1_000_000, 100.0, 60.0)
    write_run_record(root, config, 1, 0, "pod-a", started=NOW - 5 * HOUR, ended=NOW - 3 * HOUR,
                     first=("production", 0), last=("production", 600_000), exit_status=143,
                     utilization=92.0, samples=240, peak_memory=3 * GIB)
    write_run_record(root, config, 1, 0, "pod-b", started=NOW - 3 * HOUR, ended=NOW - 1 * HOUR,
                     gpu="NVIDIA L40", first=("production", 500_000), last=("finished", 1_000_000),
                     utilization=88.0, samples=240, peak_memory=4 * GIB)
    write_progress(root, config, 1, 1, "production", 500_000, 1_000_000, 100.0, 20.0)
    write_run_record(root, config, 1, 1, "pod-c", started=NOW - 2 * HOUR, ended=NOW - 60, finished=False,
                     first=("production", 0), last=("production", 400_000), utilization=23.0, samples=100,
                     peak_memory=0.8 * GIB)
    write_run_record(root, config, 1, 2, "pod-d", started=NOW - 4 * HOUR, ended=NOW - 2 * HOUR,
                     finished=False, gpu=None, first=("production", 0), last=("production", 100_000))
    return root, config


def test_run_records_give_each_window_its_pods_current_gpu_and_gpu_hours(recorded_campaign):
    root, config = recorded_campaign
    rows = rows_by_window(usage_rows(root, config, all_jobs(config)))

    assert (rows[1, 0].pods, rows[1, 0].gpu) == (2, "NVIDIA L40")  # the newest pod's GPU
    assert rows[1, 0].gpu_hours == pytest.approx(4.0)
    # pod-b redid 500k..600k at what a step cost pod-a: 100k steps * (2 h / 600k steps)
    assert rows[1, 0].lost_gpu_hours == pytest.approx(2.0 / 6)
    assert (rows[1, 1].pods, rows[1, 1].gpu, rows[1, 1].lost_gpu_hours) == (1, "NVIDIA A100-SXM4-80GB", 0.0)
    assert rows[1, 1].gpu_hours == pytest.approx(2 - 60 / HOUR)  # a running pod: up to its last update
    assert rows[1, 2].gpu_hours == pytest.approx(2.0) and rows[1, 2].gpu == ""  # lost node: no nvidia-smi
    assert rows[1, 3].pods is None and rows[1, 3].gpu_hours is None  # no record at all

    totals = status.campaign_totals(list(rows.values()))
    assert totals.gpu_hours == pytest.approx(4.0 + 2 - 60 / HOUR + 2.0)
    text = render(list(rows.values()))
    assert "GPU-hours spent, 0.3 of them lost to work done again after restarts" in text
    assert f"{totals.gpu_hours:.1f} GPU-hours spent" in text
    assert "NVIDIA L40" in line_of(text, "pb-jm-synthetic-double-well-1-00")


def test_windows_breaking_nrps_usage_rule_are_flagged_and_others_not(recorded_campaign):
    root, config = recorded_campaign
    rows = rows_by_window(usage_rows(root, config, all_jobs(config)))

    assert rows[1, 1].usage_flags == ("GPU 23% < 40%", "memory 10% of request < 20%")
    assert "NRP usage: GPU 23% < 40%; NRP usage: memory 10% of request < 20%" in rows[1, 1].note
    assert rows[1, 0].usage_flags == ()  # 90 % busy, half its memory
    assert rows[1, 2].usage_flags == ()  # nothing measured: no flag, no guess


def test_show_status_notes_the_windows_to_resize_and_sums_the_gpu_hours(recorded_campaign, monkeypatch,
                                                                       capsys):
    root, config = recorded_campaign
    monkeypatch.setattr(status.time, "time", lambda: NOW)
    assert status.show_status(all_jobs(config), config, use_kubectl=False) == 0
    out = capsys.readouterr().out
    assert "1 windows break NRP's usage rule" in out and "'Sizing the requests'" in out
    assert "NRP usage: GPU 23%" in " ".join(out.split())  # the note column may wrap
    assert "lost to work done again after restarts" in out


@pytest.mark.parametrize("previous_last, resumed_first, lost", [
    (("production", 600), ("production", 500), 100 * 2.0 / 600),  # resumed from an older checkpoint
    (("production", 600), ("production", 600), 0.0),                 # from the very last step
    (("production", 600), ("production", 700), 0.0),                 # ahead (a later checkpoint)
    (("equilibration", 600), ("production", 100), 0.0),              # another phase: nothing redone
    (("finished", 600), ("production", 500), 100 * 2.0 / 600),      # a finished record is production
    (None, ("production", 500), 0.0),                                 # unknown: never guessed
], ids=["older checkpoint", "same step", "ahead", "other phase", "finished", "unknown"])
def test_gpu_hours_lost_count_only_steps_simulated_twice(previous_last, resumed_first, lost):
    from protbench_nrp.usage import window_usage

    def record(name, started, first, last):
        return {"pod": name, "started_unix": started, "finished_unix": started + 2 * HOUR, "gpu": None,
                "first_step": first and {"phase": first[0], "step": first[1]},
                "last_step": last and {"phase": last[0], "step": last[1]}}

    records = [record("b", 3 * HOUR, resumed_first, ("production", 900)),
               record("a", 0.0, ("production", 0) if previous_last else None, previous_last)]
    summed = window_usage(records)  # any order: sorted by start
    assert [pod.pod for pod in summed.per_pod] == ["a", "b"]
    assert summed.lost_gpu_hours == pytest.approx(lost)
    assert summed.gpu_hours == pytest.approx(4.0)


def test_gpu_hours_count_every_gpu_a_pod_held():
    from protbench_nrp.usage import window_usage

    summed = window_usage([{"pod": "a", "started_unix": 0.0, "finished_unix": HOUR,
                            "gpu": {"model": "NVIDIA A10", "count": 2}}])
    assert summed.gpu_hours == pytest.approx(2.0)


def test_run_records_are_read_from_the_bucket_and_a_broken_one_is_reported(s3_server, tmp_path, capsys):
    root = tmp_path / "results"
    config = make_config(tmp_path / "nowhere")
    write_run_record(root, config, 1, 0, "pod-a", started=NOW - 2 * HOUR, ended=NOW - HOUR,
                     first=("production", 0), last=("production", 1000))
    broken = root / config.campaign.run_record("window", 1, 1, "pod-x")
    broken.parent.mkdir(parents=True, exist_ok=True)
    broken.write_text("{not json")
    client = boto3.client("s3")
    client.create_bucket(Bucket=config.bucket)
    for path in root.rglob("*.json"):
        client.upload_file(str(path), config.bucket, f"results/{path.relative_to(root).as_posix()}")
    reader = BucketStore(client, config.bucket)

    records, errors = status.read_run_records(reader, config.campaign.run_records_dir("window", 1, 0))
    assert [r["pod"] for r in records] == ["pod-a"] and errors == []
    records, errors = status.read_run_records(reader, config.campaign.run_records_dir("window", 1, 1))
    assert records == [] and len(errors) == 1 and "pod-x.json: not JSON" in errors[0]

    assert status.show_status(all_jobs(config)[:2], config, use_kubectl=False, source="bucket") == 0
    out = capsys.readouterr().out
    assert "1.0 GPU-hours spent" in out
    assert "pod-x.json: not JSON" in out
# -- what the window ran with ----------------------------------------------------------------------------


def test_eta_and_stall_threshold_use_what_the_window_recorded_not_the_jobs_environment(tmp_path):
    config = make_config(tmp_path)
    # The Job's environment says nothing: re-deriving would assume 1 fs, 10 ps frames and 500 ns.
    job = window_job(config, 1, 0)
    path = tmp_path / config.campaign.window_files(1, 0).progress
    Progress("equilibration", 100_000, 250_000, 2.0, NOW - 5.0, timestep_fs=2.0, frame_ps=100.0,
             steps_after_phase=1_000_000).write(path)
    reading = status.read_all_progress(LocalStore(tmp_path), config.campaign, [job])[job.name]
    row = status.window_status(job, reading, status.ClusterView(None, "not asked"), NOW)
    # 150 000 equilibration + 1 000 000 production steps, each taking the wall time of a 2 fs step at 2 ns/day
    assert row.eta_s == pytest.approx(1_150_000 * 2e-6 / 2.0 * 86400)
    # a 100 ps frame at 2 ns/day is 72 minutes apart
    assert row.stall_after_s == pytest.approx(status.STALL_UPDATES * 0.05 * 86400)


def test_a_progress_record_written_before_it_carried_the_timestep_still_reads(tmp_path):
    config = make_config(tmp_path)
    job = window_job(config, 1, 0, PROTBENCH_TIMESTEP="2")
    path = tmp_path / config.campaign.window_files(1, 0).progress
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"kind": "progress", "phase": "production", "step": 0, "total_steps": 1_000_000,
                                "ns_per_day": 100.0, "updated_unix": NOW - 5.0}))
    reading = status.read_all_progress(LocalStore(tmp_path), config.campaign, [job])[job.name]
    assert reading.progress is not None and reading.progress.timestep_fs is None
    row = status.window_status(job, reading, status.ClusterView(None, "not asked"), NOW)
    assert row.state == "running"
    assert row.eta_s == pytest.approx(1_000_000 * 2e-6 / 100.0 * 86400)
# -- what the cluster hides (issue 11) --------------------------------------------------------------


def _iso(unix: float) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(unix, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _job_item(name: str, status_: dict, backoff_limit: int = 10) -> dict:
    return {"kind": "Job", "metadata": {"name": name}, "spec": {"backoffLimit": backoff_limit},
            "status": status_}


def _pod_item(job: str, suffix: str, phase: str = "Running", node: str = "gpu-node-7", **metadata) -> dict:
    return {"kind": "Pod",
            "metadata": {"name": f"{job}-{suffix}", "ownerReferences": [{"kind": "Job", "name": job}],
                         **metadata},
            "spec": {"nodeName": node, "terminationGracePeriodSeconds": 600},
            "status": {"phase": phase, "containerStatuses": [
                {"name": "main", "restartCount": 0, "state": {"running": {}}}]}}


def _failed_pod(job: str, suffix: str, exit_code: int, finished: float) -> dict:
    pod = _pod_item(job, suffix, phase="Failed")
    pod["status"]["containerStatuses"][0]["state"] = {"terminated": {"exitCode": exit_code,
                                                                      "finishedAt": _iso(finished)}}
    return pod


def _failed(reason: str, message: str) -> dict:
    return {"failed": 1, "conditions": [{"type": "Failed", "status": "True", "reason": reason,
                                         "message": message}]}


@pytest.mark.parametrize("terminating_for_s, state", [(16 * MINUTE, "node lost?"), (14 * MINUTE, "running")])
def test_a_pod_terminating_past_its_grace_period_and_five_minutes_is_on_a_lost_node(tmp_path,
                                                                                   terminating_for_s, state):
    config = make_config(tmp_path)
    job = window_job(config, 1, 0)
    write_progress(tmp_path, config, 1, 0, "production", 500, 1000, 100.0, 20 * MINUTE)
    requested = NOW - terminating_for_s
    # deletionTimestamp is the delete request plus the grace period (600 s here)
    pod = _pod_item(job.name, "x7k2p", deletionTimestamp=_iso(requested + 600), deletionGracePeriodSeconds=600)
    cluster = status.ClusterView(parse_cluster_list(
        {"kind": "List", "items": [_job_item(job.name, {"active": 1}), pod]}, now=NOW))
    reading = status.read_all_progress(LocalStore(tmp_path), config.campaign, [job])[job.name]

    row = status.window_status(job, reading, cluster, NOW)

    assert row.state == state
    if state == "node lost?":
        assert row.note == (
            f"pod {job.name}-x7k2p on node gpu-node-7 has been terminating for 16m00s (grace period 10m00s): "
            f"confirm its node is NotReady (kubectl get node gpu-node-7), then kubectl delete pod --force "
            f"--grace-period=0 {job.name}-x7k2p: the Job then starts a new pod, which resumes from the bucket. "
            f"A node that is only partitioned may still upload when it comes back")
        text = render([row], notes=status.trouble_notes([row]))
        assert "node lost?" in line_of(text, job.name)
        assert "1 Jobs with a pod stuck terminating on a node that may be lost" in text


def test_a_launched_window_without_a_job_and_unfinished_results_is_lost_with_the_relaunch_command(tmp_path):
    config = make_config(tmp_path)
    jobs = [window_job(config, 1, w) for w in range(4)]
    write_progress(tmp_path, config, 1, 0, "production", 500, 1000, 100.0, 2 * HOUR)   # launched, Job gone
    write_progress(tmp_path, config, 1, 1, "finished", 1000, 1000, 100.0, 9 * 24 * HOUR)  # Job gone by its TTL
    write_progress(tmp_path, config, 1, 2, "production", 500, 1000, 100.0, 2 * HOUR)   # never launched here
    # (1, 3): launched, its first pod never wrote progress
    for window in (0, 1, 3):
        path = tmp_path / jobs[window].provenance_path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("kind: Job\n")
    progress = status.read_all_progress(LocalStore(tmp_path), config.campaign, jobs)
    empty_cluster = status.ClusterView({})

    rows = status.gather_status(jobs, config.campaign, progress, empty_cluster, NOW,
                                launched=status.launched_jobs(jobs, config))

    assert [row.state for row in rows] == ["lost", "finished", "stalled", "lost"]
    assert rows[0].note == ("launched, but no Job on the cluster and unfinished results: "
                            "./run-umbrella-windows.py --relaunch --stage window --replicas 1 --windows 0")
    assert rows[3].note.endswith("--relaunch --stage window --replicas 1 --windows 3")
    assert status.campaign_totals(rows).counts["lost"] == 2
    # with the cluster unknown, nothing is called lost
    unknown = status.gather_status(jobs, config.campaign, progress, status.ClusterView(None), NOW,
                                   launched=status.launched_jobs(jobs, config))
    assert "lost" not in [row.state for row in unknown]


FAILURES = {
    "FailJob rule": (
        _failed("PodFailurePolicy", "Container main for pod default/pb-x-abcde failed with exit code 66 "
                                    "matching FailJob rule at index 1"), [],
        "podFailurePolicy rule 1 (FailJob): exit 66: inputs missing from the bucket (an earlier stage has "
        "not written them): run that stage, then --relaunch"),
    "init container FailJob": (
        _failed("PodFailurePolicy", "Container init-rclone for pod default/pb-x-abcde failed with exit code 67 "
                                    "matching FailJob rule at index 1"), [],
        "podFailurePolicy rule 1 (FailJob): exit 67: bucket missing or credentials rejected"),
    "backoff limit": (
        _failed("BackoffLimitExceeded", "Job has reached the specified backoff limit"),
        [(1, NOW - 2 * HOUR), (75, NOW - HOUR)],
        "backoffLimit (10) reached by counted failures; last pod: exit 75: a transient error (bucket "
        "unreachable, upload failed) outlasted the in-place retries"),
    "killed": (
        _failed("BackoffLimitExceeded", "Job has reached the specified backoff limit"), [(137, NOW - HOUR)],
        "last pod: exit 137: killed by signal 9 (137: out of memory or SIGKILL)"),
    "deadline": (_failed("DeadlineExceeded", "Job was active longer than specified deadline"), [],
                 "DeadlineExceeded: Job was active longer than specified deadline"),
}


@pytest.mark.parametrize("job_status, pod_exits, expected", FAILURES.values(), ids=FAILURES.keys())
def test_a_failed_job_says_which_rule_or_exit_status_failed_it(tmp_path, job_status, pod_exits, expected):
    config = make_config(tmp_path)
    job = window_job(config, 1, 0)
    pods = [_failed_pod(job.name, f"p{index}", code, when) for index, (code, when) in enumerate(pod_exits)]
    cluster = status.ClusterView(parse_cluster_list(
        {"kind": "List", "items": [_job_item(job.name, job_status), *pods]}, now=NOW))

    row = status.window_status(job, status.ProgressReading(None), cluster, NOW)

    assert row.state == "failed"
    assert expected in row.note
    assert row.note.endswith("then ./run-umbrella-windows.py --relaunch --stage window --replicas 1 --windows 0")


def test_show_status_names_lost_and_failed_jobs_in_its_notes(tmp_path, fake_kubectl, capsys):
    root = tmp_path / "results"
    config = make_config(root)
    jobs = all_jobs(config)
    write_progress(root, config, 1, 0, "production", 500, 1000, 100.0, 2 * HOUR, time.time())
    path = root / jobs[0].provenance_path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("kind: Job\n")
    answer = tmp_path / "answer.json"
    answer.write_text(json.dumps({"kind": "List", "items": [_job_item(jobs[1].name, _failed(
        "PodFailurePolicy", "Container main for pod default/p failed with exit code 2 matching FailJob rule "
                            "at index 1"))]}))
    fake_kubectl(status.campaign_selector(config), answer)

    assert status.show_status(jobs, config) == 0

    out = capsys.readouterr().out
    assert "lost" in line_of(out, jobs[0].name)
    assert "failed" in line_of(out, jobs[1].name)
    assert "1 Jobs launched but gone from the cluster with unfinished results" in out
    assert "1 Failed Jobs; each row says which rule or exit status failed it" in out
    assert "podFailurePolicy rule 1 (FailJob): exit 2:" in out  # the note column wraps the rest


def test_a_complete_job_whose_setup_output_is_empty_shows_unfinished_in_status_with_what_to_do(
        tmp_path, fake_kubectl, capsys):
    # Kubernetes says Complete; the stage table says setup lacks its minimized structure.
    root = tmp_path / "results"
    config, jobs = _setup_and_steered_results(root)
    (root / config.campaign.minimized_pdb).write_text("")
    setup = jobs[0]
    answer = tmp_path / "kubectl-answer.json"
    answer.write_text(json.dumps({"kind": "List", "items": [_job_item(setup.name, {
        "succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]})]}))
    fake_kubectl(status.campaign_selector(config), answer)

    assert status.show_status(jobs[:1], config) == 0
    out = capsys.readouterr().out
    row = line_of(out, setup.name)
    assert "finished" not in row and "Complete" in row and "failed" in row
    assert "1 Jobs: 0 finished" in out
    assert "1 Jobs Complete on the cluster whose results are not done" in out
    # The row's note (wrapped in the table by the length of the results path): what, and what to do.
    progress = status.read_all_progress(LocalStore(root), config.campaign, jobs[:1])
    (shown,) = status.gather_status(jobs[:1], config.campaign, progress, status.query_cluster(
        status.campaign_selector(config)), time.time())
    assert shown.note.startswith("Job Complete, but its results are not: setup is not done: ")
    assert f"lacks {config.campaign.minimized_pdb.name}" in shown.note
    assert shown.note.endswith("replace it with ./run-umbrella-windows.py --extend --stage setup")
