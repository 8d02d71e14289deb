"""Resume with a changing box: what a checkpoint and a portable State restore.

Two questions, answered on OpenMM's own platforms:

* Does an OpenMM checkpoint carry the Monte Carlo barostat's random state?
  On Reference (deterministic) with a volume move every step, a Context
  loaded from a checkpoint draws exactly the boxes of the uninterrupted run,
  while one given the same State by ``setState`` does not. So the barostat
  needs no seed of ours for an exact resume, and a seed could not make a
  ``setState`` resume exact (its stream would restart).
* Does the Context hold exactly what was saved? Solvated villin with PME and
  its barostat on CPU: positions, velocities, box, step, time and every
  parameter, from the checkpoint on the same platform and from the portable
  State on another.
"""

from __future__ import annotations

import copy

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as unit
import pytest

from protbench_nrp.engine import (CheckpointFiles, CheckpointOrigin, InitialOrigin, StateOrigin,
                                  langevin_integrator, set_barostat)

BEFORE_STEPS, AFTER_STEPS = 10, 15  # > 10 volume moves after the checkpoint: the move size adapts too


@pytest.fixture(scope="module")
def water_box():
    """~650 atoms of TIP3P with PME and a barostat trying a volume move every step."""
    forcefield = app.ForceField("amber14/tip3p.xml")
    modeller = app.Modeller(app.Topology(), [])
    modeller.addSolvent(forcefield, model="tip3p", boxSize=openmm.Vec3(1.9, 1.9, 1.9) * unit.nanometer)
    system = forcefield.createSystem(modeller.topology, nonbondedMethod=app.PME,
                                     nonbondedCutoff=0.8 * unit.nanometer, constraints=app.HBonds)
    set_barostat(system, 300.0, 1.0, frequency=1)
    (barostat,) = [f for f in system.getForces() if isinstance(f, openmm.MonteCarloBarostat)]
    barostat.setRandomNumberSeed(2024)  # deterministic, and a fresh Context restarts this stream
    return system, modeller.positions


def _boxes(context, steps: int) -> np.ndarray:
    integrator, found = context.getIntegrator(), []
    for _ in range(steps):
        integrator.step(1)
        found.append(context.getState().getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer))
    return np.array(found)


def test_a_checkpoint_carries_the_barostats_random_state(water_box):
    system, positions = water_box
    reference = openmm.Platform.getPlatformByName("Reference")

    def context():  # Verlet: no random numbers but the barostat's
        return openmm.Context(system, openmm.VerletIntegrator(0.001), reference)

    first = context()
    first.setPositions(positions)
    first.setVelocitiesToTemperature(300 * unit.kelvin, 1)
    first.getIntegrator().step(BEFORE_STEPS)
    checkpoint = first.createCheckpoint()
    state = first.getState(getPositions=True, getVelocities=True, getParameters=True)
    uninterrupted = _boxes(first, AFTER_STEPS)
    assert len({b[0, 0] for b in uninterrupted}) > 2  # the box really changes

    resumed = context()
    resumed.loadCheckpoint(checkpoint)
    np.testing.assert_array_equal(_boxes(resumed, AFTER_STEPS), uninterrupted)

    # the same State without the barostat's random stream: other volume moves
    restarted = context()
    restarted.setState(state)
    assert not np.array_equal(_boxes(restarted, AFTER_STEPS), uninterrupted)


def _everything(context) -> dict:
    state = context.getState(getPositions=True, getVelocities=True, getParameters=True)
    return {
        "positions": state.getPositions(asNumpy=True).value_in_unit(unit.nanometer),
        "velocities": state.getVelocities(asNumpy=True).value_in_unit(unit.nanometer / unit.picosecond),
        "box": state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer),
        "step": state.getStepCount(),
        "time": state.getTime().value_in_unit(unit.picosecond),
        "parameters": dict(state.getParameters()),
    }


def _assert_same(got: dict, want: dict) -> None:
    for key in ("positions", "velocities", "box"):
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)
    assert (got["step"], got["time"], got["parameters"]) == (want["step"], want["time"], want["parameters"])


@pytest.fixture(scope="module")
def saved(solvated_villin, tmp_path_factory):
    """A few steps of solvated villin on CPU with the barostat, saved as the engine saves a stage."""
    directory = tmp_path_factory.mktemp("barostat-resume")
    system = copy.deepcopy(solvated_villin.system)
    set_barostat(system, 300.0, 1.0, frequency=2)
    integrator = langevin_integrator(300.0, 4.0)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("CPU"))
    InitialOrigin(solvated_villin.positions_nm, None, 300.0).load(context)
    context.setParameter("k", 1234.5)
    context.setParameter("Q0", 0.77)
    integrator.step(6)
    files = CheckpointFiles(directory / "stage.chk", directory / "stage-checkpoint.xml")
    files.write(context)
    return system, files, _everything(context)


def test_the_checkpoint_restores_exactly_what_was_saved(saved):
    system, files, want = saved
    assert want["step"] == 6 and {"k", "Q0", "MonteCarloPressure", "MonteCarloTemperature"} <= set(want["parameters"])
    fresh = openmm.Context(system, langevin_integrator(300.0, 4.0), openmm.Platform.getPlatformByName("CPU"))
    CheckpointOrigin(files.checkpoint).load(fresh)
    _assert_same(_everything(fresh), want)


def test_the_portable_state_carries_the_box_to_another_platform(saved):
    system, files, want = saved
    other = openmm.Context(system, langevin_integrator(300.0, 4.0), openmm.Platform.getPlatformByName("Reference"))
    StateOrigin(files.portable).load(other)
    _assert_same(_everything(other), want)
