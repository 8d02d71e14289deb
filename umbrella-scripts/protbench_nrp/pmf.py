"""PMF numerics: decorrelated windows in, a free-energy profile and a two-state free energy out.

* :mod:`protbench_nrp.decorrelation` drops each window's equilibration and
  subsamples it (:func:`decorrelate_window`).
* :class:`PMFEstimator` combines the windows with MBAR and builds the PMF with
  :class:`pymbar.FES` (a histogram or a Gaussian kernel density), with
  bootstrap or analytical uncertainties, and the free-energy difference of
  two states of the CV (the folding free energy by default along Q) from the
  same MBAR weights. :meth:`PMFEstimator.estimate_part` does the same for one
  replica or one part of production, re-solving MBAR from the full solution
  (:class:`protbench_nrp.mbar.Reweighter`).
* :mod:`protbench_nrp.cvaxis` knows whether the CV is periodic: minimum-image
  bias energies, wrapped bins and kernels, holes round the circle.

Energies cross every boundary in kcal/mol and temperatures in kelvin. The
umbrella bias of a window is ``k*(cv - centre)**2`` (no factor 1/2), exactly
the ``CustomCVForce`` the campaign's windows ran with.
"""

from __future__ import annotations

import math
import time
import warnings
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from .cvaxis import LINE, CVAxis
from .cvfiles import AnalysisError
from .decorrelation import (EQUILIBRATION_SCAN_POINTS, MIN_FRAMES, DecorrelatedWindow,  # noqa: F401
                            decorrelate_window)
from .mbar import (Reweighter, Reweighting, StateSystem, asymptotic_covariance,  # noqa: F401
                   difference_errors, indicator_weights, log_denominator, one_blas_thread, solve_mbar_from)
from .science import MOLAR_GAS_CONSTANT_KCAL_PER_MOL_K
from .states import TwoStates, delta_g, folding_states
from .variables import BY_NAME

METHODS = ("histogram", "kde")

#: The estimator and resample count of the command and of :func:`~protbench_nrp.analysis.analyze_campaign`
#: alike: the settings registry states them once.
DEFAULT_METHOD = BY_NAME["PROTBENCH_PMF_METHOD"].default
DEFAULT_BOOTSTRAPS = BY_NAME["PROTBENCH_BOOTSTRAP"].default

#: The KDE's Gaussian kernel, the one rule: its standard deviation is an
#: eighth of the median spacing of the window centres (0.0025 in Q for the
#: seed's 31 windows over 0.4-1.0), and the PMF is given on a grid one kernel
#: width apart. A kernel lowers a PMF by about ``h^2 (F'^2/kT - F'') / 2`` and
#: a narrow one is noisy where samples are few: at this width the PMF's
#: largest and RMS errors against the analytic wells of
#: ``tests/analysis/test_folding.py``, at the histogram's bin centres, are no
#: larger than the histogram's (two bins per window spacing).
KDE_BANDWIDTH_PER_WINDOW_SPACING = 0.125

#: sklearn evaluates the kernel density to this relative accuracy (1e-4 kT in the
#: PMF); exact evaluation (its default, 0) is ten times slower and changes nothing.
KDE_RELATIVE_TOLERANCE = 1e-4

#: Two minima of the PMF count as folded and unfolded basins only when each is
#: walled in by at least this many kT on its outer side and the barrier between
#: them rises this much above the higher of them: less is the noise of a rough
#: profile, or the last point of a profile that only climbs.
MIN_BARRIER_KT = 2.0


def _pymbar():
    """Import pymbar on first use: status tools import the analysis and need none of it."""
    import pymbar

    return pymbar


# -- results ------------------------------------------------------------------------------


@dataclass(frozen=True)
class FreeEnergyDifference:
    """``G(states.second) - G(states.first)``: the folding free energy by default along Q.

    Attributes
    ----------
    states : TwoStates
        The two ranges of the CV, their names and how they were chosen.
    """

    dg_kcal_per_mol: float
    uncertainty_kcal_per_mol: float
    states: TwoStates

    @property
    def boundary(self) -> float:
        """The folded/unfolded boundary (NaN for states given as ranges)."""
        return self.states.boundary

    @property
    def boundary_source(self) -> str:
        return self.states.source

    @property
    def label(self) -> str:
        return self.states.label


#: The campaign's name for it.
FoldingFreeEnergy = FreeEnergyDifference


