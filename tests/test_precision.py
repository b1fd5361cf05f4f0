"""Specification of precision as a graph transformation (fp16/bf16 casts, int8/fp8 Q/DQ)."""

from __future__ import annotations

from collections import Counter

import models_for_passes as models
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx.reference import ReferenceEvaluator

from autotune.passes import PRECISIONS, PrecisionError, apply_precision, dynamic_layer_count, quantize_dynamic_int8

FP16_MAX_RELATIVE_ERROR = 1e-2  # of the output's largest magnitude
BF16_MAX_RELATIVE_ERROR = 3e-2
INT8_MAX_RELATIVE_ERROR = 6e-2


@pytest.fixture(scope="module")
def model() -> onnx.ModelProto:
    return models.small_cnn_attention()


@pytest.fixture(scope="module")
def feeds(model) -> dict[str, np.ndarray]:
    return models.random_feeds(model, batch=2, seed=99)


@pytest.fixture(scope="module")
def reference(model, feeds) -> np.ndarray:
    return run(model, feeds)


@pytest.fixture(scope="module")
def calibration_feeds(model) -> list[dict[str, np.ndarray]]:
    return [models.random_feeds(model, batch=2, seed=seed) for seed in range(4)]


def run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)[0]


def relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    return float(np.abs(actual.astype(np.float32) - expected).max() / np.abs(expected).max())


def io_types(model: onnx.ModelProto) -> set[int]:
    return {value.type.tensor_type.elem_type for value in [*model.graph.input, *model.graph.output]}


def input_types_of(model: onnx.ModelProto, op: str) -> set[int]:
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {value.name: value.type.tensor_type.elem_type for value in inferred.graph.value_info}
    types |= {value.name: value.type.tensor_type.elem_type for value in model.graph.input}
    return {types[node.input[0]] for node in model.graph.node if node.op_type == op}


def qdq_zero_points(model: onnx.ModelProto) -> list[onnx.TensorProto]:
    initializers = {initializer.name: initializer for initializer in model.graph.initializer}
    return [initializers[node.input[2]] for node in model.graph.node if node.op_type == "QuantizeLinear"]


@pytest.mark.parametrize("precision", ["fp32", "tf32"])
def test_fp32_and_tf32_leave_the_graph_unchanged(model, precision):
    assert apply_precision(model, precision).SerializeToString() == model.SerializeToString()


def test_unknown_precision_is_rejected_by_name(model):
    with pytest.raises(PrecisionError, match="'int4'"):
        apply_precision(model, "int4")


def test_precisions_are_the_six_knob_values():
    assert PRECISIONS == ("fp32", "tf32", "fp16", "bf16", "int8", "fp8")


# --- fp16 / bf16 ---------------------------------------------------------------------------------


def test_fp16_model_runs_in_onnxruntime_within_bound(model, feeds, reference):
    converted = apply_precision(model, "fp16")
    assert relative_error(run(converted, feeds), reference) < FP16_MAX_RELATIVE_ERROR


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_inputs_and_outputs_stay_fp32(model, precision):
    assert io_types(apply_precision(model, precision)) == {onnx.TensorProto.FLOAT}


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_cast_model_is_valid_onnx(model, precision):
    onnx.checker.check_model(apply_precision(model, precision), full_check=True)


def test_fp16_computes_matmuls_in_fp16(model):
    assert input_types_of(apply_precision(model, "fp16"), "MatMul") == {onnx.TensorProto.FLOAT16}


def test_block_listed_ops_stay_fp32(model):
    converted = apply_precision(model, "fp16")
    assert input_types_of(converted, "LayerNormalization") == {onnx.TensorProto.FLOAT}


def test_block_list_is_configurable(model):
    converted = apply_precision(model, "fp16", fp32_block_list=["MatMul"])
    assert input_types_of(converted, "MatMul") == {onnx.TensorProto.FLOAT}
    assert input_types_of(converted, "LayerNormalization") == {onnx.TensorProto.FLOAT16}


