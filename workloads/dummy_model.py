"""A model directory a server can load offline with dummy weights: a preset's ``config.json`` and a
synthetic tokenizer.

GPU nodes often cannot download anything, and a serving benchmark needs no real weights or
vocabulary: a server started with random ("dummy") weights still runs the model's real shapes.
It does need a config and a tokenizer to start and to stream text back, so tokbench writes both:
the preset's Llama config and a word-level tokenizer whose token ``i`` is the word ``t<i>``
(prompts are sent as token ids; streamed text decodes to ``t<i>`` words). A profile's server
command names the directory as ``{model_dir}`` (``[workload.endpoint].dummy_model``).
"""

from __future__ import annotations

import atexit
import json
import shutil
import tempfile
from pathlib import Path

from workloads import models

_DIRS: dict[str, Path] = {}


def write_model_dir(preset: str, path: Path) -> Path:
    """Write ``preset``'s config and a synthetic tokenizer of its vocabulary into ``path``."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import WhitespaceSplit

    shape = models.preset(preset)
    path.mkdir(parents=True, exist_ok=True)
    models.hf_config(shape).save_pretrained(path)
    tok = Tokenizer(WordLevel({f"t{i}": i for i in range(shape.vocab)}, unk_token="t0"))
    tok.pre_tokenizer = WhitespaceSplit()
    tok.save(str(path / "tokenizer.json"))
    # the generic fast-tokenizer class, which every transformers release a server may bring knows
    (path / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "unk_token": "t0", "pad_token": "t0",
        "model_max_length": shape.max_positions}, indent=1))
    return path


def model_dir(preset: str) -> Path:
    """The directory for ``preset`` in this process (written once, removed at exit)."""
    if preset not in _DIRS:
        tmp = Path(tempfile.mkdtemp(prefix=f"tokbench-{preset}-"))
        atexit.register(shutil.rmtree, tmp, True)
        _DIRS[preset] = write_model_dir(preset, tmp)
    return _DIRS[preset]


def fill(command: list[str], preset: str | None) -> list[str]:
    """``command`` with ``{model_dir}`` replaced by ``preset``'s directory."""
    if preset is None or not any("{model_dir}" in a for a in command):
        return list(command)
    where = str(model_dir(preset))
    return [a.replace("{model_dir}", where) for a in command]