@dataclass(frozen=True)
class MBARSamples:
    """Every uncorrelated sample that went into MBAR, in MBAR's order, and what MBAR made of it.

    Attributes
    ----------
    log_denominator : numpy.ndarray
        ``ln sum_k N_k exp(f_k - u_k(x_n))`` per sample (dimensionless). The
        sample's weight in the unbiased ensemble is ``exp(-log_denominator)``
        up to normalisation: with the CV values alone it rebuilds the PMF.
    f_k, df_k : numpy.ndarray
        Dimensionless free energy of each state relative to the first, and its
        uncertainty (from the bootstrap when there is one).
    n_k : numpy.ndarray of int
        Samples per state.
    bootstrap_indices : list of numpy.ndarray
        Per bootstrap resample, the sample indices it drew (replica blocks
        make the resample sizes differ).
    """

    cv: np.ndarray
    replica: np.ndarray
    window: np.ndarray
    frame: np.ndarray
    log_denominator: np.ndarray
    f_k: np.ndarray
    df_k: np.ndarray
    n_k: np.ndarray
    bootstrap_indices: list = field(default_factory=list)


@dataclass(frozen=True)
class ExtensionEstimate:
    """How much of the bootstrap variance of the free-energy difference each state's sampling explains.

    Attributes
    ----------
    variance_by_state : numpy.ndarray
        (kcal/mol)^2 per state, in state order; shrinks as 1/length when the
        state's windows run longer.
    unexplained_variance : float
        The rest (replica-to-replica differences, nonlinearity): not reduced
        by extending any one window.
    """

    variance_by_state: np.ndarray
    unexplained_variance: float


@dataclass(frozen=True)
class PMF:
    """A potential of mean force along the CV.

    Attributes
    ----------
    bin_edges : numpy.ndarray
        Histogram bins, or for a KDE the cells around its grid points.
    pmf_kcal_per_mol : numpy.ndarray
        Zero at its lowest point; NaN where no sample fell.
    uncertainty_kcal_per_mol : numpy.ndarray
        One standard error of the difference to the lowest point.
    samples_per_bin : numpy.ndarray of int
    state_centres, state_windows : tuple
        The umbrella states of MBAR, in order of centre, and their window index.
    overlap : numpy.ndarray
        MBAR overlap matrix between the states.
    method : str
        ``histogram`` or ``kde``.
    error_method : str
        ``bootstrap (N resamples ...)`` or ``analytical``.
    coverage_edges, coverage_counts : numpy.ndarray, optional
        A coarse histogram of the samples that decides where the profile has
        holes; the PMF's own bins when omitted.
    delta_g : FreeEnergyDifference, optional
        Between the two states; None round a periodic CV without ``--state``.
    mbar : MBARSamples, optional
    extension : ExtensionEstimate, optional
    bandwidth : float, optional
        The KDE's kernel width along the CV.
    axis : CVAxis
        Whether the CV is periodic.
    """

    bin_edges: np.ndarray
    pmf_kcal_per_mol: np.ndarray
    uncertainty_kcal_per_mol: np.ndarray
    samples_per_bin: np.ndarray
    state_centres: tuple[float, ...]
    state_windows: tuple[int, ...]
    overlap: np.ndarray
    method: str = "histogram"
    error_method: str = "analytical"
    coverage_edges: np.ndarray | None = None
    coverage_counts: np.ndarray | None = None
    delta_g: FreeEnergyDifference | None = None
    mbar: MBARSamples | None = None
    extension: ExtensionEstimate | None = None
    bandwidth: float | None = None
    axis: CVAxis = LINE
    #: The MBAR solution and samples, for :meth:`PMFEstimator.estimate_part`.
    fit: "_Fit | None" = field(default=None, repr=False, compare=False)

    @property
    def folding(self) -> FreeEnergyDifference | None:
        """The two-state free energy (the campaign's name for it)."""
        return self.delta_g

    @property
    def bin_centres(self) -> np.ndarray:
        return 0.5 * (self.bin_edges[1:] + self.bin_edges[:-1])

    def holes(self) -> list[tuple[float, float]]:
        """CV ranges ``(low, high)`` of empty bins lying between filled ones, in order.

        Empty bins at either end of the histogram are not holes: the sampled
        range simply ends there. Round a periodic CV a hole may run across
        the seam (``low > high``); see :meth:`CVAxis.empty_runs`.
        """
        edges = self.bin_edges if self.coverage_edges is None else self.coverage_edges
        counts = self.samples_per_bin if self.coverage_counts is None else self.coverage_counts
        return self.axis.empty_runs(edges, counts, self.state_centres)

    def windows_around(self, low: float, high: float) -> list[tuple[int, float]]:
        """``(window, centre)`` of the states whose centres bracket or lie in ``[low, high]``.

        That is every state centred inside the range, plus the nearest one
        centred below it and the nearest one centred above it.
        """
        chosen = self.axis.around(low, high, self.state_centres)
        return [(self.state_windows[i], float(self.state_centres[i])) for i in chosen]

    def poor_overlaps(self, threshold: float) -> list[tuple[int, int, float]]:
        """Neighbouring states ``(window_a, window_b, overlap)`` whose overlap is below ``threshold``.

        Round a periodic CV whose windows go all round, the last state and
        the first are neighbours too.
        """
        poor = []
        for i, j in self.axis.neighbour_pairs(len(self.state_windows), self.state_centres):
            value = float(min(self.overlap[i, j], self.overlap[j, i]))
            if value < threshold:
                poor.append((self.state_windows[i], self.state_windows[j], value))
        return poor

    def folded_minimum(self) -> float:
        """CV of the lowest point of the PMF in the second state (folded), NaN if none."""
        if self.delta_g is None:
            return math.nan
        second = self.delta_g.states.second
        x, y = self.bin_centres, self.pmf_kcal_per_mol
        side = self.axis.contains(x, second.low, second.high) & np.isfinite(y)
        return float(x[side][np.argmin(y[side])]) if side.any() else math.nan


