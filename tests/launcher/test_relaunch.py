"""Create, never merge; --relaunch and --extend against a stand-in cluster that keeps Job states."""

from __future__ import annotations

import os
import subprocess

import pytest

from protbench_nrp.layout import Campaign, JobId
from protbench_nrp.records import Progress
from protbench_nrp.stages import production_steps

from .conftest import all_containers, documents, env_of, git

CAMPAIGN = Campaign("gb3", "null-0.0.3-pair-opc3")
NAME = "pb-tst-gb3-null-003-pair-opc3-1-{:02d}"
#: A finished record counts only with the production its window's settings ask for (stages.STAGE_TABLE);
#: the launched Jobs set no production setting, so the defaults'.
STEPS = production_steps(CAMPAIGN, JobId("window", 1, 0), {})


def provenance(repo, window: int, attempt: int | None = None):
    path = CAMPAIGN.manifest("window", 1, window) if attempt is None else \
        CAMPAIGN.manifest_attempt("window", 1, window, attempt)
    return repo.results / path


def write_progress(repo, window: int, phase: str) -> None:
    path = repo.results / CAMPAIGN.window_files(1, window).progress
    path.parent.mkdir(parents=True, exist_ok=True)
    Progress.now(phase, STEPS if phase == "finished" else 40, STEPS, 50.0).write(path)


def new_commit(repo, **constants) -> str:
    """What a scientist does before a relaunch: change something, commit, push."""
    repo.set_constants(**constants)
    commit = repo.commit("fix for the relaunch")
    git(repo.dir, "push", "--quiet", "origin", "main")
    return commit


@pytest.fixture
def launched(launcher_repo):
    """Replica 1 windows 0-2 launched once; the kubectl log cleared."""
    result = launcher_repo.run("--replicas", "1", "--windows", "0-2")
    assert result.returncode == 0, result.stderr
    assert launcher_repo.cluster_states() == {NAME.format(w): "active" for w in range(3)}
    (launcher_repo.log / "calls").unlink()
    return launcher_repo


def calls_since(repo) -> list[str]:
    return repo.kubectl_calls()


def selector_query() -> str:
    return "get jobs,pods -l protbench.openforcefield.org/campaign=tst-gb3-null-0.0.3-pair-opc3 -o json"


# -- create, never merge ---------------------------------------------------------------------

def test_an_existing_job_makes_a_launch_a_reported_error_never_unchanged(launched):
    moved = provenance(launched, 1).rename(launched.root / "moved-away.yaml")
    assert moved.exists()

    result = launched.run("--replicas", "1", "--windows", "1")

    assert result.returncode == 3, result.stdout + result.stderr
    assert "AlreadyExists" in result.stderr
    assert (f"a Job {NAME.format(1)} exists on the cluster already; nothing of it was changed" in result.stderr)
    assert "--relaunch" in result.stderr
    assert "Submitted (0)" in result.stderr
    assert calls_since(launched) == [f"create -f {provenance(launched, 1)}"]
    assert not provenance(launched, 1).exists()  # no file that looks like a created run
    assert provenance(launched, 1).with_name(provenance(launched, 1).name + ".failed").exists()


def test_the_stand_in_applies_like_kubectl_unchanged_configured_or_immutable(launched):
    kubectl = str(launched.bin / "kubectl")
    path = provenance(launched, 0)

    def run(*args):
        return subprocess.run([kubectl, *args], capture_output=True, text=True, env=launched.environment())

    assert run("apply", "-f", str(path)).stdout.strip() == f"job.batch/{NAME.format(0)} unchanged"
    changed = launched.root / "changed.yaml"
    changed.write_text(path.read_text().replace("backoffLimit: 10", "backoffLimit: 11"))
    assert run("apply", "-f", str(changed)).stdout.strip() == f"job.batch/{NAME.format(0)} configured"
    changed.write_text(path.read_text().replace("restartPolicy: Never", "restartPolicy: OnFailure"))
    immutable = run("apply", "-f", str(changed))
    assert immutable.returncode == 1 and "field is immutable" in immutable.stderr
    again = run("create", "-f", str(path))
    assert again.returncode == 1 and "AlreadyExists" in again.stderr
    gone = run("delete", "job", "no-such-job")
    assert gone.returncode == 1 and "NotFound" in gone.stderr


