"""Reporters count only whole frames and cut themselves back to a checkpoint."""

from __future__ import annotations

import numpy as np
import openmm
import openmm.unit as unit
import pytest

from protbench_nrp.dcd import inspect_dcd, read_dcd
from protbench_nrp.reporters import (CVReporter, Frame, ResumeMismatchError, SegmentedDCDReporter,
                                     StateDataReporter, read_cv_file)

from .conftest import toy_system, toy_topology


@pytest.fixture
def toy_context():
    integrator = openmm.LangevinMiddleIntegrator(300, 1, 0.002)
    context = openmm.Context(toy_system(), integrator, openmm.Platform.getPlatformByName("Reference"))
    context.setPositions([[0.4, 0.0, 0.0]])
    context.setVelocitiesToTemperature(300)
    return context


def _frames(context, reporter, first, count, frame_steps=10):
    """Take ``count`` real frames from ``context`` into ``reporter``, starting at index ``first``."""
    for index in range(first, first + count):
        context.getIntegrator().step(frame_steps)
        state = context.getState(getPositions=True, getEnergy=True)
        reporter.report(Frame(index, (index + 1) * frame_steps, state, context, 0.0))
        reporter.flush()


def _segments(tmp_path, per_segment=4, frame_steps=10, topology=True):
    return SegmentedDCDReporter(lambda k: tmp_path / f"seg-{k:04d}.dcd",
                                toy_topology() if topology else None, frame_steps, 0.002,
                                frames_per_segment=per_segment, stray_glob="seg-*.dcd")


def test_segments_hold_consecutive_frames_and_resume_mid_segment(tmp_path, toy_context):
    reporter = _segments(tmp_path)
    reporter.open(0)
    _frames(toy_context, reporter, 0, 10)
    reporter.close()
    assert [inspect_dcd(tmp_path / f"seg-{k:04d}.dcd").n_frames for k in range(3)] == [4, 4, 2]
    assert [inspect_dcd(tmp_path / f"seg-{k:04d}.dcd").first_step for k in range(3)] == [10, 50, 90]

    counter = _segments(tmp_path, topology=False)
    assert counter.frames_on_disk() == 10
    reporter.truncate(6)  # a checkpoint in the middle of segment 1
    assert counter.frames_on_disk() == 6
    assert not (tmp_path / "seg-0002.dcd").exists()
    reporter.open(6)
    _frames(toy_context, reporter, 6, 5)
    reporter.close()
    steps = np.concatenate([read_dcd(tmp_path / f"seg-{k:04d}.dcd").steps for k in range(3)])
    np.testing.assert_array_equal(steps, 10 * np.arange(1, 12))


def test_a_torn_frame_and_a_stray_segment_beyond_a_gap_are_removed(tmp_path, toy_context):
    reporter = _segments(tmp_path)
    reporter.open(0)
    _frames(toy_context, reporter, 0, 14)
    reporter.close()
    (tmp_path / "seg-0002.dcd").unlink()  # e.g. an upload killed midway
    with open(tmp_path / "seg-0001.dcd", "ab") as handle:
        handle.write(b"\x00" * 11)
    assert reporter.frames_on_disk() == 8
    reporter.truncate(8)
    assert sorted(p.name for p in tmp_path.glob("seg-*.dcd")) == ["seg-0000.dcd", "seg-0001.dcd"]
    assert not inspect_dcd(tmp_path / "seg-0001.dcd").torn


def test_a_segment_whose_header_was_torn_counts_nothing_and_is_replaced(tmp_path, toy_context):
    reporter = _segments(tmp_path)
    reporter.open(0)
    _frames(toy_context, reporter, 0, 5)
    reporter.close()
    (tmp_path / "seg-0001.dcd").write_bytes(b"\x54\x00\x00\x00CO")
    assert reporter.frames_on_disk() == 4
    reporter.truncate(4)
    reporter.open(4)
    _frames(toy_context, reporter, 4, 1)
    reporter.close()
    assert read_dcd(tmp_path / "seg-0001.dcd").steps.tolist() == [50]


def test_segments_written_with_another_frame_interval_are_refused(tmp_path, toy_context):
    reporter = _segments(tmp_path, frame_steps=10)
    reporter.open(0)
    _frames(toy_context, reporter, 0, 3)
    reporter.close()
    with pytest.raises(ResumeMismatchError, match="PROTBENCH_FRAME"):
        _segments(tmp_path, frame_steps=20).frames_on_disk()


def test_text_outputs_drop_a_partial_last_line(tmp_path, toy_context):
    cv_force = toy_context.getSystem().getForce(1)
    reporter = CVReporter(tmp_path / "cv.dat", cv_force)
    reporter.open(0)
    _frames(toy_context, reporter, 0, 3)
    reporter.close()
    with open(tmp_path / "cv.dat", "a") as handle:
        handle.write("40 0.12")  # killed inside a write
    assert reporter.frames_on_disk() == 3
    steps, values = read_cv_file(tmp_path / "cv.dat")
    assert steps.tolist() == [10, 20, 30] and np.all(np.isfinite(values))
    reporter.truncate(3)
    reporter.open(3)
    _frames(toy_context, reporter, 3, 1)
    reporter.close()
    text = (tmp_path / "cv.dat").read_text().splitlines()
    assert text[0] == '#"Step" "CV"'
    assert [line.split()[0] for line in text[1:]] == ["10", "20", "30", "40"]
    # the value is the umbrella's CV (x of the particle), not some other number
    x = toy_context.getState(getPositions=True).getPositions(asNumpy=True)[0][0]
    assert float(text[-1].split()[1]) == pytest.approx(x.value_in_unit(unit.nanometer), abs=1e-8)


def test_a_text_output_with_a_torn_header_starts_again(tmp_path, toy_context):
    path = tmp_path / "state.out"
    path.write_text('#"Step","Ti')
    reporter = StateDataReporter(path, toy_context.getSystem())
    assert reporter.frames_on_disk() == 0
    reporter.truncate(0)
    assert not path.exists()
    reporter.open(0)
    _frames(toy_context, reporter, 0, 2)
    reporter.close()
    lines = path.read_text().splitlines()
    assert lines[0] == StateDataReporter.header and len(lines) == 3
    step, time_ps, potential, kinetic, total, temperature, volume, speed = lines[2].split(",")
    assert int(step) == 20 and float(time_ps) == pytest.approx(0.04)
    assert float(total) == pytest.approx(float(potential) + float(kinetic), abs=1e-5)
    # one particle, three degrees of freedom: T = 2 KE / (3 k_B)
    assert float(temperature) == pytest.approx(2 * float(kinetic) / (3 * 0.0083144626), rel=1e-4)


def test_cutting_back_keeps_earlier_lines_byte_for_byte(tmp_path, toy_context):
    reporter = StateDataReporter(tmp_path / "s.out", toy_context.getSystem())
    reporter.open(0)
    _frames(toy_context, reporter, 0, 6)
    reporter.close()
    before = (tmp_path / "s.out").read_text().splitlines()
    reporter.truncate(4)
    assert (tmp_path / "s.out").read_text().splitlines() == before[:5]
