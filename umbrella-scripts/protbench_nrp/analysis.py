"""The free-energy profile of umbrella windows, a two-state free energy, and what to run next.

Orchestration; each piece lives in a module of its own:

* :mod:`protbench_nrp.cvfiles` reads a campaign's CV files and parameter
  records through a :mod:`~protbench_nrp.store` (a results root, or straight
  from the bucket with :func:`protbench_nrp.s3.bucket_client`):
  :func:`load_campaign`. :mod:`protbench_nrp.metadata` reads windows from any
  engine through a WHAM metadata file (:func:`~protbench_nrp.metadata.read_metadata`).
* :mod:`protbench_nrp.pmf` decorrelates windows and turns them into a PMF and
  a free-energy difference between two states (the folding free energy by
  default along a campaign's Q) with MBAR and :class:`pymbar.FES`, round a
  periodic CV too (:mod:`protbench_nrp.cvaxis`, :mod:`protbench_nrp.states`).
* :func:`analyze_campaign` (here) does that for all replicas together and each
  alone, follows the estimate through growing parts of production
  (convergence), compares the replicas (hysteresis) and says which windows to
  extend and where windows are missing (:class:`NextSteps`).
* :mod:`protbench_nrp.outputs` writes the CSV and upstream-style ``.dat``
  files, :mod:`protbench_nrp.plots` the figures and
  :mod:`protbench_nrp.report` the self-contained HTML report;
  :mod:`protbench_nrp.analysis_cli` is ``analyze-umbrella-windows.py``'s command line.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .cvfiles import (AnalysisError, CampaignSamples, CVTimeSeries, WindowSamples,  # noqa: F401
                      load_campaign, parse_cv_timeseries)
from .cvaxis import LINE, AxisError
from .layout import JOB_LOG_LAUNCHER, Campaign, comparison_file, window_tag
from .science import MOLAR_GAS_CONSTANT_KCAL_PER_MOL_K
from .store import ResultsStore
from .pmf import (DEFAULT_BOOTSTRAPS, DEFAULT_METHOD, KDE_BANDWIDTH_PER_WINDOW_SPACING, METHODS,  # noqa: F401
                  MIN_FRAMES, PMF, DecorrelatedWindow, FoldingFreeEnergy, FreeEnergyDifference,
                  PMFEstimator, decorrelate_window)
from .states import TwoStates, folding_states, split_states

#: Neighbouring windows whose MBAR overlap is below this are reported.
DEFAULT_OVERLAP_THRESHOLD = 0.03

#: Fractions of production for the forward and reverse convergence estimates.
CONVERGENCE_FRACTIONS = (0.2, 0.4, 0.6, 0.8, 1.0)

#: Replicas whose dG_fold differ beyond this chi-square probability are hysteresis.
HYSTERESIS_P_VALUE = 0.01

#: Name at most this many windows to extend, and only those holding at least
#: this share of the variance the windows' sampling explains.
MAX_WINDOWS_TO_EXTEND = 6
MIN_VARIANCE_SHARE = 0.05


# -- results ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConvergencePoint:
    """The estimate from one part of production: the first (forward) or last (reverse) fraction."""

    direction: str
    fraction: float
    samples: int
    delta_g: FreeEnergyDifference | None
    pmf: PMF
    pmf_rmsd_kcal_per_mol: float

    @property
    def folding(self) -> FreeEnergyDifference | None:
        return self.delta_g


@dataclass(frozen=True)
class Extension:
    """Windows to run longer, all to one production length."""

    windows: tuple[int, ...]
    production_length_ns: float
    factor: float


#: How each place results are made (results_origin) runs windows further: where, in words,
#: and the launcher's options before the selection.
EXTEND_COMMANDS = {
    "cluster": ("on the cluster, where these results were made", "--relaunch --extend --stage window"),
    "local": ("on this machine with --local, where these results were made", "--local --stage window"),
    "demo": ("in the demo, where these results were made", "--demo --local"),
}


def results_origin(store: ResultsStore, campaign: Campaign, windows: list[tuple[int, int]]) -> str:
    """Where a campaign's window results were made (a key of :data:`EXTEND_COMMANDS`).

    ``"cluster"`` when any of ``windows`` (replica, window) was launched from
    this results tree (its provenance manifest is here), or when none ran with
    ``--local`` (results copied down from the bucket); else, from the first
    window log found (only ``--local`` leaves one), ``"demo"`` when the
    launcher command it records used ``--demo``, and ``"local"`` otherwise.
    """
    if any(store.exists(campaign.manifest("window", replica, window)) for replica, window in windows):
        return "cluster"
    for replica, window in windows:
        text = store.read_text(campaign.job_log("window", replica, window))
        if text is None:
            continue
        commands = [line[len(JOB_LOG_LAUNCHER):].split() for line in text.splitlines()
                    if line.startswith(JOB_LOG_LAUNCHER)]
        return "demo" if commands and "--demo" in commands[-1] else "local"
    return "cluster"


@dataclass(frozen=True)
class NextSteps:
    """What to run next: windows to extend, CV ranges that need windows, and the launcher commands.

    ``origin`` (a key of :data:`EXTEND_COMMANDS`) says where the results were
    made, so each command is one that works there: ``--extend`` replaces
    cluster Jobs, and ``--demo`` or ``--local`` runs the windows on this
    machine (a finished window asked for a longer production runs on from
    its checkpoint). ``label`` names the free-energy difference whose error
    the extensions shrink; ``sources`` (windows from a metadata file) names
    each window by its line, and then no launcher command is printed.
    """

    extensions: list[Extension]
    sigma_now_kcal_per_mol: float
    sigma_after_kcal_per_mol: float
    coverage: list[str]
    replicas: tuple[int, ...]
    n_windows: int
    origin: str = "cluster"
    label: str = "dG_fold"
    sources: dict[int, str] = field(default_factory=dict)

    def lines(self) -> list[str]:
        lines = []
        replicas = ",".join(map(str, self.replicas))
        where, options = EXTEND_COMMANDS[self.origin]
        if self.extensions:
            lines.append(
                f"extend these windows to shrink the error of {self.label} most (from "
                f"{self.sigma_now_kcal_per_mol:.2f} to about {self.sigma_after_kcal_per_mol:.2f} "
                f"kcal/mol):")
            for ext in self.extensions:
                if self.sources:
                    lines += [f"  window {window_tag(w)} ({self.sources[w]}): {ext.factor:g} x its frames"
                              for w in ext.windows]
                    continue
                names = ", ".join(window_tag(w) for w in ext.windows)
                plural = "s" if len(ext.windows) > 1 else ""
                lines.append(f"  window{plural} {names}: production {ext.production_length_ns:g} ns "
                             f"({ext.factor:g} x today's)")
            if not self.sources:
                lines.append(f"run them {where}, one command per length:")
                for ext in self.extensions:
                    lines.append(f"  ./run-umbrella-windows.py {options} --replicas {replicas} --windows "
                                 f"{','.join(map(str, ext.windows))} --production-length "
                                 f"{ext.production_length_ns:g}")
        elif self.label:
            lines.append(f"no single window dominates the error of {self.label}: extend all windows "
                         f"alike, or add replicas")
        if self.coverage:
            lines.append("CV ranges that need more windows:")
            lines += [f"  {text}" for text in self.coverage]
            if not self.sources:
                lines.append(
                    f"  N_WINDOWS = {2 * self.n_windows - 1} keeps today's {self.n_windows} centres as "
                    f"the even windows and puts a new one between each pair; run the odd windows "
                    f"named above (--windows) after a steered-MD run that saves structures for "
                    f"{2 * self.n_windows - 1} windows, or lower PROTBENCH_UMBRELLA_K, which widens every "
                    f"window" + (" (the demo's windows are fixed: do this in a campaign of your own)"
                                 if self.origin == "demo" else ""))
        return lines


@dataclass
class CampaignAnalysis:
    """PMFs of a campaign: all replicas together and each replica alone, and what follows from them.

    ``campaign`` is a :class:`~protbench_nrp.layout.Campaign`, or for windows
    read from a metadata file a :class:`~protbench_nrp.layout.NamedAnalysis`.
    """

    campaign: Campaign
    cv_name: str
    temperature_kelvin: float
    combined: PMF
    per_replica: dict[int, PMF]
    windows: list[DecorrelatedWindow]
    warnings: list[str]
    missing: dict[int, list[int]]
    convergence: list[ConvergencePoint] = field(default_factory=list)
    hysteresis: str = ""
    next_steps: NextSteps | None = None
    #: Seconds per part of the analysis, for ``benchmarks/bench_analysis.py``.
    timings_s: dict[str, float] = field(default_factory=dict)
    #: Where the windows came from, for windows read from a metadata file.
    metadata_path: Path | None = None

    @property
    def delta_g(self) -> FreeEnergyDifference | None:
        """The two-state free energy of all replicas (None round a periodic CV without ``--state``)."""
        return self.combined.delta_g

    @property
    def folding(self) -> FreeEnergyDifference | None:
        return self.combined.delta_g

    @property
    def axis(self):
        return self.combined.axis


def analyze_campaign(samples, *, discard_frames: int | None = None,
                     n_bins: int | None = None, n_bootstraps: int = DEFAULT_BOOTSTRAPS,
                     overlap_threshold: float = DEFAULT_OVERLAP_THRESHOLD,
                     method: str = DEFAULT_METHOD, bin_width: float | None = None,
                     kde_bandwidth: float | None = None, fold_boundary: float | None = None,
                     states: TwoStates | None = None,
                     convergence_fractions=CONVERGENCE_FRACTIONS, seed: int = 0) -> CampaignAnalysis:
    """Decorrelate every window and compute the PMF per replica and for all replicas.

    Windows too short to use are left out with a warning; neighbouring
    windows that overlap less than ``overlap_threshold`` are named in a
    warning, since the PMF between them is not determined by the data, and
    so is every hole in the sampled range (empty bins between filled ones)
    with the windows whose centres bracket it.

    Parameters
    ----------
    samples : CampaignSamples or MetadataSamples
        A campaign (:func:`load_campaign`) or windows from a metadata file
        (:func:`~protbench_nrp.metadata.read_metadata`, which may be periodic).
    method : str
        ``kde`` (a Gaussian kernel ``kde_bandwidth`` wide,
        :data:`~protbench_nrp.pmf.KDE_BANDWIDTH_PER_WINDOW_SPACING` times the
        window spacing by default, on a grid ``bin_width`` apart, one kernel
        width by default) or ``histogram`` (bins ``bin_width`` wide, or
        ``n_bins``, or two per window spacing). The command's default too.
    n_bootstraps : int
        0 for analytical errors, else bootstrap resamples.
    states : TwoStates, optional
        The two states of the free-energy difference
        (:func:`~protbench_nrp.states.parse_states`). Without them: along a
        campaign's Q the folding free energy, folded meaning Q above
        ``fold_boundary`` (the barrier top of the combined PMF by default);
        along another CV the samples above that boundary against those
        below; round a periodic CV none.
    convergence_fractions : sequence of float
        Parts of production for the forward and reverse estimates; empty for none.
    """
    if discard_frames is not None and discard_frames < 0:
        raise AnalysisError(f"--discard-frames {discard_frames} is negative; use 0 or more")
    if n_bootstraps < 0 or n_bootstraps == 1:
        raise AnalysisError(f"--bootstrap {n_bootstraps}: use 0 (analytical errors) or at least 2")
    if method not in METHODS:
        raise AnalysisError(f"--method {method!r} is not one of {', '.join(METHODS)}")
    if states is not None and fold_boundary is not None:
        raise AnalysisError("--fold-boundary and --state both say what the two states are: give one of them")
    axis = getattr(samples, "axis", LINE)
    from_metadata = getattr(samples, "metadata_path", None) is not None
    started = time.perf_counter()
    warnings = list(samples.warnings)
    windows, left_out = [], []
    for sample in samples.windows:
        try:
            windows.append(decorrelate_window(sample, discard_frames, axis))
        except AnalysisError as error:
            left_out.append(str(error))
    if not windows:
        more = f" (and {len(left_out) - 1} more windows alike)" if len(left_out) > 1 else ""
        raise AnalysisError(f"no window has enough production frames to analyse: {left_out[0]}{more}")
    warnings += [f"left out: {reason}" for reason in left_out]
    timings = {"equilibration and decorrelation": time.perf_counter() - started}

    values = np.concatenate([w.samples for w in windows])
    centres = [w.centre for w in windows]
    try:
        coverage = axis.grid_edges(values, centres, n_bins)
        if method == "histogram":
            edges = coverage if bin_width is None else axis.grid_edges(values, centres, bin_width=bin_width)
            bandwidth = None
        else:
            spacing = axis.spacing(centres, float(np.ptp(values)))
            bandwidth = kde_bandwidth or KDE_BANDWIDTH_PER_WINDOW_SPACING * spacing
            edges = axis.grid_edges(values, centres, bin_width=bin_width or bandwidth)
    except AxisError as error:
        raise AnalysisError(str(error)) from None
    if states is not None:
        _check_states_sampled(states, values, axis, samples.cv_name)
    default = None if axis.periodic else (split_states if from_metadata else folding_states)
    estimator = PMFEstimator(samples.temperature_kelvin, edges, method=method, n_bootstraps=n_bootstraps,
                             seed=seed, bandwidth=bandwidth, states=states, fold_boundary=fold_boundary,
                             default_states=default, axis=axis, coverage_edges=coverage)
    combined = estimator.estimate(windows)
    timings["all replicas: MBAR and FES"] = estimator.timings_s["MBAR and FES"]
    timings["all replicas: bootstrap"] = estimator.timings_s["bootstrap"]
    started = time.perf_counter()
    per_replica = {}
    replicas = sorted({w.replica for w in windows})
    if len(replicas) > 1:
        for replica in replicas:
            per_replica[replica] = estimator.estimate_part(combined, combined.fit.system.replica_n == replica,
                                                           n_bootstraps=n_bootstraps, replicas=[replica])
    else:
        per_replica[replicas[0]] = combined
    timings["each replica (with its bootstrap)"] = time.perf_counter() - started
    for scope, pmf in [("all replicas", combined)] + [
            (f"replica {r}", p) for r, p in per_replica.items() if len(replicas) > 1]:
        poor = pmf.poor_overlaps(overlap_threshold)
        if poor:
            pairs = sorted((min(a, b), max(a, b), value) for a, b, value in poor)
            listing = ", ".join(f"{window_tag(a)}-{window_tag(b)} ({value:.3f})" for a, b, value in pairs)
            warnings.append(
                f"{scope}: neighbouring windows overlap less than {overlap_threshold} (MBAR "
                f"overlap matrix), so the PMF between them is poorly determined: {listing}. "
                f"Add windows between them, lower the force constant, or run longer"
            )
        warnings += _hole_warnings(scope, pmf, samples.cv_name)
    hysteresis = _hysteresis(per_replica) if len(replicas) > 1 else ""
    if hysteresis:
        warnings.append(hysteresis)
    analysis = CampaignAnalysis(samples.campaign, samples.cv_name, samples.temperature_kelvin,
                                combined, per_replica, windows, warnings, samples.missing,
                                hysteresis=hysteresis,
                                metadata_path=getattr(samples, "metadata_path", None))
    started = time.perf_counter()
    analysis.convergence = _convergence(estimator, combined, convergence_fractions, warnings)
    timings["forward and reverse convergence"] = time.perf_counter() - started
    sources = {w.window: w.source for w in windows} if from_metadata else {}
    analysis.next_steps = _next_steps(analysis, samples.n_windows, overlap_threshold, sources)
    analysis.timings_s = timings
    return analysis


def _check_states_sampled(states: TwoStates, values, axis, cv_name: str) -> None:
    """Refuse a ``--state`` range that holds no sample: its free energy is unknown."""
    in_first, in_second = states.masks(values, axis)
    for state, inside in ((states.first, in_first), (states.second, in_second)):
        if not inside.any():
            raise AnalysisError(
                f"--state {state.text}: no sample lies in {state.describe(cv_name)} (the windows sampled "
                f"{cv_name} {np.min(values):.4g} to {np.max(values):.4g}), so its free energy is unknown. "
                f"Give a range the windows sampled, or add windows there")


def _hole_warnings(scope: str, pmf: PMF, cv_name: str) -> list[str]:
    """One warning per range of the CV, inside the sampled range, where no sample fell."""
    warnings = []
    for low, high in pmf.holes():
        around = sorted(pmf.windows_around(low, high))
        names = [f"{window_tag(w)} ({cv_name}0 {centre:.3g})" for w, centre in around]
        listing = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"
        seam = " across the seam of the period" if low > high else ""
        warnings.append(
            f"{scope}: no samples between {cv_name} {low:.3g} and {high:.3g}{seam}, a hole inside the "
            f"sampled range where windows {listing} should overlap; the PMF is blank there. Add "
            f"windows there or run longer"
        )
    return warnings


def _hysteresis(per_replica: dict[int, PMF]) -> str:
    """A warning when the replicas' free-energy differences disagree beyond their bootstrap errors, else ``""``."""
    from scipy.stats import chi2

    if any(p.delta_g is None for p in per_replica.values()):
        return ""
    label = next(iter(per_replica.values())).delta_g.label
    values = [(r, p.delta_g.dg_kcal_per_mol, p.delta_g.uncertainty_kcal_per_mol)
              for r, p in sorted(per_replica.items())]
    values = [(r, v, s) for r, v, s in values if np.isfinite(v) and np.isfinite(s) and s > 0]
    if len(values) < 2:
        return ""
    dg = np.array([v for _, v, _ in values])
    sigma = np.array([s for _, _, s in values])
    weights = 1 / sigma ** 2
    mean = float(np.sum(weights * dg) / np.sum(weights))
    statistic = float(np.sum(((dg - mean) / sigma) ** 2))
    p_value = float(chi2.sf(statistic, len(values) - 1))
    if p_value >= HYSTERESIS_P_VALUE:
        return ""
    listing = ", ".join(f"replica {r} {v:+.2f} ± {s:.2f}" for r, v, s in values)
    return (f"hysteresis: the replicas' {label} disagree beyond their bootstrap errors ({listing} "
            f"kcal/mol; chi-square {statistic:.1f} on {len(values) - 1} degrees of freedom, p = "
            f"{p_value:.2g}): their windows still remember their steered-MD starts. Run the windows "
            f"longer (see what to run next), or discard more of each window's start (--discard-frames)")


