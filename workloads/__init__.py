"""Workloads: the only code that runs models and counts tokens (see workloads/base.py)."""

from workloads.registry import get

__all__ = ["get"]
