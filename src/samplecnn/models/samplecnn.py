"""The m^n-DCNN (SampleCNN) family, one builder for every variant.

Lee, Park, Kim and Nam, "Sample-level Deep Convolutional Neural Networks for Music
Auto-tagging Using Raw Waveforms", SMC 2017; SE / ReSE-2 / multi-level from Kim, Lee
and Nam, ICASSP 2018; LeeNet11 / LeeNet24 as PANNs builds them (Kong et al. 2020,
`arch="leenet"`). Layer tables: `../shared/docs/paper-notes.md` and the README.
"""
from __future__ import annotations

import copy
from typing import Iterable

import torch
from torch import nn

from .config import ConfigInfo, ModelConfig
from .layers import (BasicBlock, BlockHead, ConvHead, LeeNetBlock, LeeNetHead, MelFrontend,
                     MLPClassifier, MultiLevelHead, RawFrontend, ReSE2Block, ResSEBlock,
                     ResSEFrontend, he_uniform_, xavier_uniform_)


class LayerStack(ConfigInfo):
    """The forward contract, written once for `SampleCNN` and its inference twin.

    Subclasses hold `config`, `frontend`, `blocks`, `head` and `fc` (and `dropout`), and
    say how a layer's raw output becomes the contract's `(B, C, T)` float tensor
    (`_as_output`: the identity for `SampleCNN`, a view of the channels-last activations
    for `FusedSampleCNN`).
    """

    @property
    def layer_names(self) -> list[str]:
        return ["frontend"] + [f"block{i + 1}" for i in range(len(self.blocks))] + ["features"]

    def _as_output(self, h: torch.Tensor) -> torch.Tensor:
        return h

    def _run(self, x: torch.Tensor, stop: str | None = None) -> dict[str, torch.Tensor]:
        """Raw outputs of every layer up to `stop` (all layers when None)."""
        outs: dict[str, torch.Tensor] = {}
        h = self.frontend(check_audio(self.config, x))
        outs["frontend"] = h
        if stop == "frontend":
            return outs
        block_outs = []
        for i, block in enumerate(self.blocks):
            h = block(h)
            block_outs.append(h)
            outs[f"block{i + 1}"] = h
            if stop == f"block{i + 1}":
                return outs
        outs["features"] = self.head(block_outs)
        return outs

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """`(B, 1, input_samples)` (whole-clip models: any length) -> penultimate features
        `(B, features, 1)`."""
        return self._as_output(self._run(x)["features"])

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """`(B, features, T)` -> logits `(B, n_tags)` (or pooled features if pre_logits).

        T is 1 for inputs of exactly `input_samples`; a max over T keeps the head valid
        for features computed elsewhere at another length.
        """
        pooled = features.amax(dim=-1).float()
        if pre_logits:
            return pooled
        return self.fc(self.dropout(pooled))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(self, x: torch.Tensor, layers: Iterable[str]) -> dict[str, torch.Tensor]:
        """Outputs `(B, C, T)` of the named layers; stops after the deepest one asked for."""
        wanted = list(layers)
        for name in wanted:
            check_layer(self.layer_names, name)
        deepest = max(wanted, key=self.layer_names.index)
        outs = self._run(x, stop=None if deepest == "features" else deepest)
        return {name: self._as_output(outs[name]) for name in wanted}

    def embed(self, x: torch.Tensor, layer: str = "features", pool: str = "mean") -> torch.Tensor:
        """Embedding `(B, C)` of one layer, pooled over time ("mean" or "max")."""
        check_pool(pool)
        h = self.forward_intermediates(x, [layer])[layer]
        return h.mean(dim=-1) if pool == "mean" else h.amax(dim=-1)


