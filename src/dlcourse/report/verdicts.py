"""What every claim's rule is built with: the guards that refuse a verdict resting on a measurement
that is not one (`require_finite`) or on a bar a param set too low (`floor`), and how a verdict writes
its figures (`pct`, `band`)."""

from __future__ import annotations

from ..files import non_finite_keys
from .results import ClaimError


def require_finite(value, what: str):
    """`value` (a number, or a JSON-like structure of them), refused when any number in it is NaN or
    infinite: a verdict never holds on a measurement that is not one."""
    bad = non_finite_keys(value)
    if bad:
        raise ClaimError(f"{what}: {', '.join(bad)} not finite (NaN or infinity); a verdict cannot rest on it")
    return value


def floor(value: float, least: float, what: str) -> float:
    """A bar read from the metrics (set by a param), refused when below the least the claim allows."""
    if value < least:
        raise ClaimError(f"{what} is {value:g}, below {least:g}: too low a bar for the course's words; "
                         "raise it in params.yaml")
    return value


def pct(x: float) -> str:
    return f"{100 * x:.2f} %"


def band(bounds: tuple[float, float]) -> str:
    return f"{100 * bounds[0]:g}-{100 * bounds[1]:g} %"
