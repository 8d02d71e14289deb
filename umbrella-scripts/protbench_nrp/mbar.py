"""MBAR over umbrella states: the samples in state order, their bias energies, and fast re-solves.

* :class:`StateSystem` pools windows with one centre and force constant into
  one thermodynamic state and holds the reduced bias energies ``u_kn``
  (minimum-image differences round a periodic CV).
* :func:`solve_mbar_from` solves MBAR by Newton steps from a nearby solution.
* :class:`Reweighter` re-solves MBAR for any reweighting of the same samples
  (a bootstrap resample's counts, a part of production) from
  ``exp(f_k - u_kn)`` computed once: each step is two matrix-vector products,
  no exponential, and the answer is MBAR's to 1e-9 kT.

The bias of a window is ``k*(cv - centre)**2`` (no factor 1/2), in kcal/mol.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np

from .cvaxis import LINE, CVAxis
from .cvfiles import AnalysisError


def _pymbar():
    import pymbar

    return pymbar


class StateSystem:
    """Windows pooled into MBAR states, samples in state order, and the reduced bias energies."""

    def __init__(self, windows, kt_kcal_per_mol: float, axis: CVAxis = LINE):
        windows = [w for w in windows if len(w.samples)]
        if not windows:
            raise AnalysisError("no samples to analyse in the chosen part of production")
        states: dict[tuple[float, float], list] = {}
        for w in windows:
            states.setdefault((float(axis.wrap(w.centre)), w.k_kcal_per_mol), []).append(w)
        keys = sorted(states)
        # Samples in state order: BAR initialisation pairs neighbouring states by position.
        ordered = [(s, w) for s, key in enumerate(keys) for w in states[key]]
        self.axis = axis
        self.x_n = axis.wrap(np.concatenate([w.samples for _, w in ordered]))
        self.state_n = np.concatenate([np.full(len(w.samples), s) for s, w in ordered])
        self.replica_n = np.concatenate([np.full(len(w.samples), w.replica) for _, w in ordered])
        self.window_n = np.concatenate([np.full(len(w.samples), w.window) for _, w in ordered])
        self.frame_n = np.concatenate([
            w.frames if len(w.frames) == len(w.samples) else np.arange(len(w.samples)) for _, w in ordered])
        self.n_frames_n = np.concatenate([np.full(len(w.samples), w.n_frames) for _, w in ordered])
        self.n_states = len(keys)
        self.n_k = np.bincount(self.state_n, minlength=self.n_states)
        self.centres = np.array([key[0] for key in keys])
        self.forces = np.array([key[1] for key in keys])
        self.state_windows = tuple(states[key][0].window for key in keys)
        self._u_kn = self.forces[:, None] * axis.difference(self.x_n[None, :], self.centres[:, None]) ** 2 \
            / kt_kcal_per_mol
        # Sample positions of each (replica, state) block, for the resampling.
        self.replicas = sorted({w.replica for w in windows})
        starts = np.concatenate([[0], np.cumsum([len(w.samples) for _, w in ordered])])
        # (state, replica) -> the sample positions of that replica's windows of the state.
        self.blocks: dict[tuple[int, int], list[np.ndarray]] = {}
        for (state, w), start, end in zip(ordered, starts[:-1], starts[1:]):
            self.blocks.setdefault((state, w.replica), []).append(np.arange(start, end))

    @property
    def u_kn(self) -> np.ndarray:
        """Reduced bias energy of every sample in every state (kT): ``k (x - centre)^2 / kT``."""
        if self._u_kn is None:
            self._u_kn = self._parent.u_kn[:, self._rows]
        return self._u_kn

    def subset(self, rows) -> "StateSystem":
        """The same states with only the samples ``rows`` (positions, in order): one replica, a part."""
        rows = np.asarray(rows)
        sub = copy.copy(self)
        for name in ("x_n", "state_n", "replica_n", "window_n", "frame_n", "n_frames_n"):
            setattr(sub, name, getattr(self, name)[rows])
        sub._u_kn, sub._rows = None, rows  # copied only if a resample needs pymbar's own solver
        sub._parent = self
        sub.n_k = np.bincount(sub.state_n, minlength=self.n_states)
        sub.replicas = sorted({int(r) for r in np.unique(sub.replica_n)})
        position = np.full(len(self.x_n), -1)
        position[rows] = np.arange(len(rows))
        sub.blocks = {}
        for key, blocks in self.blocks.items():
            for block in blocks:
                kept = position[block]
                if (kept >= 0).any():
                    sub.blocks.setdefault(key, []).append(kept[kept >= 0])
        return sub

    def part(self, low_fraction: float, high_fraction: float) -> np.ndarray:
        """Mask of the samples taken within ``[low, high)`` fractions of their window's production frames."""
        return (self.frame_n >= low_fraction * self.n_frames_n) & (self.frame_n < high_fraction * self.n_frames_n)

    def resample(self, rng: np.random.Generator, replicas=None) -> np.ndarray:
        """Sample indices of one bootstrap resample of ``replicas`` (all by default), in state order.

        With several replicas, whole replicas are drawn with replacement
        first (a replica's windows share the steered-MD start that may bias
        them all alike), then every window's uncorrelated samples within each.
        """
        pool = list(self.replicas if replicas is None else replicas)
        if len(pool) > 1:
            chosen = rng.choice(pool, size=len(pool), replace=True)
        else:
            chosen = pool
        draws = {}
        for replica in chosen:  # draw replica by replica, then put the draws in state order
            for state in range(self.n_states):
                for block in self.blocks.get((state, int(replica)), ()):
                    draws.setdefault(state, []).append(block[rng.integers(0, len(block), len(block))])
        return np.concatenate([part for state in sorted(draws) for part in draws[state]])


