"""Fraction of native contacts Q and the umbrella bias that holds it.

Q = (1/N) sum_c 1 / (1 + exp(beta (r_c - lambda r0_c)))

over the N native contacts c: heavy-atom pairs of residues more than three
apart that lie within 0.45 nm of each other in the native structure
(beta = 50 nm^-1, lambda = 1.8). The bias is a ``CustomCVForce``
``k*(Q-Q0)^2`` whose global parameters ``k`` (kJ/mol, OpenMM's unit) and
``Q0`` the window script sets; its first collective variable is Q.

The force evaluates each term as ``Z*(1 - tanh(a*(r - lambda*r0)))`` with
``Z = 1/(2N)`` and ``a = beta/2``, the same function (``1/(1+e^u) =
(1 - tanh(u/2))/2``) written so float32 can evaluate it: ``exp`` overflows to
inf in single and mixed precision once a native pair is ~1.7 nm beyond
``lambda*r0``, and inf/inf in the derivative becomes a NaN force, while
``tanh`` saturates to 1 with a zero derivative.

The contacts file (:meth:`NativeContacts.write`) lists each contact's atom
indices and native distance, then each atom's chain, residue number and atom
name, so that tools following atom identity can read it; files of the older
three-column form still read.
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
#: Per-contact term of Q; ``{n_contacts}`` is filled in. Float32-safe (see the module docstring).
CONTACT_EXPRESSION = "Z*(1 - tanh(a*(r - lambda*r0))); Z = 1/(2*{n_contacts}); a = beta/2"
#: Written for an atom whose chain or residue has no identifier in the topology.
_NO_ID = "-"


@dataclass(frozen=True)
class AtomIdentity:
    """Who an atom is, independent of its index: chain id, residue number (PDB resSeq), atom name."""

    chain: str
    residue: str
    name: str

    @classmethod
    def of(cls, atom) -> "AtomIdentity":
        """The identity of an ``openmm.app.topology.Atom``."""
        def field(text) -> str:  # one whitespace-free column of the contacts file
            return "_".join(str(text or "").split()) or _NO_ID

        return cls(field(atom.residue.chain.id), field(atom.residue.id), field(atom.name))

    def fields(self) -> list[str]:
        return [self.chain, self.residue, self.name]


@dataclass(frozen=True)
class NativeContacts:
    """Atom index pairs and their native distances in nm."""

    atom_i: np.ndarray
    atom_j: np.ndarray
    r0_nm: np.ndarray
    #: ``(identity of atom_i, identity of atom_j)`` per contact; ``None`` when read from a
    #: file of the older three-column form.
    identities: tuple[tuple[AtomIdentity, AtomIdentity], ...] | None = None

    def __len__(self) -> int:
        return len(self.r0_nm)

    def write(self, path_or_file) -> None:
        """Write one ``atom_i atom_j r0_nm chain_i resid_i name_i chain_j resid_j name_j`` line each."""
        lines = [f"# atom_i atom_j r0_nm chain_i resid_i name_i chain_j resid_j name_j  "
                 f"(beta={BETA_PER_NM} /nm, lambda={LAMBDA})"]
        for n, (i, j, r0) in enumerate(zip(self.atom_i, self.atom_j, self.r0_nm)):
            ids = (self.identities[n][0].fields() + self.identities[n][1].fields()
                   if self.identities is not None else [])
            lines.append(" ".join([str(int(i)), str(int(j)), f"{float(r0):.6f}", *ids]))
        text = "\n".join(lines) + "\n"
        if hasattr(path_or_file, "write"):
            path_or_file.write(text)
        else:
            Path(path_or_file).write_text(text)

    @classmethod
    def read(cls, path: Path | str) -> "NativeContacts":
        """Read a contacts file of either form (with or without atom identities).

        Raises
        ------
        ValueError
            Naming the file and the line that cannot be read.
        """
        atom_i, atom_j, r0, identities = [], [], [], []
        for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            fields = line.split()
            try:
                if len(fields) not in (3, 9):
                    raise ValueError(f"{len(fields)} columns, not 3 or 9")
                atom_i.append(int(float(fields[0])))
                atom_j.append(int(float(fields[1])))
                r0.append(float(fields[2]))
            except ValueError as error:
                raise ValueError(f"{path}, line {number}, is not a native contact ({error}): "
                                 f"{line.strip()!r}; rerun setup-umbrella-system.py") from None
            if len(fields) == 9:
                identities.append((AtomIdentity(*fields[3:6]), AtomIdentity(*fields[6:9])))
        if not r0:
            raise ValueError(f"{path} lists no native contacts; rerun setup-umbrella-system.py")
        if identities and len(identities) != len(r0):
            raise ValueError(f"{path} gives atom identities for some contacts only; rerun "
                             f"setup-umbrella-system.py")
        return cls(np.array(atom_i, dtype=int), np.array(atom_j, dtype=int), np.array(r0),
                   tuple(identities) or None)

    def on(self, topology) -> "NativeContacts":
        """The same contacts with the atom indices of ``topology``, matched by atom identity.

        For contacts found on one structure (the experimental one) and used
        with a System built from another topology (protonated, solvated).

        Raises
        ------
        ValueError
            When the contacts carry no identities, or an atom is not in ``topology``.
        """
        if self.identities is None:
            raise ValueError("these native contacts carry no atom identities (a three-column "
                             "contacts file); rerun setup-umbrella-system.py")
        index = {AtomIdentity.of(atom): atom.index for atom in topology.atoms()}
        missing = sorted({str(who) for pair in self.identities for who in pair if who not in index})
        if missing:
            raise ValueError(f"{len(missing)} native-contact atom(s) are not in the System's "
                             f"topology, e.g. {missing[0]}: the native structure and the System "
                             f"describe different proteins")
        atom_i = np.array([index[who_i] for who_i, _ in self.identities], dtype=int)
        atom_j = np.array([index[who_j] for _, who_j in self.identities], dtype=int)
        return NativeContacts(atom_i, atom_j, self.r0_nm, self.identities)

    def mapped(self, mapping, topology) -> "NativeContacts":
        """The same contacts on ``topology``'s atoms, ``mapping[old index] -> new index``.

        The identities written with them become those of ``topology``, the
        structure the System describes.

        Raises
        ------
        ValueError
            When an atom of a contact has no image in ``mapping``.
        """
        lost = sorted({int(i) for i in (*self.atom_i, *self.atom_j) if int(i) not in mapping})
        if lost:
            raise ValueError(f"{len(lost)} native-contact atom(s) have no counterpart in the "
                             f"System's topology, e.g. atom {lost[0]}")
        atom_i = np.array([mapping[int(i)] for i in self.atom_i], dtype=int)
        atom_j = np.array([mapping[int(j)] for j in self.atom_j], dtype=int)
        atoms = list(topology.atoms())
        identities = tuple((AtomIdentity.of(atoms[i]), AtomIdentity.of(atoms[j]))
                           for i, j in zip(atom_i, atom_j))
        return NativeContacts(atom_i, atom_j, self.r0_nm, identities)

    def fraction(self, positions_nm: np.ndarray, box_vectors_nm=None) -> float:
        """Q of one set of positions (nm).

        Parameters
        ----------
        positions_nm : array-like, shape (n_atoms, 3)
        box_vectors_nm : array-like, shape (3, 3), optional
            The periodic box (rows a, b, c, OpenMM's reduced form). Give it for
            a periodic System: distances are then those of the nearest image,
            as the bias force measures them, so a protein split across the box
            edge keeps its contacts. Without it, distances are plain.
        """
        positions_nm = np.asarray(positions_nm, dtype=float)
        delta = positions_nm[self.atom_i] - positions_nm[self.atom_j]
        if box_vectors_nm is not None:
            delta = minimum_image(delta, box_vectors_nm)
        r = np.linalg.norm(delta, axis=1)
        return float(np.mean(1.0 / (1.0 + np.exp(BETA_PER_NM * (r - LAMBDA * self.r0_nm)))))


def minimum_image(delta_nm, box_vectors_nm) -> np.ndarray:
    """Displacements ``delta_nm`` (n, 3) moved to their nearest periodic image.

    ``box_vectors_nm`` are the rows a, b, c in OpenMM's reduced form (a along
    x, b in the xy plane), for which subtracting whole c, then b, then a
    vectors is exact for displacements shorter than half the box, as in
    OpenMM's own periodic distance.
    """
    box = np.asarray(box_vectors_nm, dtype=float)
    if box.shape != (3, 3) or not np.all(np.isfinite(box)) or min(box[0, 0], box[1, 1], box[2, 2]) <= 0:
        raise ValueError(f"box vectors {box.tolist()} (nm) are not a periodic box")
    delta = np.array(delta_nm, dtype=float, copy=True)
    for axis in (2, 1, 0):
        delta -= np.outer(np.round(delta[:, axis] / box[axis, axis]), box[axis])
    return delta


def find_native_contacts(topology, positions_nm, cutoff_nm: float = CONTACT_CUTOFF_NM,
                         min_residue_separation: int = MIN_RESIDUE_SEPARATION,
                         box_vectors_nm=None) -> NativeContacts:
    """Heavy-atom pairs of residues at least ``min_residue_separation`` apart within ``cutoff_nm``.

    Parameters
    ----------
    topology : openmm.app.Topology
        Only protein residues' heavy atoms are considered: water and ions never
        make native contacts.
    positions_nm : array-like, shape (n_atoms, 3)
        Native structure in nm.
    box_vectors_nm : array-like, shape (3, 3), optional
        The periodic box of a structure whose protein may be split across its
        edge (a frame of a periodic run): distances are then nearest-image
        ones (:func:`minimum_image`).
    """
    from openmm.app import element

    positions_nm = np.asarray(positions_nm, dtype=float)
    atoms = [a for a in _protein_atoms(topology)
             if a.element is not None and a.element != element.hydrogen]
    index = np.array([a.index for a in atoms], dtype=int)
    residue = np.array([a.residue.index for a in atoms], dtype=int)
    xyz = positions_nm[index]
    delta = (xyz[:, None, :] - xyz[None, :, :]).reshape(-1, 3)
    if box_vectors_nm is not None:
        delta = minimum_image(delta, box_vectors_nm)
    distance = np.linalg.norm(delta, axis=-1).reshape(len(xyz), len(xyz))
    separated = np.abs(residue[:, None] - residue[None, :]) >= min_residue_separation
    close = (distance <= cutoff_nm) & separated
    i, j = np.nonzero(np.triu(close, k=1))
    if len(i) == 0:
        raise ValueError(
            f"no heavy-atom pairs of residues {min_residue_separation} or more apart lie within "
            f"{cutoff_nm} nm: the structure is not a folded protein"
        )
    identity = [AtomIdentity.of(a) for a in atoms]
    return NativeContacts(index[i], index[j], distance[i, j],
                          tuple((identity[a], identity[b]) for a, b in zip(i, j)))


_NOT_PROTEIN = {"HOH", "WAT", "SOL", "NA", "CL", "K", "NA+", "CL-", "K+"}  # upper-cased names


def _protein_atoms(topology) -> list:
    return [a for a in topology.atoms() if a.residue.name.upper() not in _NOT_PROTEIN]


def protein_atom_indices(topology) -> list[int]:
    """Indices of the atoms of ``topology`` that are not water or ions: the protein."""
    return [a.index for a in _protein_atoms(topology)]


def match_protein_atoms(source, target, source_name: str = "the native structure",
                        target_name: str = "the System's structure") -> dict[int, int]:
    """Map each protein atom of topology ``source`` to its atom in topology ``target``, by structure.

    The n-th protein residue of one is the n-th of the other, and within a
    residue atoms match by name. Residue numbers and chain ids are not used:
    a structure rewritten with new numbering (proteinbenchmark's minimized
    PDB, written with ``keepIds=False``) still matches its source. Water and
    ions are left out.

    Raises
    ------
    ValueError
        Naming the first residue or atom that differs, with ``source_name``
        and ``target_name``.
    """
    def protein(topology):
        return [r for r in topology.residues() if r.name.upper() not in _NOT_PROTEIN]

    mine, theirs = protein(source), protein(target)
    if len(mine) != len(theirs):
        raise ValueError(f"{source_name} has {len(mine)} protein residues but {target_name} has "
                         f"{len(theirs)}: they are not the same protein")
    mapping = {}
    for n, (a, b) in enumerate(zip(mine, theirs), start=1):
        names = {atom.name: atom.index for atom in b.atoms()}
        missing = [atom.name for atom in a.atoms() if atom.name not in names]
        if a.name != b.name or missing:
            why = (f"{a.name} {a.id} vs {b.name} {b.id}" if a.name != b.name
                   else f"{b.name} {b.id} lacks atom(s) {', '.join(missing)} of {a.name} {a.id}")
            raise ValueError(f"protein residue {n} differs between {source_name} and "
                             f"{target_name} ({why}): they are not the same protein")
        mapping.update({atom.index: names[atom.name] for atom in a.atoms()})
    return mapping


def fraction_native_contacts_force(contacts: NativeContacts, periodic: bool):
    """A ``CustomBondForce`` whose energy is Q (dimensionless), for use as a CV.

    ``periodic`` must be the System's own periodicity: a periodic force
    measures each contact to the nearest image, so Q does not drop when the
    box edge passes through the protein.
    """
    import openmm

    force = openmm.CustomBondForce(CONTACT_EXPRESSION.format(n_contacts=len(contacts)))
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
