"""``--dry-run``: every Job of the campaign as one YAML stream, and nothing else happens."""

from __future__ import annotations

import dataclasses
import re
import runpy
import shutil
import subprocess
import sys

import kubernetes_validate
import pytest
import yaml

from protbench_nrp.jobs import STAGE_SCRIPTS, build_jobs
from protbench_nrp.manifest import KUBERNETES_VERSION

from .conftest import LAUNCHER, REPO_ROOT, TEMPLATE, all_containers, documents, env_of

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
PREFIX = "protbench.openforcefield.org"
CAMPAIGN = "gb3-null-0.0.3-pair-opc3"


def test_checked_in_launcher_dry_run_prints_every_job_schema_valid():
    # The repository's own script with its own constants, run as a scientist would.
    result = subprocess.run([str(REPO_ROOT / LAUNCHER), "--dry-run"], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    constants = runpy.run_path(str(REPO_ROOT / LAUNCHER))
    manifests = documents(result.stdout)
    assert result.stdout.startswith("---\n")
    assert len(manifests) == constants["N_WINDOWS"] * constants["N_REPLICAS"]
    for manifest in manifests:
        # kubernetes-validate's own entry point, not the launcher's cached validator.
        kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)
    names = [m["metadata"]["name"] for m in manifests]
    assert len(set(names)) == len(names)
    assert all(DNS_LABEL.match(name) and len(name) <= 63 for name in names)


def test_dry_run_writes_nothing_calls_nothing_and_needs_no_remote(launcher_repo):
    before = launcher_repo.snapshot()
    shutil.rmtree(launcher_repo.remote)  # no remote to fetch from: a dry run must not need one
    result = launcher_repo.run("--dry-run")
    assert result.returncode == 0, result.stderr
    assert len(documents(result.stdout)) == 93
    assert launcher_repo.snapshot() == before
    assert not launcher_repo.results.exists()
    assert not list(launcher_repo.dir.rglob("__pycache__"))  # not even Python's bytecode cache
    assert launcher_repo.kubectl_calls() == []


def test_dry_run_without_kubectl_or_git_repository_records_uncommitted(launcher_repo):
    shutil.rmtree(launcher_repo.dir / ".git")
    result = launcher_repo.run("--dry-run", path_kubectl=False)
    assert result.returncode == 0, result.stderr
    for manifest in documents(result.stdout):
        assert manifest["metadata"]["annotations"][f"{PREFIX}/script-commit"] == "uncommitted"
        assert env_of(all_containers(manifest)[-1])["PROTBENCH_SCRIPT_COMMIT"] == "uncommitted"


def test_every_container_gets_exactly_the_jobspec_env_after_the_template_env(launcher_repo):
    result = launcher_repo.run("--dry-run")
    assert result.returncode == 0, result.stderr
    manifests = documents(result.stdout)
    config = runpy.run_path(str(launcher_repo.dir / LAUNCHER))["campaign_config"]()
    jobs = build_jobs(config, launcher_repo.head())
    template = yaml.safe_load((launcher_repo.dir / TEMPLATE).read_text())
    template_containers = all_containers(template)
    assert [job.name for job in jobs] == [m["metadata"]["name"] for m in manifests]
    for job, manifest in zip(jobs, manifests):
        containers = all_containers(manifest)
        assert len(containers) == len(template_containers)
        for container, original in zip(containers, template_containers):
            expected = list(original.get("env") or []) + [{"name": k, "value": v} for k, v in job.env.items()]
            assert container["env"] == expected, container["name"]


def test_window_environment_matches_the_seed(launcher_repo):
    result = launcher_repo.run("--dry-run", "--replicas", "2", "--windows", "7")
    assert result.returncode == 0, result.stderr
    (manifest,) = documents(result.stdout)
    assert manifest["metadata"]["name"] == "pb-tst-gb3-null-003-pair-opc3-2-07"
    for container in all_containers(manifest):
        env = env_of(container)
        assert env["PROTBENCH_REPLICA"] == "2"
        assert env["PROTBENCH_WINDOW"] == "07"
        assert env["PROTBENCH_N_WINDOWS"] == "31"
        assert env["PROTBENCH_TARGET"] == "gb3"
        assert env["PROTBENCH_FF"] == "null-0.0.3-pair-opc3"
        assert env["PROTBENCH_STAGE"] == "window"
        assert env["PROTBENCH_SCRIPT_PATH"] == "umbrella-scripts/run-umbrella-window.py"
        assert env["PROTBENCH_SCRIPT_COMMIT"] == launcher_repo.head()
        assert env["PROTBENCH_REPO_URL"] == str(launcher_repo.remote)
        assert env["PROTBENCH_BUCKET"] == "proteinbenchmark-jm-bucket"
        assert env["PROTBENCH_RCLONE_REMOTE"] == "nrp"
        assert env["PROTBENCH_PROTEINBENCHMARK_REF"] == "main"
        assert env["PROTBENCH_REQUIRED_FILES"].split("\n") == [
            f"{CAMPAIGN}/setup/",
            f"{CAMPAIGN}/replica-2/{CAMPAIGN}-equilibration-1.xml",
            f"{CAMPAIGN}/replica-2/{CAMPAIGN}-window-07.pdb",
            f"{CAMPAIGN}/replica-2/window-07/",
        ]
        assert env["PROTBENCH_OUTPUT_FILES"] == f"{CAMPAIGN}/replica-2/window-07/"