def one_blas_thread():
    """A context in which BLAS runs on one thread.

    :class:`Reweighter`'s steps are matrix-vector products of ``K x N``, bound
    by memory bandwidth: more BLAS threads barely speed them up, and on a
    machine whose cores are busy they slow them down several times over
    (measured on 2 shared cores: 39 s against 6 s for the bootstrap of 93,000
    samples; ``benchmarks/bench_any_cv.py``).
    """
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


def log_denominator(f_k, u_kn, n_k) -> np.ndarray:
    """``ln sum_k N_k exp(f_k - u_kn)`` per sample: minus the log of its unbiased MBAR weight."""
    used = n_k > 0
    a = f_k[used, None] - u_kn[used] + np.log(n_k[used])[:, None]
    top = a.max(axis=0)
    return top + np.log(np.exp(a - top).sum(axis=0))


def solve_mbar_from(u_kn, n_k, f_start, tol: float = 1e-10, max_steps: int = 50) -> np.ndarray:
    """MBAR's ``f_k`` (relative to the first state) by Newton steps from a nearby solution.

    A bootstrap resample's solution lies close to the full sample's, where
    Newton's method converges in a few steps; pymbar's general solvers
    (scipy root finding, without JAX) take ten times longer to get there.
    Falls back to :class:`pymbar.MBAR` when the steps do not converge.
    States without samples get their free energy from the others' samples.
    """
    used = np.flatnonzero(n_k > 0)
    u = u_kn[used]
    log_n = np.log(n_k[used])[:, None]
    f = np.asarray(f_start, dtype=float)[used].copy()
    f -= f[0]
    converged = False
    for _ in range(max_steps):
        a = f[:, None] - u + log_n
        a -= a.max(axis=0)
        e = np.exp(a)
        w = e / e.sum(axis=0)  # w_kn = N_k exp(f_k - u_kn) / sum_j N_j exp(f_j - u_jn)
        residual = w.sum(axis=1) - n_k[used]
        jacobian = np.diag(w.sum(axis=1)) - w @ w.T
        try:
            step = np.linalg.solve(jacobian[1:, 1:], -residual[1:])
        except np.linalg.LinAlgError:
            break
        if not np.all(np.isfinite(step)):
            break
        f[1:] += step
        if np.max(np.abs(step)) < tol:
            converged = True
            break
    if not converged:
        return np.asarray(_pymbar().MBAR(u_kn, n_k, initial_f_k=f_start).f_k, dtype=float)
    if len(used) == len(n_k):
        return f
    log_den = log_denominator(_place(len(n_k), used, f), u_kn, n_k)
    a = -u_kn - log_den[None, :]
    top = a.max(axis=1)
    full = -(top + np.log(np.exp(a - top[:, None]).sum(axis=1)))
    return full - full[used[0]]


