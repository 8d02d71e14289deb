"""One self-contained HTML page of an analysis: plots embedded as base64 PNG, the tables inline.

The page needs no server, no script and nothing from the network, so it can
be opened from disk, mailed, or uploaded to the bucket and shared by its
public HTTP address.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

import numpy as np

from .layout import window_tag

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.8em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f0f0f0; } td.text, th.text { text-align: left; }
img { max-width: 100%; display: block; margin: 0.6em 0; }
.warning { background: #fff4e0; border-left: 4px solid #e69500; padding: 0.4em 0.8em; }
pre { background: #f6f6f6; padding: 0.8em; overflow-x: auto; }
.headline { font-size: 1.25em; }
"""


def _image(path: Path, alt: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _number(value: float, digits: int = 2, signed: bool = False) -> str:
    if value is None or not np.isfinite(value):
        return "–"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def _table(table_id: str, header: list[str], rows: list[list[str]], text_columns=(0,)) -> str:
    def cell(tag, i, value):
        cls = ' class="text"' if i in text_columns else ""
        return f"<{tag}{cls}>{html.escape(str(value))}</{tag}>"

    head = "".join(cell("th", i, h) for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(cell("td", i, v) for i, v in enumerate(row)) + "</tr>" for row in rows)
    return f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _page(title: str, sections: list[str]) -> str:
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>"
            f"<h1>{html.escape(title)}</h1>" + "".join(sections) + "</body></html>\n")


def folding_rows(analysis) -> list[dict]:
    """The two-state free energies, ``all`` then ``replica_R`` for each replica: this page's table and
    :mod:`outputs`' ``{S}-folding.csv`` (``{S}-delta-g.csv`` for states given as ranges) alike.

    Empty when there is none (a periodic CV without ``--state``).
    """
    if analysis.delta_g is None:
        return []
    rows = [("all", analysis.combined)]
    if len(analysis.per_replica) > 1:
        rows += [(f"replica_{r}", p) for r, p in sorted(analysis.per_replica.items())]
    return [{"scope": name, "dg_fold_kcal_per_mol": p.delta_g.dg_kcal_per_mol,
             "dg_kcal_per_mol": p.delta_g.dg_kcal_per_mol,
             "uncertainty_kcal_per_mol": p.delta_g.uncertainty_kcal_per_mol,
             "boundary": p.delta_g.boundary, "boundary_source": p.delta_g.boundary_source,
             "first_state": p.delta_g.states.first.text, "second_state": p.delta_g.states.second.text,
             "folded_minimum": p.folded_minimum()} for name, p in rows]


def folding_section(analysis) -> str:
    dg = analysis.delta_g
    if dg is None:
        return ("<h2>Free-energy difference</h2><p>None: round a periodic CV, name the two states with "
                "<code>--state A=LO:HI --state B=LO:HI</code>.</p>")
    states, cv = dg.states, html.escape(analysis.cv_name)
    symbol = "ΔG<sub>fold</sub>" if states.folding else (
        f"ΔG({html.escape(states.second.name)} − {html.escape(states.first.name)})")
    formula = (f"G<sub>{html.escape(states.second.name)}</sub> − G<sub>{html.escape(states.first.name)}</sub>")
    where = (f"folded: {cv} &gt; {dg.boundary:.3g}, {html.escape(dg.boundary_source)}" if states.folding else
             f"{html.escape(states.describe(analysis.cv_name))}; {html.escape(dg.boundary_source)}")
    text = (f'<p class="headline">{symbol} = {formula} = '
            f'<b>{_number(dg.dg_kcal_per_mol, signed=True)} ± '
            f'{_number(dg.uncertainty_kcal_per_mol)} kcal/mol</b> at '
            f'{analysis.temperature_kelvin:g} K ({where}). Errors: '
            f'{html.escape(analysis.combined.error_method)}; PMF by {analysis.combined.method}.</p>')
    if states.folding:
        rows = [[r["scope"], _number(r["dg_fold_kcal_per_mol"], signed=True), _number(r["uncertainty_kcal_per_mol"]),
                 f"{r['boundary']:.3g}", _number(r["folded_minimum"], 3)] for r in folding_rows(analysis)]
        table = _table("folding", ["scope", "ΔG_fold (kcal/mol)", "σ (kcal/mol)", "boundary",
                                   "folded minimum"], rows)
    else:
        rows = [[r["scope"], _number(r["dg_kcal_per_mol"], signed=True), _number(r["uncertainty_kcal_per_mol"])]
                for r in folding_rows(analysis)]
        table = _table("folding", ["scope", f"{dg.label} (kcal/mol)", "σ (kcal/mol)"], rows)
    hysteresis = (f'<p class="warning" id="hysteresis">{html.escape(analysis.hysteresis)}</p>'
                  if analysis.hysteresis else
                  '<p id="hysteresis">The replicas agree within their bootstrap errors (no hysteresis '
                  'detected).</p>' if len(analysis.per_replica) > 1 else "")
    title = "Folding free energy" if states.folding else "Free-energy difference"
    return f"<h2>{title}</h2>" + text + table + hysteresis


