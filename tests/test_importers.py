"""Importers: random weights in the public layouts, checked against independent forwards.

Fixtures are small m^n models (m=3, n=4: 243 samples) in exactly the layouts of the
public files; the references below read the raw fixture arrays directly.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from samplecnn.checkpoint import load_model
from samplecnn.cli import main
from samplecnn.data import MTAT_TOP50
from samplecnn.importers import (KERAS_MTAT_TOP50, TAG_PRESETS, import_clmr, import_keras_h5, import_sota,
                                 keras_default_epsilon)

h5py = pytest.importorskip("h5py")

WIDTHS = [4, 6, 6, 8]  # pooled modules (n = 4, m = 3)
FIRST, FEATURES, N_TAGS = 5, 7, 50
INPUT = 3 * 3**4


def _bn(rng, c):
    return (rng.uniform(0.5, 1.5, c), rng.normal(0, 0.1, c), rng.normal(0, 0.1, c), rng.uniform(0.5, 2, c))


# -- sota-music-tagging-models ---------------------------------------------------------------
def _sota_state(head_kernel, seed=0):
    rng = np.random.default_rng(seed)
    chans = [1, FIRST] + WIDTHS + [FEATURES]
    kernels = [3] + [3] * len(WIDTHS) + [head_kernel]
    sd = {}
    for i, k in enumerate(kernels):
        p = f"layer{i + 1}"
        c_in, c_out = chans[i], chans[i + 1]
        sd[f"{p}.conv.weight"] = torch.tensor(rng.normal(0, 0.5, (c_out, c_in, k)), dtype=torch.float32)
        sd[f"{p}.conv.bias"] = torch.tensor(rng.normal(0, 0.1, c_out), dtype=torch.float32)
        g, b, m, v = _bn(rng, c_out)
        for name, arr in (("weight", g), ("bias", b), ("running_mean", m), ("running_var", v)):
            sd[f"{p}.bn.{name}"] = torch.tensor(arr, dtype=torch.float32)
        sd[f"{p}.bn.num_batches_tracked"] = torch.tensor(7)
    sd["dense.weight"] = torch.tensor(rng.normal(0, 0.3, (N_TAGS, FEATURES)), dtype=torch.float32)
    sd["dense.bias"] = torch.tensor(rng.normal(0, 0.1, N_TAGS), dtype=torch.float32)
    return sd


def _sota_reference(sd, x):
    """Their forward, written with torch.nn.functional: Conv_1d = conv(pad k//2) -> BN -> ReLU -> pool."""
    n_layers = len([k for k in sd if k.endswith(".conv.weight")])
    h = x.unsqueeze(1)
    for i in range(1, n_layers + 1):
        w = sd[f"layer{i}.conv.weight"]
        k = w.shape[2]
        stride, pool = (3, 1) if i == 1 else (1, 3 if i < n_layers else 1)
        h = F.conv1d(h, w, sd[f"layer{i}.conv.bias"], stride=stride, padding=k // 2)
        h = F.batch_norm(h, sd[f"layer{i}.bn.running_mean"], sd[f"layer{i}.bn.running_var"],
                         sd[f"layer{i}.bn.weight"], sd[f"layer{i}.bn.bias"], training=False, eps=1e-5)
        h = F.max_pool1d(F.relu(h), pool)
    return F.linear(h.squeeze(-1), sd["dense.weight"], sd["dense.bias"])


@pytest.mark.parametrize("head_kernel", [1, 3])
def test_sota_state_dict_converts_exactly(tmp_path, head_kernel):
    sd = _sota_state(head_kernel)
    src = tmp_path / "best_model.pth"
    torch.save({f"module.{k}": v for k, v in sd.items()} if head_kernel == 3 else sd, src)
    model = import_sota(src)
    c = model.config
    assert (c.m, c.n, c.input_samples, c.sample_rate) == (3, 4, INPUT, 16000)
    assert c.frontend_padding == 1 and c.head_kernel == head_kernel and c.tags == MTAT_TOP50
    x = torch.from_numpy(np.random.default_rng(1).uniform(-1, 1, (3, INPUT)).astype(np.float32))
    with torch.no_grad():
        np.testing.assert_allclose(model(x.unsqueeze(1)).numpy(), _sota_reference(sd, x).numpy(),
                                   rtol=1e-4, atol=1e-4)


def test_sota_cli_writes_a_checkpoint_that_tags(tmp_path, capsys):
    torch.save(_sota_state(1), tmp_path / "best_model.pth")
    out = tmp_path / "sota.ckpt"
    assert main(["import", str(tmp_path / "best_model.pth"), "--out", str(out)]) == 0
    assert "first-layer padding 1" in capsys.readouterr().out
    model = load_model(out)
    assert model.config.tags == MTAT_TOP50  # sota's split/mtat/tags.npy order
    assert model.config.tags[-3:] == ["metal", "female voice", "choral"]
    assert model.config.extra["imported_from"]["format"] == "sota-music-tagging-models"


def test_sota_errors_are_clear(tmp_path):
    sd = _sota_state(1)
    torch.save({k: v for k, v in sd.items() if k != "dense.weight"}, tmp_path / "x.pth")
    with pytest.raises(ValueError, match="not a sota-music-tagging-models SampleCNN"):
        import_sota(tmp_path / "x.pth")
    torch.save(sd, tmp_path / "y.pth")
    with pytest.raises(ValueError, match="50 outputs but 3 tag names"):
        import_sota(tmp_path / "y.pth", tags=["a", "b", "c"])


# -- Keras HDF5 ------------------------------------------------------------------------------
def _keras_arrays(seed=0):
    """Per conv layer: kernel (k, in, out), bias; BN (gamma, beta, mean, var); dense (in, out)."""
    rng = np.random.default_rng(seed)
    chans = [1, FIRST] + WIDTHS + [FEATURES]
    kernels = [3] + [3] * len(WIDTHS) + [1]
    convs = [(rng.normal(0, 0.5, (k, chans[i], chans[i + 1])).astype(np.float32),
              rng.normal(0, 0.1, chans[i + 1]).astype(np.float32),
              tuple(a.astype(np.float32) for a in _bn(rng, chans[i + 1])))
             for i, k in enumerate(kernels)]
    dense = (rng.normal(0, 0.3, (FEATURES, N_TAGS)).astype(np.float32),
             rng.normal(0, 0.1, N_TAGS).astype(np.float32))
    return convs, dense


def _write_keras1_theano(path, convs, dense):
    """Keras 1.1 `save_weights` layout: flat `<layer>_W` datasets, W (k, 1, in, out),
    BN `running_std` (a variance), no backend attribute (the authors' Theano files)."""
    with h5py.File(path, "w") as f:
        names = []
        for i, (w, b, (g, beta, m, v)) in enumerate(convs, start=1):
            conv, bn = f"convolution1d_{i}", f"batchnormalization_{i}"
            gc = f.create_group(conv)
            gc.create_dataset(f"{conv}_W", data=w[:, None, :, :])
            gc.create_dataset(f"{conv}_b", data=b)
            gc.attrs["weight_names"] = [f"{conv}_W".encode(), f"{conv}_b".encode()]
            gb = f.create_group(bn)
            wn = []
            for suffix, arr in (("gamma", g), ("beta", beta), ("running_mean", m), ("running_std", v)):
                gb.create_dataset(f"{bn}_{suffix}", data=arr)
                wn.append(f"{bn}_{suffix}".encode())
            gb.attrs["weight_names"] = wn
            act = f"activation_{i}"
            f.create_group(act).attrs["weight_names"] = np.array([], dtype="S1")
            names += [conv, bn, act]
            if 1 < i < len(convs):
                pool = f"maxpooling1d_{i - 1}"
                f.create_group(pool).attrs["weight_names"] = np.array([], dtype="S1")
                names.append(pool)
        gd = f.create_group("dense_1")
        gd.create_dataset("dense_1_W", data=dense[0])
        gd.create_dataset("dense_1_b", data=dense[1])
        gd.attrs["weight_names"] = [b"dense_1_W", b"dense_1_b"]
        f.create_group("input_1").attrs["weight_names"] = np.array([], dtype="S1")
        f.attrs["layer_names"] = [n.encode() for n in ["input_1"] + names + ["dense_1"]]


def _write_keras2(path, convs, dense, eps, full_model=True, version="2.2.4"):
    """Keras 2 `model.save` layout: `model_weights/<layer>/<layer>/kernel:0`, TF backend,
    the model config in the attributes; `full_model=False`: the `save_weights` layout
    (the same groups at the root, no model config: only `keras_version` tells the epsilon)."""
    with h5py.File(path, "w") as f:
        root = f.create_group("model_weights") if full_model else f
        names, layers_cfg = [], []
        for i, (w, b, (g, beta, m, v)) in enumerate(convs, start=1):
            conv, bn = f"conv1d_{i}", f"batch_normalization_{i}"
            gc = root.create_group(conv)
            gc.create_dataset(f"{conv}/kernel:0", data=w)
            gc.create_dataset(f"{conv}/bias:0", data=b)
            gc.attrs["weight_names"] = [f"{conv}/kernel:0".encode(), f"{conv}/bias:0".encode()]
            gb = root.create_group(bn)
            wn = []
            for suffix, arr in (("gamma", g), ("beta", beta), ("moving_mean", m), ("moving_variance", v)):
                gb.create_dataset(f"{bn}/{suffix}:0", data=arr)
                wn.append(f"{bn}/{suffix}:0".encode())
            gb.attrs["weight_names"] = wn
            names += [conv, bn]
            layers_cfg += [{"class_name": "Conv1D", "config": {"name": conv, "strides": [3 if i == 1 else 1]}},
                           {"class_name": "BatchNormalization", "config": {"name": bn, "epsilon": eps}}]
        gd = root.create_group("dense_1")
        gd.create_dataset("dense_1/kernel:0", data=dense[0])
        gd.create_dataset("dense_1/bias:0", data=dense[1])
        gd.attrs["weight_names"] = [b"dense_1/kernel:0", b"dense_1/bias:0"]
        root.attrs["layer_names"] = [n.encode() for n in names + ["dense_1"]]
        root.attrs["backend"] = b"tensorflow"
        root.attrs["keras_version"] = version.encode()
        if full_model:
            f.attrs["model_config"] = json.dumps({"class_name": "Model", "config": {"layers": layers_cfg}})


def _keras_reference(convs, dense, x, theano, eps):
    """NumPy forward of the Keras model. Theano convolves (np.convolve: kernel reversed),
    TensorFlow cross-correlates (np.correlate); 'same' for odd kernels centres them."""
    op = np.convolve if theano else np.correlate
    h = x.astype(np.float64)[None, :]  # (channels, time)
    for i, (w, b, (g, beta, m, v)) in enumerate(convs):
        k, c_in, c_out = w.shape
        first = i == 0
        out_len = (h.shape[1] - k) // 3 + 1 if first else h.shape[1]
        y = np.zeros((c_out, out_len))
        for o in range(c_out):
            acc = np.zeros(h.shape[1] - k + 1 if first else h.shape[1])
            for c in range(c_in):
                acc += op(h[c], w[:, c, o], mode="valid" if first else "same")
            y[o] = (acc[::3] if first else acc) + b[o]
        y = (y - m[:, None]) / np.sqrt(v[:, None] + eps) * g[:, None] + beta[:, None]
        y = np.maximum(y, 0)
        if 0 < i < len(convs) - 1:
            y = y[:, : (y.shape[1] // 3) * 3].reshape(c_out, -1, 3).max(axis=2)
        h = y
    return h[:, 0] @ dense[0] + dense[1]


def test_keras1_theano_weights_convert_with_flipped_kernels(tmp_path):
    convs, dense = _keras_arrays(seed=2)
    src = tmp_path / "best_weights.hdf5"
    _write_keras1_theano(src, convs, dense)
    model = import_keras_h5(src)
    c = model.config
    assert (c.m, c.n, c.input_samples, c.sample_rate, c.frontend_padding) == (3, 4, INPUT, 22050, 0)
    # The authors' column order (MTAT_split/top50_tags.txt): female voice before metal.
    assert c.extra["imported_from"]["kernels_flipped"] is True and c.tags == KERAS_MTAT_TOP50
    x = np.random.default_rng(3).uniform(-1, 1, (2, INPUT)).astype(np.float32)
    with torch.no_grad():
        ours = model(torch.from_numpy(x).unsqueeze(1)).numpy()
    ref = np.stack([_keras_reference(convs, dense, xi, theano=True, eps=1e-5) for xi in x])
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4)
    # Not flipping gives a different model: the flip is what makes them agree.
    unflipped = import_keras_h5(src, flip="no")
    with torch.no_grad():
        assert not np.allclose(unflipped(torch.from_numpy(x).unsqueeze(1)).numpy(), ref, atol=1e-3)


def test_keras2_tensorflow_weights_convert_without_flip(tmp_path):
    convs, dense = _keras_arrays(seed=4)
    src = tmp_path / "model.h5"
    _write_keras2(src, convs, dense, eps=1e-3)
    tags = tmp_path / "tags.txt"
    tags.write_text("\n".join(f"tag{i}" for i in range(N_TAGS)) + "\n")
    out = tmp_path / "k2.ckpt"
    assert main(["import", str(src), "--out", str(out), "--tags", str(tags), "--sample-rate", "16000"]) == 0
    model = load_model(out)
    c = model.config
    assert c.bn_eps == pytest.approx(1e-3) and c.sample_rate == 16000 and c.tags[0] == "tag0"
    assert c.extra["imported_from"]["kernels_flipped"] is False
    x = np.random.default_rng(5).uniform(-1, 1, (2, INPUT)).astype(np.float32)
    with torch.no_grad():
        ours = model(torch.from_numpy(x).unsqueeze(1)).numpy()
    ref = np.stack([_keras_reference(convs, dense, xi, theano=False, eps=1e-3) for xi in x])
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4)


def test_keras_errors_are_clear(tmp_path, capsys):
    (tmp_path / "bad.h5").write_bytes(b"not hdf5")
    assert main(["import", str(tmp_path / "bad.h5"), "--out", str(tmp_path / "o.ckpt")]) == 2
    assert "not a readable HDF5 file" in capsys.readouterr().err
    with h5py.File(tmp_path / "empty.h5", "w") as f:
        f.attrs["layer_names"] = [b"dense_1"]
        g = f.create_group("dense_1")
        g.create_dataset("dense_1_W", data=np.zeros((3, 2), np.float32))
        g.attrs["weight_names"] = [b"dense_1_W"]
    with pytest.raises(ValueError, match="expected N conv layers"):
        import_keras_h5(tmp_path / "empty.h5")
    assert not (tmp_path / "o.ckpt").exists()


# -- tag presets -------------------------------------------------------------------------------
def test_presets_are_the_data_lists_and_differ_where_the_sources_differ():
    assert TAG_PRESETS["sota-mtat"] == MTAT_TOP50 == TAG_PRESETS["clmr-mtat"]
    from samplecnn.data import MSD_TOP50

    assert TAG_PRESETS["sota-msd"] == MSD_TOP50
    diff = [i for i, (a, b) in enumerate(zip(MTAT_TOP50, KERAS_MTAT_TOP50)) if a != b]
    assert diff == [47, 48] and sorted(MTAT_TOP50) == sorted(KERAS_MTAT_TOP50)
    jam = TAG_PRESETS["sota-jamendo"]
    assert len(set(jam)) == 50 and jam == sorted(jam) and jam[0] == "genre---alternative"
    assert jam[-1] == "mood/theme---relaxing"


# -- Keras BatchNorm epsilon from the recorded version ----------------------------------------
@pytest.mark.parametrize("version,eps", [("1.0.6", 1e-6), ("1.1.0", 1e-5), ("1.2.2", 1e-3),
                                         ("2.2.4", 1e-3), ("3.3.3", 1e-3)])
def test_keras_epsilon_follows_the_version_that_wrote_the_file(version, eps):
    assert keras_default_epsilon(version) == eps


def test_keras2_save_weights_file_uses_the_keras2_epsilon(tmp_path):
    convs, dense = _keras_arrays(seed=6)
    # Small variances make the epsilon matter as it does in trained files.
    convs = [(w, b, (g, beta, m, (v * 1e-3).astype(np.float32))) for w, b, (g, beta, m, v) in convs]
    src = tmp_path / "weights.h5"
    _write_keras2(src, convs, dense, eps=None, full_model=False, version="2.1.6")
    model = import_keras_h5(src)
    assert model.config.bn_eps == pytest.approx(1e-3)
    x = np.random.default_rng(7).uniform(-1, 1, (2, INPUT)).astype(np.float32)
    with torch.no_grad():
        ours = model(torch.from_numpy(x).unsqueeze(1)).numpy()
    ref = np.stack([_keras_reference(convs, dense, xi, theano=False, eps=1e-3) for xi in x])
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4)
    wrong = np.stack([_keras_reference(convs, dense, xi, theano=False, eps=1e-5) for xi in x])
    assert np.abs(wrong - ref).max() > 1e-2  # the old 1e-5 default was measurably wrong


def test_keras3_files_are_refused_by_name(tmp_path, capsys):
    for name in ("model.keras", "model.weights.h5"):
        (tmp_path / name).write_bytes(b"PK\x03\x04")
        assert main(["import", str(tmp_path / name), "--out", str(tmp_path / "o.ckpt")]) == 2
        err = capsys.readouterr().err
        assert "Keras 3" in err and name in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o.ckpt").exists()


# -- sota-music-tagging-models SampleCNNSE ----------------------------------------------------
SE_WIDTHS = [4, 6, 6, 8]


def _sota_se_state(seed=0, n_tags=N_TAGS):
    """sota's SampleCNNSE layer table at small widths: layer1 ResSE(1->F, k3, stride 3, pool 1),
    layer2..5 ResSE(k3, pool 3), layer6 ResSE(8->8, k1, pool 1); dense1 / bn / dense2."""
    rng = np.random.default_rng(seed)
    t = lambda a: torch.tensor(a, dtype=torch.float32)  # noqa: E731
    table = [(1, FIRST, 3)] + list(zip([FIRST] + SE_WIDTHS[:-1], SE_WIDTHS, [3] * 4)) + [(8, 8, 1)]
    sd = {}

    def conv_bn(conv, bn, c_in, c_out, k):
        sd[f"{conv}.weight"] = t(rng.normal(0, 0.5, (c_out, c_in, k)))
        sd[f"{conv}.bias"] = t(rng.normal(0, 0.1, c_out))
        for name, arr in zip(("weight", "bias", "running_mean", "running_var"), _bn(rng, c_out)):
            sd[f"{bn}.{name}"] = t(arr)
        sd[f"{bn}.num_batches_tracked"] = torch.tensor(3)

    for i, (c_in, c_out, k) in enumerate(table, start=1):
        p = f"layer{i}"
        conv_bn(f"{p}.conv_1", f"{p}.bn_1", c_in, c_out, k)
        conv_bn(f"{p}.conv_2", f"{p}.bn_2", c_out, c_out, k)
        for d in ("dense1", "dense2"):
            sd[f"{p}.{d}.weight"] = t(rng.normal(0, 0.5, (c_out, c_out)))
            sd[f"{p}.{d}.bias"] = t(rng.normal(0, 0.1, c_out))
        if i == 1 or c_in != c_out:
            conv_bn(f"{p}.conv_3", f"{p}.bn_3", c_in, c_out, k)
    sd["dense1.weight"], sd["dense1.bias"] = t(rng.normal(0, 0.3, (8, 8))), t(rng.normal(0, 0.1, 8))
    for name, arr in zip(("weight", "bias", "running_mean", "running_var"), _bn(rng, 8)):
        sd[f"bn.{name}"] = t(arr)
    sd["bn.num_batches_tracked"] = torch.tensor(3)
    sd["dense2.weight"], sd["dense2.bias"] = t(rng.normal(0, 0.3, (n_tags, 8))), t(rng.normal(0, 0.1, n_tags))
    return sd


def _sota_se_reference(sd, x):
    """sota's ResSE_1d / SampleCNNSE forward in torch.nn.functional."""
    def bn(h, p):
        return F.batch_norm(h, sd[f"{p}.running_mean"], sd[f"{p}.running_var"], sd[f"{p}.weight"],
                            sd[f"{p}.bias"], training=False, eps=1e-5)

    n = len({k.split(".")[0] for k in sd if k.startswith("layer")})
    h = x.unsqueeze(1)
    for i in range(1, n + 1):
        p = f"layer{i}"
        k = sd[f"{p}.conv_1.weight"].shape[2]
        stride, pool = (3, 1) if i == 1 else (1, 3 if i < n else 1)
        out = F.relu(bn(F.conv1d(h, sd[f"{p}.conv_1.weight"], sd[f"{p}.conv_1.bias"], stride=stride,
                                 padding=k // 2), f"{p}.bn_1"))
        out = bn(F.conv1d(out, sd[f"{p}.conv_2.weight"], sd[f"{p}.conv_2.bias"], padding=k // 2), f"{p}.bn_2")
        s = F.avg_pool1d(out, out.shape[-1]).squeeze(-1)
        s = torch.sigmoid(F.linear(F.relu(F.linear(s, sd[f"{p}.dense1.weight"], sd[f"{p}.dense1.bias"])),
                                   sd[f"{p}.dense2.weight"], sd[f"{p}.dense2.bias"]))
        out = out * s.unsqueeze(-1)
        if f"{p}.conv_3.weight" in sd:
            h = bn(F.conv1d(h, sd[f"{p}.conv_3.weight"], sd[f"{p}.conv_3.bias"], stride=stride,
                            padding=k // 2), f"{p}.bn_3")
        h = F.max_pool1d(F.relu(h + out), pool)
    h = h.squeeze(-1)
    h = F.relu(bn(F.linear(h, sd["dense1.weight"], sd["dense1.bias"]), "bn"))
    return F.linear(h, sd["dense2.weight"], sd["dense2.bias"])


def test_sota_se_state_dict_converts_exactly_and_fuses(tmp_path):
    from samplecnn.inference.runners import optimize_for_inference

    sd = _sota_se_state(seed=8)
    src = tmp_path / "best_model.pth"
    torch.save(sd, src)
    model = import_sota(src)
    c = model.config
    assert (c.block, c.classifier, c.m, c.n, c.input_samples, c.sample_rate) == ("resse", "mlp", 3, 4, INPUT, 16000)
    assert c.se_reduction == 1 and c.frontend_padding == 1 and c.tags == MTAT_TOP50
    x = torch.from_numpy(np.random.default_rng(9).uniform(-1, 1, (3, INPUT)).astype(np.float32))
    with torch.no_grad():
        ref = _sota_se_reference(sd, x).numpy()
        np.testing.assert_allclose(model(x.unsqueeze(1)).numpy(), ref, rtol=1e-4, atol=1e-4)
    for backend in ("torch", "onnxruntime"):
        runner = optimize_for_inference(model, backend)
        np.testing.assert_allclose(runner.logits(x.numpy()), ref, rtol=1e-3, atol=1e-3)


def test_sota_jamendo_weights_take_the_sorted_jamendo_tags(tmp_path):
    torch.save(_sota_se_state(seed=10), tmp_path / "best_model.pth")
    out = tmp_path / "jam.ckpt"
    assert main(["import", str(tmp_path / "best_model.pth"), "--out", str(out), "--tags", "sota-jamendo"]) == 0
    assert load_model(out).config.tags == TAG_PRESETS["sota-jamendo"]


# -- CLMR --------------------------------------------------------------------------------------
def _clmr_files(tmp_path, seed=0, zipped=True):
    """A Lightning-style CLMR checkpoint (encoder under model.encoder.* and encoder.*, the
    projector, hyper-parameters), zipped as released, and the finetuner checkpoint."""
    import zipfile

    rng = np.random.default_rng(seed)
    t = lambda a: torch.tensor(a, dtype=torch.float32)  # noqa: E731
    chans = [1, FIRST] + WIDTHS + [FEATURES]
    enc = {}
    for i in range(len(chans) - 1):
        p = f"sequential.{i}"
        enc[f"{p}.0.weight"] = t(rng.normal(0, 0.5, (chans[i + 1], chans[i], 3)))
        enc[f"{p}.0.bias"] = t(rng.normal(0, 0.1, chans[i + 1]))
        for name, arr in zip(("weight", "bias", "running_mean", "running_var"), _bn(rng, chans[i + 1])):
            enc[f"{p}.1.{name}"] = t(arr)
        enc[f"{p}.1.num_batches_tracked"] = torch.tensor(5)
    state = {f"model.encoder.{k}": v for k, v in enc.items()}
    state.update({f"encoder.{k}": v.clone() for k, v in enc.items()})
    state["model.projector.0.weight"] = t(rng.normal(0, 0.1, (FEATURES, FEATURES)))
    state["model.projector.2.weight"] = t(rng.normal(0, 0.1, (4, FEATURES)))
    ckpt = {"epoch": 9999, "global_step": 10000, "state_dict": state,
            "hyper_parameters": {"projection_dim": 4, "learning_rate": 3e-4}}
    # The finetuner (CLMR's LinearEvaluation) saves its frozen encoder beside the head.
    head = {"epoch": 199, "state_dict": {**{f"encoder.{k}": v.clone() for k, v in enc.items()},
                                         "model.0.weight": t(rng.normal(0, 0.3, (N_TAGS, FEATURES))),
                                         "model.0.bias": t(rng.normal(0, 0.1, N_TAGS))}}
    torch.save(ckpt, tmp_path / "epoch=9999-step=10000.ckpt")
    torch.save(head, tmp_path / "finetuner.ckpt")
    enc_path = tmp_path / "epoch=9999-step=10000.ckpt"
    if zipped:
        enc_path = tmp_path / "clmr_checkpoint_10000.zip"
        with zipfile.ZipFile(enc_path, "w") as zf:
            zf.write(tmp_path / "epoch=9999-step=10000.ckpt", "clmr_checkpoint_10000/epoch=9999-step=10000.ckpt")
    return enc_path, tmp_path / "finetuner.ckpt", enc, head["state_dict"]


def _clmr_features(enc, x):
    """CLMR's SampleCNN encoder in torch.nn.functional: sequential[0] conv(3, stride 3, no
    padding), 1..N-2 conv(3, pad 1) + max-pool 3, N-1 conv(3, pad 1); BN and ReLU after each."""
    n = len([k for k in enc if k.endswith(".0.weight")])
    h = x.unsqueeze(1)
    for i in range(n):
        p = f"sequential.{i}"
        stride, pad = (3, 0) if i == 0 else (1, 1)
        h = F.conv1d(h, enc[f"{p}.0.weight"], enc[f"{p}.0.bias"], stride=stride, padding=pad)
        h = F.relu(F.batch_norm(h, enc[f"{p}.1.running_mean"], enc[f"{p}.1.running_var"],
                                enc[f"{p}.1.weight"], enc[f"{p}.1.bias"], training=False, eps=1e-5))
        if 0 < i < n - 1:
            h = F.max_pool1d(h, 3, stride=3)
    return h.reshape(x.shape[0], -1)


def test_clmr_encoder_and_finetuner_convert_exactly(tmp_path):
    enc_path, head_path, enc, head = _clmr_files(tmp_path, seed=11)
    out = tmp_path / "clmr.ckpt"
    assert main(["import", str(enc_path), "--from", "clmr", "--head", str(head_path), "--out", str(out)]) == 0
    model = load_model(out)
    c = model.config
    assert (c.m, c.n, c.input_samples, c.sample_rate, c.head_kernel, c.frontend_padding) == (3, 4, INPUT, 22050, 3, 0)
    assert c.tags == MTAT_TOP50
    x = torch.from_numpy(np.random.default_rng(12).uniform(-1, 1, (3, INPUT)).astype(np.float32))
    with torch.no_grad():
        feats = _clmr_features(enc, x)
        ref = F.linear(feats, head["model.0.weight"], head["model.0.bias"]).numpy()
        np.testing.assert_allclose(model(x.unsqueeze(1)).numpy(), ref, rtol=1e-4, atol=1e-4)
        # The encoder alone is an embedding model: its features are CLMR's representation.
        emb = import_clmr(tmp_path / "epoch=9999-step=10000.ckpt")
        assert emb.config.extra["embedding_only"] is True
        np.testing.assert_allclose(emb.embed(x.unsqueeze(1), "features", "max").numpy(), feats.numpy(),
                                   rtol=1e-4, atol=1e-4)


def test_clmr_errors_are_clear(tmp_path):
    enc_path, _, _, _ = _clmr_files(tmp_path, seed=13)
    with pytest.raises(ValueError, match="not a CLMR linear-evaluation checkpoint"):
        import_clmr(enc_path, head=enc_path)
    with pytest.raises(ValueError, match="looks like a CLMR checkpoint: use --from clmr"):
        import_sota(enc_path)
    torch.save({"state_dict": {"x.weight": torch.zeros(2, 2)}}, tmp_path / "bad.ckpt")
    with pytest.raises(ValueError, match="not a CLMR encoder checkpoint"):
        import_clmr(tmp_path / "bad.ckpt")