def _place(size: int, where, values) -> np.ndarray:
    out = np.zeros(size)
    out[where] = values
    return out


@dataclass(frozen=True)
class Reweighting:
    """MBAR's answer for one reweighting of a :class:`StateSystem`'s samples.

    Attributes
    ----------
    f_k : numpy.ndarray
        Dimensionless state free energies relative to the first state.
    log_den : numpy.ndarray
        ``ln sum_k N_k exp(f_k - u_kn)`` for every sample of the system
        (counted or not), as :func:`log_denominator` gives it: a sample's
        unbiased weight is ``exp(-log_den)``.
    counts, n_k : numpy.ndarray
        The reweighting: how often each sample counts, and samples per state.
    """

    f_k: np.ndarray
    log_den: np.ndarray
    counts: np.ndarray
    n_k: np.ndarray
    g_k: np.ndarray = field(repr=False)


class Reweighter:
    """MBAR re-solved for reweightings of one :class:`StateSystem`'s samples, cheaply.

    A reweighting gives each sample a count ``c_n`` (how often a bootstrap
    resample drew it; 1 or 0 for one replica or a part of production) and
    each state its sample count ``N_k``. With ``E_kn = exp(f0_k - u_kn - m_n)``
    stored once (``f0`` the full solution, ``m_n`` each column's largest
    exponent), MBAR's equations for ``f = f0 + g`` read::

        D_n = sum_k N_k exp(g_k) E_kn        sum_n c_n N_k exp(g_k) E_kn / D_n = N_k

    so a step is two products with ``E`` and no exponential of ``u``.
    :meth:`solve` takes Newton steps, or, given the Jacobian of a nearby
    reweighting (a bootstrap resample's is its sample's, up to sampling
    noise), steps with that one alone: the error then shrinks by the size of
    that noise at every step, to :data:`TOLERANCE` in a handful.
    """

    #: Stop when no state's free energy moves more than this (kT): a thousandth of a
    #: thousandth of the smallest bootstrap spread that matters.
    TOLERANCE = 1e-8
    MAX_STEPS = 60

    def __init__(self, system: StateSystem, f_k):
        self.system = system
        self.f0 = np.asarray(f_k, dtype=float)
        a = self.f0[:, None] - system.u_kn
        self.m_n = a.max(axis=0)
        self.e_kn = np.exp(a - self.m_n)

    def subset(self, system: StateSystem, rows) -> "Reweighter":
        """The same solution's ``E`` for the samples ``rows`` of this one's system (``system``, its subset)."""
        sub = copy.copy(self)
        sub.system, sub.m_n, sub.e_kn = system, self.m_n[rows], np.ascontiguousarray(self.e_kn[:, rows])
        return sub

    def weights(self, solution: Reweighting, rows=None) -> np.ndarray:
        """MBAR's normalised weight matrix ``W_nk`` (samples ``rows`` by states) of a solution."""
        e = self.e_kn if rows is None else self.e_kn[:, rows]
        d = (solution.n_k * np.exp(solution.g_k)) @ e
        return (e * np.exp(solution.g_k)[:, None] / d[None, :]).T

    def jacobian(self, solution: Reweighting) -> np.ndarray:
        """``d residual_k / d g_j`` at a solution: ``diag(N) - sum_n c_n w_kn w_jn``, ``w = N W``."""
        rows = np.flatnonzero(solution.counts > 0)
        w = self.weights(solution, rows) * solution.n_k[None, :]
        return np.diag(solution.n_k.astype(float)) - (w * solution.counts[rows, None]).T @ w

    def solve(self, counts, n_k, start: Reweighting | None = None,
              jacobian: np.ndarray | None = None) -> Reweighting | None:
        """MBAR for a reweighting, from ``start`` (the full solution when omitted); None if it fails.

        With ``jacobian`` every step uses it; without, each step computes its
        own (Newton). States without samples get their free energy from the
        others' samples.
        """
        counts = np.asarray(counts, dtype=float)
        n_k = np.asarray(n_k, dtype=float)
        used = np.flatnonzero(n_k > 0)
        if not len(used):
            return None
        e = self.e_kn
        g = np.zeros(len(n_k)) if start is None else start.g_k.copy()
        g -= g[used[0]]
        rows = np.flatnonzero(counts > 0)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # a diverging try returns None
            return self._steps(e, g, counts, n_k, used, rows, jacobian)

    def _steps(self, e, g, counts, n_k, used, rows, jacobian) -> Reweighting | None:
        previous = np.inf
        for _ in range(self.MAX_STEPS):
            s = n_k * np.exp(g)
            d = s @ e
            ratio = np.divide(counts, d, out=np.zeros_like(d), where=d > 0)
            residual = s * (e @ ratio) - n_k
            if jacobian is None:
                w = (e[:, rows] * s[:, None] / d[None, rows]).T
                matrix = np.diag(residual + n_k) - (w * counts[rows, None]).T @ w
            else:
                matrix = jacobian
            try:
                step = np.linalg.solve(matrix[np.ix_(used[1:], used[1:])], -residual[used[1:]])
            except np.linalg.LinAlgError:
                return None
            if not np.all(np.isfinite(step)):
                return None
            g[used[1:]] += step
            size = np.max(np.abs(step), initial=0.0)
            if size < self.TOLERANCE:
                break
            if jacobian is not None and size > 0.8 * previous:
                return None  # the borrowed Jacobian does not contract here: Newton steps instead
            previous = size
        else:
            return None
        s = n_k * np.exp(g)
        d = s @ e
        log_den = np.log(d) + self.m_n
        if (n_k == 0).any():
            # exp(-f_k) = sum_n c_n exp(-u_kn) / (sum_j N_j exp(f_j - u_jn)), for states without samples.
            ratio = np.divide(counts, d, out=np.zeros_like(d), where=d > 0)
            g = np.where(n_k > 0, g, -np.log(e @ ratio))
        f = self.f0 + g
        return Reweighting(f - f[0], log_den - f[0], counts, n_k, g)


