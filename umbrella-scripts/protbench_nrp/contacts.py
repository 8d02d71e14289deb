"""Fraction of native contacts Q and the umbrella bias that holds it.

Q = (1/N) sum_c 1 / (1 + exp(beta (r_c - lambda r0_c)))

over the N native contacts c: heavy-atom pairs of residues more than three
apart that lie within 0.45 nm of each other in the native structure
(beta = 50 nm^-1, lambda = 1.8). The bias is a ``CustomCVForce``
``k*(Q-Q0)^2`` whose global parameters ``k`` (kJ/mol, OpenMM's unit) and
``Q0`` the window script sets; its first collective variable is Q.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import ProtbenchError

CONTACT_CUTOFF_NM = 0.45
MIN_RESIDUE_SEPARATION = 4  # "more than 3 residues apart"
BETA_PER_NM = 50.0
LAMBDA = 1.8
CV_NAME = "Q"
BIAS_EXPRESSION = "k*(Q-Q0)^2"
UMBRELLA_GLOBALS = ("k", "Q0")


@dataclass(frozen=True)
class NativeContacts:
    """Atom index pairs and their native distances in nm."""

    atom_i: np.ndarray
    atom_j: np.ndarray
    r0_nm: np.ndarray

    def __len__(self) -> int:
        return len(self.r0_nm)

    def write(self, path: Path | str) -> None:
        table = np.column_stack([self.atom_i, self.atom_j, self.r0_nm])
        np.savetxt(path, table, fmt=["%d", "%d", "%.6f"],
                   header=f"atom_i atom_j r0_nm  (beta={BETA_PER_NM} /nm, lambda={LAMBDA})")

    @classmethod
    def read(cls, path: Path | str) -> "NativeContacts":
        table = np.loadtxt(path, ndmin=2)
        if table.size == 0:
            raise ValueError(f"{path} lists no native contacts; rerun setup-umbrella-system.py")
        return cls(table[:, 0].astype(int), table[:, 1].astype(int), table[:, 2])

    def fraction(self, positions_nm: np.ndarray) -> float:
        """Q of one set of positions (nm), without periodic images."""
        positions_nm = np.asarray(positions_nm, dtype=float)
        r = np.linalg.norm(positions_nm[self.atom_i] - positions_nm[self.atom_j], axis=1)
        return float(np.mean(1.0 / (1.0 + np.exp(BETA_PER_NM * (r - LAMBDA * self.r0_nm)))))


def find_native_contacts(topology, positions_nm, cutoff_nm: float = CONTACT_CUTOFF_NM,
                         min_residue_separation: int = MIN_RESIDUE_SEPARATION) -> NativeContacts:
    """Heavy-atom pairs of residues at least ``min_residue_separation`` apart within ``cutoff_nm``.

    Parameters
    ----------
    topology : openmm.app.Topology
        Only protein residues' heavy atoms are considered: water and ions never
        make native contacts.
    positions_nm : array-like, shape (n_atoms, 3)
        Native structure in nm.
    """
    from openmm.app import element

    positions_nm = np.asarray(positions_nm, dtype=float)
    atoms = [a for a in topology.atoms()
             if a.element is not None and a.element != element.hydrogen
             and a.residue.name.upper() not in _NOT_PROTEIN]
    index = np.array([a.index for a in atoms], dtype=int)
    residue = np.array([a.residue.index for a in atoms], dtype=int)
    xyz = positions_nm[index]
    distance = np.linalg.norm(xyz[:, None, :] - xyz[None, :, :], axis=-1)
    separated = np.abs(residue[:, None] - residue[None, :]) >= min_residue_separation
    close = (distance <= cutoff_nm) & separated
    i, j = np.nonzero(np.triu(close, k=1))
    if len(i) == 0:
        raise ValueError(
            f"no heavy-atom pairs of residues {min_residue_separation} or more apart lie within "
            f"{cutoff_nm} nm: the structure is not a folded protein"
        )
    return NativeContacts(index[i], index[j], distance[i, j])


_NOT_PROTEIN = {"HOH", "WAT", "SOL", "NA", "CL", "K", "NA+", "CL-", "K+"}  # upper-cased names


def fraction_native_contacts_force(contacts: NativeContacts, periodic: bool):
    """A ``CustomBondForce`` whose energy is Q (dimensionless), for use as a CV."""
    import openmm

    force = openmm.CustomBondForce(
        f"(1/{len(contacts)})/(1+exp(beta*(r-lambda*r0)))"
    )
    force.addGlobalParameter("beta", BETA_PER_NM)
    force.addGlobalParameter("lambda", LAMBDA)
    force.addPerBondParameter("r0")
    for i, j, r0 in zip(contacts.atom_i, contacts.atom_j, contacts.r0_nm):
        force.addBond(int(i), int(j), [float(r0)])
    force.setUsesPeriodicBoundaryConditions(bool(periodic))
    return force


def add_umbrella_bias(system, cv_force, k_kj_per_mol: float = 0.0, centre: float = 1.0,
                      cv_name: str = CV_NAME) -> int:
    """Add ``k*(cv-Q0)^2`` on ``cv_force`` to ``system``; return the new force's index."""
    import openmm

    bias = openmm.CustomCVForce(BIAS_EXPRESSION.replace("Q-", f"{cv_name}-"))
    bias.addGlobalParameter("k", float(k_kj_per_mol))
    bias.addGlobalParameter("Q0", float(centre))
    bias.addCollectiveVariable(cv_name, cv_force)
    return system.addForce(bias)


class MissingUmbrellaForceError(ProtbenchError, ValueError):
    """The System has no ``CustomCVForce`` with global parameters ``k`` and ``Q0``."""


def find_umbrella_force(system):
    """Return ``(index, force)`` of the umbrella ``CustomCVForce`` of ``system``.

    Raises
    ------
    MissingUmbrellaForceError
        With a message naming what was found instead.
    """
    import openmm

    seen = []
    for index, force in enumerate(system.getForces()):
        if isinstance(force, openmm.CustomCVForce):
            names = {force.getGlobalParameterName(p) for p in range(force.getNumGlobalParameters())}
            if set(UMBRELLA_GLOBALS) <= names and force.getNumCollectiveVariables() >= 1:
                return index, force
            seen.append(f"CustomCVForce with globals {sorted(names)}")
    found = "; found " + ", ".join(seen) if seen else ""
    raise MissingUmbrellaForceError(
        "the System has no CustomCVForce with global parameters 'k' and 'Q0' and a collective "
        f"variable{found}. Rebuild it with umbrella-scripts/setup-umbrella-system.py"
    )
