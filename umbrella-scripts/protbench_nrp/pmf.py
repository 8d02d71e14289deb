"""PMF numerics: decorrelated windows in, a free-energy profile and the folding free energy out.

* :func:`decorrelate_window` drops the equilibration part of a window and
  subsamples it by its statistical inefficiency.
* :class:`PMFEstimator` combines decorrelated windows with MBAR and builds the
  PMF with :class:`pymbar.FES` (a histogram or a Gaussian kernel density),
  with bootstrap or analytical uncertainties, and the folding free energy
  across a boundary of the CV from the same MBAR weights.

Energies cross every boundary in kcal/mol and temperatures in kelvin. The
umbrella bias of a window is ``k*(cv - centre)**2`` (no factor 1/2), exactly
the ``CustomCVForce`` the windows ran with.
"""

from __future__ import annotations

import math
import time
import warnings
from collections import defaultdict
from dataclasses import dataclass, field, replace

import numpy as np

from .cvfiles import AnalysisError, WindowSamples
from .layout import window_tag
from .science import MOLAR_GAS_CONSTANT_KCAL_PER_MOL_K

#: A window needs this many production frames left after discarding its
#: equilibration for a statistical inefficiency to mean anything.
MIN_FRAMES = 10

#: Equilibration detection scans at most this many candidate start frames per
#: window: scanning every frame costs O(N^2) and moves the answer by a frame.
EQUILIBRATION_SCAN_POINTS = 200

METHODS = ("histogram", "kde")

#: Upstream proteinbenchmark evaluates its KDE PMF on a grid this fine along Q.
KDE_GRID_SPACING = 0.002

#: Gaussian kernel width along the CV, as a fraction of the window spacing:
#: a quarter of the spacing smooths the noise of ~200 uncorrelated samples per
#: window while biasing a well of Q width 0.1 by a few hundredths of a kcal/mol.
KDE_BANDWIDTH_PER_WINDOW_SPACING = 0.08

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
    from pymbar import timeseries

    return pymbar, timeseries


# -- one window: equilibration and decorrelation ---------------------------------------


@dataclass(frozen=True)
class DecorrelatedWindow:
    """The uncorrelated samples of one window that go into MBAR.

    Attributes
    ----------
    n_frames : int
        Production frames read.
    n_discarded : int
        Leading frames dropped as equilibration.
    statistical_inefficiency : float
        g of the kept part: one sample in ``g`` frames is used.
    samples : numpy.ndarray
        The CV values used.
    frames : numpy.ndarray of int
        Index of each sample among the window's production frames (for
        forward and reverse convergence and the upstream-style files).
    production_length_ns : float
        The production length the window was launched with.
    """

    replica: int
    window: int
    centre: float
    k_kcal_per_mol: float
    n_frames: int
    n_discarded: int
    statistical_inefficiency: float
    samples: np.ndarray
    frames: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))
    production_length_ns: float = math.nan

    @property
    def label(self) -> str:
        return f"replica {self.replica} window {window_tag(self.window)}"

    @property
    def effective_samples(self) -> float:
        """Independent samples in the kept frames: kept frames / g."""
        return (self.n_frames - self.n_discarded) / self.statistical_inefficiency

    def part(self, low_fraction: float, high_fraction: float) -> "DecorrelatedWindow":
        """Only the samples taken within ``[low, high)`` fractions of the production frames."""
        keep = (self.frames >= low_fraction * self.n_frames) & (self.frames < high_fraction * self.n_frames)
        return replace(self, samples=self.samples[keep], frames=self.frames[keep])