def test_casts_remain_only_at_region_borders(model):
    converted = apply_precision(model, "fp16", fp32_block_list=[])
    casts = Counter(node.op_type for node in converted.graph.node)["Cast"]
    assert casts == 2  # images in, logits out (Shape-free model: one fp16 region)


def test_bf16_model_is_within_bound_under_the_reference_evaluator(model, feeds, reference):
    converted = apply_precision(model, "bf16")
    assert input_types_of(converted, "MatMul") == {onnx.TensorProto.BFLOAT16}
    output = ReferenceEvaluator(converted).run(None, feeds)[0]
    assert relative_error(output, reference) < BF16_MAX_RELATIVE_ERROR


def test_bf16_for_onnxruntime_cpu_loads_and_runs_there(model, feeds, reference):
    converted = apply_precision(model, "bf16", kernels="onnxruntime_cpu")
    assert relative_error(run(converted, feeds), reference) < BF16_MAX_RELATIVE_ERROR


def test_unknown_kernel_source_is_rejected_by_name(model):
    with pytest.raises(PrecisionError, match="'tensorrt_rtx'"):
        apply_precision(model, "fp16", kernels="tensorrt_rtx")


# --- int8 / fp8 ----------------------------------------------------------------------------------


@pytest.mark.parametrize("precision", ["int8", "fp8"])
def test_quantization_needs_calibration_feeds(model, precision):
    with pytest.raises(PrecisionError, match=precision):
        apply_precision(model, precision)


def test_unknown_scheme_is_rejected_by_name(model, calibration_feeds):
    with pytest.raises(PrecisionError, match="'asymmetric_i4'"):
        apply_precision(model, "int8", calibration_feeds=calibration_feeds, scheme="asymmetric_i4")


def test_unknown_calibration_method_is_rejected_by_name(model, calibration_feeds):
    with pytest.raises(PrecisionError, match="'kl'"):
        apply_precision(model, "int8", calibration_feeds=calibration_feeds, calibration_method="kl")


@pytest.mark.parametrize("method", ["minmax", "entropy", "percentile"])
def test_symmetric_int8_has_zero_point_zero_qdq_pairs_that_onnxruntime_runs(
    model, feeds, reference, calibration_feeds, method
):
    quantized = apply_precision(model, "int8", calibration_feeds=calibration_feeds, calibration_method=method)
    zero_points = qdq_zero_points(quantized)
    assert zero_points and all(zp.data_type == onnx.TensorProto.INT8 for zp in zero_points)
    assert all(not onnx.numpy_helper.to_array(zp).any() for zp in zero_points)
    ops = Counter(node.op_type for node in quantized.graph.node)
    assert ops["DequantizeLinear"] >= ops["QuantizeLinear"] > 0
    assert relative_error(run(quantized, feeds), reference) < INT8_MAX_RELATIVE_ERROR


def test_weights_are_quantized_per_channel(model, calibration_feeds):
    quantized = apply_precision(model, "int8", calibration_feeds=calibration_feeds)
    initializers = {initializer.name: initializer for initializer in quantized.graph.initializer}
    conv_weight_dq = [
        node for node in quantized.graph.node
        if node.op_type == "DequantizeLinear" and initializers.get(node.input[0], onnx.TensorProto()).dims[:1] == [16]
    ]  # fmt: skip
    assert conv_weight_dq and list(initializers[conv_weight_dq[0].input[1]].dims) == [16]


def test_asymmetric_u8_quantizes_activations_to_uint8_and_weights_to_int8(model, feeds, reference, calibration_feeds):
    quantized = apply_precision(model, "int8", calibration_feeds=calibration_feeds, scheme="asymmetric_u8")
    initializers = {initializer.name: initializer for initializer in quantized.graph.initializer}
    activation_zero_points = {zp.data_type for zp in qdq_zero_points(quantized)}
    weight_types = {
        initializers[node.input[0]].data_type
        for node in quantized.graph.node
        if node.op_type == "DequantizeLinear" and node.input[0] in initializers
    }
    assert activation_zero_points == {onnx.TensorProto.UINT8}
    assert onnx.TensorProto.INT8 in weight_types
    assert relative_error(run(quantized, feeds), reference) < INT8_MAX_RELATIVE_ERROR


