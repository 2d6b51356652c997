"""Many nodes through Slurm: campaigns, the batch script, and collecting their runs."""
