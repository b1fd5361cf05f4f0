"""Specification of the graph passes: each removes its pattern, keeps the outputs, is
idempotent and leaves a model without its pattern unchanged."""

from __future__ import annotations

import importlib.util
from collections import Counter
from collections.abc import Callable

import models_for_passes as models
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autotune.passes import (
    PASSES,
    UnknownPassError,
    apply_passes,
    fold_affine_into_conv,
    fold_batchnorm_into_conv,
    fold_constants,
    fuse_gelu,
    fuse_groupnorm,
    fuse_hardswish,
    fuse_layernorm,
    move_reduce_axis_last,
    pad_matmul_to_multiple,
    remove_redundant_transposes,
    reshape_4d_matmul_to_2d,
)

FEW_EXAMPLES = settings(max_examples=8, deadline=None)


def run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def assert_same_outputs(original: onnx.ModelProto, rewritten: onnx.ModelProto, batches=(1, 3)) -> None:
    """Outputs agree within float rounding under ONNX Runtime, for several batch sizes."""
    assert [o.name for o in rewritten.graph.output] == [o.name for o in original.graph.output]
    for batch in batches:
        feeds = models.random_feeds(original, batch=batch, seed=batch)
        for expected, actual in zip(run(original, feeds), run(rewritten, feeds), strict=True):
            assert actual.shape == expected.shape
            np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-5)


def op_counts(model: onnx.ModelProto) -> Counter:
    return Counter(node.op_type for node in model.graph.node)


# (pass, model with its pattern, rewrites expected): the cases every generic property runs on.
PATTERN_CASES: list[tuple[Callable, Callable[[], onnx.ModelProto], int]] = [
    (remove_redundant_transposes, models.transpose_relu_transpose, 2),
    (remove_redundant_transposes, lambda: models.transpose_chain([[0, 2, 3, 1], [0, 3, 1, 2]]), 2),
    (remove_redundant_transposes, lambda: models.transpose_chain([[0, 2, 3, 1], [0, 2, 3, 1], [0, 2, 3, 1]]), 3),
    (fold_constants, models.constant_subgraphs, 6),
    (fold_batchnorm_into_conv, models.conv_batchnorm_relu, 1),
    (fold_batchnorm_into_conv, lambda: models.conv_batchnorm_relu(with_bias=False), 1),
    (fold_batchnorm_into_conv, models.conv_transpose_batchnorm, 1),
    (fold_batchnorm_into_conv, models.gemm_batchnorm, 1),
    (fuse_layernorm, models.decomposed_layernorm, 1),
    (fuse_groupnorm, models.decomposed_groupnorm, 1),
    (fuse_gelu, lambda: models.erf_gelu("div"), 1),
    (fuse_gelu, lambda: models.erf_gelu("mul"), 1),
    (fuse_gelu, lambda: models.erf_gelu("half_first"), 1),
    (fuse_hardswish, models.decomposed_hardswish, 1),
    (fuse_hardswish, lambda: models.decomposed_hardswish("div_first"), 1),
    (fuse_hardswish, lambda: models.decomposed_hardswish(opset=12), 1),
    (reshape_4d_matmul_to_2d, models.matmul_4d, 1),
    (move_reduce_axis_last, models.reduce_over_channels, 1),
    (pad_matmul_to_multiple, models.matmul_3d, 1),
    (pad_matmul_to_multiple, models.gemm, 1),
]
CASE_IDS = [f"{graph_pass.__name__}-{index}" for index, (graph_pass, _, _) in enumerate(PATTERN_CASES)]

# (pass, model without its pattern).
ABSENT_CASES = [
    (remove_redundant_transposes, models.transpose_without_inverse),
    (fold_constants, models.relu_only),
    (fold_batchnorm_into_conv, models.batchnorm_after_relu),
    (fuse_layernorm, models.relu_only),
    (fuse_groupnorm, models.conv_batchnorm_relu),
    (fuse_gelu, models.erf_without_gelu),
    (fuse_hardswish, models.clip_without_hardswish),
    (reshape_4d_matmul_to_2d, models.matmul_3d),
    (move_reduce_axis_last, lambda: models.reduce_over_channels(axes=(2, 3))),
    (move_reduce_axis_last, lambda: models.reduce_over_channels(size=4)),
    (pad_matmul_to_multiple, lambda: models.matmul_3d(k=16, n=8)),
]
ABSENT_IDS = [f"{graph_pass.__name__}-{index}" for index, (graph_pass, _) in enumerate(ABSENT_CASES)]


