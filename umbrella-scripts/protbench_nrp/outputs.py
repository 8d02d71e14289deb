"""The files an analysis leaves in ``{S}/analysis/``: CSV tables, upstream-style ``.dat`` files, plots, report.

The ``.dat`` files are whitespace-separated with one header line of column
names (after ``#`` comment lines giving units and settings), as upstream
proteinbenchmark writes its MBAR outputs, so reweighting and fitting code
can read them with ``numpy.loadtxt`` or ``pandas.read_csv(sep=r"\\s+", comment="#")``.
:func:`read_dat` reads them back and :func:`rebuild_pmf` turns
``{S}-mbar-samples.dat`` alone into the PMF of ``{S}-mbar-free-energy.dat``.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from .files import atomic_write
from .layout import Campaign
from .report import campaign_report, folding_rows
from .science import MOLAR_GAS_CONSTANT_KCAL_PER_MOL_K

#: Column names of the upstream-style files (one fact, one place: the README and tests use these).
WINDOWS_DAT_COLUMNS = ("window", "centre", "k_kcal_per_mol", "samples", "offset_kcal_per_mol",
                       "offset_uncertainty_kcal_per_mol")
FREE_ENERGY_DAT_COLUMNS = ("cv", "free_energy_kcal_per_mol", "uncertainty_kcal_per_mol")
SAMPLES_DAT_COLUMNS = ("replica", "window", "frame", "cv", "log_weight_denominator")
UNCORRELATED_DAT_COLUMNS = ("sample", "replica", "window", "frame")  # then bootstrap_001, ...


def write_outputs(analysis, results_root: Path | str, *, report: bool = False) -> list[Path]:
    """Write every table, ``.dat`` file and plot (and with ``report`` the HTML page).

    Returns
    -------
    list of Path
        The files written.
    """
    from . import plots

    campaign = analysis.campaign
    root = Path(results_root)
    (root / campaign.analysis_dir).mkdir(parents=True, exist_ok=True)
    file = lambda suffix: root / campaign.analysis_file(suffix)  # noqa: E731
    written = [
        _write_pmf_csv(analysis, root / campaign.pmf_csv),
        _write_window_table(analysis, file("windows.csv")),
    ]
    if analysis.delta_g is not None:
        folding = analysis.delta_g.states.folding
        written.append(write_folding_csv(analysis, file("folding.csv" if folding else "delta-g.csv")))
    written += [
        _write_convergence_csv(analysis, file("convergence.csv")),
        _write_next_steps(analysis, file("next-steps.txt")),
    ]
    written += write_mbar_files(analysis, root, campaign)
    figures = plots.campaign_figures(analysis, root, campaign)
    written += list(figures.values())
    if report:
        path = file("report.html")
        path.write_text(campaign_report(analysis, figures))
        written.append(path)
    return written


def _fmt(value: float) -> str:
    return "" if not np.isfinite(value) else f"{value:.6g}"


def _write_csv(path: Path, header: list[str], rows) -> Path:
    """One CSV table, written whole or not at all: a killed analysis leaves no half a table."""
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(header)
    writer.writerows(rows)
    atomic_write(path, text.getvalue(), durable=False)
    return path


def _write_pmf_csv(analysis, path: Path) -> Path:
    combined = analysis.combined
    replicas = sorted(analysis.per_replica)
    header = ["cv", "pmf_kcal_per_mol", "uncertainty_kcal_per_mol", "samples"]
    for r in replicas:
        header += [f"replica_{r}_pmf_kcal_per_mol", f"replica_{r}_uncertainty_kcal_per_mol"]

    def row(i: int) -> list[str]:
        cells = [f"{combined.bin_centres[i]:.6g}", _fmt(combined.pmf_kcal_per_mol[i]),
                 _fmt(combined.uncertainty_kcal_per_mol[i]), str(int(combined.samples_per_bin[i]))]
        for r in replicas:
            pmf = analysis.per_replica[r]
            cells += [_fmt(pmf.pmf_kcal_per_mol[i]), _fmt(pmf.uncertainty_kcal_per_mol[i])]
        return cells

    return _write_csv(path, header, (row(i) for i in range(len(combined.bin_centres))))


def _write_window_table(analysis, path: Path) -> Path:
    """Per window; ``k_kcal_per_mol`` is k of the bias ``k*(cv-centre)^2`` (a metadata file's K/2).

    Windows read from a metadata file add ``source``: the line and time series.
    """
    header = ["replica", "window", "centre", "k_kcal_per_mol", "frames", "discarded_frames",
              "statistical_inefficiency", "samples_used", "effective_samples"]
    sources = analysis.metadata_path is not None
    return _write_csv(path, header + (["source"] if sources else []), (
        [w.replica, w.window, f"{w.centre:.6g}", f"{w.k_kcal_per_mol:.6g}", w.n_frames, w.n_discarded,
         f"{w.statistical_inefficiency:.3f}", len(w.samples), f"{w.effective_samples:.1f}"]
        + ([w.source] if sources else [])
        for w in sorted(analysis.windows, key=lambda w: (w.replica, w.window))))


def write_folding_csv(analysis, path: Path) -> Path:
    """``{S}-folding.csv`` for the folding free energy; ``{S}-delta-g.csv`` for states given as ranges.

    The latter has ``scope, dg_kcal_per_mol, uncertainty_kcal_per_mol,
    first_state, second_state, states_source``, ``dg = G(second) - G(first)``
    and each state as ``NAME=LO:HI``.
    """
    if analysis.delta_g.states.folding:
        header = ["scope", "dg_fold_kcal_per_mol", "uncertainty_kcal_per_mol", "boundary", "folded_minimum",
                  "boundary_source"]
        return _write_csv(path, header, (
            [row["scope"], _fmt(row["dg_fold_kcal_per_mol"]), _fmt(row["uncertainty_kcal_per_mol"]),
             f"{row['boundary']:.6g}", _fmt(row["folded_minimum"]), row["boundary_source"]]
            for row in folding_rows(analysis)))
    header = ["scope", "dg_kcal_per_mol", "uncertainty_kcal_per_mol", "first_state", "second_state",
              "states_source"]
    return _write_csv(path, header, (
        [row["scope"], _fmt(row["dg_kcal_per_mol"]), _fmt(row["uncertainty_kcal_per_mol"]), row["first_state"],
         row["second_state"], row["boundary_source"]] for row in folding_rows(analysis)))


def _write_convergence_csv(analysis, path: Path) -> Path:
    """Forward and reverse; the difference's columns are ``dg_fold_*`` for the folding free energy, else ``dg_*``."""
    prefix = "dg_fold" if analysis.delta_g is None or analysis.delta_g.states.folding else "dg"
    header = ["direction", "fraction", "samples", f"{prefix}_kcal_per_mol", "uncertainty_kcal_per_mol",
              "pmf_rmsd_kcal_per_mol"]
    nan = float("nan")
    return _write_csv(path, header, (
        [point.direction, f"{point.fraction:g}", point.samples,
         _fmt(point.delta_g.dg_kcal_per_mol if point.delta_g else nan),
         _fmt(point.delta_g.uncertainty_kcal_per_mol if point.delta_g else nan), _fmt(point.pmf_rmsd_kcal_per_mol)]
        for point in analysis.convergence))


def _write_next_steps(analysis, path: Path) -> Path:
    path.write_text("\n".join(analysis.next_steps.lines()) + "\n")
    return path


# -- upstream-style files -------------------------------------------------------------------


def write_mbar_files(analysis, root: Path, campaign: Campaign) -> list[Path]:
    """``{S}-mbar-windows.dat``, ``-free-energy.dat``, ``-samples.dat`` and ``-uncorrelated-samples.dat``."""
    pmf = analysis.combined
    mbar = pmf.mbar
    kt = MOLAR_GAS_CONSTANT_KCAL_PER_MOL_K * analysis.temperature_kelvin
    settings = [f"temperature_kelvin {analysis.temperature_kelvin:g}", f"kT_kcal_per_mol {kt:.10g}",
                f"method {pmf.method}", f"errors {pmf.error_method}"]
    if pmf.axis.periodic:
        # rebuild_pmf wraps the kernel with these; the bias used the minimum-image difference.
        settings += [f"period {pmf.axis.period:.17g}", f"cv_min {pmf.axis.low:.17g}"]
    if pmf.method == "histogram":
        settings.append("bin_edges " + " ".join(f"{e:.10g}" for e in pmf.bin_edges))
    else:
        settings.append(f"kde_bandwidth {pmf.bandwidth:.10g}")
        settings.append("kernel gaussian")
    file = lambda suffix: root / campaign.analysis_file(suffix)  # noqa: E731
    paths = []

    windows = np.array([[w, c, _state_k(analysis, w), n, f * kt, df * kt]
                        for w, c, n, f, df in zip(pmf.state_windows, pmf.state_centres, mbar.n_k,
                                                  mbar.f_k, mbar.df_k)])
    paths.append(_write_dat(file("mbar-windows.dat"), WINDOWS_DAT_COLUMNS, windows,
                            ["%d", "%.10g", "%.10g", "%d", "%.10g", "%.10g"],
                            settings[:2] + ["offset: MBAR free energy of each window's biased "
                                            "state relative to the first, in kcal/mol",
                                            "k_kcal_per_mol: the bias is k (cv - centre)^2, no factor 1/2 "
                                            "(a WHAM metadata line's K is 2 k)"]))
    table = np.column_stack([pmf.bin_centres, pmf.pmf_kcal_per_mol, pmf.uncertainty_kcal_per_mol])
    paths.append(_write_dat(file("mbar-free-energy.dat"), FREE_ENERGY_DAT_COLUMNS, table,
                            ["%.10g"] * 3, settings + ["nan where no sample fell"]))
    samples = np.column_stack([mbar.replica, mbar.window, mbar.frame, mbar.cv, mbar.log_denominator])
    paths.append(_write_dat(file("mbar-samples.dat"), SAMPLES_DAT_COLUMNS, samples,
                            ["%d", "%d", "%d", "%.10g", "%.12g"],
                            settings + ["log_weight_denominator: ln sum_k N_k exp(f_k - u_k(cv)), "
                                        "u_k = k_k (cv - centre_k)^2 / kT (minimum image round a periodic "
                                        "CV; k_k of -mbar-windows.dat); a sample's weight in the "
                                        "unbiased ensemble is exp(-log_weight_denominator)",
                                        "frame: index of the sample among its window's production "
                                        "frames"]))
    n = len(mbar.cv)
    # Replica blocks of unequal size make a resample longer or shorter than the sample.
    rows = max([n] + [len(pick) for pick in mbar.bootstrap_indices])
    boots = np.full((rows, len(mbar.bootstrap_indices)), -1, dtype=np.int32)
    for b, pick in enumerate(mbar.bootstrap_indices):
        boots[:len(pick), b] = pick
    where = np.full((rows, 4), -1, dtype=np.int32)
    where[:n] = np.column_stack([np.arange(n), mbar.replica, mbar.window, mbar.frame])
    columns = UNCORRELATED_DAT_COLUMNS + tuple(f"bootstrap_{b + 1:03d}" for b in range(boots.shape[1]))
    table = np.column_stack([where, boots])
    paths.append(_write_dat(file("mbar-uncorrelated-samples.dat"), columns, table, None,
                            [f"errors {pmf.error_method}",
                             "sample: row of -mbar-samples.dat; replica, window, frame: where it "
                             "was taken (-1 on rows beyond the sample count)",
                             "bootstrap_B: the sample drawn at this position of resample B "
                             "(-1: that resample was shorter; whole replicas are drawn as blocks)"]))
    return paths


def _state_k(analysis, window: int) -> float:
    return next(w.k_kcal_per_mol for w in analysis.windows if w.window == window)


def _write_dat(path: Path, columns, table, formats, comments: list[str]) -> Path:
    # Straight into the file: the bootstrap table of 465,000 samples is ~300 MB of text.
    with open(path, "w") as handle:
        for line in comments:
            handle.write(f"# {line}\n")
        handle.write(" ".join(columns) + "\n")
        table = np.asarray(table)
        if formats is None:  # integers only: the fast path for the large bootstrap table
            np.savetxt(handle, table, fmt="%d", delimiter=" ")
        elif len(table):
            np.savetxt(handle, table, fmt=formats, delimiter=" ")
    return path


def read_dat(path: Path | str) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Columns of an upstream-style ``.dat`` file by name, and its ``# key value`` settings."""
    settings, header, rows = {}, None, []
    for line in Path(path).read_text().splitlines():
        if line.startswith("#"):
            key, _, value = line[1:].strip().partition(" ")
            settings.setdefault(key, value)
        elif header is None:
            header = line.split()
        elif line.strip():
            rows.append([float(v) for v in line.split()])
    table = np.array(rows, dtype=float).reshape(-1, len(header))
    return {name: table[:, i] for i, name in enumerate(header)}, settings


def rebuild_pmf(samples_dat: Path | str, grid=None) -> tuple[np.ndarray, np.ndarray]:
    """The PMF (kcal/mol, zero at its lowest point) from ``{S}-mbar-samples.dat`` alone.

    Each sample weighs ``exp(-log_weight_denominator)``; the histogram or
    Gaussian KDE named in the file's header turns the weighted samples into a
    density ``p`` (round a periodic CV, one whose header gives a ``period``,
    the kernel wraps) and the PMF is ``-kT ln p``. Returns the grid and the PMF.
    """
    columns, settings = read_dat(samples_dat)
    kt = float(settings["kT_kcal_per_mol"])
    x = columns["cv"]
    log_w = -columns["log_weight_denominator"]
    w = np.exp(log_w - log_w.max())
    w /= w.sum()
    if settings["method"] == "histogram":
        edges = np.array([float(v) for v in settings["bin_edges"].split()])
        grid = 0.5 * (edges[1:] + edges[:-1])
        density, _ = np.histogram(x, bins=edges, weights=w)
        density = density / np.diff(edges)
    else:
        h = float(settings["kde_bandwidth"])
        grid = np.linspace(x.min(), x.max(), 201) if grid is None else np.asarray(grid, dtype=float)
        # Round a periodic CV the kernel wraps: the images one period either side count too.
        shifts = [0.0] if "period" not in settings else [-float(settings["period"]), 0.0, float(settings["period"])]
        density = np.array([sum(np.sum(w * np.exp(-0.5 * ((g - x - shift) / h) ** 2)) for shift in shifts)
                            for g in grid]) / (h * np.sqrt(2 * np.pi))
    with np.errstate(divide="ignore"):
        pmf = -kt * np.log(density)
    pmf[~np.isfinite(pmf)] = np.nan
    return grid, pmf - np.nanmin(pmf)
