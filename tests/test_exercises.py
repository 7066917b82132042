import numpy as np
import pytest

from ctseg_lib.exercises import check


def test_check_states(capsys):
    assert check(..., 3) is None
    assert "not attempted" in capsys.readouterr().out
    assert check(3.0001, 3, rtol=1e-3) is True
    with pytest.raises(AssertionError, match="hint"):
        check(4, 3, hint="hint")
    assert check(np.array([1, 2]), [1, 2]) is True
    with pytest.raises(AssertionError):
        check(np.array([1, 2, 3]), [1, 2])
    assert check("x", test=lambda a: a == "x") is True
