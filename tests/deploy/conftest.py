"""The production overlay, rendered once (tests/deploy/test_kubernetes.py defines it)."""

from tests.deploy.test_kubernetes import production

__all__ = ["production"]