def test_fp8_has_symmetric_e4m3_qdq_pairs_that_onnxruntime_runs(model, feeds, calibration_feeds):
    quantized = apply_precision(model, "fp8", calibration_feeds=calibration_feeds)
    zero_points = qdq_zero_points(quantized)
    assert zero_points and {zp.data_type for zp in zero_points} == {onnx.TensorProto.FLOAT8E4M3FN}
    assert all(not onnx.numpy_helper.to_array(zp).astype(np.float32).any() for zp in zero_points)
    assert np.isfinite(run(quantized, feeds)).all()


def test_fp8_rejects_the_asymmetric_scheme(model, calibration_feeds):
    with pytest.raises(PrecisionError, match="asymmetric_u8"):
        apply_precision(model, "fp8", calibration_feeds=calibration_feeds, scheme="asymmetric_u8")


def test_quantization_never_mutates_its_input(model, calibration_feeds):
    serialized = model.SerializeToString()
    apply_precision(model, "int8", calibration_feeds=calibration_feeds)
    assert model.SerializeToString() == serialized


# --- NVIDIA ModelOpt dispatch -------------------------------------------------------------------
# ModelOpt cannot be installed beside this project's pins (its ONNX extra pins onnx~=1.21 and
# onnxruntime-gpu), so these tests put a stand-in `modelopt.onnx.quantization` module in place.
# The stand-in records its arguments and writes a model through ONNX Runtime's quantizer, so
# the output is a real Q/DQ model; what is tested is autotune's side: when it calls ModelOpt,
# with what, and that the result is what ModelOpt wrote.


class StandInModelOpt:
    """Records the call; writes `output_path` with ONNX Runtime's symmetric INT8 Q/DQ."""

    def __init__(self) -> None:
        self.calls: list[dict] = []

    def quantize(self, **kwargs) -> None:
        import onnx

        from autotune.passes.precision import quantize_qdq

        self.calls.append(kwargs)
        model = onnx.load(kwargs["onnx_path"])
        feeds = [
            {name: array[i : i + 1] for name, array in kwargs["calibration_data"].items()}
            for i in range(len(next(iter(kwargs["calibration_data"].values()))))
        ]
        onnx.save(quantize_qdq(model, "int8", calibration_feeds=feeds), kwargs["output_path"])


@pytest.fixture
def modelopt(monkeypatch):
    import sys
    import types

    stand_in = StandInModelOpt()
    module = types.ModuleType("modelopt.onnx.quantization")
    module.quantize = stand_in.quantize
    for name in ("modelopt", "modelopt.onnx"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, "modelopt.onnx.quantization", module)
    return stand_in


def _quantizer(model) -> str:
    return next(p.value for p in model.metadata_props if p.key == "autotune.quantizer")


def test_modelopt_quantizes_symmetric_int8_when_installed(modelopt, model, calibration_feeds):
    feeds = calibration_feeds
    quantized = apply_precision(
        model, "int8", calibration_feeds=feeds, scheme="symmetric", calibration_method="entropy"
    )
    (call,) = modelopt.calls
    assert call["quantize_mode"] == "int8" and call["calibration_method"] == "entropy"
    assert call["high_precision_dtype"] == "fp32" and call["calibration_eps"] == ["cpu"]
    name = next(iter(feeds[0]))
    assert call["calibration_data"][name].shape[0] == sum(f[name].shape[0] for f in feeds)
    assert _quantizer(quantized) == "modelopt"
    assert any(n.op_type == "QuantizeLinear" for n in quantized.graph.node)