@pytest.mark.parametrize(("graph_pass", "build", "expected_rewrites"), PATTERN_CASES, ids=CASE_IDS)
def test_pass_reports_its_rewrites_and_keeps_outputs(graph_pass, build, expected_rewrites):
    original = build()
    rewritten, rewrites = graph_pass(original)
    assert rewrites == expected_rewrites
    onnx.checker.check_model(rewritten, full_check=True)
    assert_same_outputs(original, rewritten)


@pytest.mark.parametrize(("graph_pass", "build", "expected_rewrites"), PATTERN_CASES, ids=CASE_IDS)
def test_applying_a_pass_twice_equals_applying_it_once(graph_pass, build, expected_rewrites):
    once, _ = graph_pass(build())
    twice, rewrites = graph_pass(once)
    assert rewrites == 0
    assert twice.SerializeToString() == once.SerializeToString()


@pytest.mark.parametrize(("graph_pass", "build", "expected_rewrites"), PATTERN_CASES, ids=CASE_IDS)
def test_pass_never_mutates_its_input(graph_pass, build, expected_rewrites):
    original = build()
    serialized = original.SerializeToString()
    graph_pass(original)
    assert original.SerializeToString() == serialized


@pytest.mark.parametrize(("graph_pass", "build"), ABSENT_CASES, ids=ABSENT_IDS)
def test_model_without_the_pattern_comes_back_unchanged(graph_pass, build):
    original = build()
    rewritten, rewrites = graph_pass(original)
    assert rewrites == 0
    assert rewritten.SerializeToString() == original.SerializeToString()


# --- remove_redundant_transposes ------------------------------------------------------------------


def test_transpose_pair_around_elementwise_ops_is_removed():
    rewritten, _ = remove_redundant_transposes(models.transpose_relu_transpose())
    assert op_counts(rewritten) == Counter({"Relu": 1, "Add": 1, "Mul": 1})


def test_transposes_composing_to_identity_are_removed():
    perms = [[0, 2, 3, 1], [0, 2, 3, 1], [0, 2, 3, 1]]  # a 3-cycle, three times
    rewritten, _ = remove_redundant_transposes(models.transpose_chain(perms))
    assert op_counts(rewritten) == Counter({"Sigmoid": 1})


def test_transposes_composing_to_a_permutation_become_one_transpose():
    original = models.transpose_chain([[0, 2, 3, 1], [0, 2, 1, 3]])
    rewritten, rewrites = remove_redundant_transposes(original)
    assert (rewrites, op_counts(rewritten)["Transpose"]) == (1, 1)
    assert_same_outputs(original, rewritten)


@FEW_EXAMPLES
@given(channels=st.integers(1, 6), size=st.integers(1, 5))
def test_transpose_removal_keeps_outputs_for_any_shape(channels, size):
    original = models.transpose_relu_transpose(channels, size)
    rewritten, _ = remove_redundant_transposes(original)
    assert "Transpose" not in op_counts(rewritten)
    assert_same_outputs(original, rewritten, batches=(2,))


# --- fold_constants -------------------------------------------------------------------------------


def test_constant_subgraphs_and_dead_nodes_are_folded():
    rewritten, _ = fold_constants(models.constant_subgraphs())
    assert op_counts(rewritten) == Counter({"MatMul": 1, "Reshape": 1})


# --- fold_batchnorm_into_conv ---------------------------------------------------------------------


@pytest.mark.parametrize("build", [models.conv_batchnorm_relu, models.conv_transpose_batchnorm, models.gemm_batchnorm])
def test_batchnorm_is_gone_after_folding(build):
    rewritten, _ = fold_batchnorm_into_conv(build())
    assert "BatchNormalization" not in op_counts(rewritten)


