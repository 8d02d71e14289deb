"""The real window script on villin (CPU platform): outputs, stops, kills and restarts."""

from __future__ import annotations

import random
import re
import signal
import time

import mdtraj
import numpy as np
import pytest

from protbench_nrp.dcd import inspect_dcd
from protbench_nrp.engine import load_state_xml, read_production_frames, state_xml_step
from protbench_nrp.records import Progress, UmbrellaParameters
from protbench_nrp.reporters import read_cv_file

from .conftest import data_steps, run_window, start_window, tree_snapshot, wait_for_step

pytestmark = pytest.mark.slow


def assert_window_exact(root, files, n_frames, frame_steps, per_segment):
    """Every production output holds exactly the frames of an uninterrupted run."""
    expected = frame_steps * np.arange(1, n_frames + 1)
    frames = read_production_frames(root, files)
    np.testing.assert_array_equal(frames.steps, expected)
    assert np.all(np.isfinite(frames.positions_nm))
    flat = frames.positions_nm.reshape(len(frames), -1)
    assert len(np.unique(flat, axis=0)) == n_frames  # no frame written twice
    np.testing.assert_array_equal(data_steps(root / files.production("out"), ","), expected)
    cv_steps, cv = read_cv_file(root / files.cv_timeseries)
    np.testing.assert_array_equal(cv_steps, expected)
    assert np.all(np.isfinite(cv)) and np.all((cv > 0) & (cv <= 1))
    # an independent reader agrees on every segment
    n_segments = -(-n_frames // per_segment)
    segments = [root / files.production_segment(k) for k in range(n_segments)]
    assert all(s.exists() for s in segments)
    assert not (root / files.production_segment(n_segments)).exists()
    loaded = mdtraj.load([str(s) for s in segments], top=str(root / files.start_pdb))
    assert loaded.n_frames == n_frames
    np.testing.assert_allclose(loaded.xyz, frames.positions_nm, atol=1e-5)
    return frames, cv


def test_a_window_writes_its_outputs_and_a_finished_window_is_left_alone(villin_results, window_files):
    root, files = villin_results.root, window_files
    done = run_window(root)
    assert done.returncode == 0, done.stderr + done.stdout

    assert_window_exact(root, files, n_frames=10, frame_steps=50, per_segment=5)
    assert (root / files.cv_timeseries).read_text().splitlines()[0] == '#"Step" "CV"'
    assert data_steps(root / files.equilibration("out"), ",").tolist() == [50, 100]
    assert inspect_dcd(root / files.equilibration("dcd")).n_frames == 2
    assert state_xml_step(root / files.equilibrated_state) == 100
    assert state_xml_step(root / files.portable_checkpoint) == 500
    assert [state_xml_step(root / files.saved_state(n)) for n in (1, 2)] == [250, 500]
    assert (root / files.production("chk")).stat().st_size > 0
    parameters = UmbrellaParameters.read(root / files.parameters)
    assert parameters.centre == pytest.approx(1.0 + (0.4 - 1.0) * 3 / 30)
    assert (parameters.k_kcal_per_mol, parameters.temperature_kelvin, parameters.pressure_atm) == (5000, 300, 0)
    # OpenMM ran the umbrella in its own units: k in kJ/mol
    ran = load_state_xml(root / files.portable_checkpoint).getParameters()
    assert ran["k"] == pytest.approx(5000 * 4.184) and ran["Q0"] == pytest.approx(parameters.centre)
    progress = Progress.read(root / files.progress)
    assert (progress.phase, progress.step, progress.total_steps) == ("finished", 500, 500)
    assert progress.ns_per_day > 0
    # what production really ran with, for status tools: 4 fs steps, 50 of them a frame
    assert (progress.timestep_fs, progress.frame_ps, progress.steps_after_phase) == (4.0, 0.2, 0)
    assert not list((root / files.directory).glob(".*"))  # no temporaries left

    before = tree_snapshot(root)
    time.sleep(0.05)
    again = run_window(root)
    assert again.returncode == 0 and "already finished" in again.stdout
    assert tree_snapshot(root) == before

    # A kill between the final checkpoint and the finished record: the record
    # is restored, nothing else is touched.
    Progress("production", 450, 500, 400.0, 0.0).write(root / files.progress)
    before = {k: v for k, v in tree_snapshot(root).items() if not k.endswith("progress.json")}
    repaired = run_window(root)
    assert repaired.returncode == 0 and "restored the progress record" in repaired.stdout
    progress = Progress.read(root / files.progress)
    assert (progress.phase, progress.step, progress.total_steps) == ("finished", 500, 500)
    assert {k: v for k, v in tree_snapshot(root).items() if not k.endswith("progress.json")} == before


def test_a_window_whose_outputs_lost_their_tail_resumes_from_a_saved_state(villin_results, window_files):
    root, files = villin_results.root, window_files
    assert run_window(root).returncode == 0
    frames_before, _ = assert_window_exact(root, files, 10, 50, 5)
    (root / files.production_segment(1)).unlink()  # e.g. an upload killed midway
    stale = root / files.directory / f".{files.production('chk').name}.x1y2.tmp"
    stale.write_bytes(b"half a checkpoint")  # and a write killed before its rename
    redo = run_window(root)
    assert redo.returncode == 0, redo.stderr
    assert not stale.exists() and f"removed {stale.name}" in redo.stdout
    assert "starting from saved state" in redo.stdout and "at step 250" in redo.stdout
    frames_after, _ = assert_window_exact(root, files, 10, 50, 5)
    np.testing.assert_array_equal(frames_after.positions_nm[:5], frames_before.positions_nm[:5])


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_stops_the_window_at_a_frame_with_a_checkpoint_that_matches(
        villin_results, window_files, signum, code):
    root, files = villin_results.root, window_files
    length = dict(PRODUCTION_LENGTH="0.008", CHECKPOINT="2.0")  # 40 frames, segments of 10
    process = start_window(root, **length)
    wait_for_step(root / files.progress, "production", 500, process)
    process.send_signal(signum)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == code, output
    step = state_xml_step(root / files.portable_checkpoint)
    frames = step // 50
    assert frames >= 10 and f"stopped by signal {int(signum)} at step {step}" in output
    # nothing past the checkpoint, nothing short of it: a SIGTERM costs no frame
    assert data_steps(root / files.production("out"), ",")[-1] == step
    assert read_cv_file(root / files.cv_timeseries)[0][-1] == step
    assert read_production_frames(root, files).steps[-1] == step
    if signum == signal.SIGTERM:
        finish = run_window(root, **length)
        assert finish.returncode == 0, finish.stderr
        assert f"starting from checkpoint villin-amber14-vacuum-production.chk at step {step}" in finish.stdout
        assert_window_exact(root, files, 40, 50, 10)


#: The chaos test's run: 400 equilibration steps (8 frames), then 120 production frames of 40
#: steps (4,800 steps) in segments of 5; wall-clock checkpoints every 0.18 s fall mid-segment.
CHAOS = dict(EQUIL_LENGTH="0.0004", PRODUCTION_LENGTH="0.0192", FRAME="0.16", CHECKPOINT="0.8",
             SAVE_STATE="3.2", CHECKPOINT_MINUTES="0.003")
CHAOS_STEPS, CHAOS_FRAME_STEPS = 4800, 40
#: Each kill in production is drawn at most this many steps past where the run resumed, so
#: dozens of frames (each a progress record to see) separate the last kill from the end.
CHAOS_REACH_STEPS = 480
#: What each start of the chaos test does, in order. Kills wait for what the run wrote, never
#: for the clock, so they land where planned however slowly the machine starts the script.
CHAOS_PLAN = ("start-up", "equilibration", "production", "sigterm", "start-up", "production",
              "production", "production", "production", "production")


def _this_runs_record(progress, process):
    """The progress record ``process`` itself wrote (not an earlier process), or ``None``."""
    try:
        record = Progress.read(progress)
    except (OSError, ValueError):
        return None
    return record if record.updated_unix > process.started_unix else None


def _stop_when(progress, process, reached, signum=signal.SIGKILL, timeout: float = 240) -> str:
    """Send ``signum`` once ``process`` reports a record for which ``reached(record)``.

    Returns the phase of the last record the process wrote before the signal:
    where the signal landed.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"exited early ({process.returncode}): {process.stdout.read()}"
        record = _this_runs_record(progress, process)
        if record is not None and reached(record):
            process.send_signal(signum)
            return record.phase
        time.sleep(0.01)
    raise AssertionError(f"the window did not get there within {timeout} s")


def test_chaos_kills_and_restarts_leave_exactly_the_frames_of_an_uninterrupted_run(
        villin_results, window_files):
    root, files = villin_results.root, window_files
    progress = root / files.progress
    rng = random.Random(20240531)
    kept, landed = {}, []
    for action in CHAOS_PLAN:
        resumed_at = state_xml_step(root / files.portable_checkpoint) or 0  # where this start resumes
        assert resumed_at + CHAOS_REACH_STEPS <= CHAOS_STEPS - 20 * CHAOS_FRAME_STEPS
        process = start_window(root, **CHAOS)
        if action == "start-up":  # before the script has written anything
            process.send_signal(signal.SIGKILL)
            landed.append(action)
        elif action == "equilibration":  # past its first frame; production, had we not looked in time
            landed.append(_stop_when(progress, process, lambda r: r.phase != "equilibration" or r.step >= 50))
        elif action == "sigterm":  # a polite stop in production
            landed.append(_stop_when(progress, process, lambda r: r.phase == "production",
                                     signal.SIGTERM))
            assert process.wait(timeout=60) == 143
        else:  # a frame drawn over the stretch of production ahead
            step = rng.randrange(resumed_at + CHAOS_FRAME_STEPS, resumed_at + CHAOS_REACH_STEPS + 1,
                                 CHAOS_FRAME_STEPS)
            landed.append(_stop_when(progress, process,
                                     lambda r, step=step: r.phase == "production" and r.step >= step))
        process.wait(timeout=60)
        process.stdout.close()
        # whatever the kill tore, every frame up to the portable checkpoint must survive as it is
        step = state_xml_step(root / files.portable_checkpoint) or 0
        cv_steps, cv = read_cv_file(root / files.cv_timeseries) if (root / files.cv_timeseries).exists() else ([], [])
        kept.update({int(s): float(v) for s, v in zip(cv_steps, cv) if s <= step})
    production_kills = sum(1 for action, phase in zip(CHAOS_PLAN, landed)
                           if action == "production" and phase == "production")
    assert production_kills == CHAOS_PLAN.count("production") and landed[3] == "production", landed
    assert 0 < max(kept) < CHAOS_STEPS  # production was under way, and unfinished, before the last run
    final = run_window(root, **CHAOS)
    assert final.returncode == 0, final.stderr
    _, cv = assert_window_exact(root, files, 120, CHAOS_FRAME_STEPS, 5)
    cv_by_step = dict(zip(range(CHAOS_FRAME_STEPS, CHAOS_STEPS + 1, CHAOS_FRAME_STEPS), cv))
    assert all(cv_by_step[s] == pytest.approx(v, abs=1e-9) for s, v in kept.items())


def test_a_seeded_window_repeats_its_trajectory_exactly_and_another_seed_does_not(
        villin_results, villin_inputs, window_files, tmp_path):
    roots = [villin_results.root, villin_inputs.copy_to(tmp_path / "again").root,
             villin_inputs.copy_to(tmp_path / "other").root]
    for root, seed in zip(roots, ("7", "7", "8")):
        result = run_window(root, SEED=seed)
        assert result.returncode == 0, result.stderr
    same, again, other = (read_production_frames(root, window_files).positions_nm for root in roots)
    np.testing.assert_array_equal(same, again)  # velocities and random forces alike
    assert not np.array_equal(same[0], other[0])


def test_equilibration_and_production_use_the_seeds_friction_and_barostat(villin_results):
    import openmm
    import openmm.unit as unit

    from protbench_nrp.engine import set_barostat
    from protbench_nrp.window import UmbrellaWindow, WindowSettings

    settings = WindowSettings.resolve("villin", "amber14-vacuum", 1, 3, platform="CPU")
    window = UmbrellaWindow(villin_results.root, settings, log=lambda line: None)
    inputs = window.read_inputs()
    for make_stage, friction in ((window.equilibration_stage, 5.0), (window.production_stage, 1.0)):
        stage, _ = make_stage(inputs)
        assert stage.context.getIntegrator().getFriction().value_in_unit(unit.picosecond ** -1) == friction
    box = openmm.System()
    box.addParticle(1.0)
    box.setDefaultPeriodicBoxVectors(*(openmm.Vec3(*row) for row in 3.0 * np.eye(3)))
    periodic = openmm.NonbondedForce()
    periodic.setNonbondedMethod(openmm.NonbondedForce.CutoffPeriodic)
    periodic.addParticle(0.0, 0.1, 0.0)
    box.addForce(periodic)
    set_barostat(box, 300.0, 1.0, settings.equil_barostat_frequency)
    set_barostat(box, 300.0, 1.0, settings.barostat_frequency)  # replaces it
    assert [box.getForce(i).getFrequency() for i in range(1, box.getNumForces())] == [25]


def test_a_checkpoint_from_another_platform_resumes_from_the_portable_state(villin_results, window_files):
    root, files = villin_results.root, window_files
    length = dict(PRODUCTION_LENGTH="0.004", CHECKPOINT="1.0")  # 20 frames
    process = start_window(root, **length)
    wait_for_step(root / files.progress, "production", 650, process)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 143
    process.stdout.close()
    step = state_xml_step(root / files.portable_checkpoint)

    moved = run_window(root, PLATFORM="Reference", **length)
    assert moved.returncode == 0, moved.stderr
    assert "different Platform" in moved.stdout
    assert (f"starting from portable checkpoint villin-amber14-vacuum-production-checkpoint.xml at step {step}"
            in moved.stdout)
    assert_window_exact(root, files, 20, 50, 5)


def test_wall_clock_checkpoints_bound_what_a_hard_kill_loses(villin_results, window_files):
    root, files = villin_results.root, window_files
    # one segment for the whole run: only the wall clock can checkpoint before the end
    settings = dict(PRODUCTION_LENGTH="0.008", CHECKPOINT="8.0", SAVE_STATE="8.0",
                    CHECKPOINT_MINUTES="0.002")
    process = start_window(root, **settings)
    wait_for_step(root / files.progress, "production", 1000, process)
    # and for a wall-clock checkpoint of production (a fast machine gets to step 1000 sooner)
    _stop_when(root / files.progress, process,
               lambda _record: (state_xml_step(root / files.portable_checkpoint) or 0) > 0)
    process.wait(timeout=60)
    process.stdout.close()
    step = state_xml_step(root / files.portable_checkpoint)
    assert step is not None and 0 < step < 2000 and step % 50 == 0
    resumed = run_window(root, **settings)
    assert resumed.returncode == 0, resumed.stderr
    # From the portable State's step, or from a binary checkpoint written after it, when the kill
    # fell between the two files of one checkpoint: never from further back.
    start = re.search(r"at step (\d+) \(frame (\d+) of 40\)", resumed.stdout)
    assert start is not None, resumed.stdout
    assert step <= int(start[1]) < 2000 and int(start[1]) == 50 * int(start[2])
    assert_window_exact(root, files, 40, 50, 40)


def stop_equilibration_midway(root, files) -> dict:
    """SIGTERM a window 400+ steps into a 2000-step equilibration; return its settings."""
    settings = dict(EQUIL_LENGTH="0.002")  # 2000 steps of 1 fs, 40 frames
    process = start_window(root, **settings)
    wait_for_step(root / files.progress, "equilibration", 400, process)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 143
    process.stdout.close()
    return settings


def test_equilibration_stopped_midway_resumes_from_its_checkpoint(villin_results, window_files):
    root, files = villin_results.root, window_files
    settings = stop_equilibration_midway(root, files)
    assert not (root / files.equilibrated_state).exists()
    assert not (root / files.production("chk")).exists()
    held = len(data_steps(root / files.equilibration("out"), ","))
    assert 8 <= held < 40

    finish = run_window(root, **settings)
    assert finish.returncode == 0, finish.stderr
    assert f"starting from checkpoint villin-amber14-vacuum-equilibration.chk at step {held * 50}" in finish.stdout
    np.testing.assert_array_equal(data_steps(root / files.equilibration("out"), ","), 50 * np.arange(1, 41))
    assert inspect_dcd(root / files.equilibration("dcd")).n_frames == 40
    assert state_xml_step(root / files.equilibrated_state) == 2000
    assert_window_exact(root, files, 10, 50, 5)


def test_changing_the_umbrella_of_a_started_window_is_refused(villin_results, window_files):
    root, files = villin_results.root, window_files
    process = start_window(root, PRODUCTION_LENGTH="0.008")
    wait_for_step(root / files.progress, "production", 100, process)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 143
    process.stdout.close()
    before = tree_snapshot(root)
    changed = run_window(root, PRODUCTION_LENGTH="0.008", UMBRELLA_K="2500")
    assert changed.returncode != 0
    assert "k_kcal_per_mol: 5000.0 -> 2500.0" in changed.stderr
    assert "PROTBENCH_" in changed.stderr
    assert tree_snapshot(root) == before
    # the checkpoint interval sets the segment size: another would throw production away
    resized = run_window(root, PRODUCTION_LENGTH="0.008", CHECKPOINT="0.4")
    assert resized.returncode != 0
    assert "checkpoint_ps: 1.0 -> 0.4" in resized.stderr and "PROTBENCH_" in resized.stderr
    assert tree_snapshot(root) == before
    resumed = run_window(root, PRODUCTION_LENGTH="0.008")
    assert resumed.returncode == 0, resumed.stderr
    assert "starting from checkpoint" in resumed.stdout
    assert_window_exact(root, files, 40, 50, 5)


# -- bad input: a clear error, a non-zero exit, nothing written ---------------------------

def _remove(path):
    path.unlink()


def _empty(path):
    path.write_text("")


@pytest.mark.parametrize("which, damage, producer", [
    ("system_xml", _remove, "setup-umbrella-system.py"),
    ("system_xml", _empty, "setup-umbrella-system.py"),
    ("start_pdb", _remove, "run-steered-md.py"),
    ("steered_state", _remove, "run-steered-md.py"),
    ("steered_state", _empty, "run-steered-md.py"),
])
def test_a_missing_or_empty_input_names_the_file_and_its_stage(villin_results, window_files,
                                                                which, damage, producer):
    root = villin_results.root
    path = root / getattr(window_files, which)
    damage(path)
    before = tree_snapshot(root)
    result = run_window(root)
    assert result.returncode != 0
    assert path.name in result.stderr and producer in result.stderr
    assert tree_snapshot(root) == before


def test_a_system_without_the_umbrella_force_is_refused(villin_results, window_files):
    import openmm

    root = villin_results.root
    path = root / window_files.system_xml
    system = openmm.XmlSerializer.deserialize(path.read_text())
    for index in reversed(range(system.getNumForces())):
        if isinstance(system.getForce(index), openmm.CustomCVForce):
            system.removeForce(index)
    path.write_text(openmm.XmlSerializer.serialize(system))
    before = tree_snapshot(root)
    result = run_window(root)
    assert result.returncode != 0
    assert "CustomCVForce" in result.stderr and "'k' and 'Q0'" in result.stderr
    assert path.name in result.stderr
    assert tree_snapshot(root) == before


@pytest.mark.parametrize("overrides, message", [
    (dict(WINDOW="31"), "window 31 is outside 0..30"),
    (dict(WINDOW="-1"), "PROTBENCH_WINDOW"),
    (dict(WINDOW="seven"), "PROTBENCH_WINDOW"),
    (dict(PRODUCTION_LENGTH="ten"), "PROTBENCH_PRODUCTION_LENGTH"),
    (dict(PRODUCTION_LENGTH="-0.002"), "PROTBENCH_PRODUCTION_LENGTH = -0.002 ns must be a positive"),
    (dict(EQUIL_LENGTH="0"), "PROTBENCH_EQUIL_LENGTH = 0.0 ns must be a positive"),
    (dict(FRAME="0.3"), "PROTBENCH_FRAME = 0.3 ps does not divide PROTBENCH_PRODUCTION_LENGTH"),
    (dict(CHECKPOINT="0.5"), "PROTBENCH_CHECKPOINT = 0.5 ps is not a whole multiple of PROTBENCH_FRAME"),
    (dict(SAVE_STATE="0.3"), "PROTBENCH_SAVE_STATE = 0.3 ps is not a whole multiple"),
    (dict(TIMESTEP="3"), "PROTBENCH_TIMESTEP = 3.0 fs does not divide PROTBENCH_FRAME"),
    (dict(PLATFORM="Metal"), "unknown platform 'Metal'"),
    (dict(PLATFORM="CUDA"), "platform CUDA is not available on this machine"),
    (dict(PRESSURE="1"), "PROTBENCH_PRESSURE=0"),
    (dict(TARGET="toy"), "target 'toy' is unknown"),
    (dict(SEED="-1"), "PROTBENCH_SEED"),
    (dict(SEED="2147483648"), "PROTBENCH_SEED"),
])
def test_bad_settings_are_refused_before_anything_is_written(villin_results, overrides, message):
    root = villin_results.root
    before = tree_snapshot(root)
    result = run_window(root, **overrides)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr
    assert tree_snapshot(root) == before


def test_an_unknown_target_is_accepted_with_temperature_and_pressure(villin_results):
    root = villin_results.root
    result = run_window(root, TARGET="toy", TEMPERATURE="310", PRESSURE="0")
    # past the settings, it looks for toy's inputs and names the first one it lacks
    assert result.returncode != 0
    assert "toy-amber14-vacuum-umbrella-openmm-system.xml is missing" in result.stderr
    assert not (root / "toy-amber14-vacuum").exists()


def test_equilibration_stopped_on_one_platform_resumes_on_another_from_its_portable_state(
        villin_results, window_files):
    root, files = villin_results.root, window_files
    settings = stop_equilibration_midway(root, files)
    step = state_xml_step(root / files.equilibration_portable)
    assert step is not None and 400 <= step < 2000
    assert not (root / files.equilibrated_state).exists()

    moved = run_window(root, PLATFORM="Reference", **settings)
    assert moved.returncode == 0, moved.stderr
    assert "different Platform" in moved.stdout
    assert (f"starting from portable checkpoint villin-amber14-vacuum-equilibration-checkpoint.xml "
            f"at step {step}" in moved.stdout)  # not a fresh start from the window structure
    assert "window structure" not in moved.stdout
    np.testing.assert_array_equal(data_steps(root / files.equilibration("out"), ","), 50 * np.arange(1, 41))
    assert inspect_dcd(root / files.equilibration("dcd")).n_frames == 40
    assert state_xml_step(root / files.equilibrated_state) == 2000
    assert_window_exact(root, files, 10, 50, 5)
