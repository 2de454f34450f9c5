"""Where and in what precision a run computes: the device (`pick_device`, with the paper profile's guard against
training on a CPU unseen), the GPU settings `fit` turns on (`configure_cuda`: cuDNN autotuning, TF32), autocast
(bf16 where the GPU has it, else fp16 with a gradient scaler: `amp_dtype`, `grad_scaler`) and torch's CPU threads.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch


def pick_device(setting: str = "auto", *, require_cuda: bool = False) -> torch.device:
    """"auto" -> the local CUDA device when there is one (LOCAL_RANK under torchrun), else CPU; with `require_cuda`,
    "auto" without a usable CUDA device raises at once (an explicit "cpu" is always obeyed)."""
    if setting == "auto" and require_cuda and not torch.cuda.is_available():
        raise RuntimeError(
            f"train.device='auto' found no usable CUDA device ({cuda_report()}), and this profile trains "
            "DenseNet121 + PubMedBERT, which takes days on a CPU. Fix the GPU (nvidia-smi must list it; the torch "
            "wheel's CUDA build needs a recent enough NVIDIA driver: see README, 'The paper profile'), or train "
            "on the CPU on purpose with --set train.device=cpu (get_config(..., {'train.device': 'cpu'})).")
    device = torch.device(setting if setting != "auto" else "cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return device


def cuda_report() -> str:
    """One line on why torch sees no GPU: its CUDA build, the device count, CUDA_VISIBLE_DEVICES."""
    build = torch.version.cuda or "none (a CPU-only torch wheel)"
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    try:
        count = torch.cuda.device_count()
    except Exception as err:  # a broken driver may raise here
        count = f"error {type(err).__name__}"
    return (f"torch {torch.__version__} built for CUDA {build}, {count} CUDA devices visible"
            + (f", CUDA_VISIBLE_DEVICES={visible!r}" if visible is not None else ""))


def configure_cuda(device: torch.device) -> dict[str, bool]:
    """On CUDA: cuDNN autotuning (`cudnn.benchmark`: input shapes repeat) and TF32 for float32 matmuls and
    convolutions; nothing on a CPU. Returns the settings made (recorded in a run's resolved config)."""
    if device.type != "cuda":
        return {}
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    return {"cudnn_benchmark": True, "tf32": True}


def amp_dtype(device: torch.device) -> torch.dtype | None:
    """The autocast dtype: bf16 on a GPU that has it, fp16 on one that does not (with `grad_scaler`), none on CPU."""
    if device.type != "cuda":
        return None
    # compute capability 8 (Ampere) and newer have bf16 in hardware; is_bf16_supported() also counts emulation
    return torch.bfloat16 if torch.cuda.get_device_capability(device)[0] >= 8 else torch.float16


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA (fp16 where the GPU lacks bf16), nothing on CPU (fp32)."""
    dtype = amp_dtype(device)
    return torch.autocast("cuda", dtype=dtype) if dtype is not None else contextlib.nullcontext()


def grad_scaler(device: torch.device) -> torch.amp.GradScaler | None:
    """A gradient scaler where autocast is fp16 (its small range needs one), else None."""
    return torch.amp.GradScaler("cuda") if amp_dtype(device) == torch.float16 else None


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """torch on `n` CPU threads inside the block, its thread count restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