def test_onnxruntime_quantizes_what_modelopt_cannot(modelopt, model, calibration_feeds):
    feeds = calibration_feeds
    percentile = apply_precision(model, "int8", calibration_feeds=feeds, calibration_method="percentile")
    asymmetric = apply_precision(model, "int8", calibration_feeds=feeds, scheme="asymmetric_u8")
    assert modelopt.calls == []
    assert _quantizer(percentile) == _quantizer(asymmetric) == "onnxruntime"


def test_without_modelopt_onnxruntime_quantizes(model, calibration_feeds):
    quantized = apply_precision(model, "int8", calibration_feeds=calibration_feeds)
    assert _quantizer(quantized) == "onnxruntime"


# --- old opsets (per-channel Q/DQ and bf16 arrive with opset 13) --------------------------------


def _at_opset(model: onnx.ModelProto, opset: int) -> onnx.ModelProto:
    old = onnx.ModelProto()
    old.CopyFrom(model)
    old.opset_import[0].version = opset
    return old


def _default_opset_of(model: onnx.ModelProto) -> int:
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


@pytest.mark.parametrize("opset", [11, 12])
@pytest.mark.parametrize("passes", [[], ["fold_constants"], ["fold_batchnorm_into_conv"]])
@pytest.mark.parametrize("scheme", ["symmetric", "asymmetric_u8"])
def test_int8_after_any_pass_on_an_old_opset_loads_in_onnxruntime(opset, passes, scheme):
    from autotune.passes import apply_passes

    model = _at_opset(models.conv_batchnorm_relu(), opset)
    feeds = models.random_feeds(model, batch=2, seed=1)
    transformed = apply_passes(model, passes)[0] if passes else model
    quantized = apply_precision(transformed, "int8", calibration_feeds=[feeds], scheme=scheme)
    assert _default_opset_of(quantized) >= 13
    assert any(node.op_type == "DequantizeLinear" for node in quantized.graph.node)
    assert relative_error(run(quantized, feeds), run(model, feeds)) < INT8_MAX_RELATIVE_ERROR


def test_int8_on_opset_11_converts_ops_whose_signature_changed_at_13():
    # Unsqueeze's axes move from an attribute to an input at opset 13: only the converter does it.
    model = models.make_model(
        [
            onnx.helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
            onnx.helper.make_node("Unsqueeze", ["c"], ["y"], axes=[1]),
        ],
        {"x": [models.BATCH, 3, 6, 6]},
        ["y"],
        {"w": models.weights([4, 3, 3, 3], 2)},
        opset=11,
    )
    feeds = models.random_feeds(model, batch=2, seed=2)
    quantized = apply_precision(model, "int8", calibration_feeds=[feeds], scheme="asymmetric_u8")
    assert run(quantized, feeds).shape == run(model, feeds).shape


@pytest.mark.parametrize("opset", [11, 12])
def test_bf16_on_an_old_opset_computes_in_bf16(opset):
    model = _at_opset(models.conv_batchnorm_relu(), opset)
    cast = apply_precision(model, "bf16")
    targets = {node.attribute[0].i for node in cast.graph.node if node.op_type == "Cast"}
    assert onnx.TensorProto.BFLOAT16 in targets
    onnx.checker.check_model(cast, full_check=True)  # bf16 is valid ONNX at the raised opset


def test_bf16_that_casts_nothing_is_an_error_not_an_fp32_model_called_bf16():
    model = models.make_model(
        [onnx.helper.make_node("Shape", ["x"], ["s"]), onnx.helper.make_node("Cast", ["s"], ["y"], to=1)],
        {"x": [models.BATCH, 3]},
        ["y"],
    )
    with pytest.raises(PrecisionError, match="bf16: no operator"):
        apply_precision(model, "bf16")


