"""Llama-style model presets, built from a config with random weights (never downloaded).

The presets mirror real models so that figures compare directly with published ones: ``llama-1b``
is exactly the shape of CALIBRATION.md's H100 table (1.104 B parameters). A local Hugging Face
model directory may be given instead of a preset name; it is read with ``local_files_only``.
FLOPs-per-token helpers use the usual dense-transformer counts (6·N for training, 2·N for a
forward pass), which is also how CALIBRATION.md's MFU figures were computed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ModelShape:
    """A decoder-only Llama shape. ``tied`` embeddings share the LM head (Llama 3.2 1B/3B do;
    the calibration model does not)."""

    name: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    ffn: int
    vocab: int
    tied: bool = False
    max_positions: int = 8192

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def params(self) -> int:
        """Exact parameter count of ``LlamaForCausalLM`` with this shape (no biases)."""
        h, kv = self.hidden, self.kv_heads * self.head_dim
        attn = 2 * h * h + 2 * h * kv
        mlp = 3 * h * self.ffn
        per_layer = attn + mlp + 2 * h  # two RMSNorm weights
        embed = self.vocab * h
        head = 0 if self.tied else self.vocab * h
        return self.layers * per_layer + embed + head + h  # final norm

    def kv_bytes_per_token(self, bytes_per_value: int) -> int:
        """KV-cache bytes one token of context occupies across all layers."""
        return 2 * self.layers * self.kv_heads * self.head_dim * bytes_per_value


PRESETS: dict[str, ModelShape] = {
    s.name: s
    for s in (
        # small enough for CPU tests: a forward pass of 2 x 32 tokens takes about a millisecond
        ModelShape("tiny", hidden=64, layers=2, heads=4, kv_heads=2, ffn=172, vocab=512, max_positions=1024),
        # CALIBRATION.md's H100 model: 1.104 B parameters
        ModelShape("llama-1b", hidden=2048, layers=16, heads=32, kv_heads=8, ffn=8192, vocab=32000),
        # Llama 3.2 3B shape
        ModelShape(
            "llama-3b", hidden=3072, layers=28, heads=24, kv_heads=8, ffn=8192, vocab=128256, tied=True
        ),
        # Llama 3.1 8B shape
        ModelShape("llama-8b", hidden=4096, layers=32, heads=32, kv_heads=8, ffn=14336, vocab=128256),
    )
}
ALIASES = {"1b": "llama-1b", "3b": "llama-3b", "8b": "llama-8b"}


def is_preset(name: str) -> bool:
    return name in PRESETS or name in ALIASES


def preset(name: str) -> ModelShape:
    """The preset called ``name`` (``tiny``, ``llama-1b``/``1b``, ``llama-3b``, ``llama-8b``)."""
    from harness.errors import UsageError

    key = ALIASES.get(name, name)
    if key not in PRESETS:
        allowed = ", ".join([*PRESETS, *ALIASES])
        raise UsageError(
            f"unknown model preset {name!r}: choose one of {allowed}, or a local model directory"
        )
    return PRESETS[key]


def training_flops_per_token(params: int) -> float:
    """Forward + backward: 6 FLOPs per parameter per token (attention scores not counted)."""
    return 6.0 * params


def forward_flops_per_token(params: int) -> float:
    """One forward pass (prefill or decode): 2 FLOPs per parameter per token."""
    return 2.0 * params


def shape_from_hf_config(config: Any, name: str) -> ModelShape:
    """A ``ModelShape`` read from a Hugging Face Llama-like config (for local model directories)."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    heads = text.num_attention_heads
    return ModelShape(
        name=name,
        hidden=text.hidden_size,
        layers=text.num_hidden_layers,
        heads=heads,
        kv_heads=getattr(text, "num_key_value_heads", None) or heads,
        ffn=text.intermediate_size,
        vocab=text.vocab_size,
        tied=bool(getattr(text, "tie_word_embeddings", False)),
        max_positions=getattr(text, "max_position_embeddings", 8192),
    )


def hf_config(shape: ModelShape) -> Any:
    """The ``LlamaConfig`` of a preset. No EOS token: generation must run its full length."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=shape.vocab,
        hidden_size=shape.hidden,
        intermediate_size=shape.ffn,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        num_key_value_heads=shape.kv_heads,
        max_position_embeddings=shape.max_positions,
        tie_word_embeddings=shape.tied,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=0,
    )


def resolve(model: str) -> tuple[ModelShape, Path | None]:
    """Shape and (for a local directory) path of ``model``: a preset name or a model directory."""
    path = Path(model).expanduser()
    if not is_preset(model) and path.is_dir():
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(path, local_files_only=True)
        return shape_from_hf_config(config, str(path)), path
    return preset(model), None


def build_model(model: str, *, dtype: Any, device: Any, seed: int = 0, layers: int | None = None) -> Any:
    """A ``LlamaForCausalLM`` (or the local model) on ``device`` in ``dtype``, in eval mode.

    Random weights are initialised directly on the target device, so an 8B preset is built on a
    GPU in seconds without first filling host memory. ``layers`` keeps only the first N decoder
    layers (a pipeline stage's slice).
    """
    import torch

    shape, path = resolve(model)
    torch.manual_seed(seed)
    if path is not None:
        from transformers import AutoModelForCausalLM

        kwargs: dict[str, Any] = {"local_files_only": True, "dtype": dtype}
        if layers is not None:
            kwargs["num_hidden_layers"] = layers
        net = AutoModelForCausalLM.from_pretrained(path, **kwargs).to(device)
    else:
        from transformers import LlamaForCausalLM

        config = hf_config(shape if layers is None else _with_layers(shape, layers))
        with torch.device(device):
            net = LlamaForCausalLM._from_config(config, dtype=dtype)
        net.generation_config.eos_token_id = None
        net.generation_config.pad_token_id = 0
    return net.eval()


def _with_layers(shape: ModelShape, layers: int) -> ModelShape:
    from dataclasses import replace

    return replace(shape, layers=layers)


def count_params(net: Any) -> int:
    """Parameters of a built model (tied weights counted once)."""
    return sum(p.numel() for p in net.parameters())