# -- --relaunch ------------------------------------------------------------------------------

def test_relaunch_replaces_a_failed_job_and_a_vanished_one_keeping_their_provenance(launched):
    old = {w: provenance(launched, w).read_bytes() for w in (0, 1)}
    launched.set_job(NAME.format(0), "failed", reason="PodFailurePolicy")
    launched.set_job(NAME.format(1), None)  # deleted by its TTL, or by hand
    write_progress(launched, 0, "production")
    commit = new_commit(launched, EXTRA_ENV={"PROTBENCH_SYNC_MINUTES": "20"})

    result = launched.run("--relaunch", "--replicas", "1", "--windows", "0-1")

    assert result.returncode == 0, result.stdout + result.stderr
    assert calls_since(launched) == [
        selector_query(),  # one question to the cluster, for every Job
        f"delete job {NAME.format(0)} --cascade=foreground --wait=true --timeout=180s",
        f"create -f {provenance(launched, 0)}",
        f"create -f {provenance(launched, 1)}",
    ]
    for window in (0, 1):
        assert provenance(launched, window, attempt=1).read_bytes() == old[window]
        assert commit in provenance(launched, window).read_text()
        assert f"kept the old provenance as {provenance(launched, window, attempt=1)}" in result.stdout
    assert launched.cluster_states() == {NAME.format(w): "active" for w in range(3)}
    created = launched.cluster()[NAME.format(0)]["manifest"]
    container = created["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "PROTBENCH_SYNC_MINUTES", "value": "20"} in container["env"]

    # It fails again: a second relaunch keeps attempt 1 and adds attempt 2.
    second = provenance(launched, 0).read_bytes()
    launched.set_job(NAME.format(0), "failed")
    result = launched.run("--relaunch", "--replicas", "1", "--windows", "0")
    assert result.returncode == 0, result.stdout + result.stderr
    assert provenance(launched, 0, attempt=1).read_bytes() == old[0]
    assert provenance(launched, 0, attempt=2).read_bytes() == second
    assert not provenance(launched, 0, attempt=3).exists()


def _active(repo):
    repo.set_job(NAME.format(0), "active")


def _suspended(repo):
    repo.set_job(NAME.format(0), "suspended")


def _complete(repo):
    repo.set_job(NAME.format(0), "complete")


def _gone_but_finished(repo):
    repo.set_job(NAME.format(0), None)
    write_progress(repo, 0, "finished")


def _failed_but_finished(repo):
    repo.set_job(NAME.format(0), "failed")
    write_progress(repo, 0, "finished")


REFUSALS = {
    "active": (_active, "its Job is active (Running); wait for it"),
    "suspended": (_suspended, "its Job is active (Suspended)"),
    "complete": (_complete, "its Job is Complete; run it further with --extend"),
    "gone but finished": (_gone_but_finished, "its results are finished (Job absent); run it further with --extend"),
    "failed but finished": (_failed_but_finished, "its results are finished (Job failed)"),
}


@pytest.mark.parametrize("arrange, message", REFUSALS.values(), ids=REFUSALS.keys())
def test_relaunch_refuses_what_it_cannot_replace_naming_the_state_with_nothing_changed(launched, arrange,
                                                                                      message):
    launched.set_job(NAME.format(1), "failed")  # replaceable, but the launch is refused as a whole
    arrange(launched)
    cluster, files = launched.cluster(), launched.snapshot()

    result = launched.run("--relaunch", "--replicas", "1", "--windows", "0-1")

    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 of these Jobs cannot be replaced with --relaunch; nothing was changed" in result.stderr
    assert f"{NAME.format(0)}: {message}" in result.stderr
    assert NAME.format(1) not in result.stderr
    assert calls_since(launched) == [selector_query()]
    assert launched.cluster() == cluster
    assert launched.snapshot() == files


def test_relaunch_refuses_a_job_never_launched(launched):
    result = launched.run("--relaunch", "--replicas", "1", "--windows", "3")
    assert result.returncode == 1
    assert f"{NAME.format(3)}: never launched (no {provenance(launched, 3)}); launch it without --relaunch" \
        in result.stderr
    assert launched.cluster_states() == {NAME.format(w): "active" for w in range(3)}


def test_extend_replaces_a_complete_job_of_a_finished_window(launched):
    launched.set_job(NAME.format(2), "complete")
    write_progress(launched, 2, "finished")
    old = provenance(launched, 2).read_bytes()
    new_commit(launched, EXTRA_ENV={"PROTBENCH_PRODUCTION_LENGTH": "1000"})

    result = launched.run("--extend", "--replicas", "1", "--windows", "2")

    assert result.returncode == 0, result.stdout + result.stderr
    assert f"deleted the old complete Job {NAME.format(2)}" in result.stdout
    assert provenance(launched, 2, attempt=1).read_bytes() == old
    assert "PROTBENCH_PRODUCTION_LENGTH" in provenance(launched, 2).read_text()
    assert launched.cluster_states()[NAME.format(2)] == "active"


def test_extend_still_refuses_an_active_job(launched):
    result = launched.run("--extend", "--replicas", "1", "--windows", "2")
    assert result.returncode == 1
    assert f"{NAME.format(2)}: its Job is active" in result.stderr and "with --extend; nothing was changed" \
        in result.stderr


@pytest.mark.parametrize("mode, message", [
    ("fail", "is forbidden"),
    ("timeout", "timed out waiting for the condition"),
])
def test_a_delete_that_fails_or_times_out_changes_nothing_else(launched, mode, message):
    launched.set_job(NAME.format(0), "failed")
    launched.set_job(NAME.format(1), "failed")
    cluster, files = launched.cluster(), launched.snapshot()

    result = launched.run("--relaunch", "--replicas", "1", "--windows", "0-1", delete=mode)

    assert result.returncode == 3, result.stdout + result.stderr
    assert f"kubectl delete job {NAME.format(0)} failed or did not finish within 180s" in result.stderr
    assert message in result.stderr
    assert f"nothing of {NAME.format(0)} was changed" in result.stderr
    assert "Submitted (0)" in result.stderr and "Not submitted (2)" in result.stderr
    assert [call.split()[0] for call in calls_since(launched)] == ["get", "delete"]
    assert launched.cluster() == cluster
    assert launched.snapshot() == files


def test_a_plain_launch_over_existing_provenance_is_still_refused(launched):
    launched.set_job(NAME.format(0), "failed")
    result = launched.run("--replicas", "1", "--windows", "0")
    assert result.returncode == 1
    assert "1 of these Jobs were launched before" in result.stderr
    assert "replace a Failed or vanished Job with --relaunch" in result.stderr
    assert calls_since(launched) == []


def test_relaunch_after_a_failed_create_finds_the_archived_provenance(launched):
    launched.set_job(NAME.format(0), "failed")
    old = provenance(launched, 0).read_bytes()
    first = launched.run("--relaunch", "--replicas", "1", "--windows", "0",
                         fail_at=int((launched.log / "count").read_text()) + 3)  # get, delete, then the create fails
    assert first.returncode == 3, first.stdout + first.stderr
    assert provenance(launched, 0, attempt=1).read_bytes() == old
    assert not provenance(launched, 0).exists()
    assert NAME.format(0) not in launched.cluster_states()

    again = launched.run("--relaunch", "--replicas", "1", "--windows", "0")
    assert again.returncode == 0, again.stdout + again.stderr
    assert provenance(launched, 0, attempt=1).read_bytes() == old
    assert not provenance(launched, 0, attempt=2).exists()
    assert launched.cluster_states()[NAME.format(0)] == "active"
    assert os.path.exists(provenance(launched, 0))


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory):
    """A real S3 server (moto) on loopback; see tests/pod/s3server.py."""
    from tests.pod.s3server import MotoServer

    server = MotoServer(tmp_path_factory.mktemp("moto") / "moto_server.log").start()
    yield server
    server.stop()


