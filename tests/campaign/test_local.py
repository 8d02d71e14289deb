"""``run-umbrella-windows.py --local``: the cluster's Jobs, run here with the same environment."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path, PurePosixPath

import pytest
import yaml

from protbench_nrp.jobs import JobSpec
from protbench_nrp.layout import Campaign
from protbench_nrp.records import Progress, UmbrellaParameters

from .conftest import REPO_ROOT, REPRODUCIBLE_ENV, VILLIN, script_env

DRIVER = Path(__file__).with_name("launch_driver.py")
CAMPAIGN = Campaign(*VILLIN)

#: Two windows (Q0 = 1.0 and 0.9) of one replica, every length cut to a few ps. The pull moves
#: Q0 from 1.0 to 0.8 in 12 ps: over eight seeds Q got down to 0.80-0.83, well past 0.9.
SHORT_ENV = {
    "PROTBENCH_CV_START": "1.0", "PROTBENCH_CV_END": "0.9", "PROTBENCH_UMBRELLA_K": "300",
    "PROTBENCH_STEERED_K": "5000", "PROTBENCH_PULL_LENGTH": "0.012", "PROTBENCH_PULL_FRAME": "0.2",
    "PROTBENCH_PULL_TIMESTEP": "4", "PROTBENCH_EQUIL_LENGTH": "0.001", "PROTBENCH_EQUIL_TIMESTEP": "2",
    "PROTBENCH_EQUIL_FRAME": "0.2",
    "PROTBENCH_PRODUCTION_LENGTH": "0.004", "PROTBENCH_FRAME": "0.2", "PROTBENCH_CHECKPOINT": "2",
    "PROTBENCH_SAVE_STATE": "4", "PROTBENCH_SEED": REPRODUCIBLE_ENV["PROTBENCH_SEED"],
}


def _driver_env() -> dict[str, str]:
    """The launcher's environment: its Jobs inherit one CPU thread each (see REPRODUCIBLE_ENV)."""
    return script_env(OPENMM_CPU_THREADS=REPRODUCIBLE_ENV["OPENMM_CPU_THREADS"])


def _config(root: Path, **changes) -> dict:
    config = {"target": VILLIN[0], "ff": VILLIN[1], "n_replicas": 1, "n_windows": 2, "stage": "window",
              "local_result_dir": str(root), "extra_env": dict(SHORT_ENV)}
    config.update(changes)
    return config


def _launch(config: dict, *options: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(DRIVER), json.dumps(config), *options],
                          env=_driver_env(), capture_output=True, text=True, timeout=timeout,
                          cwd=REPO_ROOT)


def _dry_run_env(config: dict, stage: str) -> dict[str, dict[str, str]]:
    """Job name -> PROTBENCH_* environment of the main container, from ``--dry-run``."""
    result = _launch(config, "--dry-run", "--stage", stage)
    assert result.returncode == 0, result.stderr
    jobs = {}
    for manifest in yaml.safe_load_all(result.stdout):
        if not manifest:
            continue
        main = next(c for c in manifest["spec"]["template"]["spec"]["containers"] if c["name"] == "main")
        jobs[manifest["metadata"]["name"]] = {
            e["name"]: e["value"] for e in main["env"] if e["name"].startswith("PROTBENCH_")}
    return jobs


def _logged_env(log: Path) -> dict[str, str]:
    lines = [line for line in log.read_text().splitlines() if line.startswith("# environment: ")]
    assert lines, f"{log} has no environment record"
    return json.loads(lines[-1][len("# environment: "):])


def _logs(root: Path) -> dict[str, Path]:
    return {
        "setup": root / CAMPAIGN.job_log("setup"),
        "steered": root / CAMPAIGN.job_log("steered", 1),
        "window-0": root / CAMPAIGN.job_log("window", 1, 0),
        "window-1": root / CAMPAIGN.job_log("window", 1, 1),
    }


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    """One ``--local`` run of the short campaign, and the environments ``--dry-run`` shows."""
    root = tmp_path_factory.mktemp("local") / "results"
    config = _config(root)
    dry = {}
    for stage in ("setup", "steered", "window"):
        dry.update(_dry_run_env(config, stage))
    result = _launch(config, "--local", "--max-parallel", "2")  # the two windows side by side
    return root, config, dry, result