@FEW_EXAMPLES
@given(in_channels=st.integers(1, 5), out_channels=st.integers(1, 6), with_bias=st.booleans(), size=st.integers(3, 7))
def test_batchnorm_folding_keeps_conv_outputs_for_any_shape(in_channels, out_channels, with_bias, size):
    original = models.conv_batchnorm_relu(in_channels, out_channels, with_bias, size)
    rewritten, rewrites = fold_batchnorm_into_conv(original)
    assert rewrites == 1
    assert_same_outputs(original, rewritten, batches=(2,))


@FEW_EXAMPLES
@given(in_features=st.integers(1, 9), out_features=st.integers(1, 9), trans_b=st.sampled_from([0, 1]))
def test_batchnorm_folding_keeps_gemm_outputs_for_any_shape(in_features, out_features, trans_b):
    original = models.gemm_batchnorm(in_features, out_features, trans_b)
    rewritten, _ = fold_batchnorm_into_conv(original)
    assert_same_outputs(original, rewritten, batches=(2,))


# --- fold_affine_into_conv ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "op, scale_shape, shift_shape, shift_op",
    [
        ("Conv", (1,), (1,), "Add"),  # PP-LCNetV3's scalar affine block
        ("Conv", (4, 1, 1), (1, 4, 1, 1), "Sub"),  # per channel
        ("Gemm", (4,), (1, 4), "Add"),
    ],
)
def test_a_constant_mul_and_add_after_a_conv_fold_into_it_with_the_same_outputs(op, scale_shape, shift_shape, shift_op):
    original = models.conv_affine(op, scale_shape, shift_shape, shift_op=shift_op)
    rewritten, rewrites = fold_affine_into_conv(original)
    assert rewrites == 2
    assert op_counts(rewritten) == Counter({op: 1, "Relu": 1})
    assert_same_outputs(original, rewritten, batches=(2,))


@pytest.mark.parametrize("scale_shape", [(5,), (1, 5, 1)])  # varies along a spatial axis, not the channels
def test_a_constant_that_varies_along_another_axis_than_the_channels_is_not_folded(scale_shape):
    original = models.conv_affine("Conv", scale_shape, (1,))
    rewritten, _ = fold_affine_into_conv(original)
    assert op_counts(rewritten)["Mul"] == 1
    assert_same_outputs(original, rewritten, batches=(2,))


# --- fuse_layernorm / fuse_groupnorm / fuse_gelu ---------------------------------------------------


def test_decomposed_layernorm_becomes_one_layernormalization_at_opset_17():
    rewritten, _ = fuse_layernorm(models.decomposed_layernorm(opset=13))
    assert op_counts(rewritten) == Counter({"LayerNormalization": 1})
    assert rewritten.opset_import[0].version == 17


@FEW_EXAMPLES
@given(hidden=st.integers(1, 16), opset=st.sampled_from([13, 17, 18]))
def test_layernorm_fusion_keeps_outputs_for_any_width_and_opset(hidden, opset):
    if opset >= 18:  # ReduceMean-18 takes axes as an input
        original = _layernorm_with_axes_input(hidden)
    else:
        original = models.decomposed_layernorm(hidden, opset=opset)
    rewritten, rewrites = fuse_layernorm(original)
    assert rewrites == 1
    assert_same_outputs(original, rewritten, batches=(2,))


def _layernorm_with_axes_input(hidden: int) -> onnx.ModelProto:
    model = models.decomposed_layernorm(hidden, opset=13)
    for node in model.graph.node:
        if node.op_type == "ReduceMean":
            del node.attribute[:]
            node.input.append("axes")
    model.graph.initializer.append(onnx.numpy_helper.from_array(np.array([-1], np.int64), "axes"))
    model.opset_import[0].version = 18
    return model


def test_layernorm_over_a_middle_axis_is_not_fused():
    original = models.decomposed_layernorm(axes=[1])
    rewritten, rewrites = fuse_layernorm(original)
    assert rewrites == 0


def test_decomposed_groupnorm_becomes_one_groupnormalization_at_opset_21():
    rewritten, _ = fuse_groupnorm(models.decomposed_groupnorm())
    assert op_counts(rewritten) == Counter({"GroupNormalization": 1})
    assert rewritten.opset_import[0].version == 21


