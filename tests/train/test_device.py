"""Device and precision (dermlib.train.device), on a CPU: the paper profile's guard against training on a CPU
unseen, the GPU settings `fit` makes, and fp16 + GradScaler where a GPU lacks bf16."""

from __future__ import annotations

import contextlib

import pytest
import torch

from dermlib.train import device as dev


def test_auto_without_cuda_stops_when_the_profile_requires_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match=r"no usable CUDA device.*--set train\.device=cpu"):
        dev.pick_device("auto", require_cuda=True)
    assert dev.pick_device("cpu", require_cuda=True) == torch.device("cpu")  # an explicit CPU is obeyed
    assert dev.pick_device("auto") == torch.device("cpu")  # the demo: CUDA when there is one, else the CPU


def test_cuda_settings_are_made_on_cuda_only() -> None:
    saved = (torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    try:
        torch.backends.cudnn.benchmark = torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        assert dev.configure_cuda(torch.device("cpu")) == {}
        assert not torch.backends.cudnn.benchmark and not torch.backends.cuda.matmul.allow_tf32
        assert dev.configure_cuda(torch.device("cuda", 0)) == {"cudnn_benchmark": True, "tf32": True}
        assert torch.backends.cudnn.benchmark and torch.backends.cuda.matmul.allow_tf32
        assert torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def test_fp16_with_a_scaler_where_the_gpu_has_no_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    cuda, cpu = torch.device("cuda", 0), torch.device("cpu")
    assert dev.amp_dtype(cpu) is None and dev.grad_scaler(cpu) is None
    assert isinstance(dev.autocast(cpu), contextlib.nullcontext)  # fp32 on a CPU, as before
    # the GPU's compute capability decides (is_bf16_supported() also counts emulation, true on a V100 or a T4);
    # the capability query is the one thing this CPU machine cannot answer, so it is given here
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))  # H100
    assert dev.amp_dtype(cuda) == torch.bfloat16 and dev.grad_scaler(cuda) is None
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))  # T4: fp16 + scaler
    assert dev.amp_dtype(cuda) == torch.float16
    with pytest.warns(UserWarning):  # no CUDA here: the scaler says so and disables itself; its type is the point
        assert isinstance(dev.grad_scaler(cuda), torch.amp.GradScaler)