def test_local_runs_every_stage_into_the_results_tree(local_run):
    root, _config_, _dry, result = local_run
    assert result.returncode == 0, result.stdout + result.stderr
    assert (root / CAMPAIGN.system_xml).is_file()
    for window in (0, 1):
        assert (root / CAMPAIGN.window_pdb(1, window)).is_file()
        files = CAMPAIGN.window_files(1, window)
        assert Progress.read(root / files.progress).phase == "finished"
        assert (root / files.cv_timeseries).read_text().count("\n") == 1 + 20  # header + 4 ps / 0.2 ps
    # in stage order: setup, then steered MD, then the windows
    started = [line.split("started ")[1].split(" (")[0] for line in result.stdout.splitlines()
               if line.startswith("started ")]
    assert started[:2] == ["setup", "replica 1 steered MD"]
    assert sorted(started[2:]) == ["replica 1 window 00", "replica 1 window 01"]
    assert not (root / CAMPAIGN.manifest("window", 1, 0)).exists()  # nothing pretends it was applied


def test_local_jobs_get_exactly_the_dry_run_environment(local_run):
    root, _config_, dry, result = local_run
    assert result.returncode == 0, result.stdout + result.stderr
    names = {"setup": "pb-jm-villin-amber14-vacuum-setup",
             "steered": "pb-jm-villin-amber14-vacuum-1-steered",
             "window-0": "pb-jm-villin-amber14-vacuum-1-00",
             "window-1": "pb-jm-villin-amber14-vacuum-1-01"}
    assert set(names.values()) == set(dry)
    for key, log in _logs(root).items():
        expected = {**dry[names[key]], "PROTBENCH_RESULTS_DIR": str(root.resolve()),
                    "PROTBENCH_PLATFORM": "CPU"}
        assert _logged_env(log) == expected, key
    # and the window really ran with it: its own record of what it was given
    for window, centre in ((0, 1.0), (1, 0.9)):
        recorded = UmbrellaParameters.read(root / CAMPAIGN.window_files(1, window).parameters)
        assert (recorded.centre, recorded.k_kcal_per_mol, recorded.n_windows) == (pytest.approx(centre), 300.0, 2)
        assert recorded.production_length_ns == pytest.approx(0.004)


def test_rerun_skips_finished_jobs(local_run):
    root, config, _dry, first = local_run
    assert first.returncode == 0, first.stdout + first.stderr
    outputs = [p for p in (root / CAMPAIGN.root).rglob("*") if p.is_file()]
    before = {p: p.stat().st_mtime_ns for p in outputs}
    result = _launch(config, "--local")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 run, 4 already finished" in result.stdout
    assert "started" not in result.stdout
    assert {p: p.stat().st_mtime_ns for p in outputs} == before


@pytest.mark.parametrize("changes", [{"n_windows": 0}, {"initials": "j.m."},
                                     {"extra_env": {"PROTBENCH_REPLICA": "2"}}],
                         ids=["no-windows", "bad-initials", "launcher-variable-in-extra-env"])
def test_bad_constants_are_refused_as_by_the_cluster_launch(tmp_path, changes):
    root = tmp_path / "results"
    config = _config(root, **changes)
    cluster = _launch(config, "--dry-run")
    local = _launch(config, "--local")
    assert cluster.returncode == local.returncode == 1
    assert local.stderr == cluster.stderr and "refused" in local.stderr
    assert not root.exists()


def _platform_missing_here() -> str | None:
    import openmm

    here = {openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())}
    return next((name for name in ("CUDA", "OpenCL", "CPU", "Reference") if name not in here), None)


def test_failed_job_is_named_with_its_log(local_run, tmp_path):
    root, _config_, _dry, first = local_run
    assert first.returncode == 0
    copy = tmp_path / "results"
    shutil.copytree(root, copy)
    # A setting the launcher refuses never starts a Job (tests/launcher/test_extra_env_checks.py); what
    # only a Job can find is whether its machine has the platform. Longer windows, on a platform this
    # machine lacks: every window refuses to start.
    missing = _platform_missing_here()
    if missing is None:
        pytest.skip("this machine has every OpenMM platform")
    config = _config(copy, extra_env={**SHORT_ENV, "PROTBENCH_PRODUCTION_LENGTH": "0.008",
                                      "PROTBENCH_PLATFORM": missing})
    result = _launch(config, "--local")
    assert result.returncode == 1
    log = copy.resolve() / CAMPAIGN.job_log("window", 1, 0)
    assert "FAILED replica 1 window 00 (pb-jm-villin-amber14-vacuum-1-00)" in result.stdout
    assert str(log) in result.stdout and "PROTBENCH_PLATFORM" in result.stdout  # the log's tail
    assert "2 failed" in result.stdout
    assert "PROTBENCH_PLATFORM" in log.read_text()