@FEW_EXAMPLES
@given(groups=st.integers(1, 4), channels_per_group=st.integers(1, 4), size=st.integers(1, 5))
def test_groupnorm_fusion_keeps_outputs_for_any_grouping(groups, channels_per_group, size):
    original = models.decomposed_groupnorm(groups * channels_per_group, groups, size)
    rewritten, rewrites = fuse_groupnorm(original)
    assert rewrites == 1
    assert_same_outputs(original, rewritten, batches=(2,))


def test_groupnorm_is_not_fused_when_raising_the_opset_would_change_an_op():
    original = models.decomposed_groupnorm()
    reduce_node = onnx.helper.make_node("ReduceMean", ["y"], ["y_mean"], axes=[1])
    original.graph.node.append(reduce_node)
    original.graph.output.append(onnx.helper.make_tensor_value_info("y_mean", onnx.TensorProto.FLOAT, None))
    rewritten, rewrites = fuse_groupnorm(original)
    assert rewrites == 0
    assert rewritten.opset_import[0].version == 17


@pytest.mark.parametrize("form", ["div", "mul", "half_first"])
def test_erf_gelu_becomes_one_gelu_at_opset_20(form):
    rewritten, _ = fuse_gelu(models.erf_gelu(form))
    assert op_counts(rewritten) == Counter({"MatMul": 1, "Gelu": 1})
    assert rewritten.opset_import[0].version == 20


# --- reshape_4d_matmul_to_2d ------------------------------------------------------------------------


def test_4d_matmul_runs_as_a_2d_matmul():
    rewritten, _ = reshape_4d_matmul_to_2d(models.matmul_4d())
    inferred = onnx.shape_inference.infer_shapes(rewritten)
    shapes = {value.name: len(value.type.tensor_type.shape.dim) for value in inferred.graph.value_info}
    matmul = next(node for node in rewritten.graph.node if node.op_type == "MatMul")
    assert shapes[matmul.input[0]] == 2


@FEW_EXAMPLES
@given(
    heads=st.integers(1, 3),
    rows=st.integers(1, 4),
    k=st.integers(1, 7),
    n=st.integers(1, 7),
    weight_rank=st.sampled_from([2, 4]),
)
def test_4d_matmul_reshape_keeps_outputs_for_any_shape(heads, rows, k, n, weight_rank):
    original = models.matmul_4d(heads, rows, k, n, weight_rank)
    rewritten, rewrites = reshape_4d_matmul_to_2d(original)
    assert rewrites == 1
    assert_same_outputs(original, rewritten, batches=(2,))


# --- move_reduce_axis_last ----------------------------------------------------------------------------


@pytest.mark.parametrize("keepdims", [0, 1])
def test_reduce_over_a_middle_axis_reduces_over_the_last_axis(keepdims):
    original = models.reduce_over_channels(keepdims=keepdims)
    rewritten, _ = move_reduce_axis_last(original)
    reduce_node = next(node for node in rewritten.graph.node if node.op_type == "ReduceMean")
    assert list(onnx.helper.get_attribute_value(reduce_node.attribute[0])) == [-1] or any(
        list(onnx.helper.get_attribute_value(a)) == [-1] for a in reduce_node.attribute if a.name == "axes"
    )
    assert_same_outputs(original, rewritten, batches=(1,))


@FEW_EXAMPLES
@given(
    reduce_op=st.sampled_from(["ReduceMean", "ReduceSum", "ReduceMax"]),
    keepdims=st.sampled_from([0, 1]),
    axes=st.sampled_from([(0,), (1,), (2,), (1, 2), (0, 2), (-3,)]),
)
def test_moving_reduce_axes_keeps_outputs_for_any_axes(reduce_op, keepdims, axes):
    original = models.reduce_over_channels(reduce_op, keepdims, axes)
    rewritten, rewrites = move_reduce_axis_last(original)
    assert rewrites == 1
    assert_same_outputs(original, rewritten, batches=(1,))