@dataclass
class _Fit:
    """The combined MBAR of an estimate, kept so that parts of it can be re-solved from it."""

    system: StateSystem
    reweighter: Reweighter
    full: Reweighting
    #: At ``full``; computed when first needed for a part.
    jacobian: np.ndarray | None


# -- the estimator -------------------------------------------------------------------------


class PMFEstimator:
    """MBAR over umbrella windows that share one temperature, reweighted to no bias.

    Windows with the same centre and force constant (the same window of
    different replicas) are pooled into one thermodynamic state.

    Parameters
    ----------
    temperature_kelvin : float
    bin_edges : array-like
        Histogram bin edges along the CV; for ``kde`` the cells whose centres
        are the grid the density is evaluated on.
    method : str
        ``histogram`` or ``kde`` (both :class:`pymbar.FES`).
    n_bootstraps : int
        0 for MBAR's analytical uncertainties (histogram only), else the
        number of bootstrap resamples (each solves MBAR again).
    seed : int
        Seeds the bootstrap.
    bandwidth : float, optional
        KDE kernel width along the CV; required for ``kde``.
    states : TwoStates, optional
        The two states of the free-energy difference.
    fold_boundary : float, optional
        Without ``states``: the boundary of ``default_states``.
    default_states : callable, optional
        ``(boundary, source) -> TwoStates`` for the boundary ``fold_boundary``
        or, when that is omitted, the barrier top of the PMF
        (:func:`~protbench_nrp.states.folding_states` by default, the
        campaign's folding); None: no free-energy difference without ``states``.
    axis : CVAxis
        Whether the CV is periodic.
    coverage_edges : array-like, optional
        Coarse bins that decide where the profile has holes.
    """

    def __init__(self, temperature_kelvin: float, bin_edges, *, method: str, n_bootstraps: int,
                 seed: int = 0, bandwidth: float | None = None, states: TwoStates | None = None,
                 fold_boundary: float | None = None, default_states=folding_states, axis: CVAxis = LINE,
                 coverage_edges=None):
        if temperature_kelvin <= 0:
            raise AnalysisError(f"temperature {temperature_kelvin} K is not positive")
        if method not in METHODS:
            raise AnalysisError(f"--method {method!r} is not one of {', '.join(METHODS)}")
        if n_bootstraps < 0 or n_bootstraps == 1:
            raise AnalysisError(f"--bootstrap {n_bootstraps}: use 0 (analytical errors) or at least 2")
        if method == "kde" and n_bootstraps == 0:
            raise AnalysisError(
                "--method kde has no analytical uncertainties (pymbar's FES gives them for "
                "histograms only): use bootstrap errors (--bootstrap 100) or --method histogram")
        if method == "kde" and not (bandwidth and bandwidth > 0):
            raise AnalysisError(f"--kde-bandwidth {bandwidth} must be a positive width along the CV")
        self.kt_kcal_per_mol = MOLAR_GAS_CONSTANT_KCAL_PER_MOL_K * temperature_kelvin
        self.bin_edges = np.asarray(bin_edges, dtype=float)
        self.n_bootstraps = int(n_bootstraps)
        self.seed = seed
        self.method = method
        self.bandwidth = bandwidth
        self.states = states
        self.fold_boundary = fold_boundary
        self.default_states = default_states
        self.axis = axis
        self.coverage_edges = None if coverage_edges is None else np.asarray(coverage_edges, dtype=float)
        #: Seconds spent so far, by part: "MBAR and FES" (the estimates) and "bootstrap".
        self.timings_s: dict[str, float] = defaultdict(float)

    @property
    def bin_centres(self) -> np.ndarray:
        return 0.5 * (self.bin_edges[1:] + self.bin_edges[:-1])

    # -- public -----------------------------------------------------------------------------

    def estimate(self, windows: list[DecorrelatedWindow], *, n_bootstraps: int | None = None) -> PMF:
        """The PMF of ``windows``, zero at its lowest point, with the two-state free energy.

        MBAR and the profile are :class:`pymbar.FES`'s; ``n_bootstraps``
        overrides the estimator's resample count.
        """
        started = time.perf_counter()
        system = StateSystem(windows, self.kt_kcal_per_mol, self.axis)
        pymbar = _pymbar()
        # timings=False leaves FES.timings unset in pymbar 4.0.3 (AttributeError later).
        fes = pymbar.FES(system.u_kn, system.n_k,
                         mbar_options={"initialize": "BAR" if system.n_states > 1 else "zeros"})
        f_k = np.asarray(fes.mbar.f_k, dtype=float)
        reweighter = Reweighter(system, f_k)
        # pymbar's solution is the reweighter's starting point: g = 0.
        full = Reweighting(f_k - f_k[0], log_denominator(f_k, system.u_kn, system.n_k) - f_k[0],
                           np.ones(len(system.x_n)), system.n_k.astype(float), np.zeros(system.n_states))
        fit = _Fit(system, reweighter, full, reweighter.jacobian(full))
        f_points = self._fes_profile(fes, full.log_den, system.x_n)
        analytical = _PymbarErrors(fes) if self.method == "histogram" else None
        return self._finish(fit, full, f_points,
                            self.n_bootstraps if n_bootstraps is None else n_bootstraps, started,
                            overlap=np.asarray(fes.mbar.compute_overlap()["matrix"]), pymbar_errors=analytical,
                            keep_samples=True)

    def estimate_part(self, whole: PMF, keep, *, n_bootstraps: int, replicas=None,
                      bin_errors: bool = True) -> PMF:
        """The PMF of the samples ``keep`` (a mask over ``whole``'s samples): one replica, a part of production.

        MBAR is re-solved from ``whole``'s solution; the profile is the same
        histogram, or the same Gaussian kernel to ~1e-3 of its density
        (:meth:`CVAxis.kernel_density`). The two states are ``whole``'s.
        Resamples draw whole ``replicas`` (all of ``keep``'s when omitted).
        Without resamples the errors are MBAR's analytical ones, of the
        free-energy difference alone unless ``bin_errors``.
        """
        with one_blas_thread():
            return self._estimate_part(whole, keep, n_bootstraps, replicas, bin_errors)

    def _estimate_part(self, whole: PMF, keep, n_bootstraps: int, replicas, bin_errors: bool) -> PMF:
        started = time.perf_counter()
        fit = whole.fit
        rows = np.flatnonzero(keep)
        if len(rows) < len(fit.system.x_n):
            system = fit.system.subset(rows)
            reweighter = fit.reweighter.subset(system, rows)
        else:
            system, reweighter = fit.system, fit.reweighter
        ones = np.ones(len(rows))
        # The whole's Jacobian, scaled to the part's size, steps close to the part's own.
        solution = (reweighter.solve(ones, system.n_k, start=fit.full,
                                     jacobian=fit.jacobian * (len(rows) / len(fit.system.x_n)))
                    or reweighter.solve(ones, system.n_k, start=fit.full))
        if solution is None:
            raise AnalysisError("MBAR did not converge for a part of the samples")
        part = _Fit(system, reweighter, solution, fit.jacobian if system is fit.system else None)
        f_points = self._profile_of_weights(system.x_n, solution.log_den)
        return self._finish(part, solution, f_points, n_bootstraps, started,
                            states=whole.delta_g.states if whole.delta_g else None, replicas=replicas,
                            bin_errors=bin_errors)

    # -- the common part -------------------------------------------------------------------

    def _finish(self, fit: _Fit, solution: Reweighting, f_points, n_bootstraps: int, started: float,
                *, overlap=None, pymbar_errors=None, states: TwoStates | None = None, replicas=None,
                keep_samples: bool = False, bin_errors: bool = True) -> PMF:
        system = fit.system
        x_n = system.x_n
        points = self.bin_centres
        counts, _ = np.histogram(x_n, bins=self.bin_edges)
        coverage_edges = self.coverage_edges if self.coverage_edges is not None else self.bin_edges
        coverage, _ = np.histogram(x_n, bins=coverage_edges)
        blank = self._blank(points, x_n, coverage_edges, coverage)
        reference = int(np.argmin(np.where(blank, np.inf, f_points)))
        f_points = f_points - f_points[reference]
        if states is None:
            states = self._states(points, np.where(blank, np.nan, f_points * self.kt_kcal_per_mol), system)
        masks = states.masks(system.x_n, self.axis) if states else None
        dg = delta_g(solution.log_den, masks[0], masks[1]) if states else math.nan
        if overlap is None:
            w = fit.reweighter.weights(solution)
            overlap = solution.n_k[None, :] * (w.T @ w)
        self.timings_s["MBAR and FES"] += time.perf_counter() - started

        started = time.perf_counter()
        with one_blas_thread():
            draws, dg_draws, state_means, picks, f_k_draws = self._bootstrap(
                fit, solution, masks, reference, n_bootstraps, replicas)
        self.timings_s["bootstrap"] += time.perf_counter() - started
        started = time.perf_counter()
        if n_bootstraps:
            with warnings.catch_warnings():  # a grid point no resample reached: NaN, said below
                warnings.simplefilter("ignore", RuntimeWarning)
                df_points = np.nanstd(draws, axis=0)
                df_k = np.nanstd(f_k_draws, axis=0)
            df_points[reference] = 0.0
            finite = np.isfinite(dg_draws)
            ddg = float(np.std(dg_draws[finite])) if finite.sum() > 1 else math.nan
            several = len(system.replicas if replicas is None else replicas) > 1
            error_method = f"bootstrap ({n_bootstraps} resamples of the uncorrelated samples" + (
                ", whole replicas as blocks)" if several else ")")
            extension = _explain_variance(dg_draws, state_means)
        elif pymbar_errors is not None:
            df_points, ddg, df_k = pymbar_errors.errors(points, f_points, reference, system, masks)
            error_method = "analytical (MBAR's asymptotic covariance)"
            extension = None
        else:
            df_points, ddg, df_k = self._analytical_errors(fit, solution, points,
                                                           f_points if bin_errors else None, reference, masks)
            error_method = "analytical (MBAR's asymptotic covariance)"
            extension = None

        pmf = np.where(blank, np.nan, f_points * self.kt_kcal_per_mol)
        error = np.where(blank, np.nan, np.asarray(df_points, dtype=float) * self.kt_kcal_per_mol)
        difference = (FreeEnergyDifference(dg * self.kt_kcal_per_mol, ddg * self.kt_kcal_per_mol, states)
                      if states else None)
        samples = None
        if keep_samples:
            samples = MBARSamples(system.x_n, system.replica_n, system.window_n, system.frame_n, solution.log_den,
                                  solution.f_k, np.asarray(df_k, dtype=float), system.n_k, picks)
        self.timings_s["MBAR and FES"] += time.perf_counter() - started
        return PMF(self.bin_edges.copy(), pmf, error, counts, tuple(float(c) for c in system.centres),
                   system.state_windows, np.asarray(overlap), self.method, error_method,
                   coverage_edges.copy(), coverage, difference, samples, extension,
                   self.bandwidth if self.method == "kde" else None, self.axis, fit)

    def _states(self, points, pmf_kcal_per_mol, system: StateSystem) -> TwoStates | None:
        """The estimator's states, else the default states at the given or barrier-top boundary."""
        if self.states is not None:
            return self.states
        if self.default_states is None:
            return None
        if self.fold_boundary is not None:
            return self.default_states(float(self.fold_boundary), "given with --fold-boundary")
        return self.default_states(*barrier_top(points, pmf_kcal_per_mol, self.kt_kcal_per_mol, system.centres))

    # -- profiles ---------------------------------------------------------------------------

    def _fes_profile(self, fes, log_den, x_n) -> np.ndarray:
        """Dimensionless PMF at the grid points (any offset) by :class:`pymbar.FES`, inf in empty bins.

        Round a periodic CV the KDE is sklearn's, as FES fits it, of the
        samples and their images one period across the seam: a kernel that
        wraps round. (FES knows no period; its histogram needs none, since
        the bins cover one period exactly.)
        """
        values = np.full(len(self.bin_centres), np.inf)
        u_n = np.zeros(len(x_n))
        if self.method == "histogram":
            fes.generate_fes(u_n, x_n, fes_type="histogram", histogram_parameters={"bin_edges": self.bin_edges})
            # pymbar's histogram FES fails on a point in an empty bin: ask for the filled ones only.
            asked = np.histogram(x_n, bins=self.bin_edges)[0] > 0
            with np.errstate(divide="ignore", invalid="ignore"):
                values[asked] = fes.get_fes(self.bin_centres[asked], reference_point="from-lowest")["f_i"]
        elif not self.axis.periodic:
            fes.generate_fes(u_n, x_n, fes_type="kde",
                             kde_parameters={"bandwidth": self.bandwidth, "kernel": "gaussian",
                                             "rtol": KDE_RELATIVE_TOLERANCE})
            with np.errstate(divide="ignore", invalid="ignore"):
                values = np.asarray(fes.get_fes(self.bin_centres, reference_point="from-lowest")["f_i"], dtype=float)
        else:
            from sklearn.neighbors import KernelDensity

            w = np.exp(-(log_den - log_den.min()))
            images, index = self.axis.images(x_n, 8 * self.bandwidth)
            kde = KernelDensity(bandwidth=self.bandwidth, kernel="gaussian", rtol=KDE_RELATIVE_TOLERANCE)
            kde.fit(np.concatenate([x_n, images])[:, None], sample_weight=np.concatenate([w, w[index]]))
            values = -kde.score_samples(self.bin_centres[:, None])
        values = np.asarray(values, dtype=float)
        values[~np.isfinite(values)] = np.inf
        return values

    def _profile_of_weights(self, x_n, log_den, counts=None) -> np.ndarray:
        """Dimensionless PMF at the grid points (any offset) of samples weighing ``counts * exp(-log_den)``.

        The histogram is FES's histogram exactly; the KDE is the same Gaussian
        kernel to ~1e-3 of its density (:meth:`CVAxis.kernel_density`), which
        is what a bootstrap's spread, and a part's difference, need.
        """
        w = np.exp(-(log_den - log_den.min()))
        if counts is not None:
            w = w * counts
        if self.method == "histogram":
            density, _ = np.histogram(x_n, bins=self.bin_edges, weights=w)
        else:
            density = self.axis.kernel_density(x_n, w, self.bin_centres, self.bandwidth)
        with np.errstate(divide="ignore"):
            return -np.log(density)

    def _blank(self, points, x_n, coverage_edges, coverage) -> np.ndarray:
        """Grid points outside the sampled range or inside a coverage hole."""
        blank = np.zeros(len(points), dtype=bool)
        if not self.axis.periodic:
            blank |= (points < x_n.min()) | (points > x_n.max())
        cell = np.clip(np.digitize(points, coverage_edges) - 1, 0, len(coverage) - 1)
        blank |= coverage[cell] == 0
        if self.method == "histogram":
            counts, _ = np.histogram(x_n, bins=self.bin_edges)
            blank |= counts == 0
        return blank

    # -- errors -----------------------------------------------------------------------------

    def _bootstrap(self, fit: _Fit, solution: Reweighting, masks, reference, n_bootstraps, replicas):
        """Per resample: the profile, the free-energy difference, each state's mean CV, the indices drawn, ``f_k``.

        pymbar 4.0.3's own ``FES.generate_fes(n_bootstraps=...)`` cannot be
        used: it re-solves MBAR once per state inside each resample, draws
        from the unseeded global RNG, and refits every bootstrap KDE with the
        original sample's weights (``pymbar/fes.py``). So each resample is the
        counts of the samples it drew, solved from the sample's solution by
        :meth:`Reweighter.solve` with the sample's Jacobian (Newton steps,
        then :func:`solve_mbar_from`, should that fail), and its profile is
        the same histogram or Gaussian KDE as the sample's, of the resample's
        weights (:meth:`_profile_of_weights`).
        """
        if not n_bootstraps:
            return None, np.array([]), None, [], None
        system = fit.system
        rng = np.random.default_rng(self.seed)
        n = len(system.x_n)
        chosen = system.replicas if replicas is None else list(replicas)
        start = solution
        jacobian = fit.jacobian if fit.jacobian is not None else fit.reweighter.jacobian(start)
        displacement = system.axis.difference(system.x_n, system.centres[system.state_n])
        draws, dg_draws, means, picks, f_ks = [], [], [], [], []
        for _ in range(n_bootstraps):
            pick = system.resample(rng, chosen)
            counts = np.bincount(pick, minlength=n).astype(float)
            n_k = np.bincount(system.state_n[pick], minlength=system.n_states)
            solution = fit.reweighter.solve(counts, n_k, start=start, jacobian=jacobian)
            if solution is None:
                solution = fit.reweighter.solve(counts, n_k, start=start)
            if solution is None:
                f_boot = solve_mbar_from(system.u_kn[:, pick], n_k, start.f_k)
                log_den = log_denominator(f_boot, system.u_kn, n_k)
            else:
                f_boot, log_den = solution.f_k, solution.log_den
            f_points = self._profile_of_weights(system.x_n, log_den, counts)
            draws.append(f_points - f_points[reference])
            dg_draws.append(delta_g(log_den, masks[0], masks[1], counts) if masks else math.nan)
            sums = np.bincount(system.state_n, weights=counts * displacement, minlength=system.n_states)
            with np.errstate(invalid="ignore", divide="ignore"):
                means.append(np.where(n_k > 0, sums / np.maximum(n_k, 1), np.nan))
            picks.append(pick)
            f_ks.append(f_boot - f_boot[0])
        draws = np.array(draws)
        draws[~np.isfinite(draws)] = np.nan  # a bin no resample reached says nothing
        return draws, np.array(dg_draws) * 1.0, np.array(means), picks, np.array(f_ks)

    def _analytical_errors(self, fit: _Fit, solution: Reweighting, points, f_points, reference, masks):
        """MBAR's asymptotic errors of each histogram bin against ``reference``, of ``dG`` and of ``f_k``.

        The covariance is :func:`~protbench_nrp.mbar.asymptotic_covariance`
        of the states and of indicator states of each filled bin and each of
        the two ranges; for a KDE, or without ``f_points``, the profile gets none (NaN).
        """
        w = fit.reweighter.weights(solution)
        x, log_den = fit.system.x_n, solution.log_den
        members, bins = [], []
        if self.method == "histogram" and f_points is not None:
            index = np.clip(np.digitize(x, self.bin_edges) - 1, 0, len(points) - 1)
            bins = [b for b in range(len(points)) if np.isfinite(f_points[b]) and np.any(index == b)]
            members += [index == b for b in bins]
        if masks:
            members += [masks[0], masks[1]]
        k = w.shape[1]
        columns = indicator_weights(log_den, np.column_stack(members)) if members else np.zeros((len(x), 0))
        theta = asymptotic_covariance(np.hstack([w, columns]), np.concatenate([solution.n_k, np.zeros(len(members))]))
        df_points = np.full(len(points), np.nan)
        if bins and reference in bins:
            at = {b: k + i for i, b in enumerate(bins)}
            df_points[bins] = difference_errors(theta, [(at[reference], at[b]) for b in bins])
        ddg = float(difference_errors(theta, [(k + len(bins), k + len(bins) + 1)])[0]) if masks else math.nan
        df_k = difference_errors(theta, [(0, i) for i in range(k)])
        return df_points, ddg, df_k