class SampleCNN(LayerStack, nn.Module):
    """An m^n-DCNN: front end, n pooled modules, head, linear output layer.

    Input `(B, 1, input_samples)` (or `(B, input_samples)`) float32 audio at
    `config.sample_rate`; output `(B, n_tags)` **logits** -- apply `torch.sigmoid` for
    tag probabilities (the loss, `BCEWithLogitsLoss`, does it internally).

    Forward contract (as in timm): `forward_features` gives the penultimate features
    `(B, features, 1)`, `forward_head` maps them to logits, and `forward_intermediates`
    / `embed` expose any named layer (`layer_names`) for embeddings.
    `fuse_for_inference()` returns the fused inference twin (same contract).
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        config.validate()
        self.config = config
        # Per-tag decision thresholds (`samplecnn.thresholds.Thresholds`), not weights:
        # `load_model` sets them from the checkpoint; checkpoints and exports carry them.
        self.thresholds = None
        if config.arch == "leenet":
            self._build_leenet(config)
            return
        c = config
        if c.frontend == "mel":
            self.frontend: nn.Module = MelFrontend(
                c.first_filter, c.sample_rate, c.n_mels, c.f_min, c.f_max, c.log_offset, c.bn_eps
            )
        elif c.block == "resse":
            self.frontend = ResSEFrontend(1, c.frontend_width, c.first_filter, stride=c.first_filter,
                                          padding=c.frontend_padding, se_reduction=c.se_reduction,
                                          bn_eps=c.bn_eps)
        else:
            self.frontend = RawFrontend(c.first_filter, c.frontend_width, c.bn_eps, c.frontend_padding)
        widths = c.block_channels
        blocks = []
        c_in = c.frontend_width
        for c_out in widths:
            if c.block == "resse":
                blocks.append(ResSEBlock(c_in, c_out, c.m, pool=c.m, padding=c.m // 2,
                                         se_reduction=c.se_reduction, bn_eps=c.bn_eps))
            elif c.block == "rese2":
                blocks.append(ReSE2Block(c_in, c_out, c.m, c.se_reduction, c.block_dropout, c.bn_eps))
            else:
                blocks.append(BasicBlock(c_in, c_out, c.m, c.block == "se", c.se_reduction, c.bn_eps))
            c_in = c_out
        self.blocks = nn.ModuleList(blocks)
        if c.multi_level:
            self.head: nn.Module = MultiLevelHead(widths[-3:], c.feature_width, c.bn_eps)
        elif c.block == "resse":
            self.head = BlockHead(ResSEBlock(c_in, c.feature_width, c.head_kernel,
                                             se_reduction=c.se_reduction, bn_eps=c.bn_eps))
        else:
            self.head = ConvHead(c_in, c.feature_width, c.bn_eps, c.head_kernel)
        if c.classifier == "mlp":
            # The MLP holds its own dropout, between its two linear layers.
            self.dropout: nn.Module = nn.Identity()
            self.fc: nn.Module = MLPClassifier(c.feature_width, c.n_tags, c.dropout, c.bn_eps)
        else:
            self.dropout = nn.Dropout(c.dropout)
            self.fc = nn.Linear(c.feature_width, c.n_tags)
        he_uniform_(self)

    def _build_leenet(self, c: ModelConfig) -> None:
        """PANNs' LeeNet11 / LeeNet24: `frontend` is PANNs' conv_block1, `blocks[i]` its
        conv_block{i+2}, `head.fc1` its fc1 (the `features` layer) and `fc` its
        fc_audioset; no dropout between fc1 and the output layer, as in PANNs."""
        convs = 2 if c.block == "leenet2" else 1
        self.frontend = LeeNetBlock(1, c.frontend_width, stride=c.m, pool=False, convs=convs,
                                    dropout=c.block_dropout, bn_eps=c.bn_eps)
        blocks, c_in = [], c.frontend_width
        for i, c_out in enumerate(c.block_channels):
            last = i == c.n - 1
            blocks.append(LeeNetBlock(c_in, c_out, pool=c.last_pool or not last, convs=convs,
                                      dropout=0.0 if last else c.block_dropout, bn_eps=c.bn_eps))
            c_in = c_out
        self.blocks = nn.ModuleList(blocks)
        self.head = LeeNetHead(c_in, c.feature_width, c.dropout)
        self.dropout = nn.Identity()
        self.fc = nn.Linear(c.feature_width, c.n_tags)
        xavier_uniform_(self)

    # -- metadata ------------------------------------------------------------------
    def layer_width(self, name: str) -> int:
        """Channels of the named layer's output (the size of its embedding)."""
        check_layer(self.layer_names, name)
        if name == "frontend":
            return self.config.frontend_width
        if name == "features":
            return self.config.feature_width
        return self.config.block_channels[int(name[5:]) - 1]

    def num_params(self, trainable_only: bool = True) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    def flops(self) -> int:
        """Forward FLOPs (2 x multiply-adds) of the convolutions, linear layers and the
        mel projection for one input; BN, ReLU and pooling are not counted."""
        return count_flops(self.config)

    # -- inference -------------------------------------------------------------------
    def fuse_for_inference(self, dtype: torch.dtype = torch.float32) -> "FusedSampleCNN":
        """The inference twin: every part replaced by what its `fuse(dtype)` returns."""
        return FusedSampleCNN(self, dtype)


def _fuse(part: nn.Module, dtype: torch.dtype) -> nn.Module:
    fuse = getattr(part, "fuse", None)
    if fuse is None:
        raise TypeError(f"{type(part).__name__} has no inference fusion (a fuse(dtype) method); "
                        "add one to it, or run the plain model")
    return fuse(dtype)


