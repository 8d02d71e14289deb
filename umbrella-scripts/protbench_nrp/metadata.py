"""Umbrella windows from any engine: a WHAM metadata file and the CV time series it names.

The metadata file is the one Grossfield's WHAM reads (its manual, ``doc/`` of
``wham-dist.tgz``): one line per window,

    path centre K [correlation_time [temperature]]

with ``K`` the force constant of the bias ``½K(x−c)²``, here in kcal/mol per
CV unit², and ``path`` relative to the metadata file. Lines starting with
``#`` are comments. Each time series has whitespace columns, the time first
and the CV in the second (or in the column ``cv_column`` names, by number or
by a field of a PLUMED ``#! FIELDS`` header); lines starting with ``#`` or
``@`` are comments, as in GROMACS ``.xvg`` and PLUMED ``COLVAR`` files.

WHAM uses the correlation time only to size the fake data sets of its Monte
Carlo bootstrap (its manual); here it is read and checked, and every window's
statistical inefficiency is measured from its own series, as for a campaign.
The campaign's bias is ``k*(Q-Q0)**2`` (no ½), so a metadata line's window
enters MBAR with ``k = K/2``.

Every refusal (:class:`MetadataError`) names the file and line at fault and
the fix, and comes before anything is written.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .cvaxis import LINE, CVAxis
from .cvfiles import AnalysisError, CVTimeSeries
from .decorrelation import MIN_FRAMES
from .layout import NamedAnalysis, window_tag

#: A series shorter than this cannot be decorrelated (the handful of frames
#: :func:`~protbench_nrp.decorrelation.decorrelate_window` needs after equilibration).
MIN_SERIES_FRAMES = MIN_FRAMES

LINE_FORMAT = "path centre K [correlation_time [temperature]]"


class MetadataError(AnalysisError):
    """A metadata file or time series the analysis cannot use."""


@dataclass(frozen=True)
class SeriesWindow:
    """One metadata line: its window's time series and bias.

    Attributes
    ----------
    spring_kcal_per_mol : float
        ``K`` of the bias ``½K(x−c)²``, as the line gives it.
    k_kcal_per_mol : float
        ``K/2``: the bias is ``k*(cv - centre)**2``, as MBAR is given it.
    source_line : str
        ``FILE line N: PATH``, for messages and tables.
    """

    window: int
    centre: float
    spring_kcal_per_mol: float
    temperature_kelvin: float
    correlation_time: float | None
    series: CVTimeSeries
    source_line: str
    replica: int = 1
    production_length_ns: float = math.nan

    @property
    def k_kcal_per_mol(self) -> float:
        return self.spring_kcal_per_mol / 2.0

    @property
    def label(self) -> str:
        return f"window {window_tag(self.window)} ({self.source_line})"


@dataclass
class MetadataSamples:
    """Every window of a metadata file, ready for :func:`~protbench_nrp.analysis.analyze_campaign`."""

    campaign: NamedAnalysis
    metadata_path: Path
    cv_name: str
    temperature_kelvin: float
    windows: list[SeriesWindow]
    axis: CVAxis = LINE
    warnings: list[str] = field(default_factory=list)
    missing: dict[int, list[int]] = field(default_factory=dict)

    @property
    def replicas(self) -> tuple[int, ...]:
        return (1,)

    @property
    def n_windows(self) -> int:
        return len(self.windows)


@dataclass(frozen=True)
class _Line:
    number: int
    path: Path
    centre: float
    spring: float
    correlation_time: float | None
    temperature: float | None


def read_metadata(path: Path | str, *, cv_column: int | str = 2, temperature_kelvin: float | None = None,
                  axis: CVAxis = LINE, name: str | None = None) -> MetadataSamples:
    """Read a metadata file and every time series it names.

    Parameters
    ----------
    path : path
    cv_column : int or str
        The column (from 1; 1 is the time) or PLUMED field name of the CV.
    temperature_kelvin : float, optional
        For lines that give no temperature.
    axis : CVAxis
        Round a periodic CV, values are wrapped into one period.
    name : str, optional
        Prefix of the output files; the metadata file's stem by default.

    Raises
    ------
    MetadataError
        Naming the file and line at fault and the fix.
    """
    path = Path(path)
    if temperature_kelvin is not None and not temperature_kelvin > 0:
        raise MetadataError(f"--temperature {temperature_kelvin} K must be positive")
    column = _column_spec(cv_column)
    lines = parse_metadata(_read_text(path, "metadata file"), path)
    temperatures = {}
    for line in lines:
        temperature = line.temperature if line.temperature is not None else temperature_kelvin
        if temperature is None:
            raise MetadataError(
                f"{path}, line {line.number}: no temperature on the line and no --temperature: give "
                f"the temperature (K) as the fifth field ({LINE_FORMAT}) or with --temperature")
        temperatures[line.number] = temperature
    if len(set(temperatures.values())) > 1:
        first = lines[0].number
        odd = [f"line {n}: {t:g} K" for n, t in temperatures.items() if t != temperatures[first]]
        raise MetadataError(
            f"{path}: windows at different temperatures (line {first}: {temperatures[first]:g} K; "
            f"{', '.join(odd)}); one PMF needs one temperature. Analyse each temperature's windows "
            f"from a metadata file of their own")
    windows, cv_names = [], set()
    for index, line in enumerate(lines):
        where = f"{path.name} line {line.number}: {line.path.name}"
        series, cv_name = read_series(line.path, column, f"{path}, line {line.number}", axis)
        cv_names.add(cv_name)
        windows.append(SeriesWindow(index, line.centre, line.spring, temperatures[line.number],
                                    line.correlation_time, series, where))
    cv_name = cv_names.pop() if len(cv_names) == 1 else "cv"
    try:
        campaign = NamedAnalysis(name if name is not None else path.stem)
    except ValueError as error:
        raise MetadataError(str(error)) from None
    return MetadataSamples(campaign, path, cv_name, temperatures[lines[0].number], windows, axis)


def parse_metadata(text: str, path: Path) -> list[_Line]:
    """The window lines of a metadata file; paths resolved against its directory."""
    lines = []
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        fields = stripped.split()
        if len(fields) < 3:
            raise MetadataError(
                f"{path}, line {number}: {len(fields)} field{'s' if len(fields) != 1 else ''} "
                f"({stripped[:60]!r}); a window line is '{LINE_FORMAT}'. Add the missing fields")
        if len(fields) > 5:
            raise MetadataError(
                f"{path}, line {number}: {len(fields)} fields ({stripped[:60]!r}); a window line of "
                f"one CV is '{LINE_FORMAT}' (a two-dimensional WHAM line is not read). Remove the extra fields")
        numbers = []
        for name, text_value in zip(("centre", "K", "correlation_time", "temperature"), fields[1:]):
            try:
                value = float(text_value)
            except ValueError:
                value = math.nan
            if not math.isfinite(value):
                raise MetadataError(
                    f"{path}, line {number}: {name} {text_value!r} is not a number; a window line is "
                    f"'{LINE_FORMAT}'. Fix the field")
            numbers.append(value)
        centre, spring = numbers[0], numbers[1]
        correlation = numbers[2] if len(numbers) > 2 else None
        temperature = numbers[3] if len(numbers) > 3 else None
        if spring < 0:
            raise MetadataError(
                f"{path}, line {number}: K {fields[2]} is negative; K is the force constant of the bias "
                f"½K(x−c)² in kcal/mol per CV unit², zero or more. Fix its sign or its units")
        if correlation is not None and correlation < 0:
            raise MetadataError(f"{path}, line {number}: correlation_time {fields[3]} is negative; give "
                                f"zero or more (it is read and checked, not used)")
        if temperature is not None and temperature <= 0:
            raise MetadataError(f"{path}, line {number}: temperature {fields[4]} K is not positive; give "
                                f"the simulation's temperature in kelvin")
        series = Path(fields[0])
        lines.append(_Line(number, series if series.is_absolute() else path.parent / series, centre, spring,
                           correlation, temperature))
    if not lines:
        raise MetadataError(f"{path} holds no window lines: write one line per window, '{LINE_FORMAT}'")
    return lines


def read_series(path: Path, column: int | str, where: str, axis: CVAxis = LINE) -> tuple[CVTimeSeries, str]:
    """One window's CV values (wrapped round a periodic CV) and the CV's name (``cv`` when unnamed).

    The times go into ``steps`` as they are written; they are not used.
    """
    text = _read_text(path, f"time series named by {where}")
    fields_header: list[str] | None = None
    times, values = [], []
    index = None
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if stripped.startswith("#!"):
            words = stripped[2:].split()
            if words[:1] == ["FIELDS"]:
                fields_header = words[1:]
            continue
        if not stripped or stripped[0] in "#@":
            continue
        if index is None:
            index = _column_index(column, fields_header, path, number)
        parts = stripped.split()
        if len(parts) <= index:
            raise MetadataError(
                f"{path}, line {number}: {len(parts)} column{'s' if len(parts) != 1 else ''}, but the "
                f"CV is column {index + 1} ({stripped[:60]!r}). Choose the CV's column with --cv-column")
        try:
            time_value, value = float(parts[0]), float(parts[index])
        except ValueError:
            raise MetadataError(
                f"{path}, line {number}: expected numbers (time first, the CV in column {index + 1}), "
                f"found {stripped[:60]!r}. Mark non-data lines with '#' or '@', or fix the line") from None
        if not math.isfinite(value):
            raise MetadataError(f"{path}, line {number}: the CV is {value}; the simulation blew up there. "
                                f"Cut the series before it")
        times.append(time_value)
        values.append(value)
    if len(values) < MIN_SERIES_FRAMES:
        raise MetadataError(
            f"{path} (named by {where}) has {len(values)} frame{'s' if len(values) != 1 else ''}; at "
            f"least {MIN_SERIES_FRAMES} are needed to measure its correlation. Give the whole series, or "
            f"remove the window's line")
    name = "cv"
    if isinstance(column, str):
        name = column
    elif fields_header and len(fields_header) > index:
        name = fields_header[index]
    return CVTimeSeries(np.asarray(times, dtype=float), axis.wrap(values)), name


def _read_text(path: Path, what: str) -> str:
    if not path.is_file():
        raise MetadataError(f"{what} {path} not found: check the path" + (
            " (paths in a metadata file are relative to the metadata file)" if what != "metadata file" else ""))
    text = path.read_text()
    if not text.strip():
        raise MetadataError(f"{what} {path} is empty: give the file its lines")
    return text


def _column_spec(cv_column) -> int | str:
    """``--cv-column``: a column number from 2 (1 is the time), or a PLUMED field name."""
    text = str(cv_column).strip()
    if text.isdigit():
        number = int(text)
        if number < 2:
            raise MetadataError(f"--cv-column {text}: column 1 is the time; the CV is column 2 or later")
        return number
    if not text:
        raise MetadataError("--cv-column is empty: give a column number (2 or later) or a PLUMED field name")
    return text


def _column_index(column: int | str, fields_header: list[str] | None, path: Path, number: int) -> int:
    if isinstance(column, int):
        return column - 1
    if fields_header is None:
        raise MetadataError(f"{path}: --cv-column {column} names a field, but the file has no PLUMED "
                            f"'#! FIELDS' header before line {number}. Give the column's number instead")
    if column not in fields_header:
        raise MetadataError(f"{path}: no field {column!r} in its '#! FIELDS' header (fields: "
                            f"{', '.join(fields_header)}). Choose one of them with --cv-column")
    return fields_header.index(column)
