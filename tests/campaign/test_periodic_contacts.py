"""Q of a solvated protein is the same wherever the periodic box cuts it.

The whole solvated villin of OpenMM's ``test.pdb`` is translated by half a
box along each of a, b and c and every atom is put back into the box one by
one, so the protein ends up split across the box's corner. The bias force,
the numpy Q and the native-contact search must all see the protein whole.
"""

from __future__ import annotations

import numpy as np
import openmm.app as app
import openmm.unit as unit
import pytest

from protbench_nrp.contacts import find_native_contacts, minimum_image
from protbench_nrp.systems import (ParametrizedSystem, add_native_contact_bias, bundled_villin_pdb,
                                   collective_variable)


@pytest.fixture(scope="module")
def solvated():
    """Solvated villin with PME and its Q bias (built once: createSystem costs a second)."""
    pdb = app.PDBFile(str(bundled_villin_pdb()))
    forcefield = app.ForceField("amber14-all.xml", "amber14/tip3p.xml")
    system = forcefield.createSystem(pdb.topology, nonbondedMethod=app.PME,
                                     nonbondedCutoff=0.9 * unit.nanometer, constraints=app.HBonds)
    xyz = np.array(pdb.getPositions(asNumpy=True).value_in_unit(unit.nanometer))
    return add_native_contact_bias(ParametrizedSystem(pdb.topology, system, xyz))


def _box(umbrella) -> np.ndarray:
    return np.array([v.value_in_unit(unit.nanometer)
                     for v in umbrella.system.getDefaultPeriodicBoxVectors()])


def _wrap_atoms(positions_nm, box) -> np.ndarray:
    """Every atom, one by one, into the box (reduced triclinic: c, then b, then a)."""
    wrapped = np.array(positions_nm, dtype=float, copy=True)
    for axis in (2, 1, 0):
        wrapped -= np.outer(np.floor(wrapped[:, axis] / box[axis, axis]), box[axis])
    return wrapped


@pytest.fixture(scope="module")
def straddling(solvated):
    """The whole system moved by half a box along a, b and c, atoms wrapped one by one."""
    box = _box(solvated)
    return _wrap_atoms(solvated.positions_nm + box.sum(axis=0) / 2, box)


def test_the_translated_protein_really_straddles_the_box_edge(solvated, straddling):
    contacts = solvated.contacts
    plain = np.linalg.norm(straddling[contacts.atom_i] - straddling[contacts.atom_j], axis=1)
    # Without images some native pairs now lie across the box, not within 0.45 nm.
    assert plain.max() > 1.0
    assert contacts.fraction(straddling) < 0.9


def test_bias_force_sees_the_same_q_across_the_boundary(solvated, straddling):
    inside = collective_variable(solvated.system, solvated.positions_nm)
    across = collective_variable(solvated.system, straddling)
    assert inside == pytest.approx(1.0, abs=1e-3)
    assert across == pytest.approx(inside, abs=1e-9)


def test_numpy_q_uses_the_nearest_image_when_given_the_box(solvated, straddling):
    box = _box(solvated)
    contacts = solvated.contacts
    inside = contacts.fraction(solvated.positions_nm)
    assert contacts.fraction(straddling, box) == pytest.approx(inside, abs=1e-12)
    # and agrees with what the force evaluates (Reference, double precision)
    assert contacts.fraction(straddling, box) == pytest.approx(
        collective_variable(solvated.system, straddling), abs=1e-6)


def test_native_contacts_of_a_split_protein_are_those_of_the_whole_one(solvated, straddling):
    box = _box(solvated)
    topology = solvated.topology
    whole = find_native_contacts(topology, solvated.positions_nm)
    split = find_native_contacts(topology, straddling, box_vectors_nm=box)
    assert split.atom_i.tolist() == whole.atom_i.tolist()
    assert split.atom_j.tolist() == whole.atom_j.tolist()
    np.testing.assert_allclose(split.r0_nm, whole.r0_nm, atol=1e-9)
    assert len(find_native_contacts(topology, straddling)) < len(whole)  # without the box: lost


def test_a_frame_with_another_box_is_measured_in_that_box(solvated, straddling):
    """An NPT frame's box differs from the System's default: Q follows the given one."""
    box = _box(solvated) * 1.02
    moved = _wrap_atoms(solvated.positions_nm + box.sum(axis=0) / 2, box)
    q = collective_variable(solvated.system, moved, box_vectors_nm=box)
    assert q == pytest.approx(collective_variable(solvated.system, solvated.positions_nm), abs=1e-9)
    assert solvated.contacts.fraction(moved, box) == pytest.approx(q, abs=1e-6)


def test_minimum_image_refuses_what_is_not_a_box():
    with pytest.raises(ValueError, match="not a periodic box"):
        minimum_image(np.zeros((1, 3)), np.zeros((3, 3)))
