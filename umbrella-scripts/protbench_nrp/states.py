"""Two states as ranges of the CV, and the free-energy difference between them from the samples' weights.

``ΔG = G_B − G_A = −kT ln(P_B / P_A)``, where ``P`` is the unbiased weight of
the samples inside each range. The campaign's default along Q is the folding
free energy, with folded meaning Q above a boundary (:func:`folding_states`);
any other pair comes from the user (``--state A=LO:HI --state B=LO:HI``,
:func:`parse_states`) and is named only as the user named it. A range is
``(LO, HI]``; round a periodic CV one with ``LO > HI`` (after wrapping into
the period) runs across the seam, e.g. ``trans=120:-120`` in degrees.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from .cvaxis import LINE, CVAxis
from .errors import ProtbenchError

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.+-]*$")
_EXAMPLE = "e.g. --state A=0.2:0.5 --state B=0.7:1.0"


class StateError(ProtbenchError):
    """A ``--state`` the analysis cannot use; the message names it and the fix."""


@dataclass(frozen=True)
class StateRange:
    """``low < cv <= high`` (across the seam of a periodic CV when ``low > high``)."""

    name: str
    low: float
    high: float

    def describe(self, cv_name: str) -> str:
        """``0.69 < Q``, ``Q <= 0.69``, ``150 < phi <= 180`` or ``phi > 120 or phi <= -120``."""
        if math.isinf(self.low):
            return f"{cv_name} <= {self.high:.3g}"
        if math.isinf(self.high):
            return f"{cv_name} > {self.low:.3g}"
        if self.low > self.high:
            return f"{cv_name} > {self.low:.3g} or {cv_name} <= {self.high:.3g}"
        return f"{self.low:.3g} < {cv_name} <= {self.high:.3g}"

    @property
    def text(self) -> str:
        """As ``--state`` takes it: ``NAME=LO:HI`` (an open end left empty)."""
        low = "" if math.isinf(self.low) else f"{self.low:g}"
        high = "" if math.isinf(self.high) else f"{self.high:g}"
        return f"{self.name}={low}:{high}"


@dataclass(frozen=True)
class TwoStates:
    """The pair whose free-energy difference ``G(second) - G(first)`` is reported.

    Attributes
    ----------
    source : str
        How the states were chosen, in words, for every output to repeat.
    folding : bool
        The campaign's folding free energy along Q: ``second`` is folded
        (the CV above ``boundary``), ``first`` unfolded.
    """

    first: StateRange
    second: StateRange
    source: str
    folding: bool = False
    boundary: float = math.nan

    @property
    def label(self) -> str:
        """``dG_fold``, or ``dG(B - A)`` with the user's names."""
        return "dG_fold" if self.folding else f"dG({self.second.name} - {self.first.name})"

    @property
    def title(self) -> str:
        return "folding free energy" if self.folding else "free-energy difference"

    def formula(self) -> str:
        """``G_folded - G_unfolded`` or ``G_B - G_A``."""
        return f"G_{self.second.name} - G_{self.first.name}"

    def describe(self, cv_name: str) -> str:
        """Where each state lies, in words."""
        if self.folding:
            return f"{cv_name} > {self.boundary:.3g} is folded"
        return (f"{self.second.name}: {self.second.describe(cv_name)}; "
                f"{self.first.name}: {self.first.describe(cv_name)}")

    def masks(self, x, axis: CVAxis = LINE) -> tuple[np.ndarray, np.ndarray]:
        """Which samples lie in ``first`` and which in ``second``."""
        return (axis.contains(x, self.first.low, self.first.high),
                axis.contains(x, self.second.low, self.second.high))


def folding_states(boundary: float, source: str) -> TwoStates:
    """The campaign's default along Q: folded is the CV above ``boundary``."""
    return TwoStates(StateRange("unfolded", -math.inf, boundary), StateRange("folded", boundary, math.inf),
                     source, folding=True, boundary=float(boundary))


