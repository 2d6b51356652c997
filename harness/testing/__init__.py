"""Test doubles and self-checks: synthetic run directories, simulated load shapes, and the
observe-only measurement checks of scripts/gpu_check.py. Never imported by the measurement path."""
