"""Repairing DCD files that a kill left torn, so OpenMM can append to them again."""

from __future__ import annotations

import struct

import mdtraj
import numpy as np
import pytest

from protbench_nrp.dcd import DCDFormatError, inspect_dcd, read_dcd, truncate_dcd


def _topology(n_atoms=3, box_nm=None):
    import openmm.app as app
    import openmm.unit as unit

    topology = app.Topology()
    residue = topology.addResidue("TOY", topology.addChain())
    for i in range(n_atoms):
        topology.addAtom(f"C{i}", app.element.carbon, residue)
    if box_nm is not None:
        topology.setPeriodicBoxVectors(np.diag(box_nm) * unit.nanometer)
    return topology


def _positions(n_frames, n_atoms=3, seed=0):
    return np.random.default_rng(seed).uniform(0.1, 2.0, size=(n_frames, n_atoms, 3))


def _write(path, positions, topology, first_step=10, interval=10, append=False):
    import openmm.app as app
    import openmm.unit as unit

    with open(path, "r+b" if append else "wb") as handle:
        dcd = app.DCDFile(handle, topology, 0.002, first_step, interval, append)
        for frame in positions:
            dcd.writeModel(frame * unit.nanometer)


def _pdb(path, topology):
    import openmm.app as app

    with open(path, "w") as handle:
        app.PDBFile.writeFile(topology, np.zeros((topology.getNumAtoms(), 3)), handle)
    return path


def _tear(path, extra_bytes, claimed):
    """What a kill inside ``writeModel`` leaves: the header already counts a frame half written."""
    with open(path, "r+b") as handle:
        handle.seek(0, 2)
        handle.write(b"\x01" * extra_bytes)
        handle.seek(8)
        handle.write(struct.pack("<i", claimed))


def test_torn_last_frame_is_cut_and_openmm_appends_after_it(tmp_path):
    path, topology = tmp_path / "t.dcd", _topology()
    frames = _positions(7)
    _write(path, frames[:5], topology)
    _tear(path, extra_bytes=17, claimed=6)

    torn = inspect_dcd(path)
    assert (torn.n_frames, torn.header_frames, torn.torn) == (5, 6, True)

    repaired = truncate_dcd(path, 10)  # asking for more than is there keeps every whole frame
    assert (repaired.n_frames, repaired.header_frames, repaired.torn) == (5, 5, False)
    assert repaired.file_bytes == repaired.header_bytes + 5 * repaired.frame_bytes

    _write(path, frames[5:], topology, append=True)
    trajectory = mdtraj.load_dcd(str(path), top=str(_pdb(tmp_path / "t.pdb", topology)))
    assert trajectory.n_frames == 7
    np.testing.assert_allclose(trajectory.xyz, frames, atol=1e-5)
    ours = read_dcd(path)
    np.testing.assert_allclose(ours.positions_nm, frames, atol=1e-5)
    np.testing.assert_array_equal(ours.steps, 10 * np.arange(1, 8))
    # the last-step field OpenMM keeps in the header follows the frames
    with open(path, "rb") as handle:
        handle.seek(20)
        assert struct.unpack("<i", handle.read(4))[0] == 70


def test_truncation_keeps_a_prefix_and_fixes_the_header(tmp_path):
    path, topology = tmp_path / "t.dcd", _topology()
    frames = _positions(6, seed=1)
    _write(path, frames, topology, first_step=100, interval=50)
    info = truncate_dcd(path, 2)
    assert (info.n_frames, info.header_frames, info.first_step, info.interval) == (2, 2, 100, 50)
    with open(path, "rb") as handle:
        handle.seek(20)
        assert struct.unpack("<i", handle.read(4))[0] == 150
    np.testing.assert_allclose(read_dcd(path).positions_nm, frames[:2], atol=1e-5)
    assert truncate_dcd(path, 0).n_frames == 0
    assert read_dcd(path).positions_nm.shape == (0, 3, 3)


def test_periodic_frames_carry_the_box(tmp_path):
    import openmm
    import openmm.app as app
    import openmm.unit as unit

    path, topology = tmp_path / "box.dcd", _topology(box_nm=[2.0, 2.5, 3.0])
    frames = _positions(3, seed=2)
    with open(path, "wb") as handle:
        dcd = app.DCDFile(handle, topology, 0.002, 5, 5)
        for i, frame in enumerate(frames):
            box = [openmm.Vec3(2.0 + 0.1 * i, 0, 0), openmm.Vec3(0, 2.5, 0), openmm.Vec3(0, 0, 3.0)]
            dcd.writeModel(frame * unit.nanometer, periodicBoxVectors=box * unit.nanometer)
    _tear(path, extra_bytes=60, claimed=4)
    assert inspect_dcd(path).has_box and inspect_dcd(path).n_frames == 3
    ours = read_dcd(path)
    np.testing.assert_allclose(ours.box_lengths_nm[:, 0], [2.0, 2.1, 2.2], atol=1e-6)
    truncate_dcd(path, 3)
    reference = mdtraj.load_dcd(str(path), top=str(_pdb(tmp_path / "b.pdb", topology)))
    np.testing.assert_allclose(reference.unitcell_lengths, ours.box_lengths_nm, atol=1e-5)


@pytest.mark.parametrize("content, reason", [
    (b"", "too short"),
    (b"\x54\x00\x00\x00CORD" + b"\x00" * 40, "too short"),
    (b"\x00" * 300, "does not start with"),
])
def test_a_file_that_is_not_a_whole_dcd_header_is_refused_by_name(tmp_path, content, reason):
    path = tmp_path / "bad.dcd"
    path.write_bytes(content)
    with pytest.raises(DCDFormatError, match=reason) as error:
        inspect_dcd(path)
    assert str(path) in str(error.value)
    with pytest.raises(DCDFormatError):
        truncate_dcd(path, 0)


def test_a_header_cut_inside_the_title_block_is_refused(tmp_path):
    path, topology = tmp_path / "t.dcd", _topology()
    _write(path, _positions(1), topology)
    with open(path, "r+b") as handle:
        handle.truncate(200)
    with pytest.raises(DCDFormatError, match="cut short"):
        inspect_dcd(path)
