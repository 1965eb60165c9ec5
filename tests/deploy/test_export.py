import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from bec_jax.cli import main
from bec_jax.compress.quantization import QuantConfig, load_quantized, save_quantized
from bec_jax.compress.structured import shrink_model
from bec_jax.deploy import load_artifact
from bec_jax.deploy.export import export_jax, load_model, model_kind
from bec_jax.models import UNetConfig, init_model

# 18 → 9 → 4: the decoder upsamples 4 → 8 and zero-pads to the 9×9 skip (the Pad path)
CFG = UNetConfig(base_width=4, depth=2, input_size=18)


def trained_like(seed=0):
    """A U-Net in eval mode with BatchNorm statistics and scales away from identity (negative and zero
    scales included), so that folding BatchNorm into the convolutions is tested, not assumed."""
    model = init_model(CFG, seed)
    rng = np.random.default_rng(seed)
    for _, bn in model.iter_modules():
        if isinstance(bn, nnx.BatchNorm):
            c = bn.scale.shape[0]
            scale = rng.uniform(0.5, 1.5, c) * rng.choice([-1, 1], c)
            scale[0] = 0.0
            bn.scale[...] = jnp.asarray(scale, jnp.float32)
            bn.bias[...] = jnp.asarray(rng.normal(0, 0.1, c), jnp.float32)
            bn.mean[...] = jnp.asarray(rng.normal(0, 0.2, c), jnp.float32)
            bn.var[...] = jnp.asarray(rng.uniform(0.05, 0.5, c), jnp.float32)
    model.eval()
    return model


def inputs(batch, seed=1):
    return np.asarray(jax.random.normal(jax.random.key(seed), (batch, 18, 18, 1)) * 3 - 5, np.float32)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """Saved model folders: dense fp32, structured (inner + outer channels), int8 per-channel, int8 mixed,
    structured int8 with the full-resolution convs float32."""
    root = tmp_path_factory.mktemp("models")
    model = trained_like()
    save_quantized(root / "dense", model, None)
    save_quantized(root / "structured", shrink_model(model, 0.5, outer=True), None)
    save_quantized(root / "int8", model, QuantConfig.preset("per_channel"))
    save_quantized(root / "mixed", model, QuantConfig.preset("mixed"))
    save_quantized(root / "mixed_full_res", shrink_model(model, 0.5, outer=True), QuantConfig.preset("mixed_full_res"))
    return root


def run(model, x):
    """model(x) compiled (eager dispatch of a U-Net is far slower than one compile)."""
    return np.asarray(jax.jit(lambda v: model(v))(jnp.asarray(x)))


def reference(folder, x):
    """Output of the saved model as bec_jax runs it (float models; int8 models: their dequantized
    weights, i.e. the fake-quant model) and, for int8, of bec_jax's own integer path."""
    float_model, _ = load_quantized(folder)
    model, _ = load_model(folder)
    return run(float_model, x), (run(model, x) if model_kind(model) == "int8" else None)


def rel_rms(a, b):
    return float(np.sqrt(np.mean((a - b) ** 2) / np.mean(b**2)))


def test_model_kinds(folders):
    names = ("dense", "structured", "int8", "mixed", "mixed_full_res")
    kinds = {name: model_kind(load_model(folders / name)[0]) for name in names}
    assert kinds == dict(dense="fp32", structured="structured", int8="int8", mixed="int8", mixed_full_res="int8")


@pytest.mark.parametrize("name,batches", [("dense", (1, 3)), ("int8", (2,))])
def test_jax_export_reloads_to_the_same_outputs(folders, tmp_path, name, batches):
    pytest.importorskip("flatbuffers")  # jax.export's file format (bec_jax[deploy])
    model, _ = load_model(folders / name)
    path = tmp_path / "m.jaxexport"
    path.write_bytes(export_jax(model))
    f = load_artifact(path)
    for batch in batches:  # one file, any batch
        x = inputs(batch)
        expected = run(model, x)  # int8: bec_jax's integer path, exported as is
        np.testing.assert_allclose(f(x), expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())
    assert f.info["format"] == "jax"


def test_jax_int8_file_holds_int8_weights(folders, tmp_path):
    pytest.importorskip("flatbuffers")
    from bec_jax.compress.quantization import conv_layers

    sizes = {}
    for name in ("dense", "int8"):
        (tmp_path / name).write_bytes(export_jax(load_model(folders / name)[0]))
        sizes[name] = (tmp_path / name).stat().st_size
    model, _ = load_model(folders / "dense")
    kernels = sum(getattr(p, a).kernel.size for _, p, a in conv_layers(model))
    assert sizes["dense"] - sizes["int8"] > 0.8 * 3 * kernels  # 4 bytes per weight became 1 (+ scales, ops)


