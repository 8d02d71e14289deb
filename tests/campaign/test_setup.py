"""setup-umbrella-system.py on the bundled villin target, and its refusals."""

from __future__ import annotations

import shutil

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as unit
import pytest

from protbench_nrp.contacts import (
    BETA_PER_NM,
    LAMBDA,
    NativeContacts,
    find_umbrella_force,
)
from protbench_nrp.layout import Campaign
from protbench_nrp.systems import (
    ParametrizedSystem,
    ProteinbenchmarkBuilder,
    SetupError,
    SetupFiles,
    add_native_contact_bias,
    bundled_villin_pdb,
    collective_variable,
)

from .conftest import VILLIN, run_script, villin_env

CAMPAIGN = Campaign(*VILLIN)


def _load(root):
    system = openmm.XmlSerializer.deserialize((root / CAMPAIGN.system_xml).read_text())
    pdb = app.PDBFile(str(root / CAMPAIGN.minimized_pdb))
    return system, pdb


def test_system_holds_the_umbrella_bias_with_k_and_q0(villin_setup):
    system, pdb = _load(villin_setup)
    _index, bias = find_umbrella_force(system)
    globals_ = {bias.getGlobalParameterName(i): bias.getGlobalParameterDefaultValue(i)
                for i in range(bias.getNumGlobalParameters())}
    assert set(globals_) == {"k", "Q0"}
    assert bias.getEnergyFunction().replace(" ", "") == "k*(Q-Q0)^2"
    assert bias.getCollectiveVariableName(0) == "Q"
    assert system.getNumParticles() == pdb.topology.getNumAtoms() == 582
    assert not system.usesPeriodicBoundaryConditions()


def test_native_structure_has_q_of_one(villin_setup):
    system, pdb = _load(villin_setup)
    q = collective_variable(system, pdb.getPositions(asNumpy=True).value_in_unit(unit.nanometer))
    assert q == pytest.approx(1.0, abs=0.02)
    # and a clearly unfolded structure does not: stretch the protein to twice its size
    stretched = 2.0 * pdb.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    assert collective_variable(system, stretched) < 0.5


def test_contacts_file_matches_the_forces_bonds(villin_setup):
    system, pdb = _load(villin_setup)
    contacts = NativeContacts.read(villin_setup / CAMPAIGN.contacts_file)
    _index, bias = find_umbrella_force(system)
    cv = bias.getCollectiveVariable(0)
    assert cv.getNumBonds() == len(contacts) > 100
    bonds = [cv.getBondParameters(b) for b in range(cv.getNumBonds())]
    assert [(i, j) for i, j, _ in bonds] == list(zip(contacts.atom_i.tolist(), contacts.atom_j.tolist()))
    np.testing.assert_allclose([p[0] for *_, p in bonds], contacts.r0_nm, atol=1e-6)
    globals_ = {cv.getGlobalParameterName(i): cv.getGlobalParameterDefaultValue(i)
                for i in range(cv.getNumGlobalParameters())}
    assert globals_ == {"beta": BETA_PER_NM, "lambda": LAMBDA}
    # every contact is a heavy-atom pair > 3 residues apart within 0.45 nm natively: in the
    # input (experimental) structure, before minimization, as upstream proteinbenchmark does
    atoms = list(pdb.topology.atoms())
    xyz = _input_structure_nm()
    for i, j, r0 in zip(contacts.atom_i, contacts.atom_j, contacts.r0_nm):
        assert atoms[i].element.symbol != "H" and atoms[j].element.symbol != "H"
        assert abs(atoms[i].residue.index - atoms[j].residue.index) > 3
        assert r0 <= 0.45
        assert np.linalg.norm(xyz[i] - xyz[j]) == pytest.approx(r0, abs=1e-6)


