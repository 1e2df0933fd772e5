import math

import pytest

from connector.core.bounds import require_finite


@pytest.mark.parametrize("value", [0.0, -1.0, math.nan, math.inf])
def test_above_rejects_the_bound_nan_and_infinity(value: float) -> None:
    with pytest.raises(ValueError, match=r"x must be finite and > 0, got"):
        require_finite("x", value, above=0)


def test_at_least_accepts_the_bound_and_rejects_below_it() -> None:
    require_finite("x", 1.0, at_least=1)
    require_finite("x", 0.1, above=0)
    with pytest.raises(ValueError, match=r"x must be finite and >= 1, got 0.5"):
        require_finite("x", 0.5, at_least=1)


def test_a_bound_is_required() -> None:
    with pytest.raises(TypeError):
        require_finite("x", 1.0)
