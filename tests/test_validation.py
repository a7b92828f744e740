"""`probslot.validation`: one rule — a wrong type is a TypeError, a wrong value a ValueError."""

from __future__ import annotations

import numpy as np
import pytest

from probslot.validation import (
    check_bool,
    check_choice,
    check_float,
    check_int,
    check_iteration,
    check_positive_int,
    check_tau,
    is_int,
)


def test_integers():
    assert check_int("n", 3, low=1) == 3
    assert check_int("n", np.int64(4), low=1, high=4) == 4 and is_int(np.int32(2))
    with pytest.raises(TypeError, match=r"n must be an integer >= 1; got 2.0 \(float\)"):
        check_int("n", 2.0, low=1)
    with pytest.raises(TypeError, match=r"got True \(bool\)"):
        check_positive_int("n", True)
    with pytest.raises(ValueError, match=r"n must be an integer >= 1 and <= 4; got 5"):
        check_int("n", 5, low=1, high=4)
    with pytest.raises(
        ValueError, match=r"start must be an integer >= 1 and <= 3; got 0. EM runs iters=3"
    ):
        check_iteration("start", 0, 3)


def test_floats():
    assert check_float("x", 1, low=0.0) == 1.0 and isinstance(check_float("x", 1), float)
    assert check_float("x", np.float32(0.5), low=0.0, high=1.0) == 0.5
    with pytest.raises(TypeError, match=r"x must be a number > 0; got '1e-3' \(str\)"):
        check_float("x", "1e-3", low=0.0, low_open=True)
    with pytest.raises(ValueError, match=r"x must be a number > 0; got 0"):
        check_float("x", 0.0, low=0.0, low_open=True)
    with pytest.raises(ValueError, match=r"x must be a number >= 0 and < 1 \(why\); got 1"):
        check_float("x", 1.0, low=0.0, high=1.0, high_open=True, hint="why")
    with pytest.raises(ValueError, match="got nan"):
        check_float("x", float("nan"), low=0.0)
    assert check_tau(0) == 0.0


def test_flags_and_choices():
    assert check_bool("flag", False) is False
    with pytest.raises(TypeError, match=r"flag must be True or False; got 1 \(int\)"):
        check_bool("flag", 1)
    assert check_choice("mode", "a", ("a", "b")) == "a"
    with pytest.raises(
        ValueError, match=r"mode must be one of \['mle', 'map'\]; got 'mpa'. Did you mean 'map'\?"
    ):
        check_choice("mode", "mpa", ("mle", "map"))