def _input_structure_nm():
    """The protein atoms of the bundled test.pdb, in the System's order (water comes last)."""
    pdb = app.PDBFile(str(bundled_villin_pdb()))
    protein = [a.index for a in pdb.topology.atoms() if a.residue.name not in ("HOH", "NA", "CL")]
    return pdb.getPositions(asNumpy=True).value_in_unit(unit.nanometer)[protein]


def test_native_contacts_are_those_of_the_input_structure_not_the_minimized_one(villin_setup):
    contacts = NativeContacts.read(villin_setup / CAMPAIGN.contacts_file)
    _system, pdb = _load(villin_setup)
    minimized = pdb.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    moved = np.abs(np.linalg.norm(minimized[contacts.atom_i] - minimized[contacts.atom_j], axis=1)
                   - contacts.r0_nm)
    assert moved.max() > 0.01  # minimization moved them: r0 is not read off the minimum
    assert contacts.fraction(_input_structure_nm()) == pytest.approx(1.0, abs=1e-3)


def test_contacts_file_records_chain_residue_number_and_atom_name(villin_setup):
    contacts = NativeContacts.read(villin_setup / CAMPAIGN.contacts_file)
    _system, pdb = _load(villin_setup)
    atoms = list(pdb.topology.atoms())
    assert contacts.identities is not None and len(contacts.identities) == len(contacts)
    for i, j, (who_i, who_j) in zip(contacts.atom_i, contacts.atom_j, contacts.identities):
        for index, who in ((i, who_i), (j, who_j)):
            atom = atoms[index]
            assert (who.chain, who.residue, who.name) == (atom.residue.chain.id.strip() or "-",
                                                          atom.residue.id.strip(), atom.name)
    first = (villin_setup / CAMPAIGN.contacts_file).read_text().splitlines()[:2]
    assert first[0].startswith("# atom_i atom_j r0_nm chain_i resid_i name_i chain_j resid_j name_j")
    assert len(first[1].split()) == 9


def test_a_contacts_file_of_the_older_three_column_form_still_reads(villin_setup, tmp_path):
    new = NativeContacts.read(villin_setup / CAMPAIGN.contacts_file)
    old = tmp_path / "old-contacts.dat"
    old.write_text("# atom_i atom_j r0_nm  (beta=50.0 /nm, lambda=1.8)\n" + "".join(
        f"{i:d} {j:d} {r0:.6f}\n" for i, j, r0 in zip(new.atom_i, new.atom_j, new.r0_nm)))
    read = NativeContacts.read(old)
    assert read.identities is None
    np.testing.assert_array_equal(read.atom_i, new.atom_i)
    np.testing.assert_array_equal(read.r0_nm, new.r0_nm)
    torn = tmp_path / "torn.dat"
    torn.write_text("0 213 0.380648 A 1\n")
    with pytest.raises(ValueError, match=r"torn.dat, line 1, is not a native contact \(5 columns"):
        NativeContacts.read(torn)


def test_system_xml_carries_the_seeds_k_and_hydrogen_masses_of_3_amu(villin_setup):
    system, pdb = _load(villin_setup)
    _index, bias = find_umbrella_force(system)
    defaults = {bias.getGlobalParameterName(i): bias.getGlobalParameterDefaultValue(i)
                for i in range(bias.getNumGlobalParameters())}
    assert defaults["k"] == pytest.approx(5000 * 4.184)  # kcal/mol in OpenMM's kJ/mol
    hydrogens = [a.index for a in pdb.topology.atoms() if a.element.symbol == "H"]
    masses = {round(system.getParticleMass(i).value_in_unit(unit.amu), 6) for i in hydrogens}
    assert masses == {3.0}


def test_finished_setup_is_left_untouched(villin_setup, tmp_path):
    root = tmp_path / "results"
    shutil.copytree(villin_setup, root)
    files = SetupFiles(root, CAMPAIGN).all()
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in files}
    result = run_script("setup-umbrella-system.py", "-o", str(root), env=villin_env())
    assert result.returncode == 0, result.stderr
    assert "already set up" in result.stdout
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in files} == before