def test_an_exported_file_carries_its_checksum_and_a_changed_one_is_refused(folders, tmp_path):
    pytest.importorskip("flatbuffers")
    from bec_jax.artifacts import CorruptArtifact
    from bec_jax.deploy.export import checksum_path, export_artifact

    path = tmp_path / "m.jaxexport"
    info = export_artifact(folders / "dense", "jax", path)
    line = checksum_path(path).read_text()
    assert line == f"{info['sha256']}  m.jaxexport\n"  # sha256sum's format: `sha256sum -c m.jaxexport.sha256`
    f = load_artifact(path)
    assert f.info["input_shape"] == ["b", 18, 18, 1]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit, in the weights: it would load and run, wrongly
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptArtifact, match="m.jaxexport' is corrupt: .*m.jaxexport.sha256"):
        load_artifact(path)
    checksum_path(path).unlink()  # a file copied alone loads unchecked
    assert load_artifact(path).info["format"] == "jax"


def test_load_artifact_rejects_missing_and_foreign_files(tmp_path):
    with pytest.raises(ValueError, match="no exported model"):
        load_artifact(tmp_path / "none.onnx")
    (tmp_path / "junk.jaxexport").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="not a jax.export file"):
        load_artifact(tmp_path / "junk.jaxexport")


# ----------------------------------------------------------------------------- ONNX (bec_jax[deploy])

@pytest.mark.parametrize("name", ["dense", "structured"])
def test_onnx_float_export_agrees_with_jax(folders, tmp_path, name):
    pytest.importorskip("onnxruntime")
    from bec_jax.deploy.export import export_onnx

    model, _ = load_model(folders / name)
    path = tmp_path / "m.onnx"
    path.write_bytes(export_onnx(model).SerializeToString())
    f = load_artifact(path, threads=1)
    x = inputs(3)
    ref, _ = reference(folders / name, x)
    np.testing.assert_allclose(f(x), ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())
    assert f.info["format"] == "onnx"


def _initializers(proto):
    from onnx import numpy_helper

    return {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}


@pytest.mark.parametrize("name", ["int8", "mixed", "mixed_full_res"])
def test_onnx_int8_runs_bec_jax_weights_in_integer_kernels(folders, tmp_path, name):
    pytest.importorskip("onnxruntime")
    import onnx
    import onnxruntime as ort

    from bec_jax.compress.quantization import Int8Conv, conv_layers
    from bec_jax.deploy.export import export_onnx

    model, _ = load_model(folders / name)
    proto = export_onnx(model, inputs(16, seed=2))
    # the int8 rows in the graph are bec_jax's, up to the sign a negative BatchNorm scale folds in;
    # a zero BatchNorm scale (channel 0 of every BatchNorm here) silences its row
    stored = {n: np.asarray(getattr(p, a).kernel_q[...]) for n, p, a in conv_layers(model)
              if isinstance(getattr(p, a), Int8Conv)}
    graph_q = {k.rsplit(".wq", 1)[0]: v for k, v in _initializers(proto).items() if ".wq" in k}
    assert set(graph_q) == set(stored)
    for conv, q in stored.items():
        g, q = graph_q[conv], q.transpose(3, 2, 0, 1)
        differ = np.flatnonzero((np.abs(g) != np.abs(q)).any(axis=(1, 2, 3)))
        silenced = [] if conv == "outc" or name == "mixed_full_res" else [0]  # shrinking dropped channel 0
        assert differ.tolist() == silenced and not g[differ].any(), conv
    # ONNX Runtime fuses every int8 conv into an integer QLinearConv
    opts = ort.SessionOptions()
    opts.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    ops = [n.op_type for n in onnx.load(tmp_path / "optimized.onnx").graph.node]
    assert ops.count("QLinearConv") == len(stored)
    # accuracy: within a small multiple of the deviation of bec_jax's own int8 path from the fake-quant
    # model (the graph's activation ranges are static, and outputs of int8 convs that feed float ones are
    # quantized too); a wrong fold, sign or scale gives errors of order 1
    path = tmp_path / "m.onnx"
    path.write_bytes(proto.SerializeToString())
    x = inputs(4)
    ref, int8_jax = reference(folders / name, x)
    own = rel_rms(int8_jax, ref)
    # (the 2-channel structured convs here feel the static uint8 ranges most: 1 % bounds them, far below
    # the order-1 error of a wrong fold)
    assert 0 < rel_rms(load_artifact(path)(x), ref) <= max(3 * own, 0.01), own


