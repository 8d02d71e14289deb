"""Frames a scientist can use: the protein whole and centred, every molecule imaged into the box.

OpenMM's ``getState(enforcePeriodicBox=True)`` moves each molecule as a unit
so that its centre lies in the box: molecules stay whole, but the protein
sits wherever it drifted, often across the box edge, with its water spread
over the other side. :class:`FrameImager` moves every frame of a periodic run
so that the protein's centre is the centre of the box, then puts each other
molecule (water, ions) at the image whose centre lies in the box. Whole
molecules are moved by whole box vectors only, so no bond is ever cut, and
the distances the physics sees (nearest images) are unchanged.

A protein of several chains (several molecules) is kept together: each chain
after the first is put at the image nearest the first chain before centring.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def _wrap_shifts(points_nm: np.ndarray, box_nm: np.ndarray) -> np.ndarray:
    """Whole-box-vector shifts that put each point in the box ``[0, a) x [0, b) x [0, c)`` (reduced form)."""
    shifts = np.zeros_like(points_nm)
    moved = points_nm.copy()
    for axis in (2, 1, 0):
        n = np.floor(moved[:, axis] / box_nm[axis, axis])
        step = np.outer(n, box_nm[axis])
        moved -= step
        shifts -= step
    return shifts


def _nearest_shifts(points_nm: np.ndarray, reference_nm: np.ndarray, box_nm: np.ndarray) -> np.ndarray:
    """Whole-box-vector shifts that bring each point to its image nearest ``reference_nm``."""
    delta = points_nm - reference_nm
    shifts = np.zeros_like(points_nm)
    for axis in (2, 1, 0):
        step = np.outer(np.round(delta[:, axis] / box_nm[axis, axis]), box_nm[axis])
        delta -= step
        shifts -= step
    return shifts


@dataclass(frozen=True)
class FrameImager:
    """Images frames of one System: built once, applied to every frame.

    Attributes
    ----------
    molecules : tuple of numpy arrays
        Atom indices of each molecule, as ``Context.getMolecules()`` gives them.
    protein_atoms : numpy array
        Indices of the protein's atoms; the molecules holding them are the protein.
    """

    molecules: tuple
    protein_atoms: np.ndarray

    @classmethod
    def of(cls, context, topology) -> "FrameImager":
        """The imager of ``context``'s System, with the protein atoms of ``topology``."""
        from .contacts import protein_atom_indices

        return cls(tuple(np.asarray(m, dtype=int) for m in context.getMolecules()),
                   np.asarray(protein_atom_indices(topology), dtype=int))

    def __post_init__(self):
        order = np.concatenate(self.molecules) if self.molecules else np.zeros(0, int)
        sizes = np.array([len(m) for m in self.molecules], dtype=int)
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(int)
        is_protein = np.zeros(len(order), dtype=bool)
        is_protein[self.protein_atoms] = True
        protein = np.array([bool(is_protein[m].any()) for m in self.molecules], dtype=bool)
        for name, value in (("_order", order), ("_sizes", sizes), ("_starts", starts),
                            ("_protein", np.nonzero(protein)[0]), ("_others", np.nonzero(~protein)[0])):
            object.__setattr__(self, name, value)

    def _per_atom(self, shifts: np.ndarray) -> np.ndarray:
        """Per-molecule shifts (n_molecules, 3) as per-atom ones (n_atoms, 3)."""
        out = np.empty((len(self._order), 3))
        out[self._order] = np.repeat(shifts, self._sizes, axis=0)
        return out

    def __call__(self, positions_nm, box_vectors_nm) -> np.ndarray:
        """``positions_nm`` (n, 3) with the protein whole at the box centre and every other molecule in the box.

        Parameters
        ----------
        positions_nm : array-like, shape (n_atoms, 3)
            One frame, each molecule whole (as OpenMM's States give them).
        box_vectors_nm : array-like, shape (3, 3)
            The frame's box, rows a, b, c in OpenMM's reduced form.
        """
        positions = np.asarray(positions_nm, dtype=float)
        box = np.asarray(box_vectors_nm, dtype=float)
        centres = np.add.reduceat(positions[self._order], self._starts, axis=0) / self._sizes[:, None]
        shifts = np.zeros_like(centres)
        offset = np.zeros(3)
        if len(self._protein):
            chains = self._protein
            shifts[chains] = _nearest_shifts(centres[chains], centres[chains[0]], box)
            protein = positions[self.protein_atoms] + self._per_atom(shifts)[self.protein_atoms]
            offset = box.sum(axis=0) / 2.0 - protein.mean(axis=0)
        shifts[self._others] = _wrap_shifts(centres[self._others] + offset, box)
        return positions + offset + self._per_atom(shifts)


__all__ = ["FrameImager"]