def convergence_section(analysis, figures) -> str:
    label = analysis.delta_g.label if analysis.delta_g else "ΔG"
    rows = [[p.direction, f"{p.fraction:.0%}", str(p.samples),
             _number(p.delta_g.dg_kcal_per_mol if p.delta_g else None, signed=True),
             _number(p.delta_g.uncertainty_kcal_per_mol if p.delta_g else None), _number(p.pmf_rmsd_kcal_per_mol)]
            for p in analysis.convergence]
    parts = ["<h2>Convergence</h2>",
             "<p>Forward: the first part of every window's production; reverse: the last part. "
             "A converged estimate stops drifting as the part grows, and forward and reverse meet "
             "within their errors (analytical here). PMF RMSD: against the PMF of all production.</p>"]
    if "convergence" in figures:
        parts.append(_image(figures["convergence"], f"convergence of the PMF and {label}"))
    parts.append(_table("convergence", ["direction", "part", "samples", f"{label} (kcal/mol)",
                                        "σ (kcal/mol)", "PMF RMSD (kcal/mol)"], rows, (0,)))
    windows = sorted(analysis.windows, key=lambda w: (w.replica, w.window))
    rows = [[str(w.replica), window_tag(w.window), f"{w.centre:.3g}", str(w.n_frames), str(w.n_discarded),
             f"{w.statistical_inefficiency:.1f}", f"{w.effective_samples:.0f}"] + ([w.source] if w.source else [])
            for w in windows]
    parts.append("<p>Per window: frames discarded as equilibration, statistical inefficiency g "
                 "and effective samples (kept frames / g).</p>")
    parts.append(_table("windows", ["replica", "window", "centre", "frames", "discarded", "g",
                                    "effective samples"] + (["source"] if windows and windows[0].source else []),
                        rows, (7,)))
    return "".join(parts)


def next_steps_section(analysis) -> str:
    lines = analysis.next_steps.lines() if analysis.next_steps else []
    return ('<h2>What to run next</h2><pre id="next-steps">' + html.escape("\n".join(lines)) + "</pre>")


def campaign_report(analysis, figures: dict[str, Path]) -> str:
    """The HTML page of one campaign."""
    source = (f"{analysis.metadata_path} (CV {analysis.axis.describe()})" if analysis.metadata_path else
              f"replicas {', '.join(map(str, sorted(analysis.per_replica)))}")
    sections = [
        f"<p>{html.escape(str(len(analysis.windows)))} windows from {html.escape(source)}, "
        f"{sum(len(w.samples) for w in analysis.windows)} uncorrelated samples.</p>",
        _image(figures["pmf"], "PMF"),
        folding_section(analysis),
        convergence_section(analysis, figures),
        next_steps_section(analysis),
        "<h2>Sampling</h2>",
        _image(figures["cv-histograms"], "CV histograms per window"),
        _image(figures["overlap"], "MBAR overlap matrix"),
    ]
    if analysis.warnings:
        items = "".join(f"<li>{html.escape(w)}</li>" for w in analysis.warnings)
        sections.append(f'<h2>Warnings</h2><ul id="warnings">{items}</ul>')
    return _page(f"{analysis.campaign.name}: umbrella sampling along {analysis.cv_name}", sections)


def comparison_report(analyses, figure: Path, rows: list[dict]) -> str:
    """The HTML page of several campaigns side by side, then each one's folding table."""
    label = "ΔG_fold" if "dg_fold_kcal_per_mol" in rows[0] else f"ΔG({rows[0]['states']})"
    table = _table("comparison", ["campaign", f"{label} (kcal/mol)", "σ (kcal/mol)", "boundary",
                                  "folded minimum", "T (K)"],
                   [[r["campaign"], _number(r.get("dg_fold_kcal_per_mol", r.get("dg_kcal_per_mol")), signed=True),
                     _number(r["uncertainty_kcal_per_mol"]), _number(r["boundary"], 3),
                     _number(r["folded_minimum"], 3), f"{r['temperature_kelvin']:g}"] for r in rows])
    sections = [_image(figure, "PMFs side by side"), "<h2>Folding free energies</h2>", table]
    for analysis in analyses:
        sections.append(f"<h2>{html.escape(analysis.campaign.name)}</h2>")
        sections.append(folding_section(analysis).replace('id="folding"', f'id="folding-{analysis.campaign.name}"')
                        .replace('id="hysteresis"', "").replace("<h2>Folding free energy</h2>", ""))
        sections.append(next_steps_section(analysis).replace('id="next-steps"', "")
                        .replace("<h2>What to run next</h2>", "<h3>What to run next</h3>"))
    names = ", ".join(a.campaign.name for a in analyses)
    return _page(f"Comparison: {names}", sections)
