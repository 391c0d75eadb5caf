"""The recipe tests read the same fake dataset wheels as the eval tests."""

from tests.eval.conftest import fake_wheels

__all__ = ["fake_wheels"]
