"""Building blocks of the m^n-DCNN family: front ends, pooled modules, heads.

All modules take and return `(batch, channels, time)` tensors. Every front end, block and
head knows how to fuse itself for inference: `fuse(dtype)` returns its twin from
`samplecnn.models.fused` (BatchNorm folded, channels-last, ReLU fused), timm's
reparameterize pattern; a new block type adds its own `fuse`.
"""
from __future__ import annotations

import copy
import math

import torch
from torch import nn
from torch.nn import functional as F

from . import fused


class ConvBNReLU(nn.Sequential):
    """Conv1d -> BatchNorm1d -> ReLU.

    `padding="same"` keeps the length (odd or even kernels); an int pads both sides.
    """

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1,
                 padding: int | str = 0, bn_eps: float = 1e-5):
        super().__init__(
            nn.Conv1d(c_in, c_out, kernel, stride=stride, padding=padding),
            nn.BatchNorm1d(c_out, eps=bn_eps),
            nn.ReLU(inplace=True),
        )


class RawFrontend(nn.Module):
    """Strided convolution over raw samples (filter = stride, no padding).

    Shapes: `(B, 1, T)` -> `(B, C, T // filter)`.
    """

    def __init__(self, filter_length: int, channels: int, bn_eps: float = 1e-5, padding: int = 0):
        super().__init__()
        self.conv = ConvBNReLU(1, channels, filter_length, stride=filter_length,
                               padding=padding, bn_eps=bn_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)

    def fuse(self, dtype: torch.dtype = torch.float32) -> nn.Module:
        return fused.FusedRawFrontend(self.conv[0], self.conv[1], dtype)