# --- pad_matmul_to_multiple ---------------------------------------------------------------------------


def _constant_shapes(model: onnx.ModelProto, op: str) -> list[tuple[int, ...]]:
    initializers = {init.name: tuple(init.dims) for init in model.graph.initializer}
    return [initializers[node.input[1]] for node in model.graph.node if node.op_type == op]


@pytest.mark.parametrize(("multiple", "padded"), [(8, (16, 16)), (16, (16, 16)), (32, (32, 32))])
def test_matmul_weights_are_padded_to_the_multiple(multiple, padded):
    rewritten, _ = pad_matmul_to_multiple(models.matmul_3d(k=10, n=13), multiple=multiple)
    assert _constant_shapes(rewritten, "MatMul") == [padded]
    assert op_counts(rewritten)["Slice"] == 1


@FEW_EXAMPLES
@given(k=st.integers(1, 20), n=st.integers(1, 20), multiple=st.sampled_from([8, 16, 32]))
def test_matmul_padding_keeps_outputs_for_any_shape(k, n, multiple):
    original = models.matmul_3d(k=k, n=n)
    rewritten, _ = pad_matmul_to_multiple(original, multiple=multiple)
    assert all(dim % multiple == 0 for dim in _constant_shapes(rewritten, "MatMul")[0])
    assert_same_outputs(original, rewritten, batches=(2,))


@FEW_EXAMPLES
@given(
    k=st.integers(1, 20), n=st.integers(1, 20), trans_b=st.sampled_from([0, 1]), bias=st.sampled_from(["n", "1", "mn"])
)
def test_gemm_padding_keeps_outputs_for_any_shape(k, n, trans_b, bias):
    bias_shape = {"n": (n,), "1": (1,), "mn": (1, n)}[bias]
    original = models.gemm(k, n, trans_b, bias_shape)
    rewritten, _ = pad_matmul_to_multiple(original)
    assert_same_outputs(original, rewritten, batches=(2,))


# --- apply_passes ---------------------------------------------------------------------------------------


def test_passes_are_listed_in_canonical_order():
    assert list(PASSES) == [
        "fold_constants",
        "remove_redundant_transposes",
        "fold_batchnorm_into_conv",
        "fuse_layernorm",
        "fuse_groupnorm",
        "fuse_gelu",
        "fuse_hardswish",
        "reshape_4d_matmul_to_2d",
        "move_reduce_axis_last",
        "pad_matmul_to_multiple",
    ]


def test_apply_passes_rejects_an_unknown_pass_by_name():
    with pytest.raises(UnknownPassError, match="fuse_everything"):
        apply_passes(models.relu_only(), ["fold_constants", "fuse_everything"])


def test_apply_passes_counts_rewrites_per_named_pass_only():
    _, rewrites = apply_passes(models.conv_batchnorm_relu(), ["fold_batchnorm_into_conv", "fuse_gelu"])
    assert rewrites == {"fold_batchnorm_into_conv": 1, "fuse_gelu": 0}


def test_apply_passes_runs_in_canonical_order_whatever_the_order_given():
    model = models.erf_gelu()
    forward, _ = apply_passes(model, ["fuse_gelu", "pad_matmul_to_multiple"])
    backward, _ = apply_passes(model, ["pad_matmul_to_multiple", "fuse_gelu"])
    assert forward.SerializeToString() == backward.SerializeToString()


def test_apply_passes_passes_the_pad_multiple_through():
    rewritten, _ = apply_passes(models.matmul_3d(k=10, n=13), ["pad_matmul_to_multiple"], pad_multiple=32)
    assert _constant_shapes(rewritten, "MatMul") == [(32, 32)]


def test_all_passes_together_keep_outputs_and_are_idempotent():
    model = models.decomposed_layernorm(hidden=12)
    once, _ = apply_passes(model, PASSES)
    twice, rewrites = apply_passes(once, PASSES)
    assert_same_outputs(model, once)
    assert sum(rewrites.values()) == 0
    assert twice.SerializeToString() == once.SerializeToString()


