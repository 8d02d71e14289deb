"""The free-energy profile of an umbrella campaign, its folding free energy, and what to run next.

Orchestration and the command line; each piece lives in a module of its own:

* :mod:`protbench_nrp.cvfiles` reads CV files and parameter records through
  a :mod:`~protbench_nrp.store` (a results root, or straight from the bucket
  with :func:`protbench_nrp.s3.bucket_client`): :func:`load_campaign`.
* :mod:`protbench_nrp.pmf` decorrelates windows and turns them into a PMF and
  a folding free energy with MBAR and :class:`pymbar.FES`.
* :func:`analyze_campaign` (here) does that for all replicas together and each
  alone, follows the estimate through growing parts of production
  (convergence), compares the replicas (hysteresis) and says which windows to
  extend and where windows are missing (:class:`NextSteps`).
* :mod:`protbench_nrp.outputs` writes the CSV and upstream-style ``.dat``
  files, :mod:`protbench_nrp.plots` the figures and
  :mod:`protbench_nrp.report` the self-contained HTML report.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .cvfiles import (AnalysisError, CampaignSamples, CVTimeSeries, WindowSamples,  # noqa: F401
                      load_campaign, parse_cv_timeseries)
from .errors import ProtbenchError
from .layout import BUCKET_PREFIX, JOB_LOG_LAUNCHER, Campaign, comparison_file, window_tag
from .s3 import bucket_client
from .science import MOLAR_GAS_CONSTANT_KCAL_PER_MOL_K
from .store import BucketStore, LocalStore, ResultsStore
from .pmf import (KDE_BANDWIDTH_PER_WINDOW_SPACING, KDE_GRID_SPACING, METHODS, MIN_FRAMES,  # noqa: F401
                  PMF, DecorrelatedWindow, FoldingFreeEnergy, PMFEstimator, decorrelate_window,
                  default_bin_edges, window_spacing)

#: Neighbouring windows whose MBAR overlap is below this are reported.
DEFAULT_OVERLAP_THRESHOLD = 0.03

#: What the command uses unless told otherwise (the library's own defaults
#: are the cheap deterministic ones: histogram bins and analytical errors).
DEFAULT_METHOD = "kde"
DEFAULT_BOOTSTRAPS = 100

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
    folding: FoldingFreeEnergy
    pmf: PMF
    pmf_rmsd_kcal_per_mol: float


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
    its checkpoint).
    """

    extensions: list[Extension]
    sigma_now_kcal_per_mol: float
    sigma_after_kcal_per_mol: float
    coverage: list[str]
    replicas: tuple[int, ...]
    n_windows: int
    origin: str = "cluster"

    def lines(self) -> list[str]:
        lines = []
        replicas = ",".join(map(str, self.replicas))
        where, options = EXTEND_COMMANDS[self.origin]
        if self.extensions:
            lines.append(
                f"extend these windows to shrink the error of dG_fold most (from "
                f"{self.sigma_now_kcal_per_mol:.2f} to about {self.sigma_after_kcal_per_mol:.2f} "
                f"kcal/mol):")
            for ext in self.extensions:
                names = ", ".join(window_tag(w) for w in ext.windows)
                plural = "s" if len(ext.windows) > 1 else ""
                lines.append(f"  window{plural} {names}: production {ext.production_length_ns:g} ns "
                             f"({ext.factor:g} x today's)")
            lines.append(f"run them {where}, one command per length:")
            for ext in self.extensions:
                lines.append(f"  ./run-umbrella-windows.py {options} --replicas {replicas} --windows "
                             f"{','.join(map(str, ext.windows))} --production-length {ext.production_length_ns:g}")
        else:
            lines.append("no single window dominates the error of dG_fold: extend all windows "
                         "alike, or add replicas")
        if self.coverage:
            lines.append("CV ranges that need more windows:")
            lines += [f"  {text}" for text in self.coverage]
            lines.append(
                f"  N_WINDOWS = {2 * self.n_windows - 1} keeps today's {self.n_windows} centres as "
                f"the even windows and puts a new one between each pair; run the odd windows "
                f"named above (--windows) after a steered-MD run that saves structures for "
                f"{2 * self.n_windows - 1} windows, or lower PROTBENCH_UMBRELLA_K, which widens every window"
                + (" (the demo's windows are fixed: do this in a campaign of your own)"
                   if self.origin == "demo" else ""))
        return lines


