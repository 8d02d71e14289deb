"""Blow-ups stop cleanly: toys on the Reference platform, villin on CPU through the script."""

from __future__ import annotations

import json

import numpy as np
import pytest

from protbench_nrp.cli import run_stage
from protbench_nrp.dcd import read_dcd
from protbench_nrp.engine import EXIT_BLOWN_UP, BlownUpError, Schedule, state_xml_step
from protbench_nrp.records import Progress
from protbench_nrp.reporters import ProgressRecorder, read_cv_file

from .conftest import ToyStage, data_steps, run_window, toy_system
from .test_stage import _assert_exact, _schedule, _trajectory

WALL_NM = 1.0


def wall_system():
    """One particle pushed along x into a wall beyond which its energy is NaN.

    From anywhere left of the wall it hits the wall within ~150 steps of 2 fs,
    whatever its velocity: the toy explodes from every state.
    """
    return toy_system(f"50*(y^2+z^2) - 2000*x + 1e-3*sqrt({WALL_NM}-x)")


def wall_toy(tmp_path, max_blowups=3, progress=True):
    schedule = Schedule(total_steps=1000, frame_steps=10, checkpoint_frames=5, save_state_frames=0)
    toy = ToyStage(tmp_path, schedule, system=wall_system, start_nm=(-5.0, 0.0, 0.0))
    toy.stage_options = dict(name="toy wall stage", max_blowups=max_blowups,
                             advice="set PROTBENCH_TIMESTEP lower")
    if progress:
        toy.stage_options["progress"] = ProgressRecorder(tmp_path / "progress.json", "production",
                                                         schedule.total_steps)
    return toy


class BuiltStage:
    """What :func:`run_stage` runs: resume the toy, then run it."""

    def __init__(self, toy):
        self.toy = toy

    def run(self, stop):
        stage = self.toy.build()
        stage.resume([self.toy.fallback()])
        return 0 if stage.run(stop).finished else stop.exit_code


def _text_is_finite(path) -> bool:
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            continue
        values = [float(v) for v in line.replace(",", " ").split()]
        if not all(np.isfinite(values)):
            return False
    return True


