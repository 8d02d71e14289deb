"""Building the umbrella System of a target.

The bundled local target ``villin`` (the villin headpiece of OpenMM's own
``openmm/app/data/test.pdb``, water and ions removed, amber14 in vacuum) is
built from OpenMM alone, so the whole campaign runs on a laptop and in the
tests. proteinbenchmark targets are built by proteinbenchmark in the image.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .contacts import NativeContacts, add_umbrella_bias, find_native_contacts, fraction_native_contacts_force

LOCAL_TARGET = "villin"
LOCAL_FORCE_FIELDS = {
    # name -> (force field files, implicit solvent?)
    "amber14-vacuum": (("amber14-all.xml",), False),
    "amber14-obc2": (("amber14-all.xml", "implicit/obc2.xml"), True),
}
HYDROGEN_MASS_AMU = 1.5  # repartitioned so 4 fs steps are stable
NONBONDED_CUTOFF_NM = 1.0


def bundled_villin_pdb() -> Path:
    """Path of OpenMM's bundled ``test.pdb`` (villin headpiece in water)."""
    import openmm.app

    path = Path(os.path.dirname(openmm.app.__file__)) / "data" / "test.pdb"
    if not path.is_file():
        raise FileNotFoundError(
            f"OpenMM's bundled {path} is missing; reinstall openmm (pip install openmm)"
        )
    return path


@dataclass
class UmbrellaSystem:
    """A System with its umbrella bias, the structure it was built from and its contacts."""

    topology: object
    system: object
    positions_nm: np.ndarray
    contacts: NativeContacts


def build_local_villin(ff: str = "amber14-vacuum", pdb_path: Path | str | None = None) -> UmbrellaSystem:
    """Build villin in vacuum or implicit solvent with the Q bias (k = 0 until a window sets it)."""
    import openmm.app as app
    import openmm.unit as unit

    if ff not in LOCAL_FORCE_FIELDS:
        raise ValueError(
            f"force field {ff!r} is not available for the local target {LOCAL_TARGET!r}; "
            f"use one of {', '.join(LOCAL_FORCE_FIELDS)}"
        )
    files, _implicit = LOCAL_FORCE_FIELDS[ff]
    pdb = app.PDBFile(str(pdb_path or bundled_villin_pdb()))
    modeller = app.Modeller(pdb.topology, pdb.positions)
    modeller.deleteWater()
    modeller.delete([r for r in modeller.topology.residues() if r.name.upper() in ("NA", "CL", "K")])
    modeller.topology.setPeriodicBoxVectors(None)
    forcefield = app.ForceField(*files)
    system = forcefield.createSystem(
        modeller.topology,
        nonbondedMethod=app.CutoffNonPeriodic,
        nonbondedCutoff=NONBONDED_CUTOFF_NM * unit.nanometer,
        constraints=app.HBonds,
        hydrogenMass=HYDROGEN_MASS_AMU * unit.amu,
    )
    positions = np.array(modeller.positions.value_in_unit(unit.nanometer))
    contacts = find_native_contacts(modeller.topology, positions)
    add_umbrella_bias(system, fraction_native_contacts_force(contacts, periodic=False))
    return UmbrellaSystem(modeller.topology, system, positions, contacts)
