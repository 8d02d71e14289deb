"""A real launch against the kubectl stand-in: provenance, refusal of a second launch, partial failure."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from protbench_nrp.files import write_new_file

from .conftest import documents, git

CAMPAIGN = "gb3-null-0.0.3-pair-opc3"


def provenance(repo, replica: int, window: int) -> Path:
    return repo.results / CAMPAIGN / f"replica-{replica}" / f"{CAMPAIGN}-{replica}-{window:02d}.yaml"


def test_launch_keeps_one_provenance_file_per_job_identical_to_what_kubectl_applied(launcher_repo):
    result = launcher_repo.run()
    assert result.returncode == 0, result.stderr
    expected = [provenance(launcher_repo, r, w) for r in (1, 2, 3) for w in range(31)]
    assert launcher_repo.kubectl_calls() == [f"create -f {path}" for path in expected]
    applied = launcher_repo.applied()
    assert [path for path, _ in applied] == expected
    for path, received in applied:
        assert path.read_bytes() == received
    assert launcher_repo.result_files() == sorted(expected)  # nothing else: no temporary files left
    for (replica, window), path in zip([(r, w) for r in (1, 2, 3) for w in range(31)], expected):
        (job,) = documents(path.read_text())
        assert job["metadata"]["name"] == f"pb-tst-gb3-null-003-pair-opc3-{replica}-{window:02d}"
        assert job["metadata"]["annotations"]["protbench.openforcefield.org/script-commit"] == launcher_repo.head()
    assert "Submitted 93 Jobs" in result.stdout


def test_second_launch_is_refused_listing_the_files_and_applies_nothing(launcher_repo):
    assert launcher_repo.run().returncode == 0
    before = {path: path.read_bytes() for path in launcher_repo.result_files()}
    calls = len(launcher_repo.kubectl_calls())
    result = launcher_repo.run()
    assert result.returncode == 1
    assert "93 of these Jobs were launched before" in result.stderr
    assert str(provenance(launcher_repo, 3, 30)) in result.stderr
    assert "Nothing was applied" in result.stderr
    assert len(launcher_repo.kubectl_calls()) == calls
    assert {path: path.read_bytes() for path in launcher_repo.result_files()} == before


def test_one_existing_provenance_file_refuses_the_whole_launch(launcher_repo):
    assert launcher_repo.run("--replicas", "2", "--windows", "17").returncode == 0
    result = launcher_repo.run()
    assert result.returncode == 1
    assert "1 of these Jobs were launched before" in result.stderr
    assert str(provenance(launcher_repo, 2, 17)) in result.stderr
    assert len(launcher_repo.kubectl_calls()) == 1
    assert launcher_repo.result_files() == [provenance(launcher_repo, 2, 17)]


def test_kubectl_failure_keeps_no_applied_looking_file_and_says_what_was_submitted(launcher_repo):
    result = launcher_repo.run(fail_at=5)
    assert result.returncode == 3
    assert len(launcher_repo.kubectl_calls()) == 5
    submitted = [provenance(launcher_repo, 1, w) for w in range(4)]
    failed = provenance(launcher_repo, 1, 4)
    kept = failed.with_name(failed.name + ".failed")
    assert launcher_repo.result_files() == sorted(submitted + [kept])
    for path, received in launcher_repo.applied()[:4]:
        assert path.read_bytes() == received
    text = kept.read_text()
    assert text.startswith(launcher_repo.applied()[4][1].decode())  # the manifest kubectl refused ...
    assert "# kubectl create failed for pb-tst-gb3-null-003-pair-opc3-1-04 (exit 1)" in text  # ... and why
    assert "Unauthorized" in text
    assert "Submitted (4): replica 1 windows 00-03" in result.stderr
    assert "Not submitted (89): replica 1 windows 04-30; replica 2 windows 00-30; replica 3 windows 00-30" \
        in result.stderr

    # The rest can be launched once kubectl works: the failed window's record does not block it.
    rest = launcher_repo.run("--replicas", "1", "--windows", "4-30")
    assert rest.returncode == 0, rest.stderr
    assert failed.exists() and kept.exists()


def test_a_failed_apply_keeps_every_earlier_failure_record(launcher_repo):
    path = provenance(launcher_repo, 1, 0)
    kept = []
    for attempt in (1, 2, 3):  # kubectl's calls are counted across runs: fail the first of each run
        result = launcher_repo.run("--replicas", "1", "--windows", "0", fail_at=attempt)
        assert result.returncode == 3
        kept.append(path.with_name(path.name + ".failed") if attempt == 1
                    else path.with_name(f"{path.stem}.{attempt}.yaml.failed"))
        assert f"its manifest is kept as {kept[-1]}" in result.stderr
    assert launcher_repo.result_files() == sorted(kept)
    applied = launcher_repo.applied()
    for record, (_, received) in zip(kept, applied):
        assert record.read_text().startswith(received.decode())
        assert "Unauthorized" in record.read_text()
    assert launcher_repo.run("--replicas", "1", "--windows", "0").returncode == 0
    assert launcher_repo.result_files() == sorted(kept + [path])


def test_ctrl_c_during_an_apply_reports_what_was_submitted(launcher_repo, terminal_sigint):
    result = launcher_repo.run("--replicas", "1", "--windows", "0-4", interrupt_at=3)
    assert result.returncode == 3, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    name = "pb-tst-gb3-null-003-pair-opc3-1-02"
    assert f"interrupted (Ctrl-C) while submitting {name}; that Job may or may not exist" in result.stderr
    assert "Submitted (2): replica 1 windows 00-01" in result.stderr
    assert "Not submitted (3): replica 1 windows 02-04" in result.stderr
    interrupted = provenance(launcher_repo, 1, 2)
    kept = interrupted.with_name(interrupted.name + ".failed")
    assert launcher_repo.result_files() == sorted([provenance(launcher_repo, 1, 0), provenance(launcher_repo, 1, 1),
                                                   kept])
    assert f"kubectl get job {name}" in kept.read_text()


def test_ctrl_c_between_writing_and_applying_a_manifest_reports_and_keeps_no_applied_looking_file(
        launcher_repo, monkeypatch, tmp_path, capsys, terminal_sigint):
    import signal

    from protbench_nrp import launcher
    from protbench_nrp.jobs import CampaignConfig, build_jobs
    from protbench_nrp.manifest import load_template

    config = CampaignConfig(initials="tst", target="gb3", ff="ff", n_replicas=1, n_windows=4,
                            local_result_dir=tmp_path / "results", bucket="bucket-name", rclone_remote="nrp",
                            rclone_secret="rclone", openeye_secret="oe", image="image:tag",
                            repo_url="https://example.org/r.git", proteinbenchmark_ref="main", cuda_version="12.4")
    jobs = build_jobs(config, "0" * 40)
    template = load_template(launcher_repo.dir / "k8s_template.yaml")
    manifests = [launcher.render_manifest(job, config, template) for job in jobs]
    written = []

    def write_then_ctrl_c(path, text):  # the real write, then a real SIGINT on the third manifest
        write_new_file(path, text)
        written.append(path)
        if len(written) == 3:
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(launcher, "write_new_file", write_then_ctrl_c)
    monkeypatch.setenv("PATH", f"{launcher_repo.bin}{os.pathsep}{os.environ['PATH']}")
    try:
        code = launcher.submit(jobs, manifests, config, str(launcher_repo.bin / "kubectl"))
    except KeyboardInterrupt:
        pytest.fail("Ctrl-C escaped submit() with a traceback instead of a report of what was submitted")
    assert code == launcher.EXIT_PARTLY_SUBMITTED
    report = capsys.readouterr().err
    assert f"interrupted (Ctrl-C) while submitting {jobs[2].name}" in report
    assert "Submitted (2): replica 1 windows 00-01" in report
    assert "Not submitted (2): replica 1 windows 02-03" in report
    assert len(launcher_repo.kubectl_calls()) == 2  # the third manifest was written, never applied
    third = config.local_result_dir / jobs[2].provenance_path
    assert not third.exists()
    assert third.with_name(third.name + ".failed").exists()
    assert sorted(p for p in config.local_result_dir.rglob("*") if p.is_file()) == sorted(
        [config.local_result_dir / jobs[0].provenance_path, config.local_result_dir / jobs[1].provenance_path,
         third.with_name(third.name + ".failed")])


def test_missing_kubectl_is_refused_before_any_file_is_written(launcher_repo):
    result = launcher_repo.run(path_kubectl=False)
    assert result.returncode == 1
    assert "kubectl is not on PATH" in result.stderr
    assert not launcher_repo.results.exists()


def test_preflight_runs_before_applying_unless_skipped(launcher_repo):
    # The harness gives the launcher an empty HOME and its own RCLONE_CONFIG, not yet written:
    # preflight finds no credentials, whatever this machine has set up.
    result = launcher_repo.run("--windows", "0", "--replicas", "1", skip_preflight=False)
    assert result.returncode == 1, result.stdout + result.stderr
    assert (f"preflight failed: no credentials for the bucket: {launcher_repo.rclone_config} has no "
            f"remote 'nrp'") in result.stderr, result.stderr
    assert launcher_repo.kubectl_calls() == []
    assert not launcher_repo.results.exists()
    result = launcher_repo.run("--windows", "0", "--replicas", "1", skip_preflight=True)
    assert result.returncode == 0, result.stderr
    assert len(launcher_repo.kubectl_calls()) == 1


def write_rclone_config(repo, endpoint: str, key: str = "key", secret: str = "secret") -> None:
    repo.rclone_config.parent.mkdir(parents=True, exist_ok=True)
    repo.rclone_config.write_text(f"[nrp]\ntype = s3\nprovider = Other\naccess_key_id = {key}\n"
                                  f"secret_access_key = {secret}\nendpoint = {endpoint}\nregion = us-east-1\n")


def test_preflight_with_a_malformed_endpoint_is_a_clear_refusal(launcher_repo):
    write_rclone_config(launcher_repo, "https://exa mple.org")
    result = launcher_repo.run("--windows", "0", "--replicas", "1", skip_preflight=False)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr, result.stderr
    assert (f"preflight failed: cannot use the S3 endpoint 'https://exa mple.org' from rclone remote 'nrp' "
            f"in {launcher_repo.rclone_config}: Invalid endpoint") in result.stderr, result.stderr
    assert launcher_repo.kubectl_calls() == []


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory):
    """A real S3 server (moto) on loopback; see tests/pod/s3server.py."""
    from tests.pod.s3server import MotoServer

    server = MotoServer(tmp_path_factory.mktemp("moto") / "moto_server.log").start()
    yield server
    server.stop()


def test_preflight_asks_the_bucket_of_the_rclone_config_and_launches_once_inputs_are_there(
        launcher_repo, s3_server):
    from tests.pod.s3server import Bucket

    bucket = Bucket(s3_server, "launcher-preflight-test").create()
    launcher_repo.set_constants(BUCKET=bucket.name)
    launcher_repo.commit("the test bucket")
    git(launcher_repo.dir, "push", "--quiet", "origin", "main")
    write_rclone_config(launcher_repo, s3_server.endpoint, s3_server.access_key_id, s3_server.secret_access_key)

    result = launcher_repo.run("--stage", "steered", skip_preflight=False)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"bucket '{bucket.name}' at {s3_server.endpoint} lacks 1 input(s)" in result.stderr, result.stderr
    assert f"{CAMPAIGN}/setup/ is missing or empty: written by the setup stage" in result.stderr
    assert launcher_repo.kubectl_calls() == []

    for name in ("minimized.pdb", "native-contacts.dat", "umbrella-openmm-system.xml"):  # setup, done
        bucket.client.put_object(Bucket=bucket.name, Key=f"results/{CAMPAIGN}/setup/{CAMPAIGN}-{name}",
                                 Body=b"ATOM\n")
    result = launcher_repo.run("--stage", "steered", skip_preflight=False)
    assert result.returncode == 0, result.stderr
    assert len(launcher_repo.kubectl_calls()) == 3  # one steered-MD Job per replica


def test_preflight_constant_false_skips_it(launcher_repo):
    launcher_repo.set_constants(PREFLIGHT=False)
    result = launcher_repo.run("--windows", "0", "--replicas", "1", skip_preflight=False)
    assert result.returncode == 0, result.stderr
    assert len(launcher_repo.kubectl_calls()) == 1


def test_unwritable_results_directory_applies_nothing(launcher_repo):
    launcher_repo.results.write_text("a file where the results directory should be\n")
    result = launcher_repo.run("--replicas", "1", "--windows", "0")
    assert result.returncode != 0
    assert "could not write" in result.stderr and "results" in result.stderr
    assert "Submitted (0)" in result.stderr
    assert launcher_repo.kubectl_calls() == []


def test_results_go_beside_the_launcher_wherever_it_is_run_from(launcher_repo, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = launcher_repo.run("--replicas", "1", "--windows", "0", cwd=elsewhere)
    assert result.returncode == 0, result.stderr
    assert launcher_repo.result_files() == [provenance(launcher_repo, 1, 0)]
    assert list(elsewhere.iterdir()) == []


def test_provenance_writes_are_whole_and_never_replace_a_file(tmp_path):
    path = tmp_path / "deep" / "job.yaml"
    write_new_file(path, "first: 1\n")
    with pytest.raises(FileExistsError):
        write_new_file(path, "second: 2\n")
    assert path.read_text() == "first: 1\n"
    assert sorted(p.name for p in path.parent.iterdir()) == ["job.yaml"]