def _convergence(estimator: PMFEstimator, combined: PMF, fractions, warnings: list[str]) -> list[ConvergencePoint]:
    """The estimate from growing parts of production, forward and reverse, with analytical errors.

    Each part is re-solved from the combined MBAR (:meth:`PMFEstimator.estimate_part`);
    its PMF is compared with the PMF of all production built the same way. A part whose
    samples fall in fewer than two umbrella states has no overlap to compute (MBAR needs
    two): it is skipped, and ``warnings`` says which; so does it for a part MBAR cannot
    estimate (windows that do not overlap at all, say).
    """
    points, skipped, failed = [], [], []
    system = combined.fit.system
    full = None
    for direction in ("forward", "reverse"):
        for fraction in fractions:
            keep = system.part(0.0, fraction) if direction == "forward" else system.part(1.0 - fraction, 1.0 + 1e-9)
            if not keep.any():
                continue
            if len(np.unique(system.state_n[keep])) < 2:
                skipped.append(f"{direction} {fraction:g}")
                continue
            try:
                pmf = estimator.estimate_part(combined, keep, n_bootstraps=0, bin_errors=False)
            except AnalysisError as error:
                failed.append(f"{direction} {fraction:g} ({error})")
                continue
            if full is None:
                full = estimator.estimate_part(combined, np.ones(len(system.x_n), dtype=bool), n_bootstraps=0,
                                               bin_errors=False).pmf_kcal_per_mol
            both = np.isfinite(pmf.pmf_kcal_per_mol) & np.isfinite(full)
            rmsd = math.nan
            if both.any():
                diff = pmf.pmf_kcal_per_mol[both] - full[both]
                rmsd = float(np.sqrt(np.mean((diff - diff.mean()) ** 2)))
            points.append(ConvergencePoint(direction, float(fraction), int(keep.sum()), pmf.delta_g, pmf, rmsd))
    if skipped:
        warnings.append(f"convergence: the parts {', '.join(skipped)} of production were skipped: their "
                        f"samples fall in fewer than two windows, too few for MBAR. Run the windows longer")
    if failed:
        warnings.append(f"convergence: the parts {'; '.join(failed)} of production could not be estimated. "
                        f"Run the windows longer, or add windows where they do not overlap")
    return points


