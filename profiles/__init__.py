"""tokbench's shipped data: benchmark profiles (``*.toml``), simulated GPU parts (``gpus/``), an example
site, grid signal and curve (``sites/``, ``grids/``, ``curves/``). A package only so that an installed
wheel carries these files and code finds them through ``importlib.resources``."""
