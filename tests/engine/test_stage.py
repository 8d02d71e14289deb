"""The resumable run loop on a one-particle toy (Reference platform: fast and exact)."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest

from protbench_nrp.dcd import read_dcd
from protbench_nrp.engine import (CheckpointOrigin, EngineError, ParameterRamp, ResumeError,
                                  Schedule, StateOrigin, StopSignals, select_platform,
                                  state_xml_step)
from protbench_nrp.reporters import read_cv_file

from .conftest import Crash, CrashAt, ToyStage


def _schedule(frames=30, frame_steps=20, checkpoint_frames=5, save_state_frames=10, minutes=None):
    return Schedule(frames * frame_steps, frame_steps, checkpoint_frames, save_state_frames, minutes)


def _trajectory(toy: ToyStage):
    parts = []
    k = 0
    while toy.segment(k).exists():
        parts.append(read_dcd(toy.segment(k)))
        k += 1
    return (np.concatenate([p.steps for p in parts]),
            np.concatenate([p.positions_nm for p in parts]))


def _assert_exact(toy: ToyStage):
    """Every output holds exactly the frames of an uninterrupted run."""
    expected = toy.schedule.frame_steps * np.arange(1, toy.schedule.total_frames + 1)
    steps, positions = _trajectory(toy)
    np.testing.assert_array_equal(steps, expected)
    cv_steps, cv = read_cv_file(toy.cv)
    np.testing.assert_array_equal(cv_steps, expected)
    assert np.all(np.isfinite(cv))
    # the CV is x of the particle: the file and the trajectory tell the same story
    np.testing.assert_allclose(cv, positions[:, 0, 0], atol=1e-5)
    out_steps = [int(line.split(",")[0]) for line in toy.out.read_text().splitlines()[1:]]
    np.testing.assert_array_equal(out_steps, expected)
    # no frame written twice: a duplicate would repeat a position exactly
    assert len(np.unique(positions[:, 0, 0])) == len(positions)


def test_an_uninterrupted_stage_writes_every_frame_segment_and_saved_state(tmp_path):
    toy = ToyStage(tmp_path, _schedule())
    resumed, outcome = toy.resume_and_run()
    assert resumed.origin.description == "initial structure" and resumed.step == 0
    assert outcome.finished and outcome.step == 600 and outcome.signal is None
    _assert_exact(toy)
    assert [len(read_dcd(toy.segment(k))) for k in range(6)] == [5] * 6
    assert not toy.segment(6).exists()
    assert [state_xml_step(tmp_path / f"toy-{n}.xml") for n in (1, 2, 3)] == [200, 400, 600]
    assert state_xml_step(toy.files.portable) == 600


def test_a_crash_loses_only_frames_after_the_checkpoint_and_keeps_earlier_ones(tmp_path):
    toy = ToyStage(tmp_path, _schedule(), controllers=[CrashAt(27 * 20)])
    with pytest.raises(Crash):
        toy.resume_and_run()
    assert toy.held() == [27, 27, 27]  # reporters ran ahead of the checkpoint at frame 25
    before_steps, before = _trajectory(toy)

    toy.controllers.clear()
    resumed, outcome = toy.resume_and_run()
    assert resumed.origin.description.startswith("checkpoint") and resumed.frames == 25
    assert outcome.finished
    _assert_exact(toy)
    _, after = _trajectory(toy)
    np.testing.assert_array_equal(after[:25], before[:25])


def test_wall_clock_checkpoints_fall_mid_segment_and_resume_there(tmp_path):
    # one segment for the whole run; only the wall clock (every frame here) checkpoints
    toy = ToyStage(tmp_path, _schedule(checkpoint_frames=30, save_state_frames=None, minutes=1e-9),
                   controllers=[CrashAt(13 * 20)])
    with pytest.raises(Crash):
        toy.resume_and_run()
    assert state_xml_step(toy.files.portable) == 13 * 20
    toy.controllers.clear()
    resumed, _ = toy.resume_and_run()
    assert resumed.frames == 13
    _assert_exact(toy)


def test_the_checkpoint_never_claims_a_frame_the_outputs_do_not_hold(tmp_path):
    toy = ToyStage(tmp_path, _schedule(minutes=1e-9))
    seen = []

    class Inspector:
        def update(self, context, step):
            claimed = state_xml_step(toy.files.portable)
            if claimed is not None:
                seen.append(claimed)
                assert claimed // toy.schedule.frame_steps <= min(toy.held())

    toy.controllers.append(Inspector())
    toy.resume_and_run()
    assert len(seen) == toy.schedule.total_frames  # checked before every frame


def test_outputs_longer_than_the_checkpoint_are_cut_back(tmp_path):
    """A fresh pod may get a checkpoint uploaded before the outputs that grew after it."""
    toy = ToyStage(tmp_path, _schedule(), controllers=[CrashAt(12 * 20)])
    with pytest.raises(Crash):
        toy.resume_and_run()
    old = {p: p.read_bytes() for p in (toy.files.checkpoint, toy.files.portable)}  # frame 10
    toy.controllers[:] = [CrashAt(23 * 20)]
    with pytest.raises(Crash):
        toy.resume_and_run()
    for path, data in old.items():
        path.write_bytes(data)
    toy.controllers.clear()
    resumed, _ = toy.resume_and_run()
    assert resumed.frames == 10
    _assert_exact(toy)


def test_outputs_shorter_than_the_checkpoint_fall_back_to_a_saved_state(tmp_path):
    """An upload killed midway leaves the checkpoint ahead of the outputs."""
    toy = ToyStage(tmp_path, _schedule())
    toy.resume_and_run()
    for k in (2, 3, 4, 5):  # keep segments 0-1: 10 frames
        toy.segment(k).unlink()
    stage = toy.build()
    resumed = stage.resume([toy.fallback()])
    assert resumed.origin.description == "saved state toy-1.xml" and resumed.frames == 10
    assert any("only 10" in line for line in resumed.skipped)
    assert toy.held() == [10, 10, 10]
    # newer saved states belong to the abandoned history; the checkpoint now agrees
    assert not (tmp_path / "toy-2.xml").exists() and not (tmp_path / "toy-3.xml").exists()
    assert state_xml_step(toy.files.portable) == 200
    stage.run()
    _assert_exact(toy)


def test_outputs_shorter_than_every_saved_state_start_from_the_fallback(tmp_path):
    toy = ToyStage(tmp_path, _schedule())
    toy.resume_and_run()
    for k in range(1, 6):
        toy.segment(k).unlink()
    resumed, outcome = toy.resume_and_run()
    assert resumed.origin.description == "initial structure" and resumed.frames == 0
    assert outcome.finished
    _assert_exact(toy)


def test_a_checkpoint_from_another_platform_resumes_from_the_portable_state(tmp_path):
    toy = ToyStage(tmp_path, _schedule(), platform="CPU", controllers=[CrashAt(17 * 20)])
    with pytest.raises(Crash):
        toy.resume_and_run()
    toy.platform, toy.controllers = "Reference", []
    stage = toy.build()
    resumed = stage.resume([toy.fallback()])
    assert resumed.origin.description == "portable checkpoint toy-checkpoint.xml"
    assert resumed.frames == 15
    assert any("Platform" in line for line in resumed.skipped)
    # the checkpoint was rewritten here, so the next restart on this platform loads it directly
    CheckpointOrigin(toy.files.checkpoint).load(stage.context)
    stage.run()
    _assert_exact(toy)


def test_a_damaged_checkpoint_and_portable_state_are_skipped_not_fatal(tmp_path):
    toy = ToyStage(tmp_path, _schedule(), controllers=[CrashAt(22 * 20)])
    with pytest.raises(Crash):
        toy.resume_and_run()
    toy.files.checkpoint.write_bytes(b"garbage")
    toy.files.portable.write_text("<State")
    toy.controllers.clear()
    resumed, _ = toy.resume_and_run()
    assert resumed.origin.description == "saved state toy-2.xml"
    _assert_exact(toy)


def test_a_final_checkpoint_missing_its_portable_twin_is_completed_on_restart(tmp_path):
    from protbench_nrp.engine import finished_on_disk

    toy = ToyStage(tmp_path, _schedule())
    toy.resume_and_run()
    toy.files.portable.unlink()  # killed between the final checkpoint and its portable twin
    assert not finished_on_disk(toy.schedule, toy.files, toy.reporters(topology=False))
    resumed, outcome = toy.resume_and_run()
    assert resumed.origin.description.startswith("checkpoint") and outcome.finished
    assert finished_on_disk(toy.schedule, toy.files, toy.reporters(topology=False))
    _assert_exact(toy)


def test_no_loadable_origin_is_a_clear_error(tmp_path):
    toy = ToyStage(tmp_path, _schedule())
    stage = toy.build()
    with pytest.raises(ResumeError, match="no starting point"):
        stage.resume([StateOrigin(tmp_path / "absent.xml")])
    with pytest.raises(RuntimeError, match="resume"):
        stage.run()


def test_sigterm_stops_at_the_next_frame_with_outputs_and_checkpoint_in_step(tmp_path):
    class SelfSignal:
        def update(self, context, step):
            if step == 7 * 20:
                os.kill(os.getpid(), signal.SIGTERM)

    toy = ToyStage(tmp_path, _schedule(), controllers=[SelfSignal()])
    with StopSignals() as stop:
        _, outcome = toy.resume_and_run(stop)
    assert outcome.stopped and outcome.signal == signal.SIGTERM and stop.exit_code == 143
    assert outcome.step == 8 * 20
    assert toy.held() == [8, 8, 8] and state_xml_step(toy.files.portable) == 8 * 20
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handler given back
    toy.controllers.clear()
    toy.resume_and_run()
    _assert_exact(toy)


def test_a_seed_repeats_a_trajectory_and_each_stream_of_a_campaign_is_its_own(tmp_path):
    from protbench_nrp.engine import MAX_SEED, derive_seed

    runs = []
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        toy = ToyStage(tmp_path / name, _schedule(), seed=seed)
        toy.resume_and_run()
        runs.append(_trajectory(toy)[1])
    np.testing.assert_array_equal(runs[0], runs[1])
    assert not np.array_equal(runs[0][0], runs[2][0])
    assert derive_seed(0, "villin", 1) == 0  # no seed: OpenMM draws new random numbers
    assert derive_seed(7, "villin", 1) == derive_seed(7, "villin", 1) != derive_seed(8, "villin", 1)
    streams = {derive_seed(7, "villin", "amber14-vacuum", replica, "window", window, phase)
               for replica in (1, 2, 3) for window in range(31)
               for phase in ("equilibration", "production", "velocities")}
    assert len(streams) == 3 * 31 * 3 and all(1 <= seed < MAX_SEED for seed in streams)


def test_sigint_exit_code():
    with StopSignals() as stop:
        assert stop.exit_code == 0
        os.kill(os.getpid(), signal.SIGINT)
    assert stop.requested == signal.SIGINT and stop.exit_code == 130


def test_a_parameter_ramp_follows_the_step_count_across_a_resume(tmp_path):
    ramp = ParameterRamp("Q0", 0.5, 1.5, 600)
    toy = ToyStage(tmp_path, _schedule(), controllers=[ramp, CrashAt(10 * 20 + 1)])
    with pytest.raises(Crash):
        toy.resume_and_run()
    toy.controllers = [ramp]
    stage = toy.build()
    stage.resume([toy.fallback()])
    # the checkpoint at step 200 holds the value set before the stretch that reached it
    assert stage.context.getParameter("Q0") == pytest.approx(ramp.value(180))
    stage.run()
    assert stage.context.getParameter("Q0") == pytest.approx(ramp.value(580))
    assert ramp.value(0) == 0.5 and ramp.value(300) == 1.0 and ramp.value(900) == 1.5


@pytest.mark.parametrize("kwargs, message", [
    (dict(length_ns=1, timestep_fs=4, frame_ps=0.006), "does not divide .* into whole steps"),
    (dict(length_ns=1, timestep_fs=4, frame_ps=30), "does not divide .* into whole frames"),
    (dict(length_ns=1, timestep_fs=4, frame_ps=100, checkpoint_ps=150), "not a whole multiple"),
    (dict(length_ns=1, timestep_fs=4, frame_ps=100, save_state_ps=50), "not a whole multiple"),
    (dict(length_ns=-1, timestep_fs=4, frame_ps=100), "must be a positive number"),
    (dict(length_ns=float("nan"), timestep_fs=4, frame_ps=100), "must be a positive number"),
    (dict(length_ns=1, timestep_fs=4, frame_ps=100, checkpoint_minutes=0), "must be a positive"),
])
def test_schedules_that_do_not_fit_are_refused(kwargs, message):
    with pytest.raises(EngineError, match=message):
        Schedule.from_times(**kwargs)


def test_schedule_from_times_counts_steps_and_frames():
    schedule = Schedule.from_times(500, 4, 100, 10_000, 100_000, 15)
    assert (schedule.total_steps, schedule.frame_steps, schedule.total_frames) == (125_000_000, 25_000, 5000)
    assert (schedule.checkpoint_frames, schedule.save_state_frames) == (100, 1000)


def test_platforms_are_checked_by_name():
    platform, properties = select_platform("cpu", "mixed")
    assert platform.getName() == "CPU" and properties == {}  # CPU has no precision to set
    with pytest.raises(EngineError, match="unknown platform 'Metal'.*PROTBENCH_PLATFORM"):
        select_platform("Metal")
    with pytest.raises(EngineError, match="PROTBENCH_PRECISION"):
        select_platform("CPU", "quad")


def test_the_barostat_is_the_configured_one_and_only_for_periodic_systems():
    import openmm

    from protbench_nrp.engine import set_barostat

    system = openmm.System()
    system.setDefaultPeriodicBoxVectors(openmm.Vec3(3, 0, 0), openmm.Vec3(0, 3, 0), openmm.Vec3(0, 0, 3))
    nonbonded = openmm.NonbondedForce()
    nonbonded.setNonbondedMethod(openmm.NonbondedForce.CutoffPeriodic)
    for _ in range(2):
        system.addParticle(16.0)
        nonbonded.addParticle(0.0, 0.3, 0.5)
    system.addForce(nonbonded)
    system.addForce(openmm.MonteCarloBarostat(5.0, 400.0))  # whatever setup left behind

    def barostats():
        return [f for f in system.getForces() if isinstance(f, openmm.MonteCarloBarostat)]

    set_barostat(system, 298.0, 1.0)
    assert len(barostats()) == 1
    assert barostats()[0].getDefaultPressure().value_in_unit(openmm.unit.atmosphere) == pytest.approx(1.0)
    assert barostats()[0].getDefaultTemperature().value_in_unit(openmm.unit.kelvin) == pytest.approx(298.0)
    set_barostat(system, 298.0, 0.0)
    assert barostats() == []
    with pytest.raises(EngineError, match="PROTBENCH_PRESSURE"):
        set_barostat(system, 298.0, -1.0)
    with pytest.raises(EngineError, match="not periodic.*PROTBENCH_PRESSURE=0"):
        from .conftest import toy_system

        set_barostat(toy_system(), 300.0, 1.0)
