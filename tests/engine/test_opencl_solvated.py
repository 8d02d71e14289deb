"""Solvated villin on OpenMM's GPU code path (OpenCL via pocl, mixed precision): finite, and resumed exactly.

8867 atoms with PME and the barostat, a stage of 3 frames of 4 steps of 4 fs,
killed after frame 2 and resumed from its OpenCL checkpoint in a new Context.
pocl compiles OpenMM's kernels for a Context in tens of seconds and runs about
two steps a second here, so the stage is as short as the contract allows.
"""

from __future__ import annotations

import copy
import locale

import numpy as np
import openmm.unit as unit
import pytest

from protbench_nrp.contacts import find_umbrella_force
from protbench_nrp.dcd import read_dcd
from protbench_nrp.engine import (CheckpointFiles, CheckpointOrigin, InitialOrigin, ResumableStage, Schedule,
                                  create_context, langevin_integrator, load_state_xml, non_finite,
                                  set_barostat)
from protbench_nrp.reporters import CVReporter, SegmentedDCDReporter, read_cv_file

from .conftest import Crash, CrashAt

pytestmark = [pytest.mark.slow, pytest.mark.opencl]

FRAME_STEPS, N_FRAMES, CRASH_STEP = 4, 3, 8


def _stage(directory, umbrella, system, controllers=()):
    context = create_context(system, langevin_integrator(300.0, 4.0), "OpenCL", "mixed")
    index, _ = find_umbrella_force(system)
    reporters = [
        SegmentedDCDReporter(lambda k: directory / f"segment-{k}.dcd", umbrella.topology, FRAME_STEPS, 0.004,
                             frames_per_segment=1, stray_glob="segment-*.dcd"),
        CVReporter(directory / "cv.dat", context.getSystem().getForce(index)),
    ]
    return ResumableStage(context, Schedule(FRAME_STEPS * N_FRAMES, FRAME_STEPS, checkpoint_frames=1),
                          CheckpointFiles(directory / "stage.chk", directory / "stage-checkpoint.xml"),
                          reporters, controllers=list(controllers), log=lambda _line: None)


def _bias(context):
    context.setParameter("k", 5000 * 4.184)
    context.setParameter("Q0", 1.0)


def test_a_solvated_stage_on_opencl_runs_finite_and_resumes_its_checkpoint_exactly(
        opencl, solvated_villin, tmp_path):
    encoding = locale.getpreferredencoding(False)
    system = copy.deepcopy(solvated_villin.system)
    set_barostat(system, 300.0, 1.0, frequency=2)
    box = np.array([v.value_in_unit(unit.nanometer) for v in system.getDefaultPeriodicBoxVectors()])
    start = [InitialOrigin(solvated_villin.positions_nm, box, 300.0)]

    first = _stage(tmp_path, solvated_villin, system, [CrashAt(CRASH_STEP)])
    first.resume(start)
    _bias(first.context)
    with pytest.raises(Crash):
        first.run()
    written = {k: (tmp_path / f"segment-{k}.dcd").read_bytes() for k in range(CRASH_STEP // FRAME_STEPS)}
    saved = load_state_xml(tmp_path / "stage-checkpoint.xml")
    assert saved.getStepCount() == CRASH_STEP
    del first

    second = _stage(tmp_path, solvated_villin, system)
    resumed = second.resume(start)
    assert isinstance(resumed.origin, CheckpointOrigin) and resumed.step == CRASH_STEP
    # the Context holds exactly what was saved
    now = second.context.getState(getPositions=True, getVelocities=True, getParameters=True)
    for get in ("getPositions", "getVelocities"):
        np.testing.assert_array_equal(getattr(now, get)(asNumpy=True)._value, getattr(saved, get)(asNumpy=True)._value)
    np.testing.assert_array_equal(now.getPeriodicBoxVectors(asNumpy=True)._value,
                                  saved.getPeriodicBoxVectors(asNumpy=True)._value)
    assert dict(now.getParameters()) == dict(saved.getParameters())
    _bias(second.context)
    assert second.run().finished
    assert non_finite(second.context.getState(getEnergy=True, getPositions=True)) is None

    # frames written before the kill are untouched, none lost or repeated after it
    for k, data in written.items():
        assert (tmp_path / f"segment-{k}.dcd").read_bytes() == data
    steps = [int(read_dcd(tmp_path / f"segment-{k}.dcd").steps[0]) for k in range(N_FRAMES)]
    assert steps == [FRAME_STEPS * (k + 1) for k in range(N_FRAMES)]
    assert read_cv_file(tmp_path / "cv.dat")[0].tolist() == steps
    last = read_dcd(tmp_path / f"segment-{N_FRAMES - 1}.dcd")
    assert np.all(np.isfinite(last.positions_nm)) and not (tmp_path / f"segment-{N_FRAMES}.dcd").exists()
    assert second.context.getPlatform().getName() == "OpenCL"
    assert locale.getpreferredencoding(False) == encoding  # pocl's compiler left the locale alone
    assert second.context.getPlatform().getPropertyValue(second.context, "Precision") == "mixed"