@dataclass
class CampaignAnalysis:
    """PMFs of a campaign: all replicas together and each replica alone, and what follows from them."""

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

    @property
    def folding(self) -> FoldingFreeEnergy:
        return self.combined.folding


def analyze_campaign(samples: CampaignSamples, *, discard_frames: int | None = None,
                     n_bins: int | None = None, n_bootstraps: int = 0,
                     overlap_threshold: float = DEFAULT_OVERLAP_THRESHOLD,
                     method: str = "histogram", bin_width: float | None = None,
                     kde_bandwidth: float | None = None, fold_boundary: float | None = None,
                     convergence_fractions=CONVERGENCE_FRACTIONS, seed: int = 0) -> CampaignAnalysis:
    """Decorrelate every window and compute the PMF per replica and for all replicas.

    Windows too short to use are left out with a warning; neighbouring
    windows that overlap less than ``overlap_threshold`` are named in a
    warning, since the PMF between them is not determined by the data, and
    so is every hole in the sampled range (empty bins between filled ones)
    with the windows whose centres bracket it.

    Parameters
    ----------
    method : str
        ``histogram`` (bins ``bin_width`` wide, or ``n_bins``, or two per
        window spacing) or ``kde`` (a Gaussian kernel ``kde_bandwidth`` wide,
        a quarter of the window spacing by default, on a grid ``bin_width``
        apart, :data:`KDE_GRID_SPACING` by default).
    n_bootstraps : int
        0 for analytical errors, else bootstrap resamples.
    fold_boundary : float, optional
        Folded means the CV above it; the barrier top of the combined PMF by default.
    convergence_fractions : sequence of float
        Parts of production for the forward and reverse estimates; empty for none.
    """
    if discard_frames is not None and discard_frames < 0:
        raise AnalysisError(f"--discard-frames {discard_frames} is negative; use 0 or more")
    if n_bootstraps < 0 or n_bootstraps == 1:
        raise AnalysisError(f"--bootstrap {n_bootstraps}: use 0 (analytical errors) or at least 2")
    if method not in METHODS:
        raise AnalysisError(f"--method {method!r} is not one of {', '.join(METHODS)}")
    started = time.perf_counter()
    warnings = list(samples.warnings)
    windows, left_out = [], []
    for sample in samples.windows:
        try:
            windows.append(decorrelate_window(sample, discard_frames))
        except AnalysisError as error:
            left_out.append(str(error))
    if not windows:
        more = f" (and {len(left_out) - 1} more windows alike)" if len(left_out) > 1 else ""
        raise AnalysisError(f"no window has enough production frames to analyse: {left_out[0]}{more}")
    warnings += [f"left out: {reason}" for reason in left_out]
    timings = {"equilibration and decorrelation": time.perf_counter() - started}

    coverage = default_bin_edges(windows, n_bins)
    if method == "histogram":
        edges = coverage if bin_width is None else default_bin_edges(windows, bin_width=bin_width)
        bandwidth = None
    else:
        edges = default_bin_edges(windows, bin_width=bin_width or KDE_GRID_SPACING)
        values = np.concatenate([w.samples for w in windows])
        spacing = window_spacing(windows, float(np.ptp(values)))
        bandwidth = kde_bandwidth or KDE_BANDWIDTH_PER_WINDOW_SPACING * spacing
    estimator = PMFEstimator(samples.temperature_kelvin, edges, n_bootstraps, seed=seed, method=method,
                             bandwidth=bandwidth, fold_boundary=fold_boundary, coverage_edges=coverage)
    started = time.perf_counter()
    combined = estimator.estimate(windows)
    timings["all replicas: MBAR and FES"] = estimator.timings_s["MBAR and FES"]
    timings["all replicas: bootstrap"] = estimator.timings_s["bootstrap"]
    started = time.perf_counter()
    boundary, source = combined.folding.boundary, combined.folding.boundary_source
    per_replica = {}
    replicas = sorted({w.replica for w in windows})
    if len(replicas) > 1:
        for replica in replicas:
            per_replica[replica] = estimator.estimate([w for w in windows if w.replica == replica],
                                                      fold_boundary=boundary, boundary_source=source,
                                                      initial_f_k=combined.mbar.f_k)
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
                                hysteresis=hysteresis)
    started = time.perf_counter()
    analysis.convergence = _convergence(estimator, windows, combined, convergence_fractions, warnings)
    timings["forward and reverse convergence"] = time.perf_counter() - started
    analysis.next_steps = _next_steps(analysis, samples.n_windows, overlap_threshold)
    analysis.timings_s = timings
    return analysis