def test_onnx_runtime_quantizer_is_the_side_by_side_comparison(folders, tmp_path):
    pytest.importorskip("onnxruntime")
    from bec_jax.deploy.export import export_onnx

    model, _ = load_model(folders / "dense")
    path = tmp_path / "ort.onnx"
    path.write_bytes(export_onnx(model, inputs(16, seed=2), "ort").SerializeToString())
    x = inputs(4)
    ref, _ = reference(folders / "dense", x)
    err = rel_rms(load_artifact(path)(x), ref)
    assert 0 < err < 0.2
    with pytest.raises(ValueError, match="calibration"):
        export_onnx(model, None, "ort")


# ----------------------------------------------------------------------------- CLI

def test_export_cli_errors_are_one_line(folders, tmp_path, capsys):
    args = ["export", "--model", str(folders / "int8")]
    cases = [
        (["--format", "jax", "--quantizer", "ort", "--out", str(tmp_path / "a.jaxexport")], "quantizer ort needs format onnx"),
        (["--format", "jax", "--out", str(tmp_path / "a.onnx")], "must end in .jaxexport"),
        (["--format", "jax", "--out", str(tmp_path)], "must end in"),
    ]
    for extra, message in cases:
        assert main(args + extra) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    assert main(["export", "--model", str(tmp_path / "none"), "--format", "jax",
                 "--out", str(tmp_path / "b.jaxexport")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["export", "--model", str(tmp_path), "--format", "jax", "--out", str(tmp_path / "b.jaxexport")]) == 2
    assert "not a saved model folder" in capsys.readouterr().err
    assert main(args + ["--format", "jax", "--out", str(folders / "int8" / "x.jaxexport")]) == 2  # into the model
    assert "lies inside --model" in capsys.readouterr().err and not (folders / "int8" / "x.jaxexport").exists()


def test_export_cli_writes_and_refuses_to_overwrite(folders, tmp_path, capsys):
    pytest.importorskip("flatbuffers")
    out = tmp_path / "m.jaxexport"
    assert main(["export", "--model", str(folders / "structured"), "--format", "jax", "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["kind"] == "structured" and summary["bytes"] == out.stat().st_size
    assert main(["export", "--model", str(folders / "dense"), "--format", "jax", "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_export_cli_int8_onnx_needs_and_uses_data(folders, tmp_path, capsys, small_dataset):
    pytest.importorskip("onnxruntime")
    from bec_jax.deploy.export import calibration_inputs

    # the small dataset is 32²: a 32² model, so that the calibration inputs fit
    model = init_model(UNetConfig(base_width=4, depth=2, input_size=32), 3)
    model.eval()
    save_quantized(tmp_path / "q", model, QuantConfig.preset("per_channel"))
    x = calibration_inputs(small_dataset, 4)
    assert x.shape == (4, 32, 32, 1) and np.isfinite(x).all() and x.max() < 5
    out = tmp_path / "q.onnx"
    assert main(["export", "--model", str(tmp_path / "q"), "--format", "onnx", "--out", str(out)]) == 2
    assert "needs calibration data" in capsys.readouterr().err
    assert main(["export", "--model", str(tmp_path / "q"), "--format", "onnx", "--out", str(out),
                 "--data", str(small_dataset), "--calibration-samples", "4"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["precision"] == "int8" and summary["quantizer"] == "bec_jax" and summary["calibration_samples"] == 4
    assert load_artifact(out)(x[:2]).shape == (2, 32, 32, 2)


def test_export_refuses_a_dataset_on_another_grid_before_any_work(folders, tmp_path, capsys, small_dataset):
    pytest.importorskip("onnxruntime")
    out = tmp_path / "new" / "q.onnx"   # the 18² models and the 32² dataset: calibration cannot run
    for model, extra in (("int8", []), ("dense", ["--quantizer", "ort"])):
        assert main(["export", "--model", str(folders / model), "--format", "onnx", "--out", str(out),
                     "--data", str(small_dataset), *extra]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "dataset grid n=32 of" in err[0] and "model's input_size 18" in err[0], err
        assert not (tmp_path / "new").exists()   # nothing written, the folder made for it gone again


# ----------------------------------------------------------------------------- BatchNorm folding, file sizes

def test_fold_batchnorm_keeps_outputs_and_int8_rows(folders):
    from bec_jax.compress.quantization import Int8Conv, conv_layers
    from bec_jax.deploy.fold import fold_batchnorm

    x = inputs(3)
    dense, _ = load_model(folders / "dense")
    folded = fold_batchnorm(dense)
    assert not any(isinstance(m, nnx.BatchNorm) for _, m in folded.iter_modules())
    ref = run(dense, x)
    np.testing.assert_allclose(run(folded, x), ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())
    int8, _ = load_model(folders / "int8")
    folded = fold_batchnorm(int8)
    # same int8 values up to the sign of a negative scale; a zero BatchNorm scale (channel 0) zeroes its row
    for (name, p, a), (_, fp, fa) in zip(conv_layers(int8), conv_layers(folded)):
        q, fq = np.asarray(getattr(p, a).kernel_q[...]), np.asarray(getattr(fp, fa).kernel_q[...])
        assert isinstance(getattr(fp, fa), Int8Conv) and fq.dtype == np.int8
        differ = np.flatnonzero((np.abs(q) != np.abs(fq)).any(axis=(0, 1, 2)))
        assert differ.tolist() == ([] if name == "outc" else [0]) and not fq[..., differ].any(), name
    # the integer path quantizes activations per call: folding moves a few roundings by one step
    ref = run(int8, x)
    assert rel_rms(run(folded, x), ref) < 1e-3


def _channels(model):
    from bec_jax.compress.quantization import conv_layers

    return sum(int(getattr(p, a).bias.shape[0]) for _, p, a in conv_layers(model))


def test_onnx_int8_stores_a_quarter_of_the_fp32_weights_plus_a_scale_and_bias_per_channel(folders):
    """int8 file - fp32 file / 4 is what int8 needs beyond its weights: a float32 scale and an int32 bias
    per output channel (the fp32 file holds one float32 bias), nothing for BatchNorm (folded in both)
    and no stored bias scale (a Mul of the input and weight scales)."""
    pytest.importorskip("onnxruntime")
    from bec_jax.deploy.export import export_onnx

    model, _ = load_model(folders / "int8")
    fp32 = export_onnx(load_model(folders / "dense")[0])
    int8 = export_onnx(model, inputs(16, seed=2))
    c = _channels(model)
    init_bytes = lambda proto: sum(len(t.raw_data) or t.ByteSize() for t in proto.graph.initializer)
    # tensors of a conv are named "<conv>.<kind>_<k>"; every other initializer is a scalar or a shape
    kinds = lambda proto: sorted(t.name.rsplit("_", 1)[0].rsplit(".", 1)[1] for t in proto.graph.initializer
                                 if "." in t.name)
    convs = len(model.down) * 4 + 3
    assert kinds(fp32) == ["b"] * convs + ["w"] * convs
    assert kinds(int8) == ["bq"] * convs + ["wq"] * convs + ["ws"] * convs
    scalars = 64 * len(int8.graph.node)  # activation scales, zero points, resize and pad constants
    assert init_bytes(int8) - init_bytes(fp32) / 4 <= 7 * c + scalars
    total_int8, total_fp32 = len(int8.SerializeToString()), len(fp32.SerializeToString())
    assert total_int8 - total_fp32 / 4 <= 7 * c + 160 * len(int8.graph.node)  # + the graph's nodes


def test_evaluate_artifact_is_the_models_test_mse(small_run, tmp_path):
    pytest.importorskip("onnxruntime")
    from bec_jax.compress.workflow import load_setup, test_mse
    from bec_jax.deploy.export import evaluate_artifact, export_onnx

    run_dir, data = small_run
    setup = load_setup(run_dir, data)
    path = tmp_path / "m.onnx"
    path.write_bytes(export_onnx(setup.model).SerializeToString())
    got = evaluate_artifact(load_artifact(path), setup.test)
    assert got["mse"] == pytest.approx(test_mse(setup.model, setup.test)["mse"], rel=1e-4)


@pytest.mark.parametrize("installed, fmt", [({"onnxruntime", "onnx", "flatbuffers"}, "onnx"),
                                            ({"flatbuffers"}, "jax"), (set(), None)])
def test_available_format_follows_the_installed_runtime(monkeypatch, installed, fmt):
    import importlib.util

    from bec_jax.deploy.export import available_format

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object() if name in installed else None)
    got, why = available_format()
    assert got == fmt and "\n" not in why
    assert ("pip install 'bec_jax[deploy]'" in why) == (fmt is None)