def test_interrupted_setup_is_redone(villin_setup, tmp_path):
    """A pod killed before the System XML (written last) was in place starts over."""
    root = tmp_path / "results"
    shutil.copytree(villin_setup, root)
    files = SetupFiles(root, CAMPAIGN)
    files.system_xml.unlink()
    files.minimized_pdb.write_text("half a PDB")
    result = run_script("setup-umbrella-system.py", "-o", str(root),
                        env=villin_env(PROTBENCH_RESULTS_DIR="/nonexistent-ignored-for-o"))
    assert result.returncode == 0, result.stderr
    assert files.is_complete()
    assert files.load().native_fraction() == pytest.approx(1.0, abs=0.02)
    assert not list(files.system_xml.parent.glob(".*.tmp"))


def test_results_dir_from_environment(tmp_path):
    """A pod gives every setting through PROTBENCH_* variables alone."""
    root = tmp_path / "from-env"
    result = run_script("setup-umbrella-system.py",
                        env=villin_env(PROTBENCH_RESULTS_DIR=str(root), PROTBENCH_FF="amber14-obc2"))
    assert result.returncode == 0, result.stderr
    files = SetupFiles(root, Campaign("villin", "amber14-obc2"))
    assert files.is_complete()
    names = {type(f).__name__ for f in files.load().system.getForces()}
    assert "CustomGBForce" in names or "GBSAOBCForce" in names


@pytest.mark.parametrize(
    "env, expected",
    [
        (dict(PROTBENCH_TARGET="no-such-protein"), ["'no-such-protein'", "PROTBENCH_TARGET", "villin"]),
        (dict(PROTBENCH_FF="charmm36"), ["'charmm36'", "PROTBENCH_FF", "amber14-vacuum"]),
        (dict(PROTBENCH_PLATFORM="Metal"), ["Metal", "PROTBENCH_PLATFORM", "CUDA"]),
    ],
    ids=["unknown-target", "unknown-local-ff", "unknown-platform"],
)
def test_bad_input_is_refused_and_writes_nothing(tmp_path, env, expected):
    root = tmp_path / "results"
    result = run_script("setup-umbrella-system.py", "-o", str(root), env=villin_env(**env))
    assert result.returncode != 0
    for text in expected:
        assert text in result.stderr
    assert "Traceback" not in result.stderr
    assert not list(root.rglob("*.xml")) and not list(root.rglob("*.pdb"))


def test_missing_initial_structure_is_named(tmp_path):
    missing = tmp_path / "villin-from-somewhere.pdb"
    root = tmp_path / "results"
    result = run_script("setup-umbrella-system.py", "-o", str(root),
                        env=villin_env(PROTBENCH_INITIAL_PDB=str(missing)))
    assert result.returncode != 0
    assert str(missing) in result.stderr and "PROTBENCH_INITIAL_PDB" in result.stderr
    assert "Traceback" not in result.stderr
    assert not list(root.rglob("*.xml"))


def test_unusable_initial_structure_is_named(tmp_path):
    """A truncated chain cannot be parametrized: the error names the file and the fix."""
    lonely = tmp_path / "one-residue.pdb"
    pdb = app.PDBFile(str(bundled_villin_pdb()))
    modeller = app.Modeller(pdb.topology, pdb.positions)
    modeller.delete([r for r in modeller.topology.residues() if r.index > 1])
    with open(lonely, "w") as handle:
        app.PDBFile.writeFile(modeller.topology, modeller.positions, handle)
    result = run_script("setup-umbrella-system.py", "-o", str(tmp_path / "results"),
                        env=villin_env(PROTBENCH_INITIAL_PDB=str(lonely)))
    assert result.returncode != 0
    assert f"{lonely} cannot be parametrized with amber14-vacuum" in result.stderr
    assert "PROTBENCH_INITIAL_PDB" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.skipif(ProteinbenchmarkBuilder.module() is not None,
                    reason="proteinbenchmark is importable: gb3 would really be built")
