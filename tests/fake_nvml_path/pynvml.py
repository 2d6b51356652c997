"""``import pynvml`` in a subprocess whose PYTHONPATH starts with this directory loads the fake
(tests/fake_pynvml.py), configured from $TOKBENCH_FAKE_NVML_CONFIG and logging every setter call
to $TOKBENCH_FAKE_NVML_LOG. See the ``fake_nvml_proc`` fixture in tests/conftest.py."""

import importlib.util
import sys
from pathlib import Path

_path = Path(__file__).resolve().parents[1] / "fake_pynvml.py"
_spec = importlib.util.spec_from_file_location("fake_pynvml", _path)
_fake = importlib.util.module_from_spec(_spec)
sys.modules["fake_pynvml"] = _fake
_spec.loader.exec_module(_fake)
sys.modules[__name__] = _fake.FakeNvml.from_env()