def decorrelate_window(sample: WindowSamples, discard_frames: int | None = None) -> DecorrelatedWindow:
    """Drop the equilibration part of a window and keep uncorrelated frames.

    Parameters
    ----------
    sample : WindowSamples
    discard_frames : int, optional
        Leading frames to drop; detected with
        :func:`pymbar.timeseries.detect_equilibration` when omitted.

    Raises
    ------
    AnalysisError
        When fewer than :data:`MIN_FRAMES` frames would remain.
    """
    _, timeseries = _pymbar()
    values = sample.series.values
    n = len(values)
    if discard_frames is not None:
        start = int(discard_frames)
    elif n >= MIN_FRAMES and values.std() > 0:
        start, _, _ = timeseries.detect_equilibration(
            values, nskip=max(1, n // EQUILIBRATION_SCAN_POINTS))
        start = int(start)
    else:
        start = 0
    kept = values[start:]
    if len(kept) < MIN_FRAMES:
        raise AnalysisError(
            f"{sample.label} has {n} production frames, {len(kept)} after discarding {start} "
            f"as equilibration; at least {MIN_FRAMES} are needed. Let it run longer or lower "
            f"--discard-frames"
        )
    g = float(timeseries.statistical_inefficiency(kept)) if kept.std() > 0 else 1.0
    indices = timeseries.subsample_correlated_data(kept, g=g) if g > 1.0 else range(len(kept))
    indices = np.asarray(indices, dtype=int)
    p = sample.parameters
    return DecorrelatedWindow(sample.replica, sample.window, p.centre, p.k_kcal_per_mol, n, start,
                              g, np.asarray(kept[indices]), start + indices,
                              float(p.production_length_ns))


# -- results ------------------------------------------------------------------------------


@dataclass(frozen=True)
class FoldingFreeEnergy:
    """``G_folded - G_unfolded``, folded meaning the CV above ``boundary``.

    Attributes
    ----------
    boundary_source : str
        How the boundary was chosen, in words, for every output to repeat.
    """

    dg_kcal_per_mol: float
    uncertainty_kcal_per_mol: float
    boundary: float
    boundary_source: str


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
    """How much of the bootstrap variance of ``dG_fold`` each state's sampling explains.

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
    folding : FoldingFreeEnergy, optional
    mbar : MBARSamples, optional
    extension : ExtensionEstimate, optional
    bandwidth : float, optional
        The KDE's kernel width along the CV.
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
    folding: FoldingFreeEnergy | None = None
    mbar: MBARSamples | None = None
    extension: ExtensionEstimate | None = None
    bandwidth: float | None = None

    @property
    def bin_centres(self) -> np.ndarray:
        return 0.5 * (self.bin_edges[1:] + self.bin_edges[:-1])

    def holes(self) -> list[tuple[float, float]]:
        """CV ranges ``(low, high)`` of empty bins lying between filled ones, in order.

        Empty bins at either end of the histogram are not holes: the
        sampled range simply ends there.
        """
        edges = self.bin_edges if self.coverage_edges is None else self.coverage_edges
        counts = self.samples_per_bin if self.coverage_counts is None else self.coverage_counts
        filled = np.flatnonzero(counts > 0)
        holes = []
        for before, after in zip(filled[:-1], filled[1:]):
            if after > before + 1:
                holes.append((float(edges[before + 1]), float(edges[after])))
        return holes

    def windows_around(self, low: float, high: float) -> list[tuple[int, float]]:
        """``(window, centre)`` of the states whose centres bracket or lie in ``[low, high]``.

        That is every state centred inside the range, plus the nearest one
        centred below it and the nearest one centred above it.
        """
        centres = np.asarray(self.state_centres)
        inside = np.flatnonzero((centres >= low) & (centres <= high))
        below = np.flatnonzero(centres < low)
        above = np.flatnonzero(centres > high)
        chosen = sorted(set(inside) | set(below[-1:]) | set(above[:1]))
        return [(self.state_windows[i], float(centres[i])) for i in chosen]

    def poor_overlaps(self, threshold: float) -> list[tuple[int, int, float]]:
        """Neighbouring states ``(window_a, window_b, overlap)`` whose overlap is below ``threshold``."""
        poor = []
        for i in range(len(self.state_windows) - 1):
            value = float(min(self.overlap[i, i + 1], self.overlap[i + 1, i]))
            if value < threshold:
                poor.append((self.state_windows[i], self.state_windows[i + 1], value))
        return poor

    def folded_minimum(self) -> float:
        """CV of the lowest point of the PMF on the folded side of the boundary (NaN if none)."""
        boundary = self.folding.boundary if self.folding else -np.inf
        x, y = self.bin_centres, self.pmf_kcal_per_mol
        side = (x > boundary) & np.isfinite(y)
        return float(x[side][np.argmin(y[side])]) if side.any() else math.nan


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
    n_bootstraps : int
        0 for MBAR's analytical uncertainties (histogram only), else the
        number of bootstrap resamples (each solves MBAR again).
    seed : int
        Seeds the bootstrap.
    method : str
        ``histogram`` or ``kde`` (both :class:`pymbar.FES`).
    bandwidth : float, optional
        KDE kernel width along the CV; required for ``kde``.
    fold_boundary : float, optional
        Folded means the CV above it; the barrier top of the PMF when omitted.
    coverage_edges : array-like, optional
        Coarse bins that decide where the profile has holes.
    """

    def __init__(self, temperature_kelvin: float, bin_edges, n_bootstraps: int = 0, seed: int = 0,
                 method: str = "histogram", bandwidth: float | None = None,
                 fold_boundary: float | None = None, coverage_edges=None):
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
        self.fold_boundary = fold_boundary
        self.coverage_edges = None if coverage_edges is None else np.asarray(coverage_edges, dtype=float)
        #: Seconds spent so far, by part: "MBAR and FES" (the estimates) and "bootstrap".
        self.timings_s: dict[str, float] = defaultdict(float)

    # -- public -----------------------------------------------------------------------------

    def estimate(self, windows: list[DecorrelatedWindow], *, fold_boundary: float | None = None,
                 boundary_source: str | None = None, n_bootstraps: int | None = None,
                 initial_f_k=None) -> PMF:
        """The PMF of ``windows``, zero at its lowest point, with the folding free energy.

        ``fold_boundary`` (with the words saying where it came from) overrides
        the estimator's; ``n_bootstraps`` overrides its resample count;
        ``initial_f_k`` (state free energies of a larger estimate over the
        same states) starts MBAR close to its answer.
        """
        n_bootstraps = self.n_bootstraps if n_bootstraps is None else n_bootstraps
        started = time.perf_counter()
        system = _StateSystem(windows, self.kt_kcal_per_mol)
        if initial_f_k is not None and len(initial_f_k) == system.n_states:
            fes, f_k = self._fes(system.u_kn, system.n_k, initial_f_k=np.asarray(initial_f_k, dtype=float))
        else:
            fes, f_k = self._fes(system.u_kn, system.n_k,
                                 initialize="BAR" if system.n_states > 1 else "zeros")
        points = self.bin_centres
        log_den = _log_denominator(f_k, system.u_kn, system.n_k)
        f_points = self._profile(fes, log_den, system.x_n)
        counts, _ = np.histogram(system.x_n, bins=self.bin_edges)
        coverage_edges = self.coverage_edges if self.coverage_edges is not None else self.bin_edges
        coverage, _ = np.histogram(system.x_n, bins=coverage_edges)
        blank = self._blank(points, system.x_n, coverage_edges, coverage)
        reference = int(np.argmin(np.where(blank, np.inf, f_points)))
        f_points = f_points - f_points[reference]

        if fold_boundary is None:
            fold_boundary = self.fold_boundary
        if fold_boundary is not None:
            boundary, source = float(fold_boundary), boundary_source or "given with --fold-boundary"
        else:
            boundary, source = barrier_top(points, np.where(blank, np.nan, f_points * self.kt_kcal_per_mol),
                                           self.kt_kcal_per_mol, system.centres)
        dg = _folding(log_den, system.x_n, boundary)

        self.timings_s["MBAR and FES"] += time.perf_counter() - started
        started = time.perf_counter()
        draws, dg_draws, state_means, picks, f_k_draws = self._bootstrap(
            system, f_k, reference, boundary, n_bootstraps)
        self.timings_s["bootstrap"] += time.perf_counter() - started
        started = time.perf_counter()
        if n_bootstraps:
            with warnings.catch_warnings():  # a grid point no resample reached: NaN, said below
                warnings.simplefilter("ignore", RuntimeWarning)
                df_points = np.nanstd(draws, axis=0)
            df_points[reference] = 0.0
            finite = np.isfinite(dg_draws)
            ddg = float(np.std(dg_draws[finite])) if finite.sum() > 1 else math.nan
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                df_k = np.nanstd(f_k_draws, axis=0)
            error_method = f"bootstrap ({n_bootstraps} resamples of the uncorrelated samples" + (
                ", whole replicas as blocks)" if len(system.replicas) > 1 else ")")
            extension = _explain_variance(dg_draws, state_means)
        else:
            df_points = np.full(len(points), np.nan)
            if self.method == "histogram":
                # The reference is the lowest point, so "from-lowest" is the difference to it.
                # (pymbar fails on a point in an empty bin: ask for the filled ones only.)
                filled = np.isfinite(f_points)
                with np.errstate(divide="ignore", invalid="ignore"):
                    df_points[filled] = fes.get_fes(points[filled], reference_point="from-lowest",
                                                    uncertainty_method="analytical")["df_i"]
            ddg = self._analytical_dg_error(fes.mbar, system, boundary)
            df_k = np.asarray(fes.mbar.compute_free_energy_differences()["dDelta_f"][0])
            error_method = "analytical (MBAR's asymptotic covariance)"
            extension = None

        pmf = np.where(blank, np.nan, f_points * self.kt_kcal_per_mol)
        error = np.where(blank, np.nan, np.asarray(df_points, dtype=float) * self.kt_kcal_per_mol)
        folding = FoldingFreeEnergy(dg * self.kt_kcal_per_mol, ddg * self.kt_kcal_per_mol, boundary, source)
        overlap = np.asarray(fes.mbar.compute_overlap()["matrix"])
        samples = MBARSamples(system.x_n, system.replica_n, system.window_n, system.frame_n, log_den,
                              f_k - f_k[0], np.asarray(df_k, dtype=float), system.n_k, picks)
        self.timings_s["MBAR and FES"] += time.perf_counter() - started
        return PMF(self.bin_edges.copy(), pmf, error, counts, tuple(float(c) for c in system.centres),
                   system.state_windows, overlap, self.method, error_method,
                   coverage_edges.copy(), coverage, folding, samples, extension,
                   self.bandwidth if self.method == "kde" else None)

    def folding_only(self, windows: list[DecorrelatedWindow], boundary: float) -> FoldingFreeEnergy:
        """``dG_fold`` with MBAR's analytical error alone: cheap, for convergence curves."""
        system = _StateSystem(windows, self.kt_kcal_per_mol)
        pymbar, _ = _pymbar()
        mbar = pymbar.MBAR(system.u_kn, system.n_k, initialize="BAR" if system.n_states > 1 else "zeros")
        dg = _folding(_log_denominator(mbar.f_k, system.u_kn, system.n_k), system.x_n, boundary)
        ddg = self._analytical_dg_error(mbar, system, boundary)
        return FoldingFreeEnergy(dg * self.kt_kcal_per_mol, ddg * self.kt_kcal_per_mol, boundary,
                                 "the boundary of the whole analysis")

    @property
    def bin_centres(self) -> np.ndarray:
        return 0.5 * (self.bin_edges[1:] + self.bin_edges[:-1])

    # -- pieces -----------------------------------------------------------------------------

    def _fes(self, u_kn, n_k, *, initialize="zeros", initial_f_k=None):
        """A fitted :class:`pymbar.FES` of the unbiased state, and MBAR's ``f_k``."""
        pymbar, _ = _pymbar()
        options = {"initialize": initialize}
        if initial_f_k is not None:
            options["initial_f_k"] = initial_f_k
        # timings=False leaves FES.timings unset in pymbar 4.0.3 (AttributeError later).
        fes = pymbar.FES(u_kn, n_k, mbar_options=options)
        return fes, fes.mbar.f_k

    def _profile(self, fes, log_den, x_n) -> np.ndarray:
        """Dimensionless PMF at the grid points (any offset), inf where a histogram bin is empty."""
        u_n = np.zeros(len(x_n))
        if self.method == "histogram":
            fes.generate_fes(u_n, x_n, fes_type="histogram",
                             histogram_parameters={"bin_edges": self.bin_edges})
        else:
            fes.generate_fes(u_n, x_n, fes_type="kde",
                             kde_parameters={"bandwidth": self.bandwidth, "kernel": "gaussian",
                                             "rtol": KDE_RELATIVE_TOLERANCE})
        # pymbar's histogram FES fails on a point in an empty bin: ask for the filled ones only.
        values = np.full(len(self.bin_centres), np.inf)
        if self.method == "histogram":
            asked = np.histogram(x_n, bins=self.bin_edges)[0] > 0
        else:
            asked = np.ones(len(values), dtype=bool)
        with np.errstate(divide="ignore", invalid="ignore"):
            values[asked] = fes.get_fes(self.bin_centres[asked], reference_point="from-lowest")["f_i"]
        values[~np.isfinite(values)] = np.inf
        return values

    def _blank(self, points, x_n, coverage_edges, coverage) -> np.ndarray:
        """Grid points outside the sampled range or inside a coverage hole."""
        blank = (points < x_n.min()) | (points > x_n.max())
        cell = np.clip(np.digitize(points, coverage_edges) - 1, 0, len(coverage) - 1)
        blank |= coverage[cell] == 0
        if self.method == "histogram":
            counts, _ = np.histogram(x_n, bins=self.bin_edges)
            blank |= counts == 0
        return blank

    def _bootstrap(self, system, f_k, reference, boundary, n_bootstraps):
        """Per resample: the profile, ``dG_fold``, each state's mean CV, the indices drawn, ``f_k``.

        pymbar 4.0.3's own ``FES.generate_fes(n_bootstraps=...)`` cannot be
        used: it re-solves MBAR once per state inside each resample, draws
        from the unseeded global RNG, and refits every bootstrap KDE with the
        original sample's weights. So each resample is solved here by Newton
        steps from the full solution (:func:`solve_mbar_from`), and its profile
        is the same histogram or Gaussian KDE that FES builds, of the
        resample's weights (:meth:`_profile_of_weights`).
        """
        if not n_bootstraps:
            return None, np.array([]), None, [], None
        rng = np.random.default_rng(self.seed)
        draws, dg_draws, means, picks, f_ks = [], [], [], [], []
        for _ in range(n_bootstraps):
            pick = system.resample(rng)
            n_k = np.bincount(system.state_n[pick], minlength=system.n_states)
            u_boot = system.u_kn[:, pick]
            f_boot = solve_mbar_from(u_boot, n_k, f_k)
            log_den = _log_denominator(f_boot, u_boot, n_k)
            x_boot = system.x_n[pick]
            f_points = self._profile_of_weights(x_boot, log_den)
            draws.append(f_points - f_points[reference])
            dg_draws.append(_folding(log_den, x_boot, boundary))
            sums = np.bincount(system.state_n[pick], weights=x_boot, minlength=system.n_states)
            with np.errstate(invalid="ignore", divide="ignore"):
                means.append(np.where(n_k > 0, sums / np.maximum(n_k, 1), np.nan))
            picks.append(pick)
            f_ks.append(f_boot - f_boot[0])
        draws = np.array(draws)
        draws[~np.isfinite(draws)] = np.nan  # a bin no resample reached says nothing
        return draws, np.array(dg_draws) * 1.0, np.array(means), picks, np.array(f_ks)

    def _profile_of_weights(self, x_n, log_den) -> np.ndarray:
        """Dimensionless PMF at the grid points (any offset) of samples weighing ``exp(-log_den)``.

        The histogram is FES's histogram exactly. The KDE is FES's Gaussian KDE
        evaluated by binning the weighted samples on a grid a tenth of the
        bandwidth apart and convolving with the kernel: the same density to
        ~1e-3 of itself, a hundred times faster than sklearn's tree, and the
        bootstrap only needs the spread between resamples.
        """
        w = np.exp(-(log_den - log_den.min()))
        points = self.bin_centres
        if self.method == "histogram":
            density, _ = np.histogram(x_n, bins=self.bin_edges, weights=w)
        else:
            h = self.bandwidth
            step = h / 10
            low = min(points[0], x_n.min()) - 6 * h
            n_cells = int(math.ceil((max(points[-1], x_n.max()) + 6 * h - low) / step)) + 1
            cells = np.bincount(((x_n - low) / step + 0.5).astype(int), weights=w, minlength=n_cells)
            offsets = np.arange(-60, 61) * step
            kernel = np.exp(-0.5 * (offsets / h) ** 2)
            smooth = np.convolve(cells, kernel, mode="same")
            density = np.interp(points, low + step * np.arange(len(smooth)), smooth)
        with np.errstate(divide="ignore"):
            return -np.log(density)

    def _analytical_dg_error(self, mbar, system, boundary) -> float:
        # Two indicator states, folded and unfolded: their MBAR free-energy
        # difference is dG_fold, with MBAR's covariance.
        folded = system.x_n > boundary
        if folded.all() or not folded.any():
            return math.nan
        u_ln = np.full((2, len(system.x_n)), np.inf)
        u_ln[0, folded] = 0.0
        u_ln[1, ~folded] = 0.0
        result = mbar.compute_perturbed_free_energies(u_ln)
        return float(result["dDelta_f"][1, 0])


class _StateSystem:
    """Windows pooled into MBAR states, samples in state order, and the reduced bias energies."""

    def __init__(self, windows: list[DecorrelatedWindow], kt_kcal_per_mol: float):
        windows = [w for w in windows if len(w.samples)]
        if not windows:
            raise AnalysisError("no samples to analyse in the chosen part of production")
        states: dict[tuple[float, float], list[DecorrelatedWindow]] = {}
        for w in windows:
            states.setdefault((w.centre, w.k_kcal_per_mol), []).append(w)
        keys = sorted(states)
        # Samples in state order: BAR initialisation pairs neighbouring states by position.
        ordered = [(s, w) for s, key in enumerate(keys) for w in states[key]]
        self.x_n = np.concatenate([w.samples for _, w in ordered])
        self.state_n = np.concatenate([np.full(len(w.samples), s) for s, w in ordered])
        self.replica_n = np.concatenate([np.full(len(w.samples), w.replica) for _, w in ordered])
        self.window_n = np.concatenate([np.full(len(w.samples), w.window) for _, w in ordered])
        self.frame_n = np.concatenate([
            w.frames if len(w.frames) == len(w.samples) else np.arange(len(w.samples)) for _, w in ordered])
        self.n_states = len(keys)
        self.n_k = np.bincount(self.state_n, minlength=self.n_states)
        self.centres = np.array([key[0] for key in keys])
        forces = np.array([key[1] for key in keys])
        self.state_windows = tuple(states[key][0].window for key in keys)
        self.u_kn = forces[:, None] * (self.x_n[None, :] - self.centres[:, None]) ** 2 / kt_kcal_per_mol
        # Sample positions of each (replica, state) block, for the resampling.
        self.replicas = sorted({w.replica for w in windows})
        starts = np.concatenate([[0], np.cumsum([len(w.samples) for _, w in ordered])])
        self.blocks: dict[int, list[np.ndarray]] = {r: [] for r in self.replicas}
        for (_, w), start, end in zip(ordered, starts[:-1], starts[1:]):
            self.blocks[w.replica].append(np.arange(start, end))

    def resample(self, rng: np.random.Generator) -> np.ndarray:
        """Sample indices of one bootstrap resample, in state order.

        With several replicas, whole replicas are drawn with replacement
        first (a replica's windows share the steered-MD start that may bias
        them all alike), then every window's uncorrelated samples within each.
        """
        if len(self.replicas) > 1:
            chosen = rng.choice(self.replicas, size=len(self.replicas), replace=True)
        else:
            chosen = self.replicas
        parts = [block[rng.integers(0, len(block), len(block))]
                 for replica in chosen for block in self.blocks[int(replica)]]
        pick = np.concatenate(parts)
        return pick[np.argsort(self.state_n[pick], kind="stable")]


def _log_denominator(f_k, u_kn, n_k) -> np.ndarray:
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
        pymbar, _ = _pymbar()
        return np.asarray(pymbar.MBAR(u_kn, n_k, initial_f_k=f_start).f_k, dtype=float)
    if len(used) == len(n_k):
        return f
    log_den = _log_denominator(_place(len(n_k), used, f), u_kn, n_k)
    a = -u_kn - log_den[None, :]
    top = a.max(axis=1)
    full = -(top + np.log(np.exp(a - top[:, None]).sum(axis=1)))
    return full - full[used[0]]


def _place(size: int, where, values) -> np.ndarray:
    out = np.zeros(size)
    out[where] = values
    return out


def _folding(log_den, x_n, boundary) -> float:
    """Dimensionless ``G_folded - G_unfolded`` from the samples' unbiased weights."""
    folded = x_n > boundary
    if folded.all() or not folded.any():
        return math.nan
    w = np.exp(-(log_den - log_den.min()))
    return float(np.log(w[~folded].sum()) - np.log(w[folded].sum()))


def _explain_variance(dg_draws, state_means) -> ExtensionEstimate | None:
    """Attribute the bootstrap variance of ``dG_fold`` to the states' sampling.

    A linear fit of each resample's ``dG_fold`` on each state's resampled
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


def default_bin_edges(windows: list[DecorrelatedWindow], n_bins: int | None = None,
                      bin_width: float | None = None) -> np.ndarray:
    """Bins spanning every sample: ``bin_width`` wide, ``n_bins`` of them, or two per window spacing."""
    values = np.concatenate([w.samples for w in windows])
    low, high = float(values.min()), float(values.max())
    if high <= low:
        raise AnalysisError(
            f"every sample of every window has the CV value {low}: there is no profile to "
            f"compute. Check that the windows' CV files hold the reaction coordinate"
        )
    if bin_width is not None:
        if not bin_width > 0:
            raise AnalysisError(f"--bin-width {bin_width} must be positive")
        n_bins = max(2, int(math.ceil((high - low) / bin_width)))
        if n_bins > 20000:
            raise AnalysisError(f"--bin-width {bin_width} makes {n_bins} bins over {low:.3g}-{high:.3g}; "
                                f"use a wider one")
        middle = 0.5 * (low + high)
        return middle + bin_width * (np.arange(n_bins + 1) - n_bins / 2)
    if n_bins is None:
        n_bins = int(np.clip(math.ceil(2 * (high - low) / window_spacing(windows, high - low)), 10, 400))
    if n_bins < 2:
        raise AnalysisError(f"--bins {n_bins} is too few: use at least 2")
    # Widen by a hair so the extreme samples fall inside the outer bins.
    pad = 1e-9 * (high - low)
    return np.linspace(low - pad, high + pad, n_bins + 1)


def window_spacing(windows: list[DecorrelatedWindow], sampled_range: float) -> float:
    """Median spacing of the window centres (a twentieth of the sampled range for one window)."""
    centres = np.unique([w.centre for w in windows])
    return float(np.median(np.diff(centres))) if len(centres) > 1 else sampled_range / 20
