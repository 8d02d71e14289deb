"""The solvated local target: villin in test.pdb's TIP3P water box with amber14-tip3p.

Production's physics (explicit water, PME, a Monte Carlo barostat) on a
System small enough for these machines: 8867 atoms. The System is built once
per session (``solvated_villin``); each test reads it, or changes a copy.
"""

from __future__ import annotations

import copy

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as unit
import pytest

from protbench_nrp import science
from protbench_nrp.engine import langevin_integrator
from protbench_nrp.systems import (HYDROGEN_MASS_AMU, LOCAL_FORCE_FIELDS, SetupError, bundled_villin_pdb,
                                   parametrize_local_villin)
from protbench_nrp.window import UmbrellaWindow, WindowSettings
from tests.conftest import SOLVATED_FF, write_solvated_inputs

from .conftest import run_script, script_env

N_WATERS_IN_TEST_PDB = 2761


def _forces(system, kind):
    return [f for f in system.getForces() if isinstance(f, kind)]


def _waters(topology):
    return [r for r in topology.residues() if r.name == "HOH"]


def test_the_water_and_box_of_test_pdb_are_kept(solvated_villin):
    pdb = app.PDBFile(str(bundled_villin_pdb()))
    assert solvated_villin.system.getNumParticles() == pdb.topology.getNumAtoms() == 8867
    assert len(_waters(solvated_villin.topology)) == N_WATERS_IN_TEST_PDB
    box = solvated_villin.system.getDefaultPeriodicBoxVectors()
    for got, want in zip(box, pdb.topology.getPeriodicBoxVectors()):
        np.testing.assert_allclose(got.value_in_unit(unit.nanometer),
                                   want.value_in_unit(unit.nanometer), atol=1e-9)
    np.testing.assert_allclose(solvated_villin.positions_nm,
                               pdb.getPositions(asNumpy=True).value_in_unit(unit.nanometer), atol=1e-9)


def test_pme_with_a_0_9_nm_cutoff_switched_from_0_8_nm(solvated_villin):
    system = solvated_villin.system
    assert system.usesPeriodicBoundaryConditions()
    (nonbonded,) = _forces(system, openmm.NonbondedForce)
    assert nonbonded.getNonbondedMethod() == openmm.NonbondedForce.PME
    assert nonbonded.getCutoffDistance().value_in_unit(unit.nanometer) == pytest.approx(0.9)
    assert nonbonded.getUseSwitchingFunction()
    assert nonbonded.getSwitchingDistance().value_in_unit(unit.nanometer) == pytest.approx(0.8)
    # the barostat is the stages' (set_barostat), never the setup's
    assert not _forces(system, openmm.MonteCarloBarostat)


def test_hbond_constraints_rigid_water_and_hydrogen_mass_repartitioning(solvated_villin):
    system, topology = solvated_villin.system, solvated_villin.topology
    constrained = {frozenset(system.getConstraintParameters(i)[:2])
                   for i in range(system.getNumConstraints())}
    atoms = list(topology.atoms())
    hydrogen_bonds = {frozenset((a.index, b.index)) for a, b in topology.bonds()
                      if app.element.hydrogen in (a.element, b.element)}
    assert hydrogen_bonds <= constrained
    for water in _waters(topology):  # rigid: O-H, O-H and H-H
        o, h1, h2 = (a.index for a in water.atoms())
        assert {frozenset((o, h1)), frozenset((o, h2)), frozenset((h1, h2))} <= constrained
    # only HBonds and rigid water: nothing between two heavy atoms
    assert all(any(atoms[i].element == app.element.hydrogen for i in pair) for pair in constrained)
    masses = np.array([system.getParticleMass(i).value_in_unit(unit.dalton) for i in range(len(atoms))])
    in_water = {a.index for w in _waters(topology) for a in w.atoms()}
    protein_h = [a.index for a in atoms
                 if a.element == app.element.hydrogen and a.index not in in_water]
    water_h = [a.index for a in atoms if a.element == app.element.hydrogen and a.index in in_water]
    np.testing.assert_allclose(masses[protein_h], HYDROGEN_MASS_AMU)
    np.testing.assert_allclose(masses[water_h], app.element.hydrogen.mass.value_in_unit(unit.dalton))
    plain = app.ForceField(*LOCAL_FORCE_FIELDS[SOLVATED_FF].files).createSystem(
        topology, nonbondedMethod=app.PME, constraints=None, rigidWater=False)
    plain_masses = [plain.getParticleMass(i).value_in_unit(unit.dalton) for i in range(len(atoms))]
    assert masses.sum() == pytest.approx(sum(plain_masses), abs=1e-6)  # moved, not added
    assert masses[protein_h].sum() > sum(plain_masses[i] for i in protein_h) + 1.0


def test_300_k_and_1_atm_with_the_barostat_of_the_stage_settings(solvated_villin, tmp_path):
    conditions = science.target_conditions("villin", SOLVATED_FF)
    assert (conditions.temperature_kelvin, conditions.pressure_atm) == (300.0, 1.0)
    assert science.target_conditions("villin", "amber14-vacuum").pressure_atm == 0.0  # the demo's
    inputs = write_solvated_inputs(tmp_path, solvated_villin, n_windows=2)
    settings = WindowSettings.resolve("villin", SOLVATED_FF, 1, 0, n_windows=2, platform="Reference",
                                      precision="double")
    assert (settings.temperature_kelvin, settings.pressure_atm) == (300.0, 1.0)
    window = UmbrellaWindow(inputs.root, settings, log=lambda _line: None)
    context, _ = window.new_context(window.read_inputs(), settings.timestep_fs)
    (barostat,) = _forces(context.getSystem(), openmm.MonteCarloBarostat)
    assert barostat.getDefaultPressure().value_in_unit(unit.atmosphere) == pytest.approx(1.0)
    assert barostat.getDefaultTemperature().value_in_unit(unit.kelvin) == pytest.approx(300.0)
    assert barostat.getFrequency() == settings.barostat_frequency == science.BAROSTAT_FREQUENCY