def _next_steps(analysis: CampaignAnalysis, n_windows: int, overlap_threshold: float,
                sources: dict[int, str]) -> NextSteps:
    combined = analysis.combined
    kt = MOLAR_GAS_CONSTANT_KCAL_PER_MOL_K * analysis.temperature_kelvin
    sigma = combined.delta_g.uncertainty_kcal_per_mol if combined.delta_g else math.nan
    extensions, sigma_after = [], sigma
    estimate = combined.extension
    if estimate is not None and np.isfinite(sigma):
        share = estimate.variance_by_state * kt ** 2
        explained = float(share.sum())
        order = np.argsort(share)[::-1]
        chosen = [int(i) for i in order[:MAX_WINDOWS_TO_EXTEND]
                  if explained > 0 and share[i] >= MIN_VARIANCE_SHARE * explained]
        lengths: dict[int, list[float]] = {}  # state -> production lengths of its windows
        members: dict[int, set[int]] = {}  # state -> its windows (several lines of a metadata file may share one)
        system = combined.fit.system
        for w in analysis.windows:
            state = int(np.flatnonzero((system.centres == system.axis.wrap(w.centre))
                                       & (system.forces == w.k_kcal_per_mol))[0])
            lengths.setdefault(state, []).append(w.production_length_ns)
            members.setdefault(state, set()).add(w.window)
        median_share = float(np.median(share)) if len(share) else 0.0
        groups: dict[tuple[float, float], list[int]] = {}
        reduced = 0.0
        for i in chosen:
            factor = float(np.clip(math.ceil(share[i] / max(median_share, 1e-300)), 2, 4))
            known = [v for v in lengths.get(i, []) if np.isfinite(v)]
            now = float(np.median(known)) if known else math.nan
            target = _round_up(now * factor) if np.isfinite(now) else math.nan
            groups.setdefault((target, factor), []).extend(sorted(members.get(i, {combined.state_windows[i]})))
            reduced += share[i] * (1 - 1 / factor)
        total = sigma ** 2
        sigma_after = math.sqrt(max(total - min(reduced, explained), 0.0))
        extensions = [Extension(tuple(sorted(ws)), length, factor)
                      for (length, factor), ws in sorted(groups.items(), key=lambda kv: (
                          kv[0][0] if np.isfinite(kv[0][0]) else kv[0][1], kv[0][1]))]
    coverage = []
    for low, high in combined.holes():
        around = [w for w, _ in sorted(combined.windows_around(low, high))]
        text = (f"{analysis.cv_name} {low:.3g}-{high:.3g}: no samples (a hole) between windows "
                f"{window_tag(min(around))} and {window_tag(max(around))}")
        coverage.append(text if sources else
                        f"{text}; new windows {_odd_between(min(around), max(around))} of {2 * n_windows - 1}")
    for a, b, value in combined.poor_overlaps(overlap_threshold):
        low, high = sorted((a, b))
        ca, cb = combined.state_centres[combined.state_windows.index(a)], \
            combined.state_centres[combined.state_windows.index(b)]
        text = (f"{analysis.cv_name} {min(ca, cb):.3g}-{max(ca, cb):.3g}: windows {window_tag(low)} and "
                f"{window_tag(high)} overlap {value:.3f} (< {overlap_threshold})")
        coverage.append(text if sources else
                        f"{text}; new windows {_odd_between(low, high)} of {2 * n_windows - 1}")
    return NextSteps(extensions, sigma, sigma_after, coverage,
                     tuple(sorted({w.replica for w in analysis.windows})), n_windows,
                     label=combined.delta_g.label if combined.delta_g else "", sources=sources)