def _hole_warnings(scope: str, pmf: PMF, cv_name: str) -> list[str]:
    """One warning per range of the CV, inside the sampled range, where no sample fell."""
    warnings = []
    for low, high in pmf.holes():
        around = sorted(pmf.windows_around(low, high))
        names = [f"{window_tag(w)} ({cv_name}0 {centre:.3g})" for w, centre in around]
        listing = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"
        warnings.append(
            f"{scope}: no samples between {cv_name} {low:.3g} and {high:.3g}, a hole inside the "
            f"sampled range where windows {listing} should overlap; the PMF is blank there. Add "
            f"windows there or run longer"
        )
    return warnings


def _hysteresis(per_replica: dict[int, PMF]) -> str:
    """A warning when the replicas' dG_fold disagree beyond their bootstrap errors, else ``""``."""
    from scipy.stats import chi2

    values = [(r, p.folding.dg_kcal_per_mol, p.folding.uncertainty_kcal_per_mol)
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
    return (f"hysteresis: the replicas' dG_fold disagree beyond their bootstrap errors ({listing} "
            f"kcal/mol; chi-square {statistic:.1f} on {len(values) - 1} degrees of freedom, p = "
            f"{p_value:.2g}): their windows still remember their steered-MD starts. Run the windows "
            f"longer (see what to run next), or discard more of each window's start (--discard-frames)")


def _convergence(estimator: PMFEstimator, windows, combined: PMF, fractions,
                 warnings: list[str]) -> list[ConvergencePoint]:
    """Forward and reverse parts of production; a part whose samples fall in fewer than two
    umbrella states has no overlap to compute (MBAR needs two): it is skipped, and ``warnings``
    says which."""
    points, skipped = [], []
    boundary = combined.folding.boundary
    for direction in ("forward", "reverse"):
        for fraction in fractions:
            part = [w.part(0.0, fraction) if direction == "forward" else w.part(1.0 - fraction, 1.0 + 1e-9)
                    for w in windows]
            part = [w for w in part if len(w.samples)]
            if not part:
                continue
            if len({(w.centre, w.k_kcal_per_mol) for w in part}) < 2:
                skipped.append(f"{direction} {fraction:g}")
                continue
            try:
                pmf = estimator.estimate(part, fold_boundary=boundary, n_bootstraps=0,
                                         boundary_source=combined.folding.boundary_source,
                                         initial_f_k=combined.mbar.f_k)
            except AnalysisError:
                continue
            both = np.isfinite(pmf.pmf_kcal_per_mol) & np.isfinite(combined.pmf_kcal_per_mol)
            rmsd = math.nan
            if both.any():
                diff = pmf.pmf_kcal_per_mol[both] - combined.pmf_kcal_per_mol[both]
                rmsd = float(np.sqrt(np.mean((diff - diff.mean()) ** 2)))
            points.append(ConvergencePoint(direction, float(fraction), int(sum(len(w.samples) for w in part)),
                                           pmf.folding, pmf, rmsd))
    if skipped:
        warnings.append(f"convergence: the parts {', '.join(skipped)} of production were skipped: their "
                        f"samples fall in fewer than two windows, too few for MBAR. Run the windows longer")
    return points


def _next_steps(analysis: CampaignAnalysis, n_windows: int, overlap_threshold: float) -> NextSteps:
    combined = analysis.combined
    kt = MOLAR_GAS_CONSTANT_KCAL_PER_MOL_K * analysis.temperature_kelvin
    sigma = combined.folding.uncertainty_kcal_per_mol
    extensions, sigma_after = [], sigma
    estimate = combined.extension
    if estimate is not None and np.isfinite(sigma):
        share = estimate.variance_by_state * kt ** 2
        explained = float(share.sum())
        order = np.argsort(share)[::-1]
        chosen = [int(i) for i in order[:MAX_WINDOWS_TO_EXTEND]
                  if explained > 0 and share[i] >= MIN_VARIANCE_SHARE * explained]
        lengths: dict[int, list[float]] = {}  # state -> production lengths of its windows
        for w in analysis.windows:
            lengths.setdefault(combined.state_windows.index(w.window), []).append(w.production_length_ns)
        median_share = float(np.median(share)) if len(share) else 0.0
        groups: dict[tuple[float, float], list[int]] = {}
        reduced = 0.0
        for i in chosen:
            factor = float(np.clip(math.ceil(share[i] / max(median_share, 1e-300)), 2, 4))
            now = float(np.nanmedian(lengths.get(i, [math.nan])))
            target = _round_up(now * factor) if np.isfinite(now) else math.nan
            groups.setdefault((target, factor), []).append(combined.state_windows[i])
            reduced += share[i] * (1 - 1 / factor)
        total = sigma ** 2
        sigma_after = math.sqrt(max(total - min(reduced, explained), 0.0))
        extensions = [Extension(tuple(sorted(ws)), length, factor)
                      for (length, factor), ws in sorted(groups.items(), key=lambda kv: kv[0][0])]
    coverage = []
    for low, high in combined.holes():
        around = [w for w, _ in sorted(combined.windows_around(low, high))]
        coverage.append(f"{analysis.cv_name} {low:.3g}-{high:.3g}: no samples (a hole) between "
                        f"windows {window_tag(min(around))} and {window_tag(max(around))}; new "
                        f"windows {_odd_between(min(around), max(around))} of {2 * n_windows - 1}")
    for a, b, value in combined.poor_overlaps(overlap_threshold):
        low, high = sorted((a, b))
        ca, cb = combined.state_centres[combined.state_windows.index(a)], \
            combined.state_centres[combined.state_windows.index(b)]
        coverage.append(f"{analysis.cv_name} {min(ca, cb):.3g}-{max(ca, cb):.3g}: windows "
                        f"{window_tag(low)} and {window_tag(high)} overlap {value:.3f} "
                        f"(< {overlap_threshold}); new windows {_odd_between(low, high)} of "
                        f"{2 * n_windows - 1}")
    return NextSteps(extensions, sigma, sigma_after, coverage,
                     tuple(sorted({w.replica for w in analysis.windows})), n_windows)


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
    """One row per campaign: dG_fold ± sigma, the boundary and the folded minimum."""
    return [{"campaign": a.campaign.name, "target": a.campaign.target, "ff": a.campaign.ff,
             "dg_fold_kcal_per_mol": a.folding.dg_kcal_per_mol,
             "uncertainty_kcal_per_mol": a.folding.uncertainty_kcal_per_mol,
             "boundary": a.folding.boundary, "folded_minimum": a.combined.folded_minimum(),
             "temperature_kelvin": a.temperature_kelvin, "method": a.combined.method}
            for a in analyses]


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
    columns = ["campaign", "target", "ff", "dg_fold_kcal_per_mol", "uncertainty_kcal_per_mol",
               "boundary", "folded_minimum", "temperature_kelvin", "method"]
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
    """A few lines for the terminal: what went in, where the profile lies and dG_fold."""
    pmf = analysis.combined
    finite = np.isfinite(pmf.pmf_kcal_per_mol)
    lines = [
        f"{analysis.campaign.name}: {len(analysis.windows)} windows from replicas "
        f"{', '.join(map(str, sorted({w.replica for w in analysis.windows})))}, "
        f"{sum(len(w.samples) for w in analysis.windows)} uncorrelated samples, "
        f"T = {analysis.temperature_kelvin:g} K",
    ]
    folding = analysis.folding
    if finite.any():
        x = pmf.bin_centres[finite]
        y = pmf.pmf_kcal_per_mol[finite]
        lines.append(
            f"PMF ({pmf.method}) along {analysis.cv_name} from {x.min():.3g} to {x.max():.3g}: "
            f"minimum at {x[np.argmin(y)]:.3g}, range {y.max():.2f} kcal/mol, median error "
            f"{np.nanmedian(pmf.uncertainty_kcal_per_mol):.2f} kcal/mol, errors {pmf.error_method}"
        )
    lines.append(f"fold boundary {analysis.cv_name} = {folding.boundary:.3g}: {folding.boundary_source}")
    if len(analysis.per_replica) > 1:
        for r, p in sorted(analysis.per_replica.items()):
            if np.isfinite(p.folding.dg_kcal_per_mol):
                lines.append(f"  replica {r}: dG_fold = {p.folding.dg_kcal_per_mol:+.2f} ± "
                             f"{p.folding.uncertainty_kcal_per_mol:.2f} kcal/mol")
            else:
                lines.append(f"  replica {r}: dG_fold unknown: its samples all lie on one side of "
                             f"{analysis.cv_name} = {folding.boundary:.3g}")
    lines.append(f"folding free energy dG_fold = G_folded - G_unfolded = {folding.dg_kcal_per_mol:+.2f} "
                 f"± {folding.uncertainty_kcal_per_mol:.2f} kcal/mol (all replicas, "
                 f"{analysis.cv_name} > {folding.boundary:.3g} is folded)")
    return lines


def write_outputs(analysis: CampaignAnalysis, results_root: Path | str, **options) -> list[Path]:
    """Write the CSV, ``.dat`` and plot files into the campaign's analysis directory (see :mod:`outputs`)."""
    from .outputs import write_outputs as write

    return write(analysis, results_root, **options)


def build_command():
    """The ``analyze-umbrella-windows.py`` command (click), every option also read from the environment."""
    import click

    @click.command(context_settings={"help_option_names": ["-h", "--help"]})
    @click.argument("campaigns", nargs=-1, metavar="[TARGET:FF]...")
    @click.option("-o", "--results-dir", "results_dir", type=click.Path(file_okay=False),
                  default="results", show_default=True, envvar="PROTBENCH_RESULTS_DIR",
                  help="Results root: read from it (unless --bucket) and write "
                       "{target}-{ff}/analysis/ into it.")
    @click.option("--target", envvar="PROTBENCH_TARGET", help="Benchmark target.")
    @click.option("--ff", envvar="PROTBENCH_FF", help="Force field name.")
    @click.option("--compare", "compare", is_flag=True,
                  help="Analyse the campaigns given as TARGET:FF arguments side by side: one PNG "
                       "of their PMFs and one CSV of dG_fold, written under comparison/.")
    @click.option("-r", "--replica", "replicas", type=click.IntRange(min=1), multiple=True,
                  envvar="PROTBENCH_ANALYSIS_REPLICAS",
                  help="Analyse only this replica (repeat for several); all found by default.")
    @click.option("--bucket", default="", envvar="PROTBENCH_BUCKET",
                  help="Read CV and parameter files straight from this S3 bucket instead of "
                       "the results root. Keys and endpoint as for the launcher's preflight: the "
                       "rclone remote's section of the rclone config, else AWS_ACCESS_KEY_ID, "
                       "AWS_SECRET_ACCESS_KEY and AWS_ENDPOINT_URL.")
    @click.option("--bucket-prefix", default=BUCKET_PREFIX, show_default=True,
                  envvar="PROTBENCH_BUCKET_PREFIX", help="Key prefix of the results root in the bucket.")
    @click.option("--rclone-remote", default="nrp", show_default=True,
                  envvar="PROTBENCH_RCLONE_REMOTE",
                  help="Remote of the rclone config whose keys and endpoint reach the bucket.")
    @click.option("--endpoint-url", default=None, envvar="AWS_ENDPOINT_URL",
                  help="S3 endpoint of the bucket (overrides the rclone config's).")
    @click.option("--discard-frames", type=click.IntRange(min=0), default=None,
                  envvar="PROTBENCH_DISCARD_FRAMES",
                  help="Drop this many leading production frames of every window as "
                       "equilibration [default: detected per window].")
    @click.option("--method", type=click.Choice(METHODS), default=DEFAULT_METHOD, show_default=True,
                  envvar="PROTBENCH_PMF_METHOD",
                  help="PMF estimator, both pymbar's FES: a Gaussian kernel density (kde) or a "
                       "histogram.")
    @click.option("--bin-width", type=click.FloatRange(min=0, min_open=True), default=None,
                  envvar="PROTBENCH_PMF_BIN_WIDTH",
                  help=f"Histogram bin width, or the KDE's grid spacing, along the CV [default: "
                       f"histogram two bins per window spacing, KDE {KDE_GRID_SPACING}].")
    @click.option("--kde-bandwidth", type=click.FloatRange(min=0, min_open=True), default=None,
                  envvar="PROTBENCH_KDE_BANDWIDTH",
                  help=f"Width of the KDE's Gaussian kernel along the CV [default: "
                       f"{KDE_BANDWIDTH_PER_WINDOW_SPACING} x the window spacing].")
    @click.option("--bins", "n_bins", type=click.IntRange(min=2), default=None,
                  envvar="PROTBENCH_PMF_BINS",
                  help="Histogram bins along the CV (instead of --bin-width) [default: two per "
                       "window spacing]; also the bins that find holes in the sampling.")
    @click.option("--bootstrap", "n_bootstraps", type=click.IntRange(min=0), default=DEFAULT_BOOTSTRAPS,
                  show_default=True, envvar="PROTBENCH_BOOTSTRAP",
                  help="Bootstrap resamples of the uncorrelated samples (whole replicas as blocks "
                       "when there are several); 0 uses MBAR's analytical errors (histogram only).")
    @click.option("--analytical-errors", is_flag=True,
                  help="MBAR's analytical errors instead of the bootstrap (same as --bootstrap 0).")
    @click.option("--seed", type=int, default=0, show_default=True, envvar="PROTBENCH_BOOTSTRAP_SEED",
                  help="Seed of the bootstrap.")
    @click.option("--fold-boundary", type=float, default=None, envvar="PROTBENCH_FOLD_BOUNDARY",
                  help="Folded means the CV above this [default: the barrier top between the "
                       "folded and unfolded minima of the PMF].")
    @click.option("--overlap-threshold", type=click.FloatRange(min=0, max=1),
                  default=DEFAULT_OVERLAP_THRESHOLD, show_default=True,
                  envvar="PROTBENCH_OVERLAP_THRESHOLD",
                  help="Warn about neighbouring windows whose MBAR overlap is below this.")
    @click.option("--report", is_flag=True, envvar="PROTBENCH_REPORT",
                  help="Also write {target}-{ff}-report.html: one self-contained page with the "
                       "plots and tables, to open from disk or share.")
    @click.option("--upload-report", is_flag=True,
                  help="With --bucket and --report: upload the report beside the results in the "
                       "bucket ({prefix}/{target}-{ff}/analysis/), as text/html.")
    def analyze(campaigns, results_dir, target, ff, compare, replicas, bucket, bucket_prefix,
                rclone_remote, endpoint_url, discard_frames, method, bin_width, kde_bandwidth, n_bins,
                n_bootstraps, analytical_errors, seed, fold_boundary, overlap_threshold, report,
                upload_report):
        """Compute the PMF along the CV of an umbrella campaign with MBAR, and its folding free energy.

        Writes into {target}-{ff}/analysis/: the PMF (CSV and the upstream-style
        mbar-*.dat files), dG_fold per replica and for all ({S}-folding.csv),
        forward/reverse convergence, a per-window table, what to run next, and
        plots; with --report one HTML page of it all. With --compare
        TARGET:FF TARGET:FF ... it analyses several campaigns and puts them side
        by side under comparison/.
        """
        import logging

        # pymbar's banners (no JAX, timeseries caveats) are not about this campaign.
        logging.getLogger("pymbar").setLevel(logging.ERROR)
        if analytical_errors:
            n_bootstraps = 0
        try:
            if compare:
                if len(campaigns) < 2:
                    raise click.UsageError("--compare needs at least two campaigns: --compare "
                                           "TARGET:FF TARGET:FF ...")
                chosen = [parse_campaign_spec(text) for text in campaigns]
            else:
                if campaigns:
                    raise click.UsageError(f"unexpected arguments {' '.join(campaigns)}: campaigns as "
                                           f"TARGET:FF go with --compare")
                if not target or not ff:
                    missing = " and ".join(n for n, v in (("--target", target), ("--ff", ff)) if not v)
                    raise click.UsageError(f"missing {missing} (or PROTBENCH_TARGET/PROTBENCH_FF), "
                                           f"or compare campaigns with --compare TARGET:FF TARGET:FF")
                chosen = [Campaign(target, ff)]
            if upload_report and not (bucket and report):
                raise click.UsageError("--upload-report needs --bucket and --report")
            source = (BucketStore(bucket_client(endpoint_url, rclone_remote), bucket, bucket_prefix)
                      if bucket else LocalStore(results_dir))
            analyses, written = [], []
            for campaign in chosen:
                samples = load_campaign(source, campaign, tuple(replicas) or None)
                analysis = analyze_campaign(
                    samples, discard_frames=discard_frames, n_bins=n_bins, n_bootstraps=n_bootstraps,
                    overlap_threshold=overlap_threshold, method=method, bin_width=bin_width,
                    kde_bandwidth=kde_bandwidth, fold_boundary=fold_boundary, seed=seed)
                # What to run next names a command that works where the results were made.
                origin = "cluster" if bucket else results_origin(
                    source, campaign, [(w.replica, w.window) for w in analysis.windows])
                analysis.next_steps = dataclasses.replace(analysis.next_steps, origin=origin)
                written += write_outputs(analysis, results_dir, report=report and not compare)
                analyses.append(analysis)
            if compare:
                written += write_comparison(analyses, results_dir, report=report)
            if upload_report:
                for path in [p for p in written if p.name.endswith("report.html")]:
                    key = path.relative_to(Path(results_dir)).as_posix()
                    source.write_bytes(key, path.read_bytes(), "text/html; charset=utf-8")
                    written.append(source.describe(key))
        except (ProtbenchError, ValueError) as error:  # AnalysisError, StoreError, S3AccessError
            raise click.ClickException(str(error)) from None
        for analysis in analyses:
            prefix = f"{analysis.campaign.name}: " if compare else ""
            for warning in analysis.warnings:
                click.echo(f"warning: {prefix}{warning}", err=True)
            for line in summary_lines(analysis):
                click.echo(line)
            if not compare:
                click.echo("what to run next:")
                for line in analysis.next_steps.lines():
                    click.echo(f"  {line}")
        if compare:
            click.echo("side by side:")
            for row in comparison_rows(analyses):
                click.echo(f"  {row['campaign']}: dG_fold {row['dg_fold_kcal_per_mol']:+.2f} ± "
                           f"{row['uncertainty_kcal_per_mol']:.2f} kcal/mol, folded minimum at "
                           f"{row['folded_minimum']:.3g}")
        for path in written:
            click.echo(f"wrote {path}")

    return analyze
