from tests.eval.conftest import fake_wheels

__all__ = ["fake_wheels"]
