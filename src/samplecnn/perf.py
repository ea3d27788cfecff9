"""Fast paths for SampleCNN inference.

Inference (`optimize_for_inference`) returns a module with the forward contract the
tagging code uses (`forward`, `forward_features`, `forward_head`, `forward_intermediates`,
`embed`, `layer_names`, `config`), built one of three ways:

- ``"onnxruntime"`` (the CPU default): the eval model exported to ONNX in memory and run
  by ONNX Runtime, whose graph optimiser fuses Conv + BN + ReLU and whose convolution
  kernels beat PyTorch's on these CPUs (see docs/performance.md for figures).
- ``"torch"``: `FusedSampleCNN`, BatchNorm folded into the convolutions, activations kept
  as channels-last `(B, C, 1, T)` tensors so oneDNN (CPU) / cuDNN (GPU) run their fast
  NHWC kernels, ReLU fused into the convolution (oneDNN post-op), pooling as a reshape +
  max over contiguous memory, the 1-channel first layer as one matrix product. Used on
  GPUs, for `forward_intermediates`, and for bf16.
- ``"eager"``: `fold_batchnorm` only (any variant, any device).

All fp32 paths equal the plain model up to float rounding (tests check it). bf16 is an
opt-in: it changes outputs (measured in BENCHMARKS.md).
"""
from __future__ import annotations

import copy
import io
import warnings
from typing import Iterable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .models.config import ConfigInfo
from .models.samplecnn import check_audio, check_layer, check_pool
from .models.layers import (BasicBlock, ConvHead, MelFrontend, MultiLevelHead, RawFrontend,
                            ReSE2Block, SqueezeExcitation)

__all__ = [
    "BACKENDS", "PRECISIONS", "fold_batchnorm", "FusedSampleCNN", "OrtSampleCNN",
    "optimize_for_inference",
]

BACKENDS = ("auto", "onnxruntime", "torch", "eager")
PRECISIONS = ("fp32", "bf16")


# -- BatchNorm folding -------------------------------------------------------------------
def _fold_params(weight: torch.Tensor, bias: torch.Tensor | None,
                 bn: nn.BatchNorm1d) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights `(C_out, ...)` and bias `(C_out,)` of `bn(layer(x))` as one affine layer.

    Computed in float64 so folding adds no rounding of its own beyond the final cast.
    """
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


def _folded_linear_layer(layer: nn.Conv1d | nn.Linear, bn: nn.BatchNorm1d) -> nn.Module:
    new = copy.deepcopy(layer)
    w, b = _fold_params(layer.weight, layer.bias, bn)
    new.weight = nn.Parameter(w, requires_grad=False)
    new.bias = nn.Parameter(b, requires_grad=False)
    return new


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of `model` (eval mode) with every BatchNorm that follows a Conv1d / Linear
    folded into that layer and replaced by `nn.Identity`.

    Works on every variant and device; outputs equal the eval model's up to rounding.
    BatchNorms with nothing to fold into (the mel front end's) stay. Training the result
    would be wrong (BN statistics are frozen), so its parameters do not require grad.
    """
    model = copy.deepcopy(model).eval()
    for module in list(model.modules()):
        if isinstance(module, nn.Sequential):
            children = list(module.children())
            for i in range(len(children) - 1):
                layer, bn = children[i], children[i + 1]
                if isinstance(layer, (nn.Conv1d, nn.Linear)) and isinstance(bn, nn.BatchNorm1d):
                    module[i] = _folded_linear_layer(layer, bn)
                    module[i + 1] = nn.Identity()
        if isinstance(module, ReSE2Block):
            module.conv2 = _folded_linear_layer(module.conv2, module.bn2)
            module.bn2 = nn.Identity()
        if isinstance(module, MultiLevelHead):
            module.fc = _folded_linear_layer(module.fc, module.bn)
            module.bn = nn.Identity()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


