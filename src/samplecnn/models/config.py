"""Model configuration: everything needed to rebuild a model, and nothing else.

A `ModelConfig` is what a checkpoint stores and what the registry hands out. The derived
quantities of the m^n-DCNN (frames, first-layer filter, channel widths) are properties
computed from `m`, `n` and `input_samples`, so a config can never disagree with itself.

Two architectures share the config and the builder (`arch`): "mn", the m^n-DCNN on
segments of exactly `input_samples`, and "leenet", PANNs' LeeNet11/LeeNet24 (Kong et al.
2020), the same stack of 3-wide convs with padded pooling and a max+mean head, which
pools over all of time and so takes any length (`whole_clip`).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

ARCHS = ("mn", "leenet")
FRONTENDS = ("raw", "mel")
BLOCKS = ("basic", "se", "rese2", "resse")
LEENET_BLOCKS = ("leenet", "leenet2")
CLASSIFIERS = ("linear", "mlp")


def authors_channels(n: int) -> list[int]:
    """Channel widths of the n pooled modules by the authors' rule.

    The first two modules have 128 channels, the last 512, those between 256
    (3^9: 128, 128, 256 x 6, 512). With n < 3 the last module still gets 512.
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    widths = [128 if i < 2 else 256 for i in range(n)]
    widths[-1] = 512
    return widths