class MelFrontend(nn.Module):
    """Log mel spectrogram with window = hop = frame size, then BatchNorm over bands.

    Shapes: `(B, 1, T)` -> `(B, n_mels, T // frame)`.

    The spectrogram is nnAudio's (STFT as a fixed convolution, so it runs on any device
    and exports to ONNX); frames do not overlap and are not centred, which makes the
    frame grid identical to the raw front end's. BatchNorm stands in for the input
    normalisation that log-mel baselines use, since the stack has none of its own.
    """

    def __init__(self, frame: int, sample_rate: int, n_mels: int, f_min: float,
                 f_max: float | None, log_offset: float, bn_eps: float = 1e-5):
        super().__init__()
        import warnings

        from nnAudio.features import MelSpectrogram

        with warnings.catch_warnings():
            # Short frames give mel bands narrower than one FFT bin; nnAudio warns about
            # the empty filters, which is expected for 27-sample frames.
            warnings.simplefilter("ignore", UserWarning)
            self.spec = MelSpectrogram(
                sr=sample_rate, n_fft=frame, win_length=frame, hop_length=frame,
                n_mels=n_mels, fmin=f_min, fmax=f_max, center=False, power=2.0,
                trainable_mel=False, trainable_STFT=False, verbose=False,
            )
        self.log_offset = log_offset
        self.bn = nn.BatchNorm1d(n_mels, eps=bn_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mel = self.spec(x.squeeze(1))
        return self.bn(torch.log(mel + self.log_offset))

    def fuse(self, dtype: torch.dtype = torch.float32) -> nn.Module:
        return fused.FusedMelFrontend(self, dtype)


class SqueezeExcitation(nn.Module):
    """Channel gating: global average pool -> FC(C/r) -> ReLU -> FC(C) -> sigmoid -> scale.

    Shapes: `(B, C, T)` -> `(B, C, T)`.
    """

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        hidden = max(1, channels // reduction)
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean(dim=-1)
        s = torch.sigmoid(self.fc2(F.relu(self.fc1(s))))
        return x * s.unsqueeze(-1)


class BasicBlock(nn.Module):
    """conv(m, same) -> BN -> ReLU -> max-pool(m), optionally followed by SE.

    Shapes: `(B, C_in, T)` -> `(B, C_out, T // m)`.

    SE comes after the pooling: the gate is a per-channel positive scale, which commutes
    with max-pooling, so gating the m-times shorter signal gives the same output for a
    fraction of the cost.
    """

    def __init__(self, c_in: int, c_out: int, m: int, se: bool = False,
                 se_reduction: int = 16, bn_eps: float = 1e-5):
        super().__init__()
        self.conv = ConvBNReLU(c_in, c_out, m, padding="same", bn_eps=bn_eps)
        self.pool = nn.MaxPool1d(m)
        self.se = SqueezeExcitation(c_out, se_reduction) if se else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.se(self.pool(self.conv(x)))

    def fuse(self, dtype: torch.dtype = torch.float32) -> nn.Module:
        se = self.se if isinstance(self.se, SqueezeExcitation) else None
        return fused.FusedBasicBlock(self.conv[0], self.conv[1], int(self.pool.kernel_size), se, dtype)


class ReSE2Block(nn.Module):
    """ReSE-2 (Kim, Lee and Nam 2018).

    conv -> BN -> ReLU -> dropout -> conv -> BN -> SE, plus the input (through a 1x1
    conv + BN where the width changes), -> ReLU -> max-pool(m).
    Shapes: `(B, C_in, T)` -> `(B, C_out, T // m)`.
    """

    def __init__(self, c_in: int, c_out: int, m: int, se_reduction: int = 16,
                 dropout: float = 0.2, bn_eps: float = 1e-5):
        super().__init__()
        self.conv1 = ConvBNReLU(c_in, c_out, m, padding="same", bn_eps=bn_eps)
        self.drop = nn.Dropout(dropout)
        self.conv2 = nn.Conv1d(c_out, c_out, m, padding="same")
        self.bn2 = nn.BatchNorm1d(c_out, eps=bn_eps)
        self.se = SqueezeExcitation(c_out, se_reduction)
        if c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv1d(c_in, c_out, 1), nn.BatchNorm1d(c_out, eps=bn_eps)
            )
        else:
            self.shortcut = nn.Identity()
        self.pool = nn.MaxPool1d(m)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.se(self.bn2(self.conv2(self.drop(self.conv1(x)))))
        return self.pool(F.relu(y + self.shortcut(x)))

    def fuse(self, dtype: torch.dtype = torch.float32) -> nn.Module:
        return fused.FusedReSE2Block(self, dtype)


class ResSEBlock(nn.Module):
    """Residual squeeze-excitation module as sota-music-tagging-models builds it (ResSE_1d,
    after Kim, Lee and Nam 2018).

    conv(k, stride, pad k//2) -> BN -> ReLU -> conv(k, pad k//2) -> BN -> SE, plus the
    input (through conv(k, stride, pad k//2) -> BN where the stride or the width changes),
    -> ReLU -> max-pool(pool). Shapes: `(B, C_in, T)` -> `(B, C_out, T' // pool)`.
    The same module is the strided front end (pool 1), a pooled module and the head conv.
    """

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1, pool: int = 1,
                 padding: int | None = None, se_reduction: int = 1, bn_eps: float = 1e-5):
        super().__init__()
        pad = kernel // 2 if padding is None else padding
        self.conv1 = ConvBNReLU(c_in, c_out, kernel, stride=stride, padding=pad, bn_eps=bn_eps)
        self.conv2 = nn.Conv1d(c_out, c_out, kernel, padding=kernel // 2)
        self.bn2 = nn.BatchNorm1d(c_out, eps=bn_eps)
        self.se = SqueezeExcitation(c_out, se_reduction)
        if stride != 1 or c_in != c_out:
            self.shortcut: nn.Module = nn.Sequential(
                nn.Conv1d(c_in, c_out, kernel, stride=stride, padding=pad),
                nn.BatchNorm1d(c_out, eps=bn_eps),
            )
        else:
            self.shortcut = nn.Identity()
        self.pool = nn.MaxPool1d(pool) if pool > 1 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.se(self.bn2(self.conv2(self.conv1(x))))
        return self.pool(F.relu(y + self.shortcut(x)))

    def fuse(self, dtype: torch.dtype = torch.float32) -> nn.Module:
        return fused.FusedResSEBlock(self, dtype)


class ResSEFrontend(ResSEBlock):
    """A strided `ResSEBlock` on raw samples (pool 1): `(B, 1, T)` -> `(B, C, T // stride)`."""

    def fuse(self, dtype: torch.dtype = torch.float32) -> nn.Module:
        return fused.FusedResSEBlock(self, dtype, from_audio=True)


class BlockHead(nn.Module):
    """A head made of one unpooled module on the last block: `(B, C, T)` -> `(B, features, T)`."""

    def __init__(self, block: nn.Module):
        super().__init__()
        self.block = block

    def forward(self, blocks: list[torch.Tensor]) -> torch.Tensor:
        return self.block(blocks[-1])

    def fuse(self, dtype: torch.dtype = torch.float32) -> nn.Module:
        # The same head over the block's twin: its forward works on channels-last too.
        return BlockHead(self.block.fuse(dtype))


class MLPClassifier(nn.Module):
    """Linear -> BN -> ReLU -> dropout -> Linear (sota's SampleCNNSE output layers).

    Shapes: `(B, features)` -> `(B, n_tags)`.
    """

    def __init__(self, features: int, n_tags: int, dropout: float = 0.5, bn_eps: float = 1e-5):
        super().__init__()
        self.fc1 = nn.Linear(features, features)
        self.bn = nn.BatchNorm1d(features, eps=bn_eps)
        self.dropout = nn.Dropout(dropout)
        self.fc2 = nn.Linear(features, n_tags)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.dropout(F.relu(self.bn(self.fc1(x)))))

    def fuse(self, dtype: torch.dtype = torch.float32) -> nn.Module:
        # The output layer stays fp32 in every twin (see FusedSampleCNN).
        return nn.Sequential(fused.folded_linear(self.fc1, self.bn).float(), nn.ReLU(),
                             copy.deepcopy(self.fc2).float()).eval()


