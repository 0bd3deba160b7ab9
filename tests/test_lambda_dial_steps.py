"""The dial summary of a λ sweep (Fig. 9 read as a dial)."""
import pytest

from deid_core.evaluate.lambda_sweep import dial_steps


def test_dial_steps_shares_and_monotonicity():
    even = dial_steps([0.0, 0.25, 0.5, 0.75, 1.0])
    assert even["shares"] == pytest.approx([0.25] * 4)
    assert even["largest"] == pytest.approx(0.25) and even["monotone"]
    front = dial_steps([0.0, 0.48, 0.7, 0.82, 0.9])
    assert front["largest"] == pytest.approx(0.48 / 0.9)
    back = dial_steps([0.0, 0.5, 0.4, 0.8, 1.0])
    assert not back["monotone"] and back["shares"][1] == pytest.approx(-0.1)
    assert dial_steps([0.3, 0.3, 0.3])["largest"] == 0.0