def test_extra_env_reaches_every_container(launcher_repo):
    launcher_repo.set_constants(EXTRA_ENV={"PROTBENCH_PRODUCTION_LENGTH": "100", "OMP_NUM_THREADS": "2"})
    result = launcher_repo.run("--dry-run", "--windows", "0")
    assert result.returncode == 0, result.stderr
    for manifest in documents(result.stdout):
        for container in all_containers(manifest):
            env = env_of(container)
            assert env["PROTBENCH_PRODUCTION_LENGTH"] == "100" and env["OMP_NUM_THREADS"] == "2"


def test_selections_from_constants_and_options(launcher_repo):
    launcher_repo.set_constants(REPLICAS=(3,), WINDOWS=(0, 30))
    from_constants = documents(launcher_repo.run("--dry-run").stdout)
    assert [m["metadata"]["name"][-4:] for m in from_constants] == ["3-00", "3-30"]
    overridden = launcher_repo.run("--dry-run", "--replicas", "1-2", "--windows", "3,5-6")
    assert overridden.returncode == 0, overridden.stderr
    assert [m["metadata"]["name"][-4:] for m in documents(overridden.stdout)] == [
        "1-03", "1-05", "1-06", "2-03", "2-05", "2-06"]
    everything = launcher_repo.run("--dry-run", "--replicas", "all", "--windows", "all")
    assert len(documents(everything.stdout)) == 93


def test_setup_stage_is_one_job_without_replica_or_window(launcher_repo):
    result = launcher_repo.run("--dry-run", "--stage", "setup")
    assert result.returncode == 0, result.stderr
    (manifest,) = documents(result.stdout)
    assert manifest["metadata"]["name"] == "pb-tst-gb3-null-003-pair-opc3-setup"
    env = env_of(all_containers(manifest)[-1])
    assert "PROTBENCH_REPLICA" not in env and "PROTBENCH_WINDOW" not in env
    assert env["PROTBENCH_SCRIPT_PATH"] == STAGE_SCRIPTS["setup"]
    assert env["PROTBENCH_REQUIRED_FILES"] == f"{CAMPAIGN}/setup/"
    assert manifest["metadata"]["annotations"][f"{PREFIX}/provenance-path"] == \
        f"{CAMPAIGN}/setup/{CAMPAIGN}-setup.yaml"


def test_steered_stage_is_one_job_per_replica_uploading_every_window_start(launcher_repo):
    result = launcher_repo.run("--dry-run", "--stage", "steered")
    assert result.returncode == 0, result.stderr
    manifests = documents(result.stdout)
    assert [m["metadata"]["name"] for m in manifests] == [
        f"pb-tst-gb3-null-003-pair-opc3-{r}-steered" for r in (1, 2, 3)]
    env = env_of(all_containers(manifests[1])[-1])
    assert env["PROTBENCH_REPLICA"] == "2" and "PROTBENCH_WINDOW" not in env
    assert env["PROTBENCH_SCRIPT_PATH"] == STAGE_SCRIPTS["steered"]
    outputs = env["PROTBENCH_OUTPUT_FILES"].split("\n")
    assert f"{CAMPAIGN}/replica-2/{CAMPAIGN}-window-00.pdb" in outputs
    assert f"{CAMPAIGN}/replica-2/{CAMPAIGN}-window-30.pdb" in outputs
    # A restarted steered-MD pod gets back what it had saved, window structures included.
    required = env["PROTBENCH_REQUIRED_FILES"].split("\n")
    assert required[0] == f"{CAMPAIGN}/setup/" and set(outputs) <= set(required)


def test_demo_preset_replaces_the_campaign_and_keeps_the_options(launcher_repo):
    from protbench_nrp.local import demo_config

    result = launcher_repo.run("--dry-run", "--demo", "--replicas", "2")
    assert result.returncode == 0, result.stderr
    config = runpy.run_path(str(launcher_repo.dir / LAUNCHER))["campaign_config"]()
    demo = dataclasses.replace(demo_config(config), replicas=(2,))
    expected = build_jobs(demo, launcher_repo.head())
    manifests = documents(result.stdout)
    assert [m["metadata"]["name"] for m in manifests] == [job.name for job in expected]
    template = yaml.safe_load((launcher_repo.dir / TEMPLATE).read_text())
    for container, original in zip(all_containers(manifests[0]), all_containers(template)):
        own = {entry["name"] for entry in original.get("env") or []}
        assert {k: v for k, v in env_of(container).items() if k not in own} == expected[0].env