def test_failed_steered_md_blocks_its_windows(local_run, tmp_path):
    root, _config_, _dry, first = local_run
    assert first.returncode == 0
    copy = tmp_path / "results"
    shutil.copytree(root / CAMPAIGN.setup_dir, copy / CAMPAIGN.setup_dir)
    config = _config(copy, extra_env={**SHORT_ENV, "PROTBENCH_STEERED_K": "1",
                                      "PROTBENCH_PULL_LENGTH": "0.002"})
    result = _launch(config, "--local")
    assert result.returncode == 1
    assert "FAILED replica 1 steered MD" in result.stdout and "Q reached" in result.stdout
    assert "blocked replica 1 window 00" in result.stdout
    assert not (copy / CAMPAIGN.window_dir(1, 0)).exists()


def test_ctrl_c_checkpoints_the_running_jobs_and_work_resumes(local_run, tmp_path):
    root, _config_, _dry, first = local_run
    assert first.returncode == 0
    copy = tmp_path / "results"
    shutil.copytree(root, copy)
    for window in (0, 1):
        shutil.rmtree(copy / CAMPAIGN.window_dir(1, window))
    config = _config(copy, n_windows=2, windows=[0],
                     extra_env={**SHORT_ENV, "PROTBENCH_PRODUCTION_LENGTH": "0.02"})
    runner = subprocess.Popen([sys.executable, str(DRIVER), json.dumps(config), "--local"],
                              env=_driver_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, cwd=REPO_ROOT)
    progress = copy / CAMPAIGN.window_files(1, 0).progress
    # Ctrl-C once the window has written a production frame: what it wrote decides, not a clock.
    deadline = time.monotonic() + 600  # a ceiling for a loaded machine; the wait ends at that frame
    while not _in_production(progress):
        assert runner.poll() is None, runner.stdout.read()
        assert time.monotonic() < deadline, "the window wrote no production frame in 10 minutes"
        time.sleep(0.05)
    runner.send_signal(signal.SIGINT)
    output, _ = runner.communicate(timeout=300)
    assert runner.returncode == 130, output
    assert "stopped replica 1 window 00" in output
    log = (copy / CAMPAIGN.job_log("window", 1, 0)).read_text()
    assert "stopped by signal 15" in log  # the window got SIGTERM, as in a pod
    stopped_at = Progress.read(progress).step
    assert 0 < stopped_at < 5_000  # 20 ps of 4 fs steps

    again = _launch(config, "--local")
    assert again.returncode == 0, again.stdout + again.stderr
    log = (copy / CAMPAIGN.job_log("window", 1, 0)).read_text()
    assert "starting from checkpoint" in log.split("stopped by signal 15")[1]
    assert Progress.read(progress).phase == "finished"


def _printed_command(origin: str, replicas: tuple[int, ...], windows: tuple[int, ...], length_ns: float) -> list[str]:
    """The launcher command the analysis prints to extend ``windows`` for results made at ``origin``."""
    import shlex

    from protbench_nrp.analysis import Extension, NextSteps

    steps = NextSteps([Extension(windows, length_ns, 2.0)], 0.5, 0.4, [], replicas, 2, origin=origin)
    (line,) = [line.strip() for line in steps.lines() if line.strip().startswith("./")]
    argv = shlex.split(line)
    assert argv[0] == "./run-umbrella-windows.py"
    return argv[1:]


