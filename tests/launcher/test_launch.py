"""A real launch against the kubectl stand-in: provenance, refusal of a second launch, partial failure."""

from __future__ import annotations

from pathlib import Path

import pytest

from protbench_nrp.files import write_new_file

from .conftest import documents

CAMPAIGN = "gb3-null-0.0.3-pair-opc3"


def provenance(repo, replica: int, window: int) -> Path:
    return repo.results / CAMPAIGN / f"replica-{replica}" / f"{CAMPAIGN}-{replica}-{window:02d}.yaml"


def test_launch_keeps_one_provenance_file_per_job_identical_to_what_kubectl_applied(launcher_repo):
    result = launcher_repo.run()
    assert result.returncode == 0, result.stderr
    expected = [provenance(launcher_repo, r, w) for r in (1, 2, 3) for w in range(31)]
    assert launcher_repo.kubectl_calls() == [f"apply -f {path}" for path in expected]
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
    assert "# kubectl apply failed for pb-tst-gb3-null-003-pair-opc3-1-04 (exit 1)" in text  # ... and why
    assert "Unauthorized" in text
    assert "Submitted (4): replica 1 windows 00-03" in result.stderr
    assert "Not submitted (89): replica 1 windows 04-30; replica 2 windows 00-30; replica 3 windows 00-30" \
        in result.stderr

    # The rest can be launched once kubectl works: the failed window's record does not block it.
    rest = launcher_repo.run("--replicas", "1", "--windows", "4-30")
    assert rest.returncode == 0, rest.stderr
    assert failed.exists() and kept.exists()


def test_missing_kubectl_is_refused_before_any_file_is_written(launcher_repo):
    result = launcher_repo.run(path_kubectl=False)
    assert result.returncode == 1
    assert "kubectl is not on PATH" in result.stderr
    assert not launcher_repo.results.exists()


def test_preflight_runs_before_applying_unless_skipped(launcher_repo):
    # No bucket is reachable from the tests, so preflight (or its absence) must stop the launch.
    result = launcher_repo.run("--windows", "0", "--replicas", "1", skip_preflight=False)
    assert result.returncode != 0
    assert "preflight" in result.stderr.lower()
    assert launcher_repo.kubectl_calls() == []
    assert not launcher_repo.results.exists()


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