def test_proteinbenchmark_target_without_proteinbenchmark(tmp_path):
    result = run_script("setup-umbrella-system.py", "-o", str(tmp_path),
                        env=villin_env(PROTBENCH_TARGET="gb3", PROTBENCH_FF="null-0.0.3-pair-opc3"))
    assert result.returncode != 0
    assert "proteinbenchmark" in result.stderr and "not installed" in result.stderr
    assert "villin" in result.stderr
    assert not list(tmp_path.rglob("*.xml"))


def test_missing_setup_is_named_by_load(tmp_path):
    with pytest.raises(SetupError, match="setup-umbrella-system.py") as error:
        SetupFiles(tmp_path, CAMPAIGN).load()
    assert str(tmp_path / CAMPAIGN.system_xml) in str(error.value)


def test_bias_is_periodic_where_the_system_is():
    """Solvated villin with PME: the contacts use minimum-image distances."""
    pdb = app.PDBFile(str(bundled_villin_pdb()))
    forcefield = app.ForceField("amber14-all.xml", "amber14/tip3p.xml")
    system = forcefield.createSystem(pdb.topology, nonbondedMethod=app.PME,
                                     nonbondedCutoff=0.9 * unit.nanometer, constraints=app.HBonds)
    xyz = pdb.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    umbrella = add_native_contact_bias(ParametrizedSystem(pdb.topology, system, xyz))
    _index, bias = find_umbrella_force(umbrella.system)
    assert bias.getCollectiveVariable(0).usesPeriodicBoundaryConditions()
    water = {a.index for a in pdb.topology.atoms() if a.residue.name == "HOH"}
    assert water and not water & (set(umbrella.contacts.atom_i) | set(umbrella.contacts.atom_j))
    # the protein shifted by a whole box vector keeps Q = 1 only because the bias is periodic
    box = pdb.topology.getPeriodicBoxVectors().value_in_unit(unit.nanometer)
    shifted = xyz.copy()
    protein = [a.index for a in pdb.topology.atoms() if a.residue.name != "HOH"]
    half = protein[: len(protein) // 2]
    shifted[half] += np.array(box[0])
    assert collective_variable(umbrella.system, shifted) == pytest.approx(1.0, abs=0.02)
    assert umbrella.contacts.fraction(shifted) < 0.9  # the non-periodic formula sees them broken


def test_contacts_found_on_one_topology_follow_atom_identity_onto_another():
    """As for proteinbenchmark's protonated structure and its solvated System: matched by name."""
    from protbench_nrp.contacts import find_native_contacts
    from protbench_nrp.systems import parametrize_local_villin

    villin = parametrize_local_villin()
    contacts = find_native_contacts(villin.topology, villin.positions_nm)
    # the same protein with its residues in reverse order: every index changes
    reordered = app.Topology()
    chain = reordered.addChain(id=next(villin.topology.chains()).id)
    order = []
    for residue in reversed(list(villin.topology.residues())):
        copy = reordered.addResidue(residue.name, chain, id=residue.id)
        for atom in residue.atoms():
            reordered.addAtom(atom.name, atom.element, copy)
            order.append(atom.index)
    moved = contacts.on(reordered)
    new_index = {old: new for new, old in enumerate(order)}
    assert moved.atom_i.tolist() == [new_index[i] for i in contacts.atom_i]
    assert moved.atom_j.tolist() == [new_index[j] for j in contacts.atom_j]
    np.testing.assert_array_equal(moved.r0_nm, contacts.r0_nm)
    positions = villin.positions_nm[order]
    assert moved.fraction(positions) == pytest.approx(contacts.fraction(villin.positions_nm))
    # a protein that lacks an atom of a contact is refused by name
    other = app.Topology()
    residue = other.addResidue("ALA", other.addChain(id="A"), id="1")
    other.addAtom("CA", app.element.carbon, residue)
    with pytest.raises(ValueError, match="not in the System's topology"):
        contacts.on(other)