def test_the_analysis_command_for_local_results_runs_the_window_on_and_nothing_else(local_run, tmp_path):
    """What to run next, for results of --local, really extends the window where they are."""
    root, _config_, _dry, first = local_run
    assert first.returncode == 0, first.stdout + first.stderr
    copy = tmp_path / "results"
    shutil.copytree(root, copy)
    untouched = {p: p.read_bytes() for p in (copy / CAMPAIGN.window_dir(1, 0)).rglob("*") if p.is_file()}
    options = _printed_command("local", (1,), (1,), 0.008)  # twice the 4 ps production it ran
    assert options[:5] == ["--local", "--stage", "window", "--replicas", "1"]

    result = _launch(_config(copy), *options)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 run, 2 already finished" in result.stdout  # setup and steered MD skipped, window 00 not selected
    files = CAMPAIGN.window_files(1, 1)
    record = Progress.read(copy / files.progress)
    assert (record.phase, record.step) == ("finished", 2_000)  # 8 ps of 4 fs steps
    assert (copy / files.cv_timeseries).read_text().count("\n") == 1 + 40  # the first 20 frames kept, 20 more
    log = (copy / CAMPAIGN.job_log("window", 1, 1)).read_text()
    assert "starting from checkpoint" in log.split("# environment: ")[-1]
    assert _logged_env(copy / CAMPAIGN.job_log("window", 1, 1))["PROTBENCH_PRODUCTION_LENGTH"] == "0.008"
    assert {p: p.read_bytes() for p in (copy / CAMPAIGN.window_dir(1, 0)).rglob("*") if p.is_file()} == untouched
    # and these results name --local as where they were made, for the next advice too
    from protbench_nrp.analysis import results_origin
    from protbench_nrp.store import LocalStore

    assert results_origin(LocalStore(copy), CAMPAIGN, [(1, 0), (1, 1)]) == "local"


def test_results_tell_where_they_were_made_for_the_advice_that_follows(tmp_path):
    from protbench_nrp.analysis import results_origin
    from protbench_nrp.layout import JOB_LOG_LAUNCHER
    from protbench_nrp.store import LocalStore

    store, windows = LocalStore(tmp_path), [(1, 0), (2, 3)]
    path = tmp_path / CAMPAIGN.job_log("window", 2, 3)
    path.parent.mkdir(parents=True)

    def log(*commands: str) -> None:  # one run of --local after another, each appending its header
        path.write_text("".join(f"# 2030-01-01 00:00:00 job: python run-umbrella-window.py\n"
                                f"{JOB_LOG_LAUNCHER}{command}\n# environment: {{}}\nwindow: ...\n"
                                for command in commands))

    assert results_origin(store, CAMPAIGN, windows) == "cluster"  # nothing of --local: copied from the bucket
    log("./run-umbrella-windows.py --demo --local")
    assert results_origin(store, CAMPAIGN, windows) == "demo"
    log("./run-umbrella-windows.py --demo --local", "./run-umbrella-windows.py --local")  # the latest run counts
    assert results_origin(store, CAMPAIGN, windows) == "local"
    path.write_text("# 2020-01-01 00:00:00 job: python run-umbrella-window.py\nwindow: ...\n")  # an older log
    assert results_origin(store, CAMPAIGN, windows) == "local"
    manifest = tmp_path / CAMPAIGN.manifest("window", 1, 0)  # launched from this results tree
    manifest.parent.mkdir(parents=True, exist_ok=True)
    manifest.write_text("kind: Job\n")
    assert results_origin(store, CAMPAIGN, windows) == "cluster"


def test_a_demo_jobs_log_names_the_demo_command(tmp_path):
    """--demo --local records itself in each Job's log (here a window on stand-in inputs, which fails at
    once), so the analysis of the demo's results names the demo's command."""
    from protbench_nrp.analysis import results_origin
    from protbench_nrp.layout import JOB_LOG_LAUNCHER
    from protbench_nrp.store import LocalStore

    root = tmp_path / "demo-results"  # demo_config puts it beside LOCAL_RESULT_DIR
    n_windows = 16
    done = [CAMPAIGN.contacts_file, CAMPAIGN.minimized_pdb, CAMPAIGN.system_xml, CAMPAIGN.steered_state(1),
            *(CAMPAIGN.window_pdb(1, w) for w in range(n_windows))]
    for product in done:  # setup and replica 1's steered MD count as done: only the window starts
        (root / product).parent.mkdir(parents=True, exist_ok=True)
        (root / product).write_text("not a real product\n")
    result = _launch({"local_result_dir": str(tmp_path / "results")}, "--demo", "--local", "--replicas", "1",
                     "--windows", "0")
    assert result.returncode == 1, result.stdout + result.stderr  # the window cannot read its stand-in inputs
    assert "0 run, 2 already finished, 1 failed" in result.stdout
    log = (root / CAMPAIGN.job_log("window", 1, 0)).read_text()
    assert f"\n{JOB_LOG_LAUNCHER}./run-umbrella-windows.py --demo --local\n" in log
    assert results_origin(LocalStore(root), CAMPAIGN, [(1, 0)]) == "demo"