def _odd_between(low: int, high: int) -> str:
    """Window numbers of a grid of ``2N-1`` windows lying between old windows ``low`` and ``high``."""
    return ",".join(str(w) for w in range(2 * low + 1, 2 * high, 2))


def _round_up(value: float) -> float:
    """Up to two significant figures: production lengths a person would type."""
    if value <= 0:
        return value
    scale = 10 ** (math.floor(math.log10(value)) - 1)
    return math.ceil(value / scale - 1e-9) * scale


# -- several campaigns side by side -------------------------------------------------------------


def parse_campaign_spec(text: str) -> Campaign:
    """``TARGET:FF`` -> :class:`Campaign`, refusing anything else with the fix."""
    target, colon, ff = text.partition(":")
    if not colon or not target or not ff:
        raise AnalysisError(f"--compare {text!r}: give each campaign as TARGET:FF, e.g. "
                            f"villin:amber14-vacuum")
    return Campaign(target, ff)


def comparison_rows(analyses: list[CampaignAnalysis]) -> list[dict]:
    """One row per campaign: the free-energy difference ± sigma, the boundary and the folded minimum.

    The difference's key is ``dg_fold_kcal_per_mol`` for the folding free
    energy, else ``dg_kcal_per_mol`` with the states in ``states``.
    """
    rows = []
    for a in analyses:
        dg = a.delta_g
        key = "dg_fold_kcal_per_mol" if dg is None or dg.states.folding else "dg_kcal_per_mol"
        row = {"campaign": a.campaign.name, "target": a.campaign.target, "ff": a.campaign.ff,
               key: dg.dg_kcal_per_mol if dg else math.nan,
               "uncertainty_kcal_per_mol": dg.uncertainty_kcal_per_mol if dg else math.nan,
               "boundary": dg.boundary if dg else math.nan, "folded_minimum": a.combined.folded_minimum(),
               "temperature_kelvin": a.temperature_kelvin, "method": a.combined.method}
        if dg is not None and not dg.states.folding:
            row["states"] = f"{dg.states.second.text} - {dg.states.first.text}"
        rows.append(row)
    return rows


