"""The precision this machine trains in: what `training.precision: auto` resolves to (bf16 where the GPU or CPU runs
it natively, fp32 elsewhere) and why, the warning for a run emulating bf16 on a CPU or a GPU of compute capability
below 8.0, and the refusal of fp16 on a CPU.
"""
from __future__ import annotations

from typing import Optional

import torch

from t2t_mtl.config import ConfigError


class PrecisionError(ConfigError):
    """The requested precision cannot run on this device."""


def resolve_precision(precision: str, on_gpu: bool) -> str:
    """`training.precision` as trained: "auto" is bf16 where the hardware runs it natively (a GPU of compute
    capability 8.0 or more, Ampere on; a CPU with AVX512-BF16 or AMX, oneDNN allowed to use them — elsewhere bf16
    matmuls are emulated, ~12× slower than fp32 on a CPU) and fp32 otherwise; explicit values are returned as given."""
    if precision != "auto":
        return precision
    return "bf16" if native_bf16(on_gpu) else "fp32"


def native_bf16(on_gpu: bool) -> bool:
    """Whether this machine's GPU (`on_gpu`) or CPU runs bf16 natively: a GPU of compute capability 8.0 or more (an
    older one, a V100 or T4, emulates it: torch's `is_bf16_supported` counts that unless told not to), a CPU with
    AVX512-BF16 or AMX whose oneDNN may use them (`onednn_runs_bf16`)."""
    if on_gpu:
        return torch.cuda.is_bf16_supported(including_emulation=False)
    return cpu_has_bf16() and onednn_runs_bf16()


def cpu_has_bf16() -> bool:
    """Whether this CPU has bf16 instructions: AVX512-BF16 or AMX."""
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def onednn_runs_bf16() -> bool:
    """Whether oneDNN, which runs torch's bf16 matmuls on the CPU, takes bf16: not where ONEDNN_MAX_CPU_ISA holds it
    below (e.g. AVX2), which makes a CPU with AMX emulate bf16 as one without does (a bf16 linear ~9× slower than
    fp32 on this project's Xeon)."""
    return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def auto_precision_reason(on_gpu: bool) -> str:
    """What `training.precision: auto` trains in on this machine, and why, for messages: e.g. "fp32 on this CPU,
    which has neither AVX512-BF16 nor AMX (bf16 would be emulated, ~12× slower)"."""
    if on_gpu:
        if native_bf16(True):
            return "bf16 on this GPU, which supports it"
        return "fp32 on this GPU, which would emulate bf16 (its compute capability is below 8.0)"
    if not cpu_has_bf16():
        return f"fp32 on this CPU, {_NO_BF16_INSTRUCTIONS} (bf16 would be emulated, ~12× slower)"
    if not onednn_runs_bf16():
        return f"fp32 on this CPU, {_ONEDNN_BELOW_BF16}, so bf16 would be emulated, ~12× slower"
    return "bf16 on this CPU, which runs it natively (AVX512-BF16 or AMX)"


#: why a CPU emulates bf16 (`native_bf16` false), for messages: it lacks the instructions, or oneDNN may not use them
_NO_BF16_INSTRUCTIONS = "which has neither AVX512-BF16 nor AMX"


_ONEDNN_BELOW_BF16 = "whose oneDNN is held below bf16 (ONEDNN_MAX_CPU_ISA)"

#: why a GPU emulates bf16, for messages: bf16 tensor cores came with compute capability 8.0 (Ampere)
_GPU_BELOW_BF16 = "whose compute capability is below 8.0 (no bf16 tensor cores)"


def emulated_bf16_warning(precision: str, on_gpu: bool, chosen_by: Optional[str] = None, resumed: bool = False
                          ) -> Optional[str]:
    """The warning for a run training in `precision` "bf16" (as DeepSpeed runs it) on a CPU that emulates bf16
    (`native_bf16` false), ~12× slower than fp32, or on a GPU (`on_gpu`) that does (a V100 or T4); None in another
    precision, or where the device runs bf16 natively (auto never picks bf16 where it is emulated). Its advice is to
    training.precision, or to what chose the precision instead (`chosen_by`, `DeepSpeedAutos.precision_chosen_by`):
    deepspeed.extra's bf16 key, or a deepspeed.config JSON's own bf16 section. A `resumed` run is not told to set
    another precision, which its resume would refuse."""
    if precision != "bf16" or native_bf16(on_gpu):
        return None
    device = "GPU" if on_gpu else "CPU"
    why = _GPU_BELOW_BF16 if on_gpu else _NO_BF16_INSTRUCTIONS if not cpu_has_bf16() else _ONEDNN_BELOW_BF16
    if resumed:
        fix = ("a bf16 checkpoint resumes in bf16 only: resume it on a machine that runs bf16 natively, or start a "
               "new run in fp32 (training.precision: auto, and a new training.output_dir)")
    elif chosen_by is not None and chosen_by.startswith("deepspeed.extra."):  # (it overrides a JSON's section)
        fix = (f"set {chosen_by}.enabled (which chose bf16) to false, with training.precision: auto (fp32 on this "
               f"{device}) or fp32")
    elif chosen_by is not None:
        fix = (f"set the deepspeed.config JSON's bf16 enabled to \"auto\" with training.precision: auto (fp32 on "
               f"this {device}), or to false")
    else:
        fix = f"set training.precision: auto (fp32 on this {device}) or fp32"
    slower = "" if on_gpu else ", about 12× slower than fp32"  # (measured on CPUs only)
    return f"training in bf16 on this {device}, {why}: bf16 is emulated here{slower}; {fix}"


def check_precision(precision: str, on_gpu: bool) -> None:
    """fp16 needs a GPU: DeepSpeed refuses it on CPU, and T5 overflows in fp16 anyway (use bf16)."""
    if precision == "fp16" and not on_gpu:
        raise PrecisionError("training.precision: fp16 is not supported on CPU (DeepSpeed refuses it) and T5 is "
                             "known to overflow in fp16; use auto (the default), bf16 or fp32")