@dataclass
class ModelConfig:
    """Architecture of one m^n-DCNN (sample-level or frame-level) or LeeNet model.

    Attributes:
        arch: "mn" (the m^n-DCNN: segments of exactly `input_samples`) or "leenet" (PANNs'
            LeeNet: the front end is conv(3, stride 3, padding 1, no bias) -> BN -> ReLU,
            each pooled module conv(3, padding 1, no bias) -> BN -> ReLU (twice for block
            "leenet2") -> max-pool(3, padding 1), the head max + mean over time -> dropout
            -> Linear -> ReLU (PANNs' fc1, the `features` layer); it takes any length, and
            `input_samples` is its training window).
        m: filter and pooling length of every pooled module (3 for LeeNet).
        n: number of pooled modules (after the front end; 8 for LeeNet).
        input_samples: segment length in samples; for "mn" a multiple of m**n.
        sample_rate: the rate, in Hz, that the model expects its input at.
        n_tags: number of output logits.
        tags: tag names in output order, or None when unknown.
        frontend: "raw" (strided conv, filter = stride = input_samples / m**n) or "mel"
            (log mel spectrogram with window = hop = input_samples / m**n).
        block: "basic" (conv-BN-ReLU-pool), "se" (basic + squeeze-excitation) or
            "rese2" (two convs with a residual connection and SE, Kim et al. 2018) or
            "resse" (sota-music-tagging-models' ResSE_1d in every layer: the strided front
            end, the pooled modules and the unpooled head conv are each conv-BN-ReLU-conv-BN
            -SE plus a residual, a k-wide conv + BN where the stride or width changes);
            for arch "leenet": "leenet" (one conv per module, LeeNetConvBlock) or "leenet2"
            (two, LeeNetConvBlock2).
        multi_level: replace the 1x1-conv head by the multi-level head (global max-pool
            of the last three blocks, concatenated, FC-BN-ReLU-dropout-FC).
        frontend_channels: output channels of the strided conv (raw front end).
        frontend_padding: zero padding on both sides of the strided conv (0 in the
            authors' model; 1 in ports such as sota-music-tagging-models).
        head_kernel: kernel of the head conv (1 in the authors' model; some ports use a
            3-wide conv with same padding).
        channels: widths of the n pooled modules; None means the authors' rule.
        features: width of the 1x1 conv (or of the multi-level hidden layer).
        width: multiplier applied to every width above (for small CPU models).
        classifier: the output layer: "linear" (dropout -> Linear) or "mlp" (Linear ->
            BN -> ReLU -> dropout -> Linear, hidden width = features; sota's SampleCNNSE).
        dropout: dropout before the output layer (inside the MLP for "mlp"; for LeeNet
            before fc1, the output layer then follows fc1 directly, as in PANNs).
        block_dropout: dropout between the two convs of a ReSE-2 block; for LeeNet after
            the front end and every pooled module but the last.
        last_pool: LeeNet only: whether the last module pools (LeeNet24's does not).
        se_reduction: channel reduction of the squeeze-excitation bottleneck.
        bn_eps: BatchNorm epsilon (1e-5 in the authors' release).
        n_mels, f_min, f_max, log_offset: mel front end settings (f_max None = Nyquist).
    """

    arch: str = "mn"
    m: int = 3
    n: int = 9
    input_samples: int = 59049
    sample_rate: int = 22050
    n_tags: int = 50
    tags: list[str] | None = None
    frontend: str = "raw"
    block: str = "basic"
    multi_level: bool = False
    classifier: str = "linear"
    frontend_channels: int = 128
    frontend_padding: int = 0
    head_kernel: int = 1
    channels: list[int] | None = None
    features: int = 512
    width: float = 1.0
    dropout: float = 0.5
    block_dropout: float = 0.2
    se_reduction: int = 16
    bn_eps: float = 1e-5
    n_mels: int = 128
    f_min: float = 0.0
    f_max: float | None = None
    log_offset: float = 1e-6
    last_pool: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.validate()

    # -- derived quantities ------------------------------------------------------
    @property
    def whole_clip(self) -> bool:
        """The model pools over all of time and takes any length (LeeNet): it is scored
        on unpadded windows (`windows.WindowGrid(..., whole_clip=True)`)."""
        return self.arch == "leenet"

    @property
    def frames(self) -> int:
        """Frames the first layer produces from `input_samples`: m**n (LeeNet: ceil(L/m))."""
        if self.arch == "leenet":
            return -(-self.input_samples // self.m)
        return self.m**self.n

    @property
    def first_filter(self) -> int:
        """Filter length = stride of the first layer (window = hop for mel)."""
        if self.arch == "leenet":
            return self.m
        return self.input_samples // self.frames

    @property
    def layers(self) -> int:
        """Layers up to the output layer: 1 front end + n modules + 1 head layer (LeeNet24:
        two convs per module and front end)."""
        convs = 2 if self.block == "leenet2" else 1
        return convs * (self.n + 1) + 1 if self.arch == "leenet" else self.n + 2

    @property
    def level(self) -> str:
        """"sample" when the first filter is as short as the module filters, else "frame"."""
        return "sample" if self.frontend == "raw" and self.first_filter <= self.m else "frame"

    @property
    def family(self) -> str:
        if self.arch == "leenet":
            return "leenet raw whole-clip"
        if self.frontend == "mel":
            base = "frame-level mel"
        else:
            base = f"{self.level}-level raw"
        if self.block != "basic":
            base += f" {self.block}"
        if self.multi_level:
            base += " multi-level"
        if self.classifier != "linear":
            base += f" {self.classifier}"
        return base

    def _scaled(self, c: int) -> int:
        return max(1, int(round(c * self.width)))

    @property
    def block_channels(self) -> list[int]:
        base = self.channels if self.channels is not None else authors_channels(self.n)
        return [self._scaled(c) for c in base]

    @property
    def frontend_width(self) -> int:
        return self.n_mels if self.frontend == "mel" else self._scaled(self.frontend_channels)

    @property
    def feature_width(self) -> int:
        return self._scaled(self.features)

    @property
    def duration_s(self) -> float:
        return self.input_samples / self.sample_rate

    # -- checks and serialisation ------------------------------------------------
    def validate(self) -> None:
        if self.arch not in ARCHS:
            raise ValueError(f"arch must be one of {ARCHS}, got {self.arch!r}")
        if self.m < 2:
            raise ValueError(f"m must be at least 2, got {self.m}")
        if self.n < 1:
            raise ValueError(f"n must be at least 1, got {self.n}")
        if self.arch == "leenet":
            self._validate_leenet()
            return
        if not self.last_pool:
            raise ValueError("last_pool=False is for arch 'leenet' only")
        if self.input_samples % self.frames:
            raise ValueError(
                f"input_samples={self.input_samples} is not a multiple of m**n={self.frames}"
            )
        if self.frontend not in FRONTENDS:
            raise ValueError(f"frontend must be one of {FRONTENDS}, got {self.frontend!r}")
        if self.block not in BLOCKS:
            raise ValueError(f"block must be one of {BLOCKS} (arch 'mn'), got {self.block!r}")
        if self.classifier not in CLASSIFIERS:
            raise ValueError(f"classifier must be one of {CLASSIFIERS}, got {self.classifier!r}")
        if self.block == "resse" and (self.frontend != "raw" or self.multi_level):
            raise ValueError("block 'resse' needs the raw front end and the conv head")
        # More padding than half a filter would add a frame and break the m**n grid.
        if self.frontend_padding < 0 or 2 * self.frontend_padding >= self.first_filter:
            raise ValueError(
                f"frontend_padding must be in [0, {self.first_filter / 2:g}), got {self.frontend_padding}"
            )
        if self.head_kernel < 1 or self.head_kernel % 2 == 0:
            raise ValueError(f"head_kernel must be a positive odd number, got {self.head_kernel}")
        if self.multi_level and self.n < 3:
            raise ValueError("the multi-level head needs at least 3 modules (n >= 3)")
        self._validate_common()

    def _validate_common(self) -> None:
        if self.channels is not None and len(self.channels) != self.n:
            raise ValueError(f"channels has {len(self.channels)} entries, expected n={self.n}")
        if self.tags is not None:
            if len(self.tags) != self.n_tags:
                raise ValueError(f"{len(self.tags)} tag names given for n_tags={self.n_tags}")
            if len(set(self.tags)) != len(self.tags):
                raise ValueError("tag names must be unique")
        if self.sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {self.sample_rate}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if not 0.0 <= self.block_dropout < 1.0:
            raise ValueError(f"block_dropout must be in [0, 1), got {self.block_dropout}")

    def _validate_leenet(self) -> None:
        # LeeNet is PANNs' layout: only the settings PANNs varies are free.
        if self.block not in LEENET_BLOCKS:
            raise ValueError(f"arch 'leenet' needs block one of {LEENET_BLOCKS}, got {self.block!r}")
        if self.frontend != "raw" or self.multi_level or self.classifier != "linear" or self.head_kernel != 1:
            raise ValueError("arch 'leenet' has the raw front end, the max+mean head and a linear "
                             "output layer (frontend='raw', multi_level=False, classifier='linear', "
                             "head_kernel=1)")
        if self.m != 3 or self.frontend_padding != 1:
            raise ValueError("arch 'leenet' has 3-wide convs and pools with padding 1 "
                             "(m=3, frontend_padding=1)")
        if self.input_samples < 1:
            raise ValueError(f"input_samples must be positive, got {self.input_samples}")
        self._validate_common()

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict; `ModelConfig.from_dict(c.to_dict()) == c`."""
        d = dataclasses.asdict(self)
        d["tags"] = list(self.tags) if self.tags is not None else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown model config keys: {', '.join(unknown)}")
        return cls(**d)

    def replace(self, **changes: Any) -> "ModelConfig":
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise ValueError(f"unknown model option(s): {', '.join(unknown)}")
        return dataclasses.replace(self, **changes)


class ConfigInfo:
    """What inference code reads off a model, from its `config` (a `ModelConfig`): shared
    by `SampleCNN` and its fused inference twin."""

    config: ModelConfig

    @property
    def tags(self) -> list[str] | None:
        return self.config.tags

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    @property
    def input_samples(self) -> int:
        return self.config.input_samples
