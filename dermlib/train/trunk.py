"""The part of a frozen image trunk that trains before its pooling: low-rank adapters on EfficientNet-Lite0's head.

EfficientNet-Lite0 ends in conv_head (a bias-free 1x1 conv, 320 -> 1280 channels), a batch norm `_bn1`, ReLU6 and
the global average pool. With `train.trunk_adapter_rank` = r > 0 the trunk stays frozen and pretrained, and its
head becomes

    pool(relu6(BN_affine(W·x + B·A·x)))

where x is the last MBConv block's output, W the frozen conv_head, A (r x 320) and B (1280 x r) a low-rank
adapter (LoRA) and BN_affine the batch norm with its frozen running statistics (eval mode) but a trainable
weight and bias. B starts at zero and the affine at the pretrained values, so a run starts from exactly the
pretrained trunk; A is drawn from the run's seed by a generator of its own (`ConvHeadAdapter.reset_parameters`),
so that Img and every multimodal strategy of one seed start from the same adapter too.

The frozen part is computed once per image and view (`dermlib.train.features`): the *maps* [x, W·x], shape
(N, P, 320 + 1280) with P = h·w positions, channels last. `ConvHeadAdapter` computes the head from them; raw images
go through the same function (`trunk_maps` then the adapter), so the cached and the raw path agree up to the
cache's float16 rounding. On a CPU the head runs in chunks of `CPU_CHUNK` images whose intermediates stay in
cache, with a hand-written backward (`_AdaptedHead`) that recomputes them instead of keeping four (N·P, 1280)
tensors: what `benchmarks/bench_trunk_adapter.py` measured as the cheapest way (results/trunk_adapter.json).
"""

from __future__ import annotations

import math

import torch
from torch import nn

# the adapter's A is drawn from this + the run's seed: a stream of its own, apart from the heads' (seed, seed + 1)
ADAPTER_SEED_OFFSET = 2**32
CPU_CHUNK = 8  # images per chunk of the head on a CPU: 8 x 16 positions x 1280 channels x 4 B = 655 KB per tensor
RELU6_MAX = 6.0