def _in_production(progress: Path) -> bool:
    try:
        record = Progress.read(progress)
    except (OSError, ValueError, KeyError):
        return False
    return record.phase == "production" and record.step > 0


def _spec(**env) -> JobSpec:
    return JobSpec(stage="window", replica=1, window=0, name="pb-x-villin-amber14-vacuum-1-00",
                   script_path="umbrella-scripts/run-umbrella-window.py",
                   env={"PROTBENCH_TARGET": "villin", "PROTBENCH_FF": "amber14-vacuum", **env},
                   provenance_path=PurePosixPath("villin-amber14-vacuum/replica-1/x.yaml"))


@pytest.mark.parametrize("phase, step, finished", [
    ("finished", 100, True),
    # only the window script, after its final checkpoint, says "finished"
    ("production", 100, False),
    ("production", 99, False),
    ("equilibration", 100, False),
])
def test_a_window_is_finished_once_its_production_steps_are_all_done(tmp_path, phase, step, finished):
    from protbench_nrp.local import LocalJob

    # 0.04 ns of 4 fs steps, a frame every 0.4 ps: 10 000 steps.
    job = LocalJob(_spec(PROTBENCH_PRODUCTION_LENGTH="0.04", PROTBENCH_TIMESTEP="4",
                         PROTBENCH_FRAME="0.4"), tmp_path)
    Progress.now(phase, step * 100, 10_000, 100.0).write(job.progress_path)
    assert job.is_finished() is finished
    # A record of a shorter production (the settings now ask for more: --extend) is not done.
    Progress.now(phase, 5_000, 5_000, 100.0).write(job.progress_path)
    assert job.is_finished() is False
    # One of a longer production (shortened since) is done once the script said finished.
    Progress.now(phase, 20_000, 20_000, 100.0).write(job.progress_path)
    assert job.is_finished() is (phase == "finished")


def test_local_environment_is_the_pods_plus_results_dir_and_cpu():
    from protbench_nrp.local import local_environment

    base = {"PATH": "/usr/bin", "HOME": "/home/me", "PROTBENCH_N_WINDOWS": "99",
            "PROTBENCH_PRODUCTION_LENGTH": "500"}
    env = local_environment(_spec(), Path("/data/results"), base=base, threads=2)
    assert {k: v for k, v in env.items() if k.startswith("PROTBENCH_")} == {
        "PROTBENCH_TARGET": "villin", "PROTBENCH_FF": "amber14-vacuum",
        "PROTBENCH_RESULTS_DIR": "/data/results", "PROTBENCH_PLATFORM": "CPU"}
    assert env["PATH"] == "/usr/bin" and env["HOME"] == "/home/me"
    assert env["OPENMM_CPU_THREADS"] == "2"


@pytest.mark.parametrize("spec_env, base_env, expected", [
    ({}, {"PROTBENCH_PLATFORM": "Reference"}, "Reference"),             # your environment
    ({"PROTBENCH_PLATFORM": "OpenCL"}, {"PROTBENCH_PLATFORM": "Reference"}, "OpenCL"),  # EXTRA_ENV
], ids=["environment", "extra-env-wins"])
def test_local_platform_can_be_chosen(spec_env, base_env, expected):
    from protbench_nrp.local import local_environment

    env = local_environment(_spec(**spec_env), Path("/r"), base={"PATH": "/bin", **base_env}, threads=1)
    assert env["PROTBENCH_PLATFORM"] == expected


def test_own_thread_count_is_kept():
    from protbench_nrp.local import local_environment

    env = local_environment(_spec(), Path("/r"), base={"OPENMM_CPU_THREADS": "7"}, threads=1)
    assert env["OPENMM_CPU_THREADS"] == "7"


