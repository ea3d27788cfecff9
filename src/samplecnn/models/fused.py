"""Inference twins of the building blocks: BatchNorm folded, channels-last, ReLU fused.

Each block of `samplecnn.models.layers` knows how to fuse itself for inference (its
`fuse(dtype)` method, timm's reparameterize pattern) and returns one of the twins below;
`SampleCNN.fuse_for_inference` walks the model and assembles `FusedSampleCNN`. A block
without a `fuse` method is refused, never replaced by another block's twin.

Twins take and return channels-last `(B, C, 1, T)` activations so that oneDNN (CPU) and
cuDNN (GPU) run their NHWC kernels; pooling is a reshape + max over contiguous memory;
the 1-channel strided front end is one matrix product. All fp32 twins equal their block
in eval mode up to float rounding (tests check every registered variant); with
`dtype=torch.bfloat16` the convolutions run in bf16 (an opt-in that changes outputs).
"""
from __future__ import annotations

import copy
import warnings

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["fold_bn", "FusedConv", "FusedRawFrontend", "FusedMelFrontend", "FusedBasicBlock",
           "FusedReSE2Block", "FusedResSEBlock", "FusedMultiLevelHead", "FusedLeeNetBlock", "FusedLeeNetHead",
           "pool_time", "pool_time_padded", "to_channels_last"]