# -- the fused PyTorch path --------------------------------------------------------------
def _conv_weight(layer: nn.Conv1d, bn: nn.BatchNorm1d | None, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Conv1d (+ BN) -> channels-last Conv2d weight `(C_out, C_in, 1, k)` and bias `(C_out,)`."""
    if bn is not None:
        w, b = _fold_params(layer.weight, layer.bias, bn)
    else:
        w = layer.weight.detach()
        b = layer.bias.detach() if layer.bias is not None else torch.zeros(w.shape[0], device=w.device)
    w4 = w.unsqueeze(2).to(dtype).contiguous(memory_format=torch.channels_last)
    return w4, b.to(dtype).contiguous()


def _same_padding(k: int) -> tuple[int, int]:
    # PyTorch's padding="same": the extra zero of an even kernel goes on the right.
    left = (k - 1) // 2
    return left, k - 1 - left


class _Conv(nn.Module):
    """A folded convolution on channels-last `(B, C_in, 1, T)` -> `(B, C_out, 1, T')`,
    with an optional fused ReLU."""

    def __init__(self, layer: nn.Conv1d, bn: nn.BatchNorm1d | None, relu: bool, dtype):
        super().__init__()
        w, b = _conv_weight(layer, bn, dtype)
        self.register_buffer("weight", w)
        self.register_buffer("bias", b)
        self.relu = relu
        k = layer.kernel_size[0]
        if layer.padding == "same":
            pad = _same_padding(k)
        else:
            pad = (int(layer.padding[0]),) * 2
        self.stride = int(layer.stride[0])
        # Symmetric padding goes into the kernel call; asymmetric (even "same" kernels)
        # needs an explicit pad first.
        self.sym_pad = pad[0] if pad[0] == pad[1] else 0
        self.pre_pad = None if pad[0] == pad[1] else pad

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if self.pre_pad is not None:
            h = F.pad(h, self.pre_pad)
        if h.device.type == "cpu" and _HAS_POINTWISE:
            # oneDNN convolution with ReLU as a post-op: one pass over the output.
            return torch.ops.mkldnn._convolution_pointwise(
                h, self.weight, self.bias, [0, self.sym_pad], [1, self.stride], [1, 1], 1,
                "relu" if self.relu else "none", [], "")
        y = F.conv2d(h, self.weight, self.bias, stride=(1, self.stride), padding=(0, self.sym_pad))
        return y.relu_() if self.relu else y


_HAS_POINTWISE = (torch.backends.mkldnn.is_available()
                  and hasattr(torch.ops.mkldnn, "_convolution_pointwise"))


def _pool_time(h: torch.Tensor, m: int) -> torch.Tensor:
    """Max-pool by `m` over time (floor, as MaxPool1d) of a channels-last `(B, C, 1, T)`.

    In channels-last memory each time step is a contiguous row of C values, so the pool
    is a reshape to `(B, T // m, m, C)` and a max over the middle axis: no index tensor,
    fully vectorised over channels (aten's max_pool2d spends 3x longer here).
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


def _to_cl(h: torch.Tensor) -> torch.Tensor:
    """(B, C, T) -> channels-last (B, C, 1, T)."""
    return h.unsqueeze(2).contiguous(memory_format=torch.channels_last)


class _RawFront(nn.Module):
    """Strided front-end conv (filter = stride) as one matrix product.

    `(B, 1, T)` -> channels-last `(B, C, 1, T // f)`: the input reshaped to
    `(B * T/f, f)` rows times the folded `(f, C)` weight gives the output directly in
    channels-last order; a 1-channel convolution wastes most of a conv kernel's lanes.
    """

    def __init__(self, frontend: RawFrontend, dtype):
        super().__init__()
        conv, bn = frontend.conv[0], frontend.conv[1]
        w, b = _fold_params(conv.weight, conv.bias, bn)
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


class _MelFront(nn.Module):
    """The mel front end unchanged (its BN has nothing to fold into), then channels-last."""

    def __init__(self, frontend: MelFrontend, dtype):
        super().__init__()
        self.frontend = copy.deepcopy(frontend).eval()
        self.dtype = dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _to_cl(self.frontend(x.float()).to(self.dtype))


def _se(h: torch.Tensor, se: SqueezeExcitation) -> torch.Tensor:
    s = h.mean(dim=(2, 3))
    s = torch.sigmoid(se.fc2(F.relu(se.fc1(s))))
    return h * s[:, :, None, None]


class _Basic(nn.Module):
    """conv + BN + ReLU (one fused call) -> max-pool -> optional SE."""

    def __init__(self, block: BasicBlock, dtype):
        super().__init__()
        self.conv = _Conv(block.conv[0], block.conv[1], relu=True, dtype=dtype)
        self.m = int(block.pool.kernel_size)
        self.se = copy.deepcopy(block.se).to(dtype) if isinstance(block.se, SqueezeExcitation) else None

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        h = _pool_time(self.conv(h), self.m)
        return _se(h, self.se) if self.se is not None else h


class _ReSE2(nn.Module):
    """ReSE-2 with both BNs and the shortcut's BN folded; dropout is a no-op in eval."""

    def __init__(self, block: ReSE2Block, dtype):
        super().__init__()
        self.conv1 = _Conv(block.conv1[0], block.conv1[1], relu=True, dtype=dtype)
        self.conv2 = _Conv(block.conv2, block.bn2, relu=False, dtype=dtype)
        self.se = copy.deepcopy(block.se).to(dtype)
        self.shortcut = (_Conv(block.shortcut[0], block.shortcut[1], relu=False, dtype=dtype)
                         if isinstance(block.shortcut, nn.Sequential) else None)
        self.m = int(block.pool.kernel_size)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        y = _se(self.conv2(self.conv1(h)), self.se)
        y = y + (self.shortcut(h) if self.shortcut is not None else h)
        # ReLU commutes with max-pooling: pool first, then ReLU on m-times fewer values.
        return _pool_time(y, self.m).relu_()


class _ConvHead(nn.Module):
    def __init__(self, head: ConvHead, dtype):
        super().__init__()
        self.conv = _Conv(head.conv[0], head.conv[1], relu=True, dtype=dtype)

    def forward(self, blocks: list[torch.Tensor]) -> torch.Tensor:
        return self.conv(blocks[-1])


class _MLHead(nn.Module):
    def __init__(self, head: MultiLevelHead, dtype):
        super().__init__()
        self.fc = _folded_linear_layer(head.fc, head.bn).to(dtype)

    def forward(self, blocks: list[torch.Tensor]) -> torch.Tensor:
        pooled = torch.cat([b.amax(dim=(2, 3)) for b in blocks[-3:]], dim=1)
        return F.relu(self.fc(pooled))[:, :, None, None]


class FusedSampleCNN(ConfigInfo, nn.Module):
    """Inference-only SampleCNN on channels-last `(B, C, 1, T)` activations, BN folded.

    Input `(B, 1, input_samples)` or `(B, input_samples)`; `forward` -> logits
    `(B, n_tags)` float32. Intermediates are returned as `(B, C, T)` views (not
    contiguous). With `dtype=torch.bfloat16` the convolutions run in bf16 (outputs
    change by about 1e-2 in logits; see docs/performance.md); the output layer is fp32.
    """

    def __init__(self, model: nn.Module, dtype: torch.dtype = torch.float32):
        super().__init__()
        model = model.eval()
        self.config = model.config
        self.dtype = dtype
        fe = model.frontend
        self.frontend = _RawFront(fe, dtype) if isinstance(fe, RawFrontend) else _MelFront(fe, dtype)
        self.blocks = nn.ModuleList(
            _ReSE2(b, dtype) if isinstance(b, ReSE2Block) else _Basic(b, dtype) for b in model.blocks)
        self.head = _MLHead(model.head, dtype) if isinstance(model.head, MultiLevelHead) \
            else _ConvHead(model.head, dtype)
        self.fc = copy.deepcopy(model.fc).float()
        self.layer_names = list(model.layer_names)
        for p in self.parameters():
            p.requires_grad_(False)

    def _run(self, x: torch.Tensor, stop: str | None = None) -> dict[str, torch.Tensor]:
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

    @staticmethod
    def _as_3d(h: torch.Tensor) -> torch.Tensor:
        return h.squeeze(2).float()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """`(B, 1, input_samples)` -> `(B, features, 1)`."""
        return self._as_3d(self._run(x)["features"])

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """`(B, features, T)` -> logits `(B, n_tags)` (dropout is the identity in eval)."""
        pooled = features.amax(dim=-1).float()
        return pooled if pre_logits else self.fc(pooled)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`(B, 1, input_samples)` -> logits `(B, n_tags)`."""
        feats = self._run(x)["features"]
        return self.fc(feats.amax(dim=(2, 3)).float())

    def forward_intermediates(self, x: torch.Tensor, layers: Iterable[str]) -> dict[str, torch.Tensor]:
        """Outputs `(B, C, T)` of the named layers (float32 views)."""
        wanted = list(layers)
        for name in wanted:
            check_layer(self.layer_names, name)
        deepest = max(wanted, key=self.layer_names.index)
        outs = self._run(x, stop=None if deepest == "features" else deepest)
        return {name: self._as_3d(outs[name]) for name in wanted}

    def embed(self, x: torch.Tensor, layer: str = "features", pool: str = "mean") -> torch.Tensor:
        """`(B, 1, input_samples)` -> `(B, C)`: one layer pooled over time."""
        check_pool(pool)
        h = self.forward_intermediates(x, [layer])[layer]
        return h.mean(dim=-1) if pool == "mean" else h.amax(dim=-1)


# -- ONNX Runtime ------------------------------------------------------------------------
class _Logits(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class _PooledLayers(nn.Module):
    """Every layer's time-mean and time-max `(B, C)`: what `embed` can ask for."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor):
        outs = self.model.forward_intermediates(x, self.model.layer_names)
        res = []
        for name in self.model.layer_names:
            res += [outs[name].mean(dim=-1), outs[name].amax(dim=-1)]
        return tuple(res)


def _export_onnx(module: nn.Module, n_samples: int, output_names: list[str]) -> bytes:
    buf = io.BytesIO()
    x = torch.zeros(2, 1, n_samples)
    with warnings.catch_warnings(), torch.no_grad():
        # The legacy (TorchScript) exporter needs no onnxscript; its deprecation and
        # tracer warnings about the input-shape checks are expected.
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (x,), buf, input_names=["audio"], output_names=output_names,
                          dynamic_axes={"audio": {0: "batch"}, **{n: {0: "batch"} for n in output_names}},
                          opset_version=17, dynamo=False)
    return buf.getvalue()


class OrtSampleCNN(ConfigInfo, nn.Module):
    """A SampleCNN run by ONNX Runtime (CPU), behind the torch forward contract.

    `forward`: `(B, 1, input_samples)` float32 tensor -> logits `(B, n_tags)` tensor.
    `embed` uses a second session (built on first use) that outputs every layer's
    time-mean and time-max; `forward_features` / `forward_intermediates` run the fused
    PyTorch path (they need whole activations, which the ONNX graph does not expose).

    Args:
        threads: intra-op threads (default: torch's thread count).
        spin: let idle ORT threads spin; off by default so decode workers running beside
            the model get the cores (costs ~1-3 % of model speed when nothing else runs).
    """

    def __init__(self, model: nn.Module, threads: int | None = None, spin: bool = False):
        super().__init__()
        import onnxruntime as ort

        self._ort = ort
        model = copy.deepcopy(model).eval().float().cpu()
        self.config = model.config
        self.layer_names = list(model.layer_names)
        self.threads = int(threads or torch.get_num_threads())
        self.spin = spin
        self._model = model
        self._fused: FusedSampleCNN | None = None
        self._embed_session = None
        self.session = self._session(_export_onnx(_Logits(model), model.input_samples, ["logits"]))

    def _session(self, onnx_bytes: bytes):
        opts = self._ort.SessionOptions()
        opts.graph_optimization_level = self._ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if self.spin else "0")
        return self._ort.InferenceSession(onnx_bytes, opts, providers=["CPUExecutionProvider"])

    def _numpy(self, x: torch.Tensor) -> np.ndarray:
        x = check_audio(self.config, x)
        return np.ascontiguousarray(x.detach().float().cpu().numpy())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`(B, 1, input_samples)` -> logits `(B, n_tags)`."""
        (logits,) = self.session.run(["logits"], {"audio": self._numpy(x)})
        return torch.from_numpy(logits)

    def _fused_model(self) -> FusedSampleCNN:
        if self._fused is None:
            self._fused = FusedSampleCNN(self._model)
        return self._fused

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self._fused_model().forward_features(x)

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self._fused_model().forward_head(features, pre_logits)

    def forward_intermediates(self, x: torch.Tensor, layers: Iterable[str]) -> dict[str, torch.Tensor]:
        return self._fused_model().forward_intermediates(x, layers)

    def embed(self, x: torch.Tensor, layer: str = "features", pool: str = "mean") -> torch.Tensor:
        """`(B, 1, input_samples)` -> `(B, C)`: one layer pooled over time."""
        check_pool(pool)
        check_layer(self.layer_names, layer)
        if self._embed_session is None:
            names = [f"{n}.{p}" for n in self.layer_names for p in ("mean", "max")]
            self._embed_session = self._session(
                _export_onnx(_PooledLayers(self._model), self.input_samples, names))
        (out,) = self._embed_session.run([f"{layer}.{pool}"], {"audio": self._numpy(x)})
        return torch.from_numpy(out)


# -- the entry point ---------------------------------------------------------------------
def _ort_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def optimize_for_inference(model: nn.Module, backend: str = "auto", precision: str = "fp32",
                           threads: int | None = None) -> nn.Module:
    """An inference-only equivalent of `model` (a `SampleCNN`), on the model's device.

    backend: "auto" (ONNX Runtime on CPU when installed and precision is fp32, else
    "torch"), "onnxruntime", "torch" (`FusedSampleCNN`) or "eager" (`fold_batchnorm`).
    precision: "fp32" (default; outputs equal the model's up to rounding) or "bf16"
    (torch backend only; faster on CPUs with AVX512-BF16 and on GPUs, outputs change).
    threads: CPU threads for the ONNX Runtime session (default: torch's setting).
    The returned module keeps `forward`, `forward_features`, `forward_head`,
    `forward_intermediates`, `embed`, `layer_names`, `config` and `tags`.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if not hasattr(model, "config") or not hasattr(model, "blocks"):
        raise ValueError(f"optimize_for_inference needs a SampleCNN, got {type(model).__name__}")
    device = next(model.parameters()).device
    if backend == "auto":
        backend = "onnxruntime" if (device.type == "cpu" and precision == "fp32"
                                    and _ort_available()) else "torch"
    if backend == "onnxruntime":
        if precision != "fp32":
            raise ValueError("the onnxruntime backend runs fp32 only; use backend='torch' for bf16")
        if device.type != "cpu":
            raise ValueError(f"the onnxruntime backend runs on the CPU; the model is on {device}")
        return OrtSampleCNN(model, threads=threads)
    if backend == "eager":
        if precision != "fp32":
            raise ValueError("the eager backend runs fp32 only; use backend='torch' for bf16")
        return fold_batchnorm(model)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    return FusedSampleCNN(model, dtype=dtype).to(device)
