"""What every library model returns."""

from __future__ import annotations

from typing import Any, NamedTuple

__all__ = ["Example"]


class Example(NamedTuple):
    """A model with an inner solve, the same density in closed form, and its data.

    Attributes
    ----------
    model : Model
        The density with the inner solve (what the library is about).
    reference : Model
        The same density with the inner solve replaced by a closed form or a
        hand-derived derivative: same parameters, same layout, same value.
    data : dict
        The simulated data both densities condition on (empty when there are none),
        with the true parameter values under ``"truth"`` when data were simulated.
    """

    model: Any
    reference: Any
    data: dict