def fold_bn(weight: torch.Tensor, bias: torch.Tensor | None,
            bn: nn.BatchNorm1d) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights `(C_out, ...)` and bias `(C_out,)` of `bn(layer(x))` as one affine layer
    (eval-mode BatchNorm), computed in float64 so folding adds no rounding of its own."""
    w = weight.detach().double()
    b = torch.zeros(w.shape[0], dtype=torch.float64, device=w.device) if bias is None \
        else bias.detach().double()
    var = bn.running_var.detach().double()
    mean = bn.running_mean.detach().double()
    gamma = bn.weight.detach().double() if bn.weight is not None else torch.ones_like(var)
    beta = bn.bias.detach().double() if bn.bias is not None else torch.zeros_like(var)
    scale = gamma / torch.sqrt(var + bn.eps)
    w = w * scale.reshape(-1, *([1] * (w.dim() - 1)))
    b = (b - mean) * scale + beta
    return w.to(weight.dtype), b.to(weight.dtype)


def folded_linear(layer: nn.Linear, bn: nn.BatchNorm1d) -> nn.Linear:
    """A copy of `layer` with the BatchNorm that follows it folded in."""
    new = copy.deepcopy(layer)
    w, b = fold_bn(layer.weight, layer.bias, bn)
    new.weight = nn.Parameter(w, requires_grad=False)
    new.bias = nn.Parameter(b, requires_grad=False)
    return new


def _same_padding(k: int) -> tuple[int, int]:
    # PyTorch's padding="same": the extra zero of an even kernel goes on the right.
    left = (k - 1) // 2
    return left, k - 1 - left


def _pointwise_available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise")


# oneDNN's convolution with a fused ReLU post-op is a private torch op (present in the torch
# versions pyproject allows). Where it is missing, or fails on a build, a twin falls back
# to F.conv2d + relu_ (same numbers; tests run both paths). What a twin uses is its own
# (`FusedConv.pointwise`): one failing model never switches another's kernels.
_HAS_POINTWISE = _pointwise_available()


class FusedConv(nn.Module):
    """Conv1d (+ folded BN) on channels-last `(B, C_in, 1, T)` -> `(B, C_out, 1, T')`,
    with an optional fused ReLU."""

    def __init__(self, layer: nn.Conv1d, bn: nn.BatchNorm1d | None, relu: bool, dtype: torch.dtype):
        super().__init__()
        if bn is not None:
            w, b = fold_bn(layer.weight, layer.bias, bn)
        else:
            w = layer.weight.detach()
            b = layer.bias.detach() if layer.bias is not None else torch.zeros(w.shape[0], device=w.device)
        self.register_buffer("weight", w.unsqueeze(2).to(dtype).contiguous(memory_format=torch.channels_last))
        self.register_buffer("bias", b.to(dtype).contiguous())
        self.relu = relu
        k = layer.kernel_size[0]
        pad = _same_padding(k) if layer.padding == "same" else (int(layer.padding[0]),) * 2
        self.stride = int(layer.stride[0])
        # Symmetric padding goes into the kernel call; asymmetric (even "same" kernels)
        # needs an explicit pad first.
        self.sym_pad = pad[0] if pad[0] == pad[1] else 0
        self.pre_pad = None if pad[0] == pad[1] else pad
        self.pointwise = _HAS_POINTWISE  # this twin's kernel choice (see above)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if self.pre_pad is not None:
            h = F.pad(h, self.pre_pad)
        if h.device.type == "cpu" and self.pointwise:
            try:
                # oneDNN convolution with ReLU as a post-op: one pass over the output.
                return torch.ops.mkldnn._convolution_pointwise(
                    h, self.weight, self.bias, [0, self.sym_pad], [1, self.stride], [1, 1], 1,
                    "relu" if self.relu else "none", [], "")
            except (RuntimeError, NotImplementedError) as err:
                self.pointwise = False
                reason = " ".join(str(err).split())[:200] or type(err).__name__
                warnings.warn(f"samplecnn: oneDNN's fused convolution failed ({reason}); this "
                              "layer uses conv2d + relu from now on (same numbers)",
                              RuntimeWarning, stacklevel=2)
        y = F.conv2d(h, self.weight, self.bias, stride=(1, self.stride), padding=(0, self.sym_pad))
        return y.relu_() if self.relu else y


def pool_time(h: torch.Tensor, m: int) -> torch.Tensor:
    """Max-pool by `m` over time (floor, as MaxPool1d) of a channels-last `(B, C, 1, T)`.

    In channels-last memory each time step is a contiguous row of C values, so the pool
    is a reshape to `(B, T // m, m, C)` and a max over the middle axis: no index tensor,
    vectorised over channels (aten's max_pool2d spends 3x longer here).
    """
    b, c, _, t = h.shape
    if m == 1:
        return h
    t_out = t // m
    rows = h.permute(0, 2, 3, 1)  # (B, 1, T, C), contiguous for channels-last input
    if not rows.is_contiguous():
        rows = rows.contiguous()
    out = rows[:, :, : t_out * m].reshape(b, t_out, m, c).amax(dim=2)
    return out.reshape(b, 1, t_out, c).permute(0, 3, 1, 2)


def pool_time_padded(h: torch.Tensor, m: int) -> torch.Tensor:
    """`F.max_pool1d(kernel m, padding m // 2)` (ceil(T / m) steps) of a channels-last
    `(B, C, 1, T)` of values >= 0 (after a ReLU).

    The pool's implicit padding is -inf; on values >= 0, in windows that each hold at
    least one real value, zeros give the same maxima, so the padded input goes through
    `pool_time`.
    """
    t = h.shape[-1]
    left = m // 2
    t_out = (t + 2 * left - m) // m + 1
    right = t_out * m - t - left
    if right < 0:
        h = h[..., : t + right]
        right = 0
    h = F.pad(h, (left, right)).contiguous(memory_format=torch.channels_last)
    return pool_time(h, m)


def to_channels_last(h: torch.Tensor) -> torch.Tensor:
    """(B, C, T) -> channels-last (B, C, 1, T)."""
    return h.unsqueeze(2).contiguous(memory_format=torch.channels_last)


def squeeze_excite(h: torch.Tensor, se: nn.Module) -> torch.Tensor:
    """The SE gate of `se` (a `layers.SqueezeExcitation`) on channels-last `(B, C, 1, T)`."""
    s = h.mean(dim=(2, 3))
    s = torch.sigmoid(se.fc2(F.relu(se.fc1(s))))
    return h * s[:, :, None, None]


class FusedRawFrontend(nn.Module):
    """Strided front-end conv (filter = stride) + BN + ReLU as one matrix product.

    `(B, 1, T)` -> channels-last `(B, C, 1, T // f)`: the input reshaped to `(B * T/f, f)`
    rows times the folded `(f, C)` weight gives the output directly in channels-last
    order; a 1-channel convolution wastes most of a conv kernel's lanes.
    """

    def __init__(self, conv: nn.Conv1d, bn: nn.BatchNorm1d, dtype: torch.dtype):
        super().__init__()
        w, b = fold_bn(conv.weight, conv.bias, bn)
        self.filter = int(conv.kernel_size[0])
        self.padding = int(conv.padding[0])
        self.register_buffer("weight", w.reshape(w.shape[0], self.filter).t().contiguous().to(dtype))
        self.register_buffer("bias", b.to(dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.padding:
            x = F.pad(x, (self.padding, self.padding))
        b = x.shape[0]
        t = x.shape[-1] // self.filter
        rows = x[..., : t * self.filter].reshape(b * t, self.filter).to(self.weight.dtype)
        h = torch.addmm(self.bias, rows, self.weight).relu_()
        return h.reshape(b, 1, t, -1).permute(0, 3, 1, 2)


class FusedMelFrontend(nn.Module):
    """The mel front end unchanged (its BN has nothing to fold into), then channels-last."""

    def __init__(self, frontend: nn.Module, dtype: torch.dtype):
        super().__init__()
        self.frontend = copy.deepcopy(frontend).eval()
        self.dtype = dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return to_channels_last(self.frontend(x.float()).to(self.dtype))


class FusedBasicBlock(nn.Module):
    """conv + BN + ReLU (one fused call) -> max-pool -> optional SE."""

    def __init__(self, conv: nn.Conv1d, bn: nn.BatchNorm1d, m: int, se: nn.Module | None,
                 dtype: torch.dtype):
        super().__init__()
        self.conv = FusedConv(conv, bn, relu=True, dtype=dtype)
        self.m = int(m)
        self.se = copy.deepcopy(se).to(dtype) if se is not None else None

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        h = pool_time(self.conv(h), self.m)
        return squeeze_excite(h, self.se) if self.se is not None else h


class FusedReSE2Block(nn.Module):
    """ReSE-2 with both BNs and the shortcut's BN folded; dropout is a no-op in eval."""

    def __init__(self, block: nn.Module, dtype: torch.dtype):
        super().__init__()
        self.conv1 = FusedConv(block.conv1[0], block.conv1[1], relu=True, dtype=dtype)
        self.conv2 = FusedConv(block.conv2, block.bn2, relu=False, dtype=dtype)
        self.se = copy.deepcopy(block.se).to(dtype)
        self.shortcut = (FusedConv(block.shortcut[0], block.shortcut[1], relu=False, dtype=dtype)
                         if isinstance(block.shortcut, nn.Sequential) else None)
        self.m = int(block.pool.kernel_size) if isinstance(block.pool, nn.MaxPool1d) else 1

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        y = squeeze_excite(self.conv2(self.conv1(h)), self.se)
        y = y + (self.shortcut(h) if self.shortcut is not None else h)
        # ReLU commutes with max-pooling: pool first, then ReLU on m-times fewer values.
        return pool_time(y, self.m).relu_()


class FusedResSEBlock(FusedReSE2Block):
    """sota's ResSE module with every BN folded (the ReSE-2 twin's parts); `from_audio`
    takes `(B, 1, T)` audio (the front end) instead of channels-last activations."""

    def __init__(self, block: nn.Module, dtype: torch.dtype, from_audio: bool = False):
        super().__init__(block, dtype)
        self.from_audio = from_audio
        self.dtype = dtype

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if self.from_audio:
            h = to_channels_last(h.to(self.dtype))
        return super().forward(h)


class FusedMultiLevelHead(nn.Module):
    def __init__(self, fc: nn.Linear, bn: nn.BatchNorm1d, dtype: torch.dtype):
        super().__init__()
        self.fc = folded_linear(fc, bn).to(dtype)

    def forward(self, blocks: list[torch.Tensor]) -> torch.Tensor:
        pooled = torch.cat([b.amax(dim=(2, 3)) for b in blocks[-3:]], dim=1)
        return F.relu(self.fc(pooled))[:, :, None, None]


class FusedLeeNetBlock(nn.Module):
    """A LeeNet module with its BNs folded and ReLUs fused; dropout is a no-op in eval. The
    front end (1 input channel) takes `(B, 1, T)` audio; the others channels-last."""

    def __init__(self, block: nn.Module, dtype: torch.dtype):
        super().__init__()
        self.from_audio = block.conv1.in_channels == 1
        if self.from_audio and block.conv1.stride[0] == block.conv1.kernel_size[0]:
            self.conv1: nn.Module = FusedRawFrontend(block.conv1, block.bn1, dtype)
        else:
            self.conv1 = FusedConv(block.conv1, block.bn1, relu=True, dtype=dtype)
            if self.from_audio:
                self.conv1 = nn.Sequential(_ToChannelsLast(dtype), self.conv1)
        self.conv2 = FusedConv(block.conv2, block.bn2, relu=True, dtype=dtype) if block.convs == 2 else None
        self.pool = bool(block.pool)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        h = self.conv1(h)
        if self.conv2 is not None:
            h = self.conv2(h)
        return pool_time_padded(h, 3) if self.pool else h


class _ToChannelsLast(nn.Module):
    def __init__(self, dtype: torch.dtype):
        super().__init__()
        self.dtype = dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return to_channels_last(x.to(self.dtype))


class FusedLeeNetHead(nn.Module):
    """Max + mean over time -> fc1 -> ReLU, on channels-last `(B, C, 1, T)`; `(B, F, 1, 1)`."""

    def __init__(self, fc1: nn.Linear, dtype: torch.dtype):
        super().__init__()
        self.fc1 = copy.deepcopy(fc1).float().eval()

    def forward(self, blocks: list[torch.Tensor]) -> torch.Tensor:
        h = blocks[-1].float()
        pooled = h.amax(dim=(2, 3)) + h.mean(dim=(2, 3))
        return F.relu(self.fc1(pooled))[:, :, None, None]