def test_demo_preset_is_a_valid_villin_campaign(tmp_path):
    """The demo's constants pass the launcher's checks and every script's own."""
    import importlib.util

    from protbench_nrp.jobs import build_jobs
    from protbench_nrp.local import demo_config
    from protbench_nrp.steered import SteeredSettings
    from protbench_nrp.window import WindowSettings

    spec = importlib.util.spec_from_file_location("constants", REPO_ROOT / "run-umbrella-windows.py")
    constants = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(constants)
    base = constants.campaign_config()
    demo = demo_config(base)
    assert (demo.target, demo.ff) == VILLIN
    assert demo.n_replicas >= 2 and 11 <= demo.n_windows <= 16
    assert demo.local_result_dir == Path(base.local_result_dir).parent / "demo-results"
    assert demo.initials == base.initials and demo.image == base.image
    jobs = build_jobs(demo, "0" * 40)
    assert len(jobs) == demo.n_replicas * demo.n_windows
    env = jobs[-1].env
    number = lambda name: float(env[name])  # noqa: E731
    common = dict(n_windows=demo.n_windows, cv_start=number("PROTBENCH_CV_START"),
                  cv_end=number("PROTBENCH_CV_END"), equil_length_ns=number("PROTBENCH_EQUIL_LENGTH"),
                  equil_timestep_fs=number("PROTBENCH_EQUIL_TIMESTEP"),
                  equil_frame_ps=number("PROTBENCH_EQUIL_FRAME"), platform="CPU")
    SteeredSettings.resolve("villin", "amber14-vacuum", 1, k_kcal_per_mol=number("PROTBENCH_STEERED_K"),
                            pull_length_ns=number("PROTBENCH_PULL_LENGTH"),
                            pull_frame_ps=number("PROTBENCH_PULL_FRAME"), **common)
    window = WindowSettings.resolve("villin", "amber14-vacuum", 2, demo.n_windows - 1,
                                    k_kcal_per_mol=number("PROTBENCH_UMBRELLA_K"),
                                    production_length_ns=number("PROTBENCH_PRODUCTION_LENGTH"),
                                    frame_ps=number("PROTBENCH_FRAME"),
                                    checkpoint_ps=number("PROTBENCH_CHECKPOINT"),
                                    save_state_ps=number("PROTBENCH_SAVE_STATE"), **common)
    assert window.centre == pytest.approx(0.4)


def test_progress_display_reads_the_windows_progress_records(tmp_path):
    import io

    from rich.console import Console

    from protbench_nrp.local import Display, LocalJob

    job = LocalJob(_spec(PROTBENCH_N_WINDOWS="2"), tmp_path)
    Progress.now("production", 50, 200, 430.0).write(job.progress_path)
    screen = io.StringIO()
    display = Display(Console(file=screen, force_terminal=True, width=120))
    with display:
        display.refresh([job])
        display._progress.refresh()
    shown = screen.getvalue()
    assert "replica 1 window 00" in shown and "production" in shown
    assert "25.0%" in shown and "430 ns/day" in shown


def _fake_steered_outputs(root: Path, n_windows: int) -> None:
    """Setup's and replica 1's steered-MD outputs, non-empty, where layout.Campaign puts them: both 'finished'."""
    from protbench_nrp.products import setup_products, steered_products

    for product in (*setup_products(CAMPAIGN), *steered_products(CAMPAIGN, 1, n_windows)):
        (root / product).parent.mkdir(parents=True, exist_ok=True)
        (root / product).write_text("done\n")


def test_an_unreadable_progress_record_is_an_error_naming_it_not_a_traceback(tmp_path):
    root = tmp_path / "results"
    _fake_steered_outputs(root, n_windows=2)
    progress = root / CAMPAIGN.window_files(1, 0).progress
    progress.mkdir(parents=True)  # a directory where the window's progress record belongs
    result = _launch(_config(root, windows=[0]), "--local")
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"error: cannot read {progress.resolve()}" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert "skipped setup" in result.stdout and "skipped replica 1 steered MD" in result.stdout
    assert "started" not in result.stdout


def _job_running(tmp_path: Path, code: str):
    """A LocalJob whose process runs ``code`` instead of a script: a stand-in for a window mid-run."""
    from protbench_nrp.local import LocalJob

    class Running(LocalJob):
        def command(self, python: str = sys.executable) -> list[str]:
            return [python, "-c", code]

    return Running(_spec(), tmp_path)


def _kill(job) -> None:
    """Whatever the test found, leave no child behind."""
    if job.process is not None and job.process.poll() is None:
        job.process.kill()
        job.process.wait()


