"""`tokbench govern`: hold a node's GPU power at a target from a grid signal, choosing settings
from the node's measured curve (most tokens for the power allowed), verified by its own telemetry."""