def split_states(boundary: float, source: str) -> TwoStates:
    """Any other CV without ``--state``: the samples above ``boundary`` against those below."""
    return TwoStates(StateRange("below", -math.inf, boundary), StateRange("above", boundary, math.inf),
                     source, boundary=float(boundary))


def parse_states(texts, axis: CVAxis = LINE) -> TwoStates | None:
    """Two ``NAME=LO:HI`` texts -> :class:`TwoStates` (None for none), refusing what cannot be used.

    On a line an end may be left empty (``folded=0.7:``: everything above
    0.7). Round a periodic CV both ends are needed and are wrapped into the
    period; ``LO > HI`` then runs across the seam.

    Raises
    ------
    StateError
        Naming the ``--state`` at fault and the fix.
    """
    texts = list(texts)
    if not texts:
        return None
    if len(texts) != 2:
        raise StateError(f"--state given {len(texts)} times ({' '.join(texts)}): a free-energy "
                         f"difference needs exactly two states, {_EXAMPLE}")
    first, second = (_parse_one(text, axis) for text in texts)
    if first.name == second.name:
        raise StateError(f"both --state ranges are named {first.name!r}: give them different names, {_EXAMPLE}")
    # Two ranges (l, h] overlap exactly when the upper end of one lies inside the other.
    if (axis.contains(first.high, second.low, second.high)
            or axis.contains(second.high, first.low, first.high)):
        raise StateError(f"--state {texts[0]} and --state {texts[1]} overlap: a sample would count "
                         f"in both. Give ranges that do not overlap")
    return TwoStates(first, second, "given with --state")


def _parse_one(text: str, axis: CVAxis) -> StateRange:
    name, equals, ends = text.partition("=")
    low_text, colon, high_text = ends.partition(":")
    if not equals or not colon or not _NAME.match(name.strip()):
        raise StateError(f"--state {text!r}: give NAME=LO:HI, a name starting with a letter and a "
                         f"range of the CV, {_EXAMPLE}")
    name = name.strip()
    try:
        low = float(low_text) if low_text.strip() else -math.inf
        high = float(high_text) if high_text.strip() else math.inf
    except ValueError:
        raise StateError(f"--state {text!r}: {low_text!r} and {high_text!r} must be numbers in the "
                         f"CV's units, {_EXAMPLE}") from None
    if math.isnan(low) or math.isnan(high):
        raise StateError(f"--state {text!r}: the ends must be numbers, not nan")
    if axis.periodic:
        if math.isinf(low) or math.isinf(high):
            raise StateError(f"--state {text!r}: round a periodic CV give both ends (a range that "
                             f"runs across the seam has LO > HI, e.g. {name}=120:-120)")
        if high - low >= axis.period:
            raise StateError(f"--state {text!r} spans a whole period ({axis.period:g}) or more: "
                             f"give a narrower range")
        low, high = float(axis.wrap(low)), float(axis.wrap(high))
        if low == high:
            raise StateError(f"--state {text!r} is empty: LO and HI are the same point of the period")
        return StateRange(name, low, high)
    if not low < high:
        raise StateError(f"--state {text!r}: LO must be below HI (a range runs across a seam only "
                         f"round a periodic CV: give --period)")
    return StateRange(name, low, high)


def delta_g(log_den, in_first, in_second, counts=None) -> float:
    """Dimensionless ``G(second) - G(first)`` from the samples' unbiased weights ``exp(-log_den)``.

    ``counts`` weighs each sample by how often a bootstrap resample drew it.
    NaN when either state holds no sample.
    """
    log_den = np.asarray(log_den, dtype=float)
    w = np.exp(-(log_den - log_den.min()))
    if counts is not None:
        w = w * counts
    a, b = float(w[in_first].sum()), float(w[in_second].sum())
    if a <= 0 or b <= 0:
        return math.nan
    return math.log(a) - math.log(b)
