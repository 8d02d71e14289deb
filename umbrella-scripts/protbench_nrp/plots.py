"""The figures of an analysis: PMF, per-window CV histograms, overlap, convergence, and campaigns side by side.

Files only (matplotlib's Agg backend): pods and CI runners have no display.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .layout import Campaign, window_tag


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def campaign_figures(analysis, root: Path, campaign: Campaign) -> dict[str, Path]:
    """Every figure of one campaign, by name (``pmf``, ``cv-histograms``, ``overlap``, ``convergence``)."""
    file = lambda suffix: root / campaign.analysis_file(suffix)  # noqa: E731
    figures = {
        "pmf": _save(pmf_figure(analysis), file("pmf.png")),
        "cv-histograms": _save(histogram_figure(analysis), file("cv-histograms.png")),
        "overlap": _save(overlap_figure(analysis), file("overlap.png")),
    }
    if analysis.convergence:
        figures["convergence"] = _save(convergence_figure(analysis), file("convergence.png"))
    return figures


def pmf_figure(analysis):
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    x = analysis.combined.bin_centres
    if len(analysis.per_replica) > 1:
        for r, pmf in sorted(analysis.per_replica.items()):
            ax.plot(x, pmf.pmf_kcal_per_mol, lw=0.8, alpha=0.6, label=f"replica {r}")
    y, dy = analysis.combined.pmf_kcal_per_mol, analysis.combined.uncertainty_kcal_per_mol
    ax.fill_between(x, y - 2 * dy, y + 2 * dy, color="k", alpha=0.2, lw=0, label="±2σ")
    ax.plot(x, y, color="k", lw=1.8, label="all replicas")
    _mark_states(ax, analysis)
    axis = analysis.axis
    if axis.periodic:
        ax.set_xlim(axis.low, axis.high)
    ax.set_xlabel(analysis.cv_name)
    ax.set_ylabel("PMF (kcal/mol)")
    ax.set_title(f"{analysis.campaign.name} at {analysis.temperature_kelvin:g} K ({analysis.combined.method})")
    ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def _mark_states(ax, analysis) -> None:
    """The fold boundary as a line, or the two states as shaded ranges, with the difference in the legend."""
    dg = analysis.delta_g
    if dg is None:
        return
    text = f"{dg.label} {dg.dg_kcal_per_mol:+.2f} ± {dg.uncertainty_kcal_per_mol:.2f}"
    if dg.states.folding or np.isfinite(dg.boundary):
        name = "fold boundary" if dg.states.folding else "boundary"
        ax.axvline(dg.boundary, color="tab:red", ls="--", lw=1, label=f"{name}; {text}")
        return
    axis = analysis.axis
    x = analysis.combined.bin_centres
    for state, colour in ((dg.states.first, "tab:blue"), (dg.states.second, "tab:orange")):
        inside = axis.contains(x, state.low, state.high)
        low = state.low if np.isfinite(state.low) else x.min()
        high = state.high if np.isfinite(state.high) else x.max()
        spans = [(low, axis.high), (axis.low, high)] if axis.periodic and low > high else [(low, high)]
        for i, (a, b) in enumerate(spans):
            ax.axvspan(a, b, color=colour, alpha=0.12, lw=0,
                       label=f"{state.name} ({int(inside.sum())} points)" if i == 0 else None)
    ax.plot([], [], " ", label=text)


def histogram_figure(analysis):
    plt = _pyplot()
    replicas = sorted({w.replica for w in analysis.windows})
    fig, axes = plt.subplots(len(replicas), 1, figsize=(7, 2.2 * len(replicas) + 0.8),
                             sharex=True, squeeze=False)
    edges = analysis.combined.coverage_edges
    if edges is None:
        edges = analysis.combined.bin_edges
    fine = np.linspace(edges[0], edges[-1], 3 * (len(edges) - 1) + 1)
    n_windows = max(w.window for w in analysis.windows) + 1
    colours = plt.get_cmap("viridis")
    for ax, replica in zip(axes[:, 0], replicas):
        for w in (w for w in analysis.windows if w.replica == replica):
            counts, _ = np.histogram(w.samples, bins=fine, density=True)
            ax.stairs(counts, fine, color=colours(w.window / max(n_windows - 1, 1)))
        ax.set_ylabel(f"replica {replica}\ndensity")
    if analysis.axis.periodic:
        axes[-1, 0].set_xlim(analysis.axis.low, analysis.axis.high)
    axes[-1, 0].set_xlabel(analysis.cv_name)
    axes[0, 0].set_title("CV histograms per window (neighbours must overlap)")
    fig.tight_layout()
    return fig


def overlap_figure(analysis):
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    overlap = analysis.combined.overlap
    image = ax.imshow(overlap, cmap="magma_r", vmin=0, vmax=max(float(overlap.max()), 1e-12))
    labels = [window_tag(w) for w in analysis.combined.state_windows]
    step = max(1, len(labels) // 16)
    ax.set_xticks(range(0, len(labels), step), labels[::step], rotation=90, fontsize="small")
    ax.set_yticks(range(0, len(labels), step), labels[::step], fontsize="small")
    ax.set_xlabel("window")
    ax.set_ylabel("window")
    ax.set_title("MBAR overlap matrix (all replicas)")
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    return fig


def convergence_figure(analysis):
    """Left: the PMF from growing forward parts of production; right: dG_fold forward and reverse."""
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    forward = [p for p in analysis.convergence if p.direction == "forward"]
    colours = plt.get_cmap("plasma")
    for i, point in enumerate(forward):
        left.plot(point.pmf.bin_centres, point.pmf.pmf_kcal_per_mol, lw=1,
                  color=colours(i / max(len(forward), 1)), label=f"first {point.fraction:.0%}")
    if analysis.axis.periodic:
        left.set_xlim(analysis.axis.low, analysis.axis.high)
    left.set_xlabel(analysis.cv_name)
    left.set_ylabel("PMF (kcal/mol)")
    left.set_title("PMF from the first part of production")
    left.legend(fontsize="small")
    dg = analysis.delta_g
    for direction, marker in (("forward", "o"), ("reverse", "s")):
        points = [p for p in analysis.convergence if p.direction == direction]
        label = f"{direction} ({'first' if direction == 'forward' else 'last'} part)"
        if dg is None:  # no two-state difference: how far each part's PMF lies from the whole's
            right.plot([p.fraction for p in points], [p.pmf_rmsd_kcal_per_mol for p in points], marker=marker,
                       label=label)
            continue
        right.errorbar([p.fraction for p in points], [p.delta_g.dg_kcal_per_mol for p in points],
                       yerr=[p.delta_g.uncertainty_kcal_per_mol for p in points], marker=marker,
                       capsize=3, label=label)
    right.set_xlabel("fraction of production")
    if dg is None:
        right.set_ylabel("PMF RMSD from all production (kcal/mol)")
        right.set_title("PMF: forward and reverse")
    else:
        right.axhspan(dg.dg_kcal_per_mol - dg.uncertainty_kcal_per_mol,
                      dg.dg_kcal_per_mol + dg.uncertainty_kcal_per_mol, color="k", alpha=0.15,
                      lw=0, label="all production ±σ")
        right.set_ylabel(f"{dg.label} (kcal/mol)")
        right.set_title(f"{dg.states.title.capitalize()}: forward and reverse")
    right.legend(fontsize="small")
    fig.tight_layout()
    return fig


def comparison_figure(analyses):
    """PMFs of several campaigns overlaid, each with its ±2σ band, zero at each one's folded minimum."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for analysis in analyses:
        pmf = analysis.combined
        x, y, dy = pmf.bin_centres, pmf.pmf_kcal_per_mol, pmf.uncertainty_kcal_per_mol
        dg = analysis.delta_g
        label = analysis.campaign.name + (f": {dg.label} {dg.dg_kcal_per_mol:+.2f} ± "
                                          f"{dg.uncertainty_kcal_per_mol:.2f}" if dg else "")
        (line,) = ax.plot(x, y, lw=1.6, label=label)
        ax.fill_between(x, y - 2 * dy, y + 2 * dy, color=line.get_color(), alpha=0.2, lw=0)
    ax.set_xlabel(analyses[0].cv_name)
    ax.set_ylabel("PMF (kcal/mol)")
    ax.set_title("Campaigns side by side (bands: ±2σ)")
    ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def save(fig, path: Path) -> Path:
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    plt = _pyplot()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
