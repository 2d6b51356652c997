"""Run records: the one manifest builder, the run-directory writer (append, resume), the read-only
run view for readers, and the curve-file schema planners read."""
