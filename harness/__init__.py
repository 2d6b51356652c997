"""tokbench: tokens per second and per joule of real GPU work across power limits and clocks."""

__version__ = "0.1.0"