def test_an_opset_12_recognizer_gets_every_layernorm_fused_and_tensorrt_rtx_builds_it(tmp_path):
    """Issue 30: PP-OCRv4's recognizer (opset 12, five decomposed LayerNorms) got 0 rewrites: its
    opset cannot be raised by the number alone (Squeeze-13), so the pass converts it first."""
    from autotune.passes.normalization import layernorm_blocked, layernorm_patterns
    from tests.trained_models import model_path, text_lines

    original = onnx.load(str(model_path("ppocr_rec")))
    assert original.opset_import[0].version == 12 and layernorm_patterns(original) == 5
    rewritten, rewrites = fuse_layernorm(original)
    assert rewrites == 5 and op_counts(rewritten)["LayerNormalization"] == 5
    assert op_counts(rewritten)["Pow"] == 0 and layernorm_blocked(original) is None
    lines = text_lines(320)
    outputs = [
        ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": lines})[0]
        for m in (original, rewritten)
    ]
    np.testing.assert_allclose(outputs[1], outputs[0], atol=1e-4)
    assert (outputs[1].argmax(-1) == outputs[0].argmax(-1)).all()  # the decoded text is the same
    if importlib.util.find_spec("tensorrt_rtx") is None:
        pytest.fail("TensorRT-RTX is a dev dependency (tensorrt-rtx-cu13): install it to build the result")
    from autotune.targets.base import TargetOptions
    from autotune.targets.tensorrt import TensorRTRTXTarget

    path = tmp_path / "fused.onnx"
    onnx.save(rewritten, str(path))
    target = TensorRTRTXTarget(TargetOptions(cache_dir=tmp_path / "study", build_only=True))
    built = target.build(path, {"precision": "tf32"}, tmp_path / "trial", {"x": [1, 3, 48, 320]})
    assert built.artifact.stat().st_size > 0
    built_nodes = {node for layer in built.info["layers"] for node in layer["onnx_nodes"]}
    assert sum("LayerNormalization" in node for node in built_nodes) == 5


def test_a_layernorm_that_cannot_be_rewritten_is_said_to_be_present_not_absent(monkeypatch):
    import autotune.passes.normalization as normalization
    from autotune.passes import inert_passes

    model = models.decomposed_layernorm(opset=13)
    assert inert_passes(model, ["fuse_layernorm"]) == {}
    # the version converter failing (as it does on some exporters' graphs): the pattern is there
    monkeypatch.setattr(normalization, "raise_opset_if_safe", lambda graph, required: False)
    monkeypatch.setattr(normalization, "converted_to_opset", lambda model, required: (None, "the converter failed"))
    why = inert_passes(model, ["fuse_layernorm"])["fuse_layernorm"]
    assert why.startswith("1 decomposed LayerNorms present but not rewritable") and "the converter failed" in why


def test_hardswish_is_one_op_where_the_opset_allows_and_hardsigmoid_times_x_below():
    at13, _ = fuse_hardswish(models.decomposed_hardswish(opset=13))
    assert op_counts(at13) == Counter({"Conv": 1, "HardSwish": 1}) and at13.opset_import[0].version == 14
    at12, _ = fuse_hardswish(models.decomposed_hardswish(opset=12))  # no op here changes from 12 to 14
    assert op_counts(at12)["HardSwish"] == 1 and at12.opset_import[0].version == 14


def test_the_opset_12_recognizer_has_its_28_hardswishes_fused_with_the_same_text():
    from tests.trained_models import model_path, text_lines

    original = onnx.load(str(model_path("ppocr_rec")))
    rewritten, rewrites = fuse_hardswish(original)
    assert rewrites == 28 and op_counts(rewritten)["Clip"] == 0
    # its Squeeze-11 would change meaning at 14: the rewrite stays in opset-12 terms, x * HardSigmoid(x)
    assert op_counts(rewritten)["HardSigmoid"] == 28 + 2 and rewritten.opset_import[0].version == 12
    lines = text_lines(320)
    outputs = [ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": lines})[0]
               for m in (original, rewritten)]  # fmt: skip
    np.testing.assert_allclose(outputs[1], outputs[0], atol=1e-4)
    assert (outputs[1].argmax(-1) == outputs[0].argmax(-1)).all()