class _PymbarErrors:
    """pymbar's own analytical errors of the combined estimate: the histogram FES and perturbed free energies."""

    def __init__(self, fes):
        self.fes = fes

    def errors(self, points, f_points, reference, system: StateSystem, masks):
        df_points = np.full(len(points), np.nan)
        # The reference is the lowest point, so "from-lowest" is the difference to it.
        # (pymbar fails on a point in an empty bin: ask for the filled ones only.)
        filled = np.isfinite(f_points)
        with np.errstate(divide="ignore", invalid="ignore"):
            df_points[filled] = self.fes.get_fes(points[filled], reference_point="from-lowest",
                                                 uncertainty_method="analytical")["df_i"]
        ddg = math.nan
        if masks and masks[0].any() and masks[1].any():
            # Two indicator states: their MBAR free-energy difference is dG, with MBAR's covariance.
            u_ln = np.full((2, len(system.x_n)), np.inf)
            u_ln[0, masks[0]] = 0.0
            u_ln[1, masks[1]] = 0.0
            ddg = float(self.fes.mbar.compute_perturbed_free_energies(u_ln)["dDelta_f"][1, 0])
        df_k = np.asarray(self.fes.mbar.compute_free_energy_differences()["dDelta_f"][0])
        return df_points, ddg, df_k