def write_comparison(analyses: list[CampaignAnalysis], results_root: Path | str, *,
                     report: bool = False) -> list[Path]:
    """``comparison/{S1}_vs_{S2}-pmf.png`` and ``-folding.csv`` (and ``-report.html``)."""
    import csv

    from . import plots

    root = Path(results_root)
    campaigns = [a.campaign for a in analyses]
    figure = plots.save(plots.comparison_figure(analyses), root / comparison_file(campaigns, "pmf.png"))
    table = root / comparison_file(campaigns, "folding.csv")
    rows = comparison_rows(analyses)
    columns = list(rows[0])
    with open(table, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for row in rows:
            writer.writerow([f"{row[c]:.6g}" if isinstance(row[c], float) else row[c] for c in columns])
    written = [figure, table]
    if report:
        from .report import comparison_report

        path = root / comparison_file(campaigns, "report.html")
        path.write_text(comparison_report(analyses, figure, rows))
        written.append(path)
    return written


# -- the terminal -------------------------------------------------------------------------------


def summary_lines(analysis: CampaignAnalysis) -> list[str]:
    """A few lines for the terminal: what went in, where the profile lies, and the free-energy difference."""
    pmf = analysis.combined
    finite = np.isfinite(pmf.pmf_kcal_per_mol)
    source = (f"{analysis.metadata_path} ({analysis.axis.describe()}; K of ½K(x−c)² from the file)"
              if analysis.metadata_path else
              f"replicas {', '.join(map(str, sorted({w.replica for w in analysis.windows})))}")
    lines = [
        f"{analysis.campaign.name}: {len(analysis.windows)} windows from {source}, "
        f"{sum(len(w.samples) for w in analysis.windows)} uncorrelated samples, "
        f"T = {analysis.temperature_kelvin:g} K",
    ]
    if finite.any():
        x = pmf.bin_centres[finite]
        y = pmf.pmf_kcal_per_mol[finite]
        lines.append(
            f"PMF ({pmf.method}) along {analysis.cv_name} from {x.min():.3g} to {x.max():.3g}: "
            f"minimum at {x[np.argmin(y)]:.3g}, range {y.max():.2f} kcal/mol, median error "
            f"{np.nanmedian(pmf.uncertainty_kcal_per_mol):.2f} kcal/mol, errors {pmf.error_method}"
        )
    dg = analysis.delta_g
    if dg is None:
        lines.append("no free-energy difference: round a periodic CV give the two states, "
                     "--state A=LO:HI --state B=LO:HI")
        return lines
    states, cv = dg.states, analysis.cv_name
    if states.folding:
        lines.append(f"fold boundary {cv} = {dg.boundary:.3g}: {dg.boundary_source}")
    elif math.isfinite(dg.boundary):
        lines.append(f"boundary {cv} = {dg.boundary:.3g}: {dg.boundary_source}")
    else:
        lines.append(f"states {states.describe(cv)}: {dg.boundary_source}")
    if len(analysis.per_replica) > 1:
        for r, p in sorted(analysis.per_replica.items()):
            if np.isfinite(p.delta_g.dg_kcal_per_mol):
                lines.append(f"  replica {r}: {dg.label} = {p.delta_g.dg_kcal_per_mol:+.2f} ± "
                             f"{p.delta_g.uncertainty_kcal_per_mol:.2f} kcal/mol")
            elif states.folding:
                lines.append(f"  replica {r}: dG_fold unknown: its samples all lie on one side of "
                             f"{cv} = {dg.boundary:.3g}")
            else:
                lines.append(f"  replica {r}: {dg.label} unknown: none of its samples lies in one of the states")
    lines.append(f"{states.title} {dg.label} = {states.formula()} = {dg.dg_kcal_per_mol:+.2f} "
                 f"± {dg.uncertainty_kcal_per_mol:.2f} kcal/mol (all replicas, {states.describe(cv)})")
    return lines


def write_outputs(analysis: CampaignAnalysis, results_root: Path | str, **options) -> list[Path]:
    """Write the CSV, ``.dat`` and plot files into the campaign's analysis directory (see :mod:`outputs`)."""
    from .outputs import write_outputs as write

    return write(analysis, results_root, **options)