def test_a_few_steps_at_4_fs_stay_finite_and_the_barostat_moves_the_box(solvated_villin):
    from protbench_nrp.engine import non_finite, set_barostat

    system = copy.deepcopy(solvated_villin.system)
    set_barostat(system, 300.0, 1.0, frequency=2)
    _forces(system, openmm.MonteCarloBarostat)[0].setRandomNumberSeed(2024)
    integrator = langevin_integrator(300.0, 4.0)
    integrator.setRandomNumberSeed(2024)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("CPU"))
    context.setPositions(solvated_villin.positions_nm)
    context.setVelocitiesToTemperature(300 * unit.kelvin, 2024)
    context.setParameter("k", 5000 * science.KJ_PER_KCAL)
    context.setParameter("Q0", 1.0)
    before = context.getState().getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer)
    integrator.step(20)
    state = context.getState(getEnergy=True, getPositions=True)
    assert non_finite(state) is None
    after = state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer)
    assert not np.array_equal(after, before)  # 10 volume moves: at least one accepted


def test_resolvation_with_a_padding_makes_a_new_neutral_box():
    resolvated = parametrize_local_villin(SOLVATED_FF, padding_nm=0.6)
    topology, system = resolvated.topology, resolvated.system
    protein = np.array([a.index for a in topology.atoms() if a.residue.name not in ("HOH", "NA", "CL")])
    extent = np.ptp(resolvated.positions_nm[protein], axis=0)
    box = np.array([v.value_in_unit(unit.nanometer) for v in system.getDefaultPeriodicBoxVectors()])
    # a cube at least the protein's extent plus the padding on both sides
    assert np.allclose(box, box[0, 0] * np.eye(3))
    assert box[0, 0] >= extent.max() + 2 * 0.6
    assert len(_waters(topology)) != N_WATERS_IN_TEST_PDB
    (nonbonded,) = _forces(system, openmm.NonbondedForce)
    charge = sum(nonbonded.getParticleParameters(i)[0].value_in_unit(unit.elementary_charge)
                 for i in range(system.getNumParticles()))
    assert charge == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("ff, padding, message", [
    ("amber14-vacuum", 1.0, "needs a force field with explicit water"),
    (SOLVATED_FF, 0.0, "must be a positive number; set PROTBENCH_SOLVENT_PADDING"),
    (SOLVATED_FF, float("nan"), "must be a positive number"),
])
def test_bad_paddings_are_refused_by_name(ff, padding, message):
    with pytest.raises(SetupError, match=message):
        parametrize_local_villin(ff, padding_nm=padding)


def test_a_structure_without_water_or_box_is_refused_for_explicit_water(tmp_path):
    dry = parametrize_local_villin("amber14-vacuum")  # no water, no box
    path = tmp_path / "dry.pdb"
    with open(path, "w") as handle:
        app.PDBFile.writeFile(dry.topology, dry.positions_nm * unit.nanometer, handle)
    with pytest.raises(SetupError, match=f"{path} has no periodic box.*PROTBENCH_SOLVENT_PADDING"):
        parametrize_local_villin(SOLVATED_FF, path)


def test_the_setup_script_refuses_a_padding_for_the_vacuum_target(tmp_path):
    env = script_env(PROTBENCH_TARGET="villin", PROTBENCH_FF="amber14-vacuum", PROTBENCH_PLATFORM="CPU",
                     PROTBENCH_SOLVENT_PADDING="1.0")
    result = run_script("setup-umbrella-system.py", "-o", str(tmp_path), env=env)
    assert result.returncode == 2
    assert "explicit water" in result.stderr and "PROTBENCH_SOLVENT_PADDING" in result.stderr
    assert "Traceback" not in result.stderr
    assert not list(tmp_path.rglob("*.xml"))


@pytest.mark.parametrize("env, message", [
    ({"PROTBENCH_FF": "amber14-vacuum", "PROTBENCH_SOLVENT_PADDING": "1"}, "needs a force field with explicit water"),
    ({"PROTBENCH_FF": SOLVATED_FF, "PROTBENCH_SOLVENT_PADDING": "-1"}, "must be a positive number"),
    ({"PROTBENCH_TARGET": "gb3", "PROTBENCH_SOLVENT_PADDING": "1"}, "applies to the local target 'villin' only"),
])
def test_the_launcher_refuses_a_padding_the_setup_would_refuse(env, message):
    from protbench_nrp.variables import value_problems

    job = {"PROTBENCH_TARGET": "villin", "PROTBENCH_FF": SOLVATED_FF, "PROTBENCH_PLATFORM": "CUDA", **env}
    problems = value_problems(job, ("setup",))
    assert any(message in problem and "PROTBENCH_SOLVENT_PADDING" in problem for problem in problems), problems
    assert value_problems({**job, "PROTBENCH_SOLVENT_PADDING": "1.2", "PROTBENCH_TARGET": "villin",
                           "PROTBENCH_FF": SOLVATED_FF}, ("setup",)) == []
