"""The Q bias in float32: OpenMM's GPU code path (OpenCL, pocl) against double precision."""

from __future__ import annotations

import numpy as np
import openmm
import openmm.unit as unit
import pytest

from protbench_nrp import contacts as contacts_module
from protbench_nrp.contacts import (NativeContacts, add_umbrella_bias,
                                    fraction_native_contacts_force)
from protbench_nrp.science import KJ_PER_KCAL, UMBRELLA_K_KCAL_PER_MOL

#: The expression before issue 9, kept here only, to show what the float32 test guards against.
SEEDS_EXP_EXPRESSION = "(1/{n_contacts})/(1+exp(beta*(r-lambda*r0)))"

BOX_NM = 6.0
N_PAIRS = 80
K_KJ_PER_MOL = UMBRELLA_K_KCAL_PER_MOL * KJ_PER_KCAL
#: Below this the bias pulls on nothing (every contact broken: forces ~1e-4 kJ/mol/nm, where
#: float32's 1 - tanh(u)^2 has lost all digits). Errors are measured against at least this.
NEGLIGIBLE_FORCE_KJ_PER_MOL_NM = 1.0


def native_distances() -> np.ndarray:
    return np.linspace(0.3, 0.45, N_PAIRS)


def pair_system(expression: str | None = None, periodic: bool = True):
    """``N_PAIRS`` native pairs (r0 from 0.3 to 0.45 nm) in a periodic box, biased at Q0 = 0.4.

    ``expression`` replaces the library's per-contact term (``None``: the library's own).
    """
    system = openmm.System()
    for _ in range(2 * N_PAIRS):
        system.addParticle(12.0)
    system.setDefaultPeriodicBoxVectors(*(openmm.Vec3(*row) for row in BOX_NM * np.eye(3)))
    r0 = native_distances()
    contacts = NativeContacts(np.arange(0, 2 * N_PAIRS, 2), np.arange(1, 2 * N_PAIRS, 2), r0)
    cv = fraction_native_contacts_force(contacts, periodic=periodic)
    if expression is not None:
        cv.setEnergyFunction(expression.format(n_contacts=N_PAIRS))
    add_umbrella_bias(system, cv, K_KJ_PER_MOL, centre=0.4)
    return system


def pair_positions(max_distance_nm: float) -> np.ndarray:
    """Pairs along x, each on its own line: half within 0.1 nm of ``lambda*r0`` (where the
    force is), half spread from 0.05 nm to ``max_distance_nm``."""
    switch = contacts_module.LAMBDA * native_distances()
    distance = np.where(np.arange(N_PAIRS) % 2 == 0,
                        switch + np.linspace(-0.1, 0.1, N_PAIRS),
                        np.linspace(0.05, max_distance_nm, N_PAIRS))
    positions = np.zeros((2 * N_PAIRS, 3))
    row = np.arange(N_PAIRS)
    positions[0::2, 1] = positions[1::2, 1] = (row * 0.37) % BOX_NM
    positions[0::2, 2] = positions[1::2, 2] = (row * 0.61) % BOX_NM
    positions[1::2, 0] = distance
    return positions


def evaluate(system, positions_nm, platform: str, precision: str | None = None):
    """``(Q, energy_kj_per_mol, forces_kj_per_mol_nm)`` of ``system`` at ``positions_nm``."""
    properties = {"Precision": precision} if precision else {}
    context = openmm.Context(system, openmm.VerletIntegrator(0.001),
                             openmm.Platform.getPlatformByName(platform), properties)
    context.setPositions(positions_nm * unit.nanometer)
    state = context.getState(getEnergy=True, getForces=True)
    q = system.getForce(0).getCollectiveVariableValues(context)[0]
    forces = state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
    energy = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    del context
    return q, energy, np.asarray(forces)


def assert_forces_agree(forces, reference, tolerance: float, what: str) -> None:
    assert np.all(np.isfinite(forces)), f"{what}: non-finite bias forces"
    scale = max(np.abs(reference).max(), NEGLIGIBLE_FORCE_KJ_PER_MOL_NM)
    worst = np.abs(forces - reference).max() / scale
    assert worst <= tolerance, (f"{what}: bias forces differ from double precision by {worst:.3g} "
                                f"of the largest force ({scale:.4g} kJ/mol/nm); allowed {tolerance}")


def test_the_tanh_form_is_the_same_q_and_forces_in_double_precision():
    for max_distance_nm in (0.6, 1.5, BOX_NM / 2):
        positions = pair_positions(max_distance_nm)
        q_new, energy_new, forces_new = evaluate(pair_system(), positions, "Reference")
        q_old, energy_old, forces_old = evaluate(pair_system(SEEDS_EXP_EXPRESSION), positions,
                                                 "Reference")
        assert 0.0 < q_new < 1.0
        assert q_new == pytest.approx(q_old, rel=1e-9)
        assert energy_new == pytest.approx(energy_old, rel=1e-9)
        np.testing.assert_allclose(forces_new, forces_old, rtol=0,
                                   atol=1e-9 * np.abs(forces_old).max())
        assert np.abs(forces_old).max() > 100.0  # the bias is really pulling


@pytest.mark.opencl
@pytest.mark.parametrize("precision", ["single", "mixed"])
def test_float32_bias_forces_stay_finite_and_agree_with_double_for_pairs_up_to_half_the_box(
        opencl, precision):
    """Every pair distance up to half the box; the far ones overflowed exp() in float32."""
    positions = pair_positions(BOX_NM / 2)
    q_double, _energy, reference = evaluate(pair_system(), positions, "Reference")
    q, _energy, forces = evaluate(pair_system(), positions, opencl, precision)
    assert q == pytest.approx(q_double, abs=1e-5)
    assert_forces_agree(forces, reference, 1e-3, f"OpenCL {precision}")


@pytest.fixture(scope="module")
def villin():
    from protbench_nrp.systems import build_local_villin

    return build_local_villin("amber14-vacuum")


def _bias_only(umbrella):
    """The villin System with every force but the bias removed (its forces are the bias's)."""
    system = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(umbrella.system))
    index, _ = contacts_module.find_umbrella_force(system)
    for i in reversed(range(system.getNumForces())):
        if i != index:
            system.removeForce(i)
    system.getForce(0).setGlobalParameterDefaultValue(1, 0.4)  # Q0: the bias pulls
    return system


@pytest.mark.opencl
@pytest.mark.parametrize("precision", ["single", "mixed"])
@pytest.mark.parametrize("stretch", [1.85, 3.0, 8.0])
def test_float32_bias_forces_on_stretched_and_extended_villin(opencl, villin, precision, stretch):
    """Villin blown up about its centre: Q about 0.5 (stretched) to 0 (fully extended)."""
    system = _bias_only(villin)
    centre = villin.positions_nm.mean(axis=0)
    positions = centre + stretch * (villin.positions_nm - centre)
    q_double, _energy, reference = evaluate(system, positions, "Reference")
    q, _energy, forces = evaluate(system, positions, opencl, precision)
    assert q_double < 0.7
    assert q == pytest.approx(q_double, abs=1e-5)
    assert_forces_agree(forces, reference, 1e-3, f"villin x{stretch}, OpenCL {precision}")