def efficientnet_blocks(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The stem and every MBConv block of an efficientnet_lite_pytorch EfficientNet, as its `extract_features`
    computes them (drop connect only in training mode): (N, 3, H, W) normalised images -> (N, 320, h, w)."""
    x = net._swish(net._bn0(net._conv_stem(x)))
    for idx, block in enumerate(net._blocks):
        rate = net._global_params.drop_connect_rate
        if rate:
            rate *= float(idx) / len(net._blocks)
        x = block(x, drop_connect_rate=rate)
    return x


def trunk_maps(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The frozen maps of normalised images: [last block's output x, conv_head(x)] per position, (N, P, 320 + 1280)
    float32, channels last (what the feature cache holds, in float16)."""
    blocks = efficientnet_blocks(net, x)
    head = net._conv_head(blocks)
    return torch.cat([blocks, head], dim=1).flatten(2).transpose(1, 2).float().contiguous()


class _AdaptedHead(torch.autograd.Function):
    """mean_p relu6(s ⊙ (W·x + x·Aᵀ·Bᵀ) + t) from maps [x, W·x] (N, P, Cin + Cout), in chunks of images; the
    backward recomputes each chunk's pre-activation rather than keeping it (gradients for A, B, s and t only:
    the maps are data)."""

    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda", cast_inputs=torch.float32)
    def forward(ctx, maps: torch.Tensor, a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor,
                shift: torch.Tensor, chunk: int) -> torch.Tensor:
        n, p, _ = maps.shape
        c_in, c_out = a.shape[1], b.shape[0]
        out = torch.empty(n, c_out, dtype=torch.float32, device=maps.device)
        for i in range(0, n, chunk):
            part = maps[i: i + chunk].float()
            x, wx = part[..., :c_in].reshape(-1, c_in), part[..., c_in:].reshape(-1, c_out)
            z = torch.addmm(wx, x @ a.T, b.T)
            torch.addcmul(shift, z, scale, out=z).clamp_(0.0, RELU6_MAX)  # in place: one pass each
            torch.sum(z.view(-1, p, c_out), dim=1, out=out[i: i + chunk])
        ctx.save_for_backward(maps, a, b, scale, shift)
        ctx.chunk = chunk
        return out.div_(p)

    @staticmethod
    @torch.amp.custom_bwd(device_type="cuda")
    def backward(ctx, grad: torch.Tensor):
        maps, a, b, scale, shift = ctx.saved_tensors
        n, p, _ = maps.shape
        c_in, c_out = a.shape[1], b.shape[0]
        grad = grad.float() / p  # the mean over positions
        grad_a = torch.zeros_like(a)
        grad_bt = torch.zeros(b.shape[1], c_out, dtype=b.dtype, device=b.device)  # Bᵀ's gradient, summed
        grad_scale, grad_shift = torch.zeros_like(scale), torch.zeros_like(shift)
        scaled_bt = (b * scale[:, None]).T  # (r, Cout): d z / d(x·Aᵀ) = s ⊙ B
        chunk = ctx.chunk
        for i in range(0, n, chunk):
            part = maps[i: i + chunk].float()
            x, wx = part[..., :c_in].reshape(-1, c_in), part[..., c_in:].reshape(-1, c_out)
            ax = x @ a.T
            h = torch.addmm(wx, ax, b.T)  # the pre-activation before the affine
            z = torch.addcmul(shift, h, scale)
            m = len(x) // p
            gz = torch.ops.aten.hardtanh_backward(grad[i: i + chunk, None, :].expand(m, p, c_out),
                                                  z.view(m, p, c_out), 0.0, RELU6_MAX).view(-1, c_out)
            grad_shift += gz.sum(0)
            grad_scale += h.mul_(gz).sum(0)
            grad_bt.addmm_(ax.T, gz)
            grad_a.addmm_(torch.mm(scaled_bt, gz.T), x)  # (r, M) @ (M, Cin)
        return None, grad_a, grad_bt.T * scale[:, None], grad_scale, grad_shift, None


class ConvHeadAdapter(nn.Module):
    """pool(relu6(BN_affine(W·x + B·A·x))) of the frozen maps [x, W·x] (N, P, Cin + Cout) -> (N, Cout).

    A (rank x Cin) and B (Cout x rank) are the low-rank adapter of the frozen 1x1 conv W; `bn_weight` and
    `bn_bias` the trainable affine of the trunk's batch norm, whose running statistics stay frozen (they are read
    from the trunk's own module at every call, never copied here).
    """

    def __init__(self, in_channels: int, out_channels: int, rank: int, bn: nn.BatchNorm2d, seed: int = 0) -> None:
        super().__init__()
        if rank < 1:
            raise ValueError(f"an adapter needs rank >= 1, got {rank}")
        self.rank, self.in_channels, self.out_channels = rank, in_channels, out_channels
        self.A = nn.Parameter(torch.zeros(rank, in_channels))
        self.B = nn.Parameter(torch.zeros(out_channels, rank))
        self.bn_weight = nn.Parameter(bn.weight.detach().clone())
        self.bn_bias = nn.Parameter(bn.bias.detach().clone())
        self.reset_parameters(seed, bn)

    def reset_parameters(self, seed: int, bn: nn.BatchNorm2d) -> None:
        """A uniform in ±1/sqrt(Cin) (LoRA's init, as nn.Linear's) from a generator seeded by `seed` alone, B = 0,
        the affine = `bn`'s pretrained weight and bias (the global random state is not touched)."""
        gen = torch.Generator().manual_seed(ADAPTER_SEED_OFFSET + int(seed))
        bound = 1.0 / math.sqrt(self.in_channels)
        with torch.no_grad():
            values = torch.rand(self.A.shape, generator=gen, dtype=torch.float32) * (2 * bound) - bound
            self.A.copy_(values)
            self.B.zero_()
            self.bn_weight.copy_(bn.weight)
            self.bn_bias.copy_(bn.bias)

    def forward(self, maps: torch.Tensor, bn: nn.BatchNorm2d) -> torch.Tensor:
        if maps.ndim != 3 or maps.shape[2] != self.in_channels + self.out_channels:
            raise ValueError(f"maps must be (N, P, {self.in_channels + self.out_channels}), got {tuple(maps.shape)}")
        scale = self.bn_weight * torch.rsqrt(bn.running_var + bn.eps)
        shift = self.bn_bias - bn.running_mean * scale
        chunk = CPU_CHUNK if maps.device.type == "cpu" else max(len(maps), 1)
        return _AdaptedHead.apply(maps, self.A, self.B, scale, shift, chunk)