def test_demo_preset_is_never_launched_on_the_cluster(launcher_repo):
    result = launcher_repo.run("--demo")
    assert result.returncode == 2
    assert "--demo runs on this machine: add --local" in result.stderr
    assert not (launcher_repo.dir / "results").exists()
    assert launcher_repo.kubectl_calls() == []


def test_labels_select_campaign_target_and_replica(launcher_repo):
    manifests = documents(launcher_repo.run("--dry-run").stdout)

    def select(**wanted):
        return [m for m in manifests
                if all(m["metadata"]["labels"].get(f"{PREFIX}/{k}") == v for k, v in wanted.items())]

    assert len(select(campaign="tst-gb3-null-0.0.3-pair-opc3")) == 93
    assert len(select(target="gb3", ff="null-0.0.3-pair-opc3")) == 93
    for replica in ("1", "2", "3"):
        chosen = select(replica=replica)
        assert len(chosen) == 31
        assert {m["metadata"]["name"].rsplit("-", 2)[1] for m in chosen} == {replica}
    assert len(select(replica="2", window="05")) == 1
    for manifest in manifests:
        assert manifest["spec"]["template"]["metadata"]["labels"] == manifest["metadata"]["labels"]


def test_annotations_record_commit_script_and_repository(launcher_repo):
    (manifest,) = documents(launcher_repo.run("--dry-run", "--replicas", "1", "--windows", "0").stdout)
    notes = manifest["metadata"]["annotations"]
    assert notes[f"{PREFIX}/script-commit"] == launcher_repo.head()
    assert notes[f"{PREFIX}/script-path"] == "umbrella-scripts/run-umbrella-window.py"
    assert notes[f"{PREFIX}/repo-url"] == str(launcher_repo.remote)
    assert notes[f"{PREFIX}/initials"] == "tst"