def test_a_precision_the_opset_cannot_reach_is_reported_before_any_trial(monkeypatch):
    from autotune.passes import precision as precision_module

    def refuse(model, version):
        raise RuntimeError("No Adapter For Upsample")

    monkeypatch.setattr(onnx.version_converter, "convert_version", refuse)
    model = models.make_model(
        [onnx.helper.make_node("Unsqueeze", ["x"], ["y"], axes=[1])], {"x": [models.BATCH, 3]}, ["y"], opset=11
    )
    unavailable = precision_module.precision_unavailable(model, ["fp32", "int8", "bf16"])
    assert set(unavailable) == {"int8", "bf16"}
    assert "opset 13" in unavailable["int8"] and "Upsample" in unavailable["int8"]


def test_weights_written_as_constant_nodes_are_quantized_per_channel_like_initializers():
    # paddle2onnx writes every weight as a Constant node; the quantizer would treat it as an activation
    weight = models.weights([4, 3, 3, 3], 7)
    model = models.make_model(
        [
            onnx.helper.make_node("Constant", [], ["w"], value=onnx.numpy_helper.from_array(weight, "w")),
            onnx.helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        ],
        {"x": [models.BATCH, 3, 6, 6]},
        ["y"],
    )
    feeds = models.random_feeds(model, batch=2, seed=5)
    quantized = apply_precision(model, "int8", calibration_feeds=[feeds], scheme="asymmetric_u8")
    initializers = {i.name: onnx.numpy_helper.to_array(i) for i in quantized.graph.initializer}
    weight_dq = next(n for n in quantized.graph.node if n.op_type == "DequantizeLinear" and n.input[0] == "w_quantized")
    assert initializers["w_quantized"].dtype == np.int8 and initializers[weight_dq.input[1]].shape == (4,)
    assert relative_error(run(quantized, feeds), run(model, feeds)) < INT8_MAX_RELATIVE_ERROR


def decoded_detector() -> onnx.ModelProto:
    """A YOLOX-like head: boxes in pixels (x 600) and sigmoid scores from two 1x1 Convs, packed
    by a Concat on the last axis: the post-processing after the last Conv."""
    head = models.weights([6, 4, 1, 1], 3)
    return models.make_model(
        [
            onnx.helper.make_node("Conv", ["x", "w"], ["h"], name="head"),
            onnx.helper.make_node("Split", ["h", "sizes"], ["box", "logit"], axis=1, name="split"),
            onnx.helper.make_node("Mul", ["box", "pixels"], ["box_px"], name="to_pixels"),
            onnx.helper.make_node("Sigmoid", ["logit"], ["score"], name="sigmoid"),
            onnx.helper.make_node("Concat", ["box_px", "score"], ["packed"], axis=1, name="concat"),
            onnx.helper.make_node("Reshape", ["packed", "rows"], ["r"], name="reshape"),
            onnx.helper.make_node("Transpose", ["r"], ["out"], perm=[0, 2, 1], name="transpose"),
        ],
        {"x": [models.BATCH, 4, 8, 8]},
        ["out"],
        {"w": head, "sizes": np.array([4, 2], np.int64), "pixels": np.array(600, np.float32),
         "rows": np.array([0, 6, -1], np.int64)},
    )  # fmt: skip


def test_the_output_post_processing_is_the_nodes_after_the_last_conv():
    from autotune.passes.precision import output_tail

    assert output_tail(decoded_detector()) == ["split", "to_pixels", "sigmoid", "concat", "reshape", "transpose"]


def test_int8_leaves_the_output_post_processing_in_float_so_scores_survive_beside_pixels():
    from autotune.passes.precision import quantize_qdq

    model = decoded_detector()
    calibration = [models.random_feeds(model, batch=1, seed=seed) for seed in range(4)]
    feeds = models.random_feeds(model, batch=2, seed=50)
    reference = run(model, feeds)

    def score_error(quantized: onnx.ModelProto) -> float:
        return float(np.abs(run(quantized, feeds)[..., 4:] - reference[..., 4:]).max())

    common = {"calibration_feeds": calibration, "scheme": "asymmetric_u8"}
    quantized = quantize_qdq(model, "int8", **common)
    concat = next(node for node in quantized.graph.node if node.op_type == "Concat")
    assert all(not name.endswith("_DequantizeLinear_Output") for name in concat.input)
    assert score_error(quantized) < 0.02
    # one 8-bit scale for pixels and scores rounds the scores (range 1 of ~1000) to a step of ~4
    assert score_error(quantize_qdq(model, "int8", **common, float_output_tail=False)) > 0.2