def test_with_preflight_relaunch_reads_from_the_bucket_which_windows_are_finished(launched, s3_server, tmp_path):
    from tests.pod.s3server import Bucket

    from .test_launch import write_rclone_config

    bucket = Bucket(s3_server, "relaunch-test").create()
    new_commit(launched, BUCKET=bucket.name)
    write_rclone_config(launched, s3_server.endpoint, s3_server.access_key_id, s3_server.secret_access_key)
    for key in (CAMPAIGN.minimized_pdb, CAMPAIGN.contacts_file, CAMPAIGN.system_xml, CAMPAIGN.steered_state(1),
                CAMPAIGN.window_pdb(1, 0), CAMPAIGN.window_pdb(1, 1)):  # the windows' inputs, for preflight
        bucket.client.put_object(Bucket=bucket.name, Key=f"results/{key}", Body=b"input\n")
    finished = tmp_path / "finished.json"
    Progress.now("finished", STEPS, STEPS, 50.0).write(finished)
    bucket.client.put_object(Bucket=bucket.name, Key=f"results/{CAMPAIGN.window_files(1, 1).progress}",
                             Body=finished.read_bytes())
    for window in (0, 1):
        launched.set_job(NAME.format(window), "failed")
    write_progress(launched, 1, "production")  # an old local copy: the bucket's word counts

    refused = launched.run("--relaunch", "--replicas", "1", "--windows", "0-1", skip_preflight=False)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert f"{NAME.format(1)}: its results are finished (Job failed)" in refused.stderr
    assert NAME.format(0) + ":" not in refused.stderr

    result = launched.run("--relaunch", "--replicas", "1", "--windows", "0", skip_preflight=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert provenance(launched, 0, attempt=1).exists()


def test_relaunch_replaces_a_failed_job_whose_finished_record_is_shorter_than_its_settings_now_ask(launched):
    # The stage table's check (stages.is_complete), not the record's phase alone: a window that
    # finished a shorter production than its Job now asks for is not done, so --relaunch runs it on.
    launched.set_job(NAME.format(0), "failed")
    write_progress(launched, 0, "finished")
    new_commit(launched, EXTRA_ENV={"PROTBENCH_PRODUCTION_LENGTH": "1000"})

    result = launched.run("--relaunch", "--replicas", "1", "--windows", "0")

    assert result.returncode == 0, result.stdout + result.stderr
    assert calls_since(launched)[-1] == f"create -f {provenance(launched, 0)}"
    assert launched.cluster_states()[NAME.format(0)] == "active"


def test_the_analysis_command_for_cluster_results_replaces_the_window_with_the_longer_production(launched):
    """What to run next, for results of the cluster, is a command --extend accepts and carries out."""
    import shlex

    from protbench_nrp.analysis import Extension, NextSteps

    launched.set_job(NAME.format(2), "complete")
    write_progress(launched, 2, "finished")
    steps = NextSteps([Extension((2,), 1000.0, 2.0)], 0.5, 0.4, [], (1,), 31, origin="cluster")
    (line,) = [line.strip() for line in steps.lines() if line.strip().startswith("./")]
    argv = shlex.split(line)
    assert argv[0] == "./run-umbrella-windows.py"

    result = launched.run(*argv[1:])  # no constant changed: no commit to make first

    assert result.returncode == 0, result.stdout + result.stderr
    assert f"deleted the old complete Job {NAME.format(2)}" in result.stdout
    (manifest,) = documents(provenance(launched, 2).read_text())
    for container in all_containers(manifest):
        assert env_of(container)["PROTBENCH_PRODUCTION_LENGTH"] == "1000"
    assert launched.cluster_states() == {NAME.format(0): "active", NAME.format(1): "active",
                                         NAME.format(2): "active"}