def asymptotic_covariance(w_nk, n_k) -> np.ndarray:
    """MBAR's asymptotic covariance ``Theta`` of the states of a normalised weight matrix.

    The ``svd-ew`` method of pymbar 4.0.3 (``MBAR._computeAsymptoticCovarianceMatrix``
    in ``pymbar/mbar.py``; Shirts and Chodera 2008, appendix D): the
    eigendecomposition of ``W^T W`` in place of the SVD of ``W``. States
    added only to be reweighted to (indicator states of a bin or a range of
    the CV) have ``N_k = 0``.
    """
    s2, v = np.linalg.eigh(w_nk.T @ w_nk)
    s2[s2 < 0.0] = 0.0
    sigma = np.diag(np.sqrt(s2))
    inner = np.identity(len(n_k)) - sigma @ v.T @ np.diag(np.asarray(n_k, dtype=float)) @ v @ sigma
    return v @ sigma @ np.linalg.pinv(inner, rcond=1e-10) @ sigma @ v.T


def difference_errors(theta, pairs) -> np.ndarray:
    """``sqrt(Theta_ii + Theta_jj - 2 Theta_ij)`` for each ``(i, j)``: the error of ``f_j - f_i``."""
    i, j = np.asarray(pairs).T
    return np.sqrt(np.maximum(theta[i, i] + theta[j, j] - 2 * theta[i, j], 0.0))


def indicator_weights(log_den, members) -> np.ndarray:
    """Columns of ``W`` for states that are ranges of the CV: each a mask of ``members`` (n x L)."""
    w = np.exp(-(log_den - log_den.min()))
    columns = np.asarray(members, dtype=float) * w[:, None]
    totals = columns.sum(axis=0)
    return np.divide(columns, totals[None, :], out=np.zeros_like(columns), where=totals[None, :] > 0)