def test_image_and_secrets_come_from_the_constants(launcher_repo):
    launcher_repo.set_constants(IMAGE="ghcr.io/example/image:v2", RCLONE_SECRET="ab-rclone",
                                OPENEYE_SECRET="ab-oe")
    (manifest,) = documents(launcher_repo.run("--dry-run", "--windows", "0", "--replicas", "1").stdout)
    pod = manifest["spec"]["template"]["spec"]
    assert {c["name"]: c["image"] for c in pod["containers"]}["main"] == "ghcr.io/example/image:v2"
    secrets = {v["name"]: v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
    assert secrets == {"rclone-config": "ab-rclone", "openeye-license": "ab-oe"}
    assert "set-by-the-launcher" not in yaml.safe_dump(manifest)


def test_bad_selection_option_is_a_usage_error(launcher_repo):
    result = launcher_repo.run("--dry-run", "--windows", "3-x")
    assert result.returncode == 2
    assert "--windows" in result.stderr and "'3-x'" in result.stderr
    assert result.stdout == ""


def test_window_outside_the_campaign_is_refused(launcher_repo):
    result = launcher_repo.run("--dry-run", "--windows", "31")
    assert result.returncode == 1
    assert "WINDOWS (--windows) selects 31, outside 0..30" in result.stderr
    assert result.stdout == ""


def test_dry_run_conflicts_with_local_and_status(launcher_repo):
    result = launcher_repo.run("--dry-run", "--status")
    assert result.returncode == 2
    assert "choose one of --dry-run, --local and --status" in result.stderr


def test_script_runs_under_the_project_venv_when_started_with_a_bare_python(tmp_path):
    # -S: a Python that sees none of the launcher's packages; the script re-runs itself in .venv.
    if not (REPO_ROOT / ".venv" / "bin" / "python").exists():
        pytest.skip("no .venv in this checkout")
    result = subprocess.run([sys.executable, "-S", str(REPO_ROOT / LAUNCHER), "--dry-run", "--stage", "setup"],
                            capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    assert len(documents(result.stdout)) == 1


# -- what a dry run says on stderr, after the manifests ----------------------------------------------

def summary_rows(stderr: str) -> list[list[str]]:
    """The per-Job lines of a dry run's summary, split into cells, with the header first."""
    lines = stderr.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split() == ["Job", "stage", "replica", "window"])
    return [line.split() for line in lines[start:-1]]


def test_dry_run_ends_with_one_line_per_job_and_the_total_on_stderr(launcher_repo):
    result = launcher_repo.run("--dry-run")
    assert result.returncode == 0, result.stderr
    manifests = documents(result.stdout)  # stdout is the manifests and nothing else
    assert len(manifests) == 93
    rows = summary_rows(result.stderr)
    assert rows[0] == ["Job", "stage", "replica", "window"]
    assert rows[1:] == [[m["metadata"]["name"], "window", m["metadata"]["labels"][f"{PREFIX}/replica"],
                         m["metadata"]["labels"][f"{PREFIX}/window"]] for m in manifests]
    assert result.stderr.splitlines()[-1] == (
        f"93 Jobs of {CAMPAIGN} (replica 1 windows 00-30; replica 2 windows 00-30; replica 3 windows 00-30), "
        f"their manifests on stdout; nothing was applied: run without --dry-run to launch")
    # the default stage is the windows: the summary says what must run before them
    assert ("note: window Jobs start from what setup and steered left in the bucket: launch those first "
            "(--stage setup, then --stage steered)") in result.stderr


def test_dry_run_summary_of_setup_and_steered_jobs_has_no_replica_or_window_where_they_have_none(launcher_repo):
    setup = launcher_repo.run("--dry-run", "--stage", "setup")
    assert setup.returncode == 0, setup.stderr
    assert summary_rows(setup.stderr)[1:] == [["pb-tst-gb3-null-003-pair-opc3-setup", "setup", "-", "-"]]
    assert setup.stderr.splitlines()[-1].startswith(f"1 Job of {CAMPAIGN} (setup), their manifests on stdout")
    assert "start from what" not in setup.stderr  # nothing runs before setup
    steered = launcher_repo.run("--dry-run", "--stage", "steered", "--replicas", "2")
    assert summary_rows(steered.stderr)[1:] == [["pb-tst-gb3-null-003-pair-opc3-2-steered", "steered", "2", "-"]]


def test_dry_run_says_why_each_jobs_environment_appears_once_per_container(launcher_repo):
    result = launcher_repo.run("--dry-run", "--replicas", "1", "--windows", "0")
    assert result.returncode == 0, result.stderr
    (manifest,) = documents(result.stdout)
    containers = all_containers(manifest)
    names = [container["name"] for container in containers]
    assert len(names) == 3  # init-git, init-rclone and main: the three copies a reader sees
    stage_entries = [c["name"] for c in containers for e in c["env"] if e["name"] == "PROTBENCH_STAGE"]
    assert stage_entries == names
    assert (f"note: the manifests repeat each Job's environment in each of its {len(names)} containers "
            f"({', '.join(names)}): Kubernetes has no pod-wide environment") in result.stderr


def test_the_analysis_command_for_demo_results_is_one_the_demo_accepts(launcher_repo):
    """What to run next, for the demo's results: the demo's own options (--demo refuses --extend). Run
    here as a dry run, which shows the Jobs --local would run and the production they would ask for."""
    import shlex

    from protbench_nrp.analysis import Extension, NextSteps

    steps = NextSteps([Extension((3, 4), 0.06, 2.0)], 0.5, 0.4, [], (1, 2), 16, origin="demo")
    (line,) = [line.strip() for line in steps.lines() if line.strip().startswith("./")]
    argv = shlex.split(line)
    assert argv[:3] == ["./run-umbrella-windows.py", "--demo", "--local"]

    result = launcher_repo.run(*["--dry-run" if arg == "--local" else arg for arg in argv[1:]])

    assert result.returncode == 0, result.stderr
    manifests = documents(result.stdout)
    assert [m["metadata"]["name"] for m in manifests] == [
        f"pb-tst-villin-amber14-vacuum-{r}-{w:02d}" for r in (1, 2) for w in (3, 4)]
    for manifest in manifests:
        assert env_of(all_containers(manifest)[-1])["PROTBENCH_PRODUCTION_LENGTH"] == "0.06"
    # and the demo refuses what the cluster's advice would have been
    refused = launcher_repo.run("--demo", "--relaunch", "--extend", "--stage", "window")
    assert refused.returncode == 2 and "not with --local, --status or --demo" in refused.stderr


def test_production_length_overrides_extra_env_and_refuses_what_is_no_length(launcher_repo):
    launcher_repo.set_constants(EXTRA_ENV={"PROTBENCH_PRODUCTION_LENGTH": "100"})
    result = launcher_repo.run("--dry-run", "--replicas", "1", "--windows", "0", "--production-length", "250")
    assert result.returncode == 0, result.stderr
    (manifest,) = documents(result.stdout)
    assert {env_of(c)["PROTBENCH_PRODUCTION_LENGTH"] for c in all_containers(manifest)} == {"250"}
    for bad in ("0", "-5", "long"):
        refused = launcher_repo.run("--dry-run", "--production-length", bad)
        assert refused.returncode == 2 and "--production-length" in refused.stderr, refused.stderr
        assert refused.stdout == ""