def test_int8_folds_batchnorm_into_the_conv_so_no_float_normalization_sits_between_qdq_pairs():
    # Left in place, a BatchNormalization (never quantized) between the Conv's Q/DQ pairs is a
    # float pass ONNX Runtime cannot fuse; the PP-OCR classifier's INT8 ran 4x slower with it.
    model = models.conv_batchnorm_relu(out_channels=8, size=8)
    calibration = [models.random_feeds(model, batch=1, seed=seed) for seed in range(4)]
    feeds = models.random_feeds(model, batch=2, seed=60)
    quantized = apply_precision(model, "int8", calibration_feeds=calibration, scheme="asymmetric_u8")
    ops = Counter(node.op_type for node in quantized.graph.node)
    assert ops["BatchNormalization"] == 0 and ops["Conv"] == 1
    assert relative_error(run(quantized, feeds), run(model, feeds)) < INT8_MAX_RELATIVE_ERROR


def test_int8_folds_a_constant_affine_after_a_conv_so_the_activation_is_rounded_once():
    # PP-LCNetV3's scalar Mul + Add after a Conv: unfolded, each gets its own 8-bit scale (three
    # roundings of one activation); PP-OCRv4's recognizer's INT8 CER fell from 7.55% to 2.58% folded.
    model = models.conv_affine("Conv", (1,), (1,), channels=8)
    calibration = [models.random_feeds(model, batch=1, seed=seed) for seed in range(4)]
    quantized = apply_precision(model, "int8", calibration_feeds=calibration, scheme="asymmetric_u8")
    ops = Counter(node.op_type for node in quantized.graph.node)
    assert ops["Mul"] == 0 and ops["Add"] == 0 and ops["Conv"] == 1


def test_entropy_calibration_clips_a_rare_outlier_that_minmax_keeps():
    from autotune.passes.precision import quantize_qdq

    model = models.make_model(
        [onnx.helper.make_node("Conv", ["x", "w"], ["y"], name="conv")],
        {"x": [models.BATCH, 4, 16, 16]},
        ["y"],
        {"w": models.weights([4, 4, 1, 1], 2)},
    )
    calibration = [models.random_feeds(model, batch=1, seed=seed) for seed in range(4)]
    calibration[0]["x"][0, 0, 0, 0] = 1000.0  # one value in 4096

    def input_scale(method: str) -> float:
        quantized = quantize_qdq(model, "int8", calibration_feeds=calibration, calibration_method=method)
        quantize = next(
            node for node in quantized.graph.node if node.op_type == "QuantizeLinear" and node.input[0] == "x"
        )
        scale = next(i for i in quantized.graph.initializer if i.name == quantize.input[1])
        return float(onnx.numpy_helper.to_array(scale))

    # minmax spans the outlier (1000 / 127); entropy clips it, to its narrowest candidate range
    # (128 of its 2048 bins); with 128 bins it had one candidate, the full range: minmax's scale
    assert input_scale("minmax") > 7
    assert input_scale("entropy") < 1.0


def test_entropy_threshold_is_onnxruntimes_search_computed_faster():
    from onnxruntime.quantization.calibrate import HistogramCollector

    from autotune.passes.precision import ENTROPY_HISTOGRAM_BINS, ENTROPY_QUANTIZED_BINS, entropy_threshold

    rng = np.random.default_rng(0)
    values = np.concatenate([rng.standard_normal(20000), rng.standard_normal(5) * 50, [300.0]])
    limit = np.abs(values).max()
    counts, edges = np.histogram(values, bins=ENTROPY_HISTOGRAM_BINS, range=(-limit, limit))
    histogram = (counts, edges, np.float32(values.min()), np.float32(values.max()))
    collector = HistogramCollector("entropy", False, ENTROPY_HISTOGRAM_BINS, ENTROPY_QUANTIZED_BINS, 99.999, None)
    expected = collector.get_entropy_threshold(histogram, ENTROPY_QUANTIZED_BINS)
    assert np.allclose(entropy_threshold(histogram, ENTROPY_QUANTIZED_BINS), expected)