class ConvHead(nn.Module):
    """The authors' head: 1x1 conv -> BN -> ReLU (the penultimate features).

    Shapes: `(B, C, T)` -> `(B, features, T)`. `kernel` > 1 (same padding) reproduces
    ports that use a wider last conv.
    """

    def __init__(self, c_in: int, features: int, bn_eps: float = 1e-5, kernel: int = 1):
        super().__init__()
        self.conv = ConvBNReLU(c_in, features, kernel, padding=kernel // 2, bn_eps=bn_eps)

    def forward(self, blocks: list[torch.Tensor]) -> torch.Tensor:
        return self.conv(blocks[-1])

    def fuse(self, dtype: torch.dtype = torch.float32) -> nn.Module:
        return BlockHead(fused.FusedConv(self.conv[0], self.conv[1], relu=True, dtype=dtype))


class MultiLevelHead(nn.Module):
    """Global max-pool of the last three blocks, concatenated -> FC -> BN -> ReLU.

    Shapes: three `(B, C_i, T_i)` -> `(B, features, 1)`.
    """

    def __init__(self, widths: list[int], features: int, bn_eps: float = 1e-5):
        super().__init__()
        self.fc = nn.Linear(sum(widths), features)
        self.bn = nn.BatchNorm1d(features, eps=bn_eps)

    def forward(self, blocks: list[torch.Tensor]) -> torch.Tensor:
        pooled = torch.cat([b.amax(dim=-1) for b in blocks[-3:]], dim=1)
        return F.relu(self.bn(self.fc(pooled))).unsqueeze(-1)

    def fuse(self, dtype: torch.dtype = torch.float32) -> nn.Module:
        return fused.FusedMultiLevelHead(self.fc, self.bn, dtype)


class LeeNetBlock(nn.Module):
    """PANNs' LeeNetConvBlock (`convs=1`) / LeeNetConvBlock2 (`convs=2`): conv(3, `stride`,
    padding 1, no bias) -> BN -> ReLU [-> conv(3, padding 1, no bias) -> BN -> ReLU], then
    max-pool(3, padding 1) when `pool`, then dropout. Attribute names follow PANNs
    (`conv1`, `bn1`, `conv2`, `bn2`).

    Shapes: `(B, C_in, T)` -> `(B, C_out, T')`, T' = ceil(T / stride), then ceil(T' / 3)
    when pooled: any length >= 1 stays >= 1.
    """

    def __init__(self, c_in: int, c_out: int, stride: int = 1, pool: bool = True, convs: int = 1,
                 dropout: float = 0.0, bn_eps: float = 1e-5):
        super().__init__()
        self.conv1 = nn.Conv1d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm1d(c_out, eps=bn_eps)
        if convs == 2:
            self.conv2 = nn.Conv1d(c_out, c_out, 3, padding=1, bias=False)
            self.bn2 = nn.BatchNorm1d(c_out, eps=bn_eps)
        self.convs = convs
        self.pool = pool
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        if self.convs == 2:
            x = F.relu(self.bn2(self.conv2(x)))
        if self.pool:
            x = F.max_pool1d(x, kernel_size=3, padding=1)
        return self.drop(x)

    def fuse(self, dtype: torch.dtype = torch.float32) -> nn.Module:
        return fused.FusedLeeNetBlock(self, dtype)


class LeeNetHead(nn.Module):
    """PANNs' LeeNet head: max + mean over time -> dropout -> fc1 -> ReLU (the embedding).

    Shapes: blocks' outputs, the last `(B, C, T)` -> `(B, features, 1)`.
    """

    def __init__(self, c_in: int, features: int, dropout: float = 0.5):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.fc1 = nn.Linear(c_in, features)

    def forward(self, blocks: list[torch.Tensor]) -> torch.Tensor:
        h = blocks[-1]
        pooled = h.amax(dim=-1) + h.mean(dim=-1)
        return F.relu(self.fc1(self.dropout(pooled))).unsqueeze(-1)

    def fuse(self, dtype: torch.dtype = torch.float32) -> nn.Module:
        return fused.FusedLeeNetHead(self.fc1, dtype)


def xavier_uniform_(module: nn.Module) -> None:
    """PANNs' initialisation (`init_layer`, `init_bn`): Xavier-uniform weights, zero
    biases; BatchNorm keeps its ones/zeros."""
    for mod in module.modules():
        if isinstance(mod, (nn.Conv1d, nn.Linear)):
            nn.init.xavier_uniform_(mod.weight)
            if mod.bias is not None:
                nn.init.zeros_(mod.bias)


def he_uniform_(module: nn.Module) -> None:
    """He-uniform weights (Keras `he_uniform`: U(+-sqrt(6 / fan_in))), zero biases.

    This is the authors' initialisation; BatchNorm keeps its ones/zeros.
    """
    for mod in module.modules():
        if isinstance(mod, (nn.Conv1d, nn.Linear)):
            fan_in = mod.weight[0].numel()
            bound = math.sqrt(6.0 / fan_in)
            nn.init.uniform_(mod.weight, -bound, bound)
            if mod.bias is not None:
                nn.init.zeros_(mod.bias)