class FusedSampleCNN(LayerStack, nn.Module):
    """Inference-only twin of a `SampleCNN`: channels-last `(B, C, 1, T)` activations,
    BatchNorm folded, ReLU fused (see `samplecnn.models.fused`).

    Same forward contract as the model; intermediates come back as `(B, C, T)` float32
    views (not contiguous). With `dtype=torch.bfloat16` the convolutions run in bf16
    (outputs change by about 1e-2 in logits); the output layer is fp32.
    """

    def __init__(self, model: SampleCNN, dtype: torch.dtype = torch.float32):
        super().__init__()
        model = model.eval()
        self.config = model.config
        self.dtype = dtype
        self.frontend = _fuse(model.frontend, dtype)
        self.blocks = nn.ModuleList(_fuse(b, dtype) for b in model.blocks)
        self.head = _fuse(model.head, dtype)
        self.dropout = nn.Identity()
        self.fc = model.fc.fuse(torch.float32) if hasattr(model.fc, "fuse") else copy.deepcopy(model.fc).float()
        for p in self.parameters():
            p.requires_grad_(False)

    def _as_output(self, h: torch.Tensor) -> torch.Tensor:
        return h.squeeze(2).float()


# The input / layer / pool checks of the forward contract, shared with the inference
# runners (samplecnn.inference) so that every path refuses bad input alike.
def check_audio(config: ModelConfig, x: torch.Tensor) -> torch.Tensor:
    """`(B, n)` or `(B, 1, n)` -> `(B, 1, n)`; ValueError quoting the shape otherwise.
    n is `input_samples`, or any length >= 1 for a whole-clip model."""
    if x.dim() == 2:
        x = x.unsqueeze(1)
    n = "samples" if config.whole_clip else config.input_samples
    if x.dim() != 3 or x.shape[1] != 1:
        raise ValueError(f"expected audio of shape (batch, 1, {n}) or (batch, {n}), got {tuple(x.shape)}")
    if config.whole_clip:
        if x.shape[-1] < 1:
            raise ValueError("expected at least one sample per clip, got 0")
        return x
    if x.shape[-1] != config.input_samples:
        raise ValueError(
            f"expected {config.input_samples} samples per segment "
            f"({config.duration_s:.3f} s at {config.sample_rate} Hz), got {x.shape[-1]}"
        )
    return x


def check_layer(names: list[str], name: str) -> None:
    if name not in names:
        raise ValueError(f"unknown layer {name!r}; choose from {', '.join(names)}")


def check_pool(pool: str) -> None:
    if pool not in ("mean", "max"):
        raise ValueError(f"pool must be 'mean' or 'max', got {pool!r}")


def count_flops(c: ModelConfig) -> int:
    """Forward FLOPs of one input, from the config alone (see `SampleCNN.flops`)."""
    if c.arch == "leenet":
        return _leenet_flops(c)
    macs = 0
    t = c.frames
    if c.frontend == "mel":
        n_freq = c.first_filter // 2 + 1
        # STFT as two real convolutions (cos and sin), then the mel projection.
        macs += t * 2 * n_freq * c.first_filter + t * n_freq * c.n_mels
    else:
        macs += t * c.frontend_width * c.first_filter
    c_in = c.frontend_width
    if c.block == "resse":  # second conv and the strided shortcut of the front end
        macs += t * c_in * c_in * c.first_filter + t * c_in * c.first_filter
    widths = c.block_channels
    for c_out in widths:
        macs += t * c_out * c_in * c.m
        if c.block == "resse":
            macs += t * c_out * c_out * c.m + (t * c_out * c_in * c.m if c_in != c_out else 0)
        if c.block == "rese2":
            macs += t * c_out * c_out * c.m
            if c_in != c_out:
                macs += t * c_out * c_in
        t //= c.m
        if c.block in ("se", "rese2", "resse"):
            hidden = max(1, c_out // c.se_reduction)
            macs += 2 * c_out * hidden
        c_in = c_out
    if c.multi_level:
        macs += sum(widths[-3:]) * c.feature_width
    else:
        macs += t * c_in * c.feature_width * c.head_kernel
        if c.block == "resse":
            f = c.feature_width
            macs += t * f * f * c.head_kernel + 2 * f * max(1, f // c.se_reduction)
            macs += t * f * c_in * c.head_kernel if c_in != f else 0
    if c.classifier == "mlp":
        macs += c.feature_width * c.feature_width
    macs += c.feature_width * c.n_tags
    return 2 * macs


def _leenet_flops(c: ModelConfig) -> int:
    """LeeNet on `input_samples`: every conv at its output length, then fc1 and the output."""
    convs = 2 if c.block == "leenet2" else 1
    t = c.frames
    macs = t * c.frontend_width * c.m + (convs - 1) * t * c.frontend_width ** 2 * c.m
    c_in = c.frontend_width
    for i, c_out in enumerate(c.block_channels):
        macs += t * c_out * c_in * c.m + (convs - 1) * t * c_out * c_out * c.m
        if c.last_pool or i < c.n - 1:
            t = -(-t // c.m)
        c_in = c_out
    macs += c_in * c.feature_width + c.feature_width * c.n_tags
    return 2 * macs