def test_dynamic_int8_quantizes_the_matmuls_with_constant_weights_and_stays_close(model, feeds, reference):
    quantized = quantize_dynamic_int8(model)
    ops = Counter(node.op_type for node in quantized.graph.node)
    weighted = [
        n for n in model.graph.node if n.op_type in ("MatMul", "Gemm") and n.input[1] in initializer_names(model)
    ]
    assert ops["MatMulInteger"] == len(weighted) > 0 and ops["DynamicQuantizeLinear"] > 0
    assert dynamic_layer_count(quantized) == len(weighted)
    assert "QuantizeLinear" not in ops  # nothing calibrated: no static Q/DQ pair
    assert relative_error(run(quantized, feeds), reference) <= INT8_MAX_RELATIVE_ERROR
    assert not any(node.op_type == "MatMulInteger" for node in model.graph.node)  # the input is not mutated


def test_dynamic_int8_of_a_model_without_a_weighted_matmul_says_so():
    with pytest.raises(PrecisionError, match="int8 dynamic: the model has no MatMul/Gemm with a constant weight"):
        quantize_dynamic_int8(models.relu_only())


def initializer_names(model: onnx.ModelProto) -> set[str]:
    return {initializer.name for initializer in model.graph.initializer}


def test_a_dynamic_int8_trial_model_is_written_without_calibration_and_refuses_a_qdq_repair(model, tmp_path):
    from autotune.trial import transform_model

    source, out = tmp_path / "model.onnx", tmp_path / "dynamic.onnx"
    onnx.save(model, str(source))
    details: dict = {}
    config = {"precision": "int8", "quantization": "dynamic"}
    transform_model(source, config, out, calibration_feeds=[], scheme="asymmetric_u8", precision_details=details)
    written = onnx.load(str(out))
    assert details == {"quantization": "dynamic", "quantized_layers": dynamic_layer_count(written), "kept_float": []}
    assert details["quantized_layers"] > 0
    with pytest.raises(PrecisionError, match="keep_float_layers=auto repairs static Q/DQ quantization"):
        transform_model(source, {**config, "keep_float_layers": "auto"}, tmp_path / "x.onnx",
                        calibration_feeds=[], scheme="asymmetric_u8")  # fmt: skip


def test_dynamic_int8_takes_weights_written_as_constant_nodes(model, feeds, reference):
    # paddle2onnx writes every weight as a Constant node; ONNX Runtime's quantizer takes only
    # initializers, and quantized none of PP-OCRv4's MatMuls (an FP32 model labelled int8).
    constants = onnx.ModelProto()
    constants.CopyFrom(model)
    weights = {i.name: i for i in constants.graph.initializer}
    used = {name for node in constants.graph.node if node.op_type == "MatMul" for name in node.input[1:2]} & set(
        weights
    )
    assert used
    nodes = [onnx.helper.make_node("Constant", [], [name], value=weights[name]) for name in sorted(used)]
    kept = [i for i in constants.graph.initializer if i.name not in used]
    del constants.graph.initializer[:]
    constants.graph.initializer.extend(kept)
    graph_nodes = list(constants.graph.node)
    del constants.graph.node[:]
    constants.graph.node.extend(nodes + graph_nodes)
    quantized = quantize_dynamic_int8(constants)
    assert dynamic_layer_count(quantized) == dynamic_layer_count(quantize_dynamic_int8(model)) >= len(used)
    assert relative_error(run(quantized, feeds), reference) <= INT8_MAX_RELATIVE_ERROR
