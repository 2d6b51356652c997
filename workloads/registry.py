"""Workload registry: a profile's ``[workload]`` → a ``Workload`` for a device.

Built-in names are ``training``, ``inference`` and ``endpoint`` (a server under load); anything of the form
``package.module:callable`` is a user's own workload, called as ``callable(config, device)``
(see docs/workloads.md). The same profile runs on a real GPU and on a simulated one: on a device
that accepts simulated load (``supports_sim_load``) the built-ins become their simulated twins.
Heavy libraries (torch, transformers, vllm) are imported only when a workload is built.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from harness.devices.base import Device, supports_sim_load
from harness.errors import UsageError
from workloads.base import Workload

if TYPE_CHECKING:
    from workloads.config import WorkloadConfig

Factory = Callable[["WorkloadConfig", "Device | None"], Workload]


def _training(config: WorkloadConfig, device: Device | None) -> Workload:
    from workloads.training import TrainingOptions, TrainingWorkload

    gpu = device is not None
    return TrainingWorkload(
        TrainingOptions(
            model=config.model,
            batch_size=config.batch_size,
            seq_len=config.seq_len,
            precision=config.precision,
            compile=gpu if config.compile is None else config.compile,
            checkpointing=config.checkpointing,
            layers=config.layers,
            seed=config.seed,
            **config.options,
        )
    )


def _inference(config: WorkloadConfig, device: Device | None) -> Workload:
    engine = config.resolved_engine
    if engine == "vllm":
        from workloads.vllm_inference import VllmInference, VllmOptions

        return VllmInference(
            VllmOptions(
                model=config.model,
                batch_size=config.batch_size,
                input_len=config.input_len,
                output_len=config.output_len,
                precision=config.precision,
                phases=config.resolved_phases,
                seed=config.seed,
                engine_args=dict(config.options),
            )
        )
    from workloads.hf_inference import HFInference, InferenceOptions

    return HFInference(
        InferenceOptions(
            model=config.model,
            engine=engine,
            batch_size=config.batch_size,
            input_len=config.input_len,
            output_len=config.output_len,
            precision=config.precision,
            compile=config.compile,
            phases=config.resolved_phases,
            seed=config.seed,
            **config.options,
        )
    )


def _endpoint(config: WorkloadConfig, device: Device | None) -> Workload:
    from workloads.endpoint import EndpointWorkload

    return EndpointWorkload(config)


BUILTIN: dict[str, Factory] = {"training": _training, "inference": _inference, "endpoint": _endpoint}


def get(config: WorkloadConfig, device: Device | None = None) -> Workload:
    """The workload ``config`` describes, for ``device`` (None: the host CPU)."""
    if config.is_user:
        if device is not None and supports_sim_load(device):
            raise UsageError(f"workload {config.name!r} runs real code, which a simulated GPU cannot time: run it on a "
                             "GPU (--backend nvml), or use a built-in workload on simulated parts")
        return _user(config, device)
    if device is not None and supports_sim_load(device):
        if config.name == "endpoint":
            from workloads.serving_twin import ServingTwin

            return ServingTwin(config)
        from workloads.simulated import twin

        return twin(config)
    try:
        factory = BUILTIN[config.name]
    except KeyError as err:
        raise UsageError(f"unknown workload {config.name!r}; built-in: {', '.join(BUILTIN)}") from err
    try:
        return factory(config, device)
    except TypeError as e:  # an unknown key in [workload].options
        raise UsageError(f"workload {config.name!r}: bad option in [workload].options: {e}") from e


def load_callable(target: str) -> Callable[..., Any]:
    """Import ``package.module:callable``; every failure is one ``UsageError`` line."""
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise UsageError(f"workload {target!r}: expected 'package.module:callable'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise UsageError(f"workload {target!r}: cannot import module {module_name!r} ({e})") from e
    try:
        obj = getattr(module, attr)
    except AttributeError as err:
        raise UsageError(f"workload {target!r}: module {module_name!r} has no attribute {attr!r}") from err
    if not callable(obj):
        raise UsageError(f"workload {target!r}: {attr!r} is not callable")
    return obj


def _user(config: WorkloadConfig, device: Device | None) -> Workload:
    make = load_callable(config.name)
    workload = make(config, device)
    if not isinstance(workload, Workload):
        missing = [m for m in ("spec", "phases", "prepare", "step", "synchronize", "close")
                   if not hasattr(workload, m)]
        raise UsageError(
            f"workload {config.name!r} returned a {type(workload).__name__}, which lacks "
            f"{', '.join(missing)} of the Workload protocol (workloads/base.py)"
        )
    return workload
