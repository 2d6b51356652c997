"""Readers of finished runs: analysis (Max-Q/Max-P ranges), statistics, fits, tokenomics, report,
compare, export and plots. They never write a sweep's records."""