def _explain_variance(dg_draws, state_means) -> ExtensionEstimate | None:
    """Attribute the bootstrap variance of the free-energy difference to the states' sampling.

    A linear fit of each resample's difference on each state's resampled
    mean CV: every window's resampling is independent of the others', so a
    state's share is its slope squared times the variance of its mean, and
    that share falls as one over the state's sample count.
    """
    ok = np.isfinite(dg_draws)
    if ok.sum() < 4:
        return None
    y = dg_draws[ok] - dg_draws[ok].mean()
    x = state_means[ok]
    x = np.where(np.isfinite(x), x, np.nanmean(x, axis=0))
    x = x - x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale == 0] = 1.0
    z = x / scale
    # Ridge against the noise of fitting ~K slopes to ~100 resamples.
    ridge = 0.1 * len(y)
    beta = np.linalg.solve(z.T @ z + ridge * np.eye(z.shape[1]), z.T @ y)
    explained = beta ** 2  # per unit-variance regressor, in (dimensionless dG)^2
    total = float(np.var(y))
    share = explained * min(1.0, total / max(float(explained.sum()), 1e-300))
    return ExtensionEstimate(share, max(total - float(share.sum()), 0.0))


def barrier_top(points, pmf_kcal_per_mol, kt_kcal_per_mol, centres) -> tuple[float, str]:
    """The barrier top between the folded and unfolded minima of a PMF, and how it was found.

    For each point, the lowest minimum on either side is a basin when the PMF
    climbs at least :data:`MIN_BARRIER_KT` kT beyond it (towards its own end);
    the barrier is the point rising highest above the higher of two basins,
    by at least as much. Without one the boundary is the middle of the
    windows' range. NaN points (unsampled) are left out.
    """
    x = np.asarray(points, dtype=float)
    y = np.asarray(pmf_kcal_per_mol, dtype=float)
    ok = np.isfinite(y)
    x, y = x[ok], y[ok]
    threshold = MIN_BARRIER_KT * kt_kcal_per_mol
    n = len(y)
    if n >= 3:
        # Lowest point of y[:i+1] (its index), and the highest point before it.
        left_arg = np.zeros(n, dtype=int)
        for i in range(1, n):
            left_arg[i] = i if y[i] < y[left_arg[i - 1]] else left_arg[i - 1]
        running_max = np.maximum.accumulate(y)
        left_wall = running_max[left_arg] - y[left_arg]
        # The same from the right end.
        right_arg = np.full(n, n - 1, dtype=int)
        for i in range(n - 2, -1, -1):
            right_arg[i] = i if y[i] < y[right_arg[i + 1]] else right_arg[i + 1]
        suffix_max = np.maximum.accumulate(y[::-1])[::-1]
        right_wall = suffix_max[right_arg] - y[right_arg]
        best, best_height = -1, -np.inf
        for i in range(1, n - 1):
            a, b = left_arg[i - 1], right_arg[i + 1]
            if left_wall[i - 1] < threshold or right_wall[i + 1] < threshold:
                continue
            height = y[i] - max(y[a], y[b])
            if height > best_height:
                best, best_height = i, height
        if best >= 0 and best_height >= threshold:
            return float(x[best]), (
                f"the barrier top of the PMF ({best_height:.2f} kcal/mol above the higher minimum)")
    middle = 0.5 * (float(np.min(centres)) + float(np.max(centres)))
    return middle, ("the middle of the windows' range: the PMF shows no barrier between two "
                    "minima; choose one with --fold-boundary")