def test_a_stage_that_blows_up_from_every_state_exits_65_with_its_outputs_finite_and_resumable(
        tmp_path, capsys):
    toy = wall_toy(tmp_path)
    with pytest.raises(SystemExit) as exited:
        run_stage(lambda: BuiltStage(toy))
    assert exited.value.code == EXIT_BLOWN_UP == 65
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.startswith("Error: toy wall stage blew up at step ")
    record = json.loads((tmp_path / "progress.json").read_text())
    good = record["step"]
    assert record["phase"] == "blew-up" and record["recoveries"] >= 3
    assert good > 0 and good % 50 == 0  # a checkpoint, not the start
    assert f"3 recovery attempt(s) from step {good}" in err
    assert "smaller timestep" in err and "set PROTBENCH_TIMESTEP lower" in err
    # earlier recoveries may have got past a checkpoint; the last three started from the same
    # good checkpoint and blew up again, then it stopped
    recoveries = [line for line in toy.lines if line.startswith("recovery ")]
    assert len(recoveries) == record["recoveries"]
    assert all(f"from step {good}" in line for line in recoveries[-3:])
    assert not recoveries[-4:-3] or f"from step {good}" not in recoveries[-4]
    assert len({line.split("seed ")[1] for line in recoveries}) == len(recoveries)  # new seeds
    # outputs end at the good state, every value finite
    assert toy.held() == [good // 10] * 3
    steps, positions = _trajectory(toy)
    np.testing.assert_array_equal(steps, 10 * np.arange(1, good // 10 + 1))
    assert np.all(np.isfinite(positions)) and np.all(positions[:, 0, 0] < WALL_NM)
    assert _text_is_finite(toy.out) and _text_is_finite(toy.cv)
    cv_steps, cv = read_cv_file(toy.cv)
    assert cv_steps[-1] == good and f"(Q = {cv[-1]:.4f} at the last good frame)" in err
    assert state_xml_step(toy.files.portable) == good
    # and it resumes from there
    stage = toy.build()
    assert stage.resume([toy.fallback()]).step == good


def test_a_seeded_stage_recovers_from_blow_ups_the_same_way_every_time(tmp_path):
    runs = []
    for name in ("first", "second"):
        toy = wall_toy(tmp_path / name, progress=False)
        stage = toy.build()
        stage.resume([toy.fallback()])
        with pytest.raises(BlownUpError) as error:
            stage.run()
        runs.append(([line for line in toy.lines if line.startswith("recovery ")], error.value.good_step))
    assert runs[0][0] and runs[0] == runs[1]  # the same new velocities, from the same steps


def test_no_recovery_is_tried_with_max_blowups_zero(tmp_path):
    toy = wall_toy(tmp_path, max_blowups=0, progress=False)
    stage = toy.build()
    stage.resume([toy.fallback()])
    with pytest.raises(BlownUpError) as error:
        stage.run()
    assert error.value.recoveries == 0 and error.value.good_step % 50 == 0
    assert f"no recovery was tried from step {error.value.good_step}" in str(error.value)
    assert not [line for line in toy.lines if line.startswith("recovery ")]


class NaNOnce:
    """Controller that puts NaN into the positions the first time the run passes ``step``."""

    def __init__(self, step: int):
        self.step, self.fired = step, False

    def update(self, context, step):
        if step >= self.step and not self.fired:
            import openmm.unit as unit

            self.fired = True
            context.setPositions(np.full((1, 3), np.nan) * unit.nanometer)


def test_a_stage_that_blows_up_once_recovers_with_contiguous_finite_frames(tmp_path):
    progress = ProgressRecorder(tmp_path / "progress.json", "production", 600)
    toy = ToyStage(tmp_path, _schedule(), controllers=[NaNOnce(330)],
                   stage_options=dict(progress=progress))
    _resumed, outcome = toy.resume_and_run()
    assert outcome.finished and outcome.recoveries == 1
    assert any("blew up at step 360 (" in line for line in toy.lines)
    assert any(line.startswith("starting from checkpoint toy.chk at step 300") for line in toy.lines)
    _assert_exact(toy)  # contiguous, finite, no frame twice
    assert _text_is_finite(toy.out) and _text_is_finite(toy.cv)
    assert json.loads((tmp_path / "progress.json").read_text())["recoveries"] == 1


def test_a_blown_up_record_shows_in_status(tmp_path):
    from rich.console import Console

    from protbench_nrp import status
    from tests.analysis.test_status import make_config, window_job

    job = window_job(make_config(tmp_path), 1, 0)
    blown = Progress("blew-up", 1000, 5000, 0.0, 0.0, recoveries=3)
    row = status.window_status(job, status.ProgressReading(blown), status.ClusterView(None), 10.0)
    assert row.state == "blew-up" and "blew up after 3 recoveries" in row.note
    console = Console(record=True, width=200)
    status.render_status([row], status.campaign_totals([row]), "t", [], console)
    text = console.export_text()
    assert "blew-up" in text and "1 blew-up" in text
    # a window that recovered and runs on says so
    running = Progress("production", 1000, 5000, 10.0, 5.0, recoveries=1)
    row = status.window_status(job, status.ProgressReading(running), status.ClusterView(None), 10.0)
    assert row.state == "running" and "recovered from 1 blow-up(s)" in row.note


@pytest.mark.slow
def test_a_villin_window_that_blows_up_exits_65_without_traceback_and_writes_nothing_non_finite(
        villin_results, window_files):
    root, files = villin_results.root, window_files
    blown = run_window(root, EQUIL_TIMESTEP="10", EQUIL_LENGTH="0.001", MAX_BLOWUPS="2")
    assert blown.returncode == EXIT_BLOWN_UP, blown.stderr + blown.stdout
    assert "Traceback" not in blown.stderr
    assert "window 03 (replica 1) equilibration blew up" in blown.stderr
    # which comes first depends on the random forces: OpenMM's own error, or a NaN energy we check
    assert "Particle coordinate is NaN" in blown.stderr or "energy is nan" in blown.stderr
    assert "2 recovery attempt(s) from step 0" in blown.stderr
    assert "set PROTBENCH_EQUIL_TIMESTEP below its 10 fs" in blown.stderr
    assert str(root / files.start_pdb) in blown.stderr
    assert blown.stdout.count("recovery ") == 2
    progress = Progress.read(root / files.progress)
    assert (progress.phase, progress.recoveries) == ("blew-up", 2)
    for path in (root / files.directory).iterdir():
        if path.suffix in (".out", ".dat"):
            assert _text_is_finite(path), path
        if path.suffix == ".dcd":
            assert np.all(np.isfinite(read_dcd(path).positions_nm)), path
    assert not (root / files.equilibrated_state).exists()
    # resumable: with a sane timestep the same window finishes
    fixed = run_window(root, EQUIL_LENGTH="0.001")
    assert fixed.returncode == 0, fixed.stderr
    assert Progress.read(root / files.progress).phase == "finished"
    assert len(data_steps(root / files.production("out"), ",")) == 10
    assert len(read_cv_file(root / files.cv_timeseries)[0]) == 10