class _QuietDisplay:
    """A display that keeps the runner's event lines."""

    def __init__(self):
        self.events: list[str] = []

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass

    def event(self, text: str, markup: bool = True) -> None:
        self.events.append(text)

    def refresh(self, running) -> None:
        pass


class _FailingDisplay(_QuietDisplay):
    """A display that breaks once a Job is running, as any bug in the runner's loop might."""

    def refresh(self, running) -> None:
        if running:
            raise RuntimeError("the display broke")


def test_a_runner_that_fails_mid_run_stops_its_running_jobs_first(tmp_path):
    from protbench_nrp.local import LocalRunner

    job = _job_running(tmp_path, "import time; time.sleep(60)")
    runner = LocalRunner([job], max_parallel=1, display=_FailingDisplay())
    try:
        with pytest.raises(RuntimeError, match="the display broke"):
            runner.run()
        assert job.process is not None
        assert job.process.poll() == -signal.SIGTERM  # stopped, not left sleeping in its own session
        assert job.state == "stopped"
    finally:
        _kill(job)


def test_a_job_that_ignores_sigterm_is_killed_when_the_runner_fails(tmp_path):
    from protbench_nrp.local import LocalRunner

    # The words are split in the code: the log's header holds the command line, so only the print joins them.
    job = _job_running(tmp_path, "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                                 "print('ignoring' + ' SIGTERM', flush=True); time.sleep(60)")
    runner = LocalRunner([job], max_parallel=1, display=_FailingDisplay())
    runner._start(job)
    try:
        deadline = time.monotonic() + 30
        while "ignoring SIGTERM" not in job.log_path.read_text() and time.monotonic() < deadline:
            time.sleep(0.02)
        runner._stop_running(grace_s=0.5)
        assert job.process.poll() == -signal.SIGKILL
    finally:
        _kill(job)


#: A stand-in for a window: exits 143 on SIGTERM, as a window does after its checkpoint; else runs a minute.
_STOPS_ON_SIGTERM = ("import signal, sys, time; signal.signal(signal.SIGTERM, lambda *_: sys.exit(143)); "
                     "time.sleep(60)")


def test_a_ctrl_c_that_comes_as_a_job_starts_stops_that_job_too(tmp_path, monkeypatch):
    from protbench_nrp import local

    job = _job_running(tmp_path, _STOPS_ON_SIGTERM)
    popen = subprocess.Popen

    def start_then_ctrl_c(*args, **kwargs):
        process = popen(*args, **kwargs)
        # Ctrl-C reaches the runner when the Job's process exists but the runner has not yet
        # recorded it as running: a handler that looked for running Jobs would miss it.
        os.kill(os.getpid(), signal.SIGINT)
        return process

    monkeypatch.setattr(local.subprocess, "Popen", start_then_ctrl_c)
    display = _QuietDisplay()
    try:
        code = local.LocalRunner([job], max_parallel=1, display=display).run()
    finally:
        _kill(job)
    assert code == 130
    assert any(event.startswith("received SIGINT: asking 1 running Job(s)") for event in display.events)
    # stopped by the SIGTERM passed on (before or after its handler was set), not left to run its minute
    assert job.state == "stopped" and job.code in (143, -signal.SIGTERM), (job.state, job.code)


def test_a_second_ctrl_c_kills_the_jobs_the_first_asked_to_stop(tmp_path):
    from protbench_nrp.local import LocalRunner

    job = _job_running(tmp_path, "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                                 "print('ignoring' + ' SIGTERM', flush=True); time.sleep(60)")

    class TwoCtrlC(_QuietDisplay):
        """Ctrl-C once the Job runs and ignores SIGTERM, again once the runner has passed the first on."""

        pressed = 0

        def refresh(self, running) -> None:
            passed_on = any(event.startswith("received SIGINT") for event in self.events)
            if (self.pressed == 0 and running and "ignoring SIGTERM" in job.log_path.read_text()) or (
                    self.pressed == 1 and passed_on):
                self.pressed += 1
                os.kill(os.getpid(), signal.SIGINT)

    display = TwoCtrlC()
    try:
        code = LocalRunner([job], max_parallel=1, display=display).run()
    finally:
        _kill(job)
    assert code == 130 and display.pressed == 2
    assert job.state == "stopped" and job.code == -signal.SIGKILL

