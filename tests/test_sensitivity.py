"""Per-layer sensitivity of a quantized model and the mixed-precision repair built on it."""

from __future__ import annotations

import models_for_passes as models
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper

from autotune.layout import OUTPUTS_FILE
from autotune.passes import apply_precision
from autotune.sensitivity import give_back, keep_float, layer_sensitivity, quantize_mixed, repair
from autotune.trial import transform_model
from autotune.verify import Tolerance, compare_outputs

GATE = Tolerance(max_error=1e-2)


def fragile_model() -> onnx.ModelProto:
    """stem -> fragile -> relu -> head: the stem writes one channel 1000x larger than the others,
    which the fragile Conv all but ignores (weight 1e-3); one per-tensor INT8 scale for that
    activation rounds the channels the fragile Conv does read to zero."""
    rng = np.random.default_rng(0)
    stem = rng.standard_normal((8, 4, 1, 1)).astype(np.float32)
    stem[7] *= 1000
    fragile = rng.standard_normal((8, 8, 1, 1)).astype(np.float32)
    fragile[:, 7] *= 1e-3
    head = rng.standard_normal((4, 8, 1, 1)).astype(np.float32)
    return models.make_model(
        [
            helper.make_node("Conv", ["x", "w_stem"], ["a"], name="stem"),
            helper.make_node("Conv", ["a", "w_fragile"], ["b"], name="fragile"),
            helper.make_node("Relu", ["b"], ["r"], name="relu"),
            helper.make_node("Conv", ["r", "w_head"], ["y"], name="head"),
        ],
        {"x": [models.BATCH, 4, 8, 8]},
        ["y"],
        {"w_stem": stem, "w_fragile": fragile, "w_head": head},
    )


@pytest.fixture(scope="module")
def model() -> onnx.ModelProto:
    return fragile_model()


@pytest.fixture(scope="module")
def calibration(model) -> list[dict[str, np.ndarray]]:
    return [models.random_feeds(model, batch=1, seed=seed) for seed in range(4)]


@pytest.fixture(scope="module")
def held_out(model) -> dict[str, np.ndarray]:
    return models.random_feeds(model, batch=4, seed=100)


def run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds), strict=True))


def gate_passes(candidate, model, feeds) -> bool:
    return compare_outputs(run(candidate, feeds), run(model, feeds), GATE).passed


def quantized_inputs(model: onnx.ModelProto, node_name: str) -> list[str]:
    producers = {output: node.op_type for node in model.graph.node for output in node.output}
    node = next(node for node in model.graph.node if node.name == node_name)
    return [name for name in node.input if producers.get(name) == "DequantizeLinear"]


@pytest.mark.parametrize("scheme", ["symmetric", "asymmetric_u8"])
def test_sensitivity_ranks_the_layer_with_huge_dynamic_range_first(model, calibration, scheme):
    quantized = apply_precision(model, "int8", calibration_feeds=calibration, scheme=scheme)
    ranking = layer_sensitivity(model, quantized, calibration)
    layers = [layer for layer in ranking if layer.op != "output"]  # outputs' own Q/DQ rank first
    assert layers[0].node == "fragile"
    assert layers[0].tensor == "a"
    assert layers[0].noise > 10 * layers[1].noise


def test_the_whole_graph_in_int8_fails_the_gate(model, calibration, held_out):
    quantized = apply_precision(model, "int8", calibration_feeds=calibration, scheme="asymmetric_u8")
    assert not gate_passes(quantized, model, held_out)


def test_keep_float_removes_only_the_named_nodes_qdq(model, calibration):
    quantized = apply_precision(model, "int8", calibration_feeds=calibration, scheme="symmetric")
    kept = keep_float(quantized, model, ["fragile"])
    assert quantized_inputs(kept, "fragile") == []
    assert quantized_inputs(kept, "head") == quantized_inputs(quantized, "head") != []
    onnx.checker.check_model(kept)


@pytest.mark.parametrize("scheme", ["symmetric", "asymmetric_u8"])
def test_repair_keeps_just_the_fragile_layer_float_and_passes_on_held_out_data(model, calibration, held_out, scheme):
    repaired, details = quantize_mixed(
        model, "int8", calibration_feeds=calibration, scheme=scheme, keep="auto", tolerance=GATE
    )
    # the output's own Q/DQ first (it buys no kernel), then the fragile layer, nothing else
    assert details["kept_float"] == ["output:y", "fragile"]
    assert details["repair_passed"] is True
    assert details["sensitivity"][1]["node"] == "fragile"
    assert quantized_inputs(repaired, "fragile") == [] and quantized_inputs(repaired, "head")
    assert gate_passes(repaired, model, held_out)


@pytest.mark.parametrize("needed", [set(), {"l3"}, {"l0", "l17"}, {"l5", "l6", "l30"}])
def test_give_back_returns_to_int8_every_float_layer_the_gate_does_not_need(needed):
    """The bisection kept a prefix of a misleading ranking float (32 layers, an output's Q/DQ
    first); the gate needs only `needed`. The give-back finds exactly those within its budget,
    keeps the output's Q/DQ float, and never returns a model the gate failed."""
    floated = ["output:y"] + [f"l{i}" for i in range(32)]
    checked: list[list[str]] = []

    def build(chosen: list[str]) -> list[str]:
        checked.append(chosen)
        return chosen

    def passes(candidate) -> bool:
        return needed <= set(candidate)

    kept, last, checks = give_back(floated, build, passes, budget=64)
    assert set(kept) == needed | {"output:y"} and kept[0] == "output:y"
    assert checks == len(checked) <= 64
    assert last is not None and passes(last) and set(last) == set(kept)
    few, _, spent = give_back(floated, build, passes, budget=3)  # the budget bounds the gate checks
    assert spent <= 3 and needed <= set(few)


def test_the_give_back_leaves_float_what_the_gate_passes_only_without_a_margin(model, calibration):
    """A misleading ranking puts `head` before `fragile`: the bisection keeps both float, and the
    give-back returns `head` to INT8 when the gate is all it must pass, but not when the tighter
    gate (`passes_with_margin`) also needs `head` float."""
    quantized = apply_precision(model, "int8", calibration_feeds=calibration, scheme="symmetric")
    ranking = {layer.node: layer for layer in layer_sensitivity(model, quantized, calibration)}
    misleading = [ranking["head"], ranking["fragile"], ranking["stem"]]

    def passes(candidate) -> bool:
        return quantized_inputs(candidate, "fragile") == []

    def with_margin(candidate) -> bool:
        return passes(candidate) and quantized_inputs(candidate, "head") == []

    assert repair(quantized, model, misleading, passes).kept_float == ["fragile"]
    tight = repair(quantized, model, misleading, passes, passes_with_margin=with_margin)
    assert tight.passed and tight.kept_float == ["head", "fragile"]
    assert with_margin(tight.model)


def test_the_repair_gives_back_under_the_studys_gate_with_half_its_room(model, calibration, monkeypatch):
    """`quantize_mixed` hands the repair a give-back gate with `GIVE_BACK_MARGIN` of the limit's
    room: a model off by 0.75% of its output's range passes the 1% gate and fails that one."""
    import autotune.sensitivity as sensitivity

    gates: dict = {}

    def spy(*args, **kwargs):
        gates["passes"], gates["with_margin"] = args[3], kwargs["passes_with_margin"]
        return real(*args, **kwargs)

    real = sensitivity.repair
    monkeypatch.setattr(sensitivity, "repair", spy)
    quantize_mixed(model, "int8", calibration_feeds=calibration, keep="auto", tolerance=Tolerance(mode="scale"))
    outputs = [run(model, feed)["y"] for feed in calibration]
    share = min((y.max() - y.min()) / np.abs(y).max() for y in outputs)
    scaled = onnx.ModelProto()
    scaled.CopyFrom(model)
    head = next(i for i in scaled.graph.initializer if i.name == "w_head")
    head.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(head) * (1 + 0.0075 * share), "w_head"))
    assert gates["passes"](scaled) and not gates["with_margin"](scaled)
    assert gates["passes"](model) and gates["with_margin"](model)


def test_a_tightened_gate_rejects_an_error_the_gate_allows():
    """`Tolerance.tightened(0.5)` keeps half of each limit's room: 0.7% of the range passes the
    1% gate and fails the tightened one; a task metric's tolerance is the metric's own."""
    rng = np.random.default_rng(0)
    reference = {"y": rng.standard_normal((4, 256)).astype(np.float32)}
    span = float(reference["y"].max() - reference["y"].min())
    moved = {"y": reference["y"] + np.float32(0.007 * span) * np.sign(rng.standard_normal((4, 256)))}
    scale = Tolerance(mode="scale")
    assert compare_outputs(moved, reference, scale).passed
    assert not compare_outputs(moved, reference, scale.tightened(0.5)).passed
    limits = scale.tightened(0.5).limits
    assert (limits.cer, limits.f1, limits.cosine, limits.score_threshold) == (0.005, 0.995, 0.995, 0.25)
    metric = Tolerance(metric="top1")
    assert metric.tightened(0.5) == metric


def test_a_count_keeps_that_many_of_the_most_sensitive_layers(model, calibration):
    _, details = quantize_mixed(model, "int8", calibration_feeds=calibration, keep=3)
    assert details["kept_float"][:2] == ["output:y", "fragile"] and len(details["kept_float"]) == 3


def test_a_trial_records_the_sensitivities_and_the_layers_kept_float(model, calibration, tmp_path):
    source = tmp_path / "fragile.onnx"
    onnx.save(model, str(source))
    details: dict = {}
    config = {"precision": "int8", "keep_float_layers": "auto"}
    transform_model(source, config, tmp_path / "out.onnx", calibration_feeds=calibration, scheme="asymmetric_u8",
                    tolerance=GATE, precision_details=details)  # fmt: skip
    assert details["kept_float"] == ["output:y", "fragile"]
    assert quantized_inputs(onnx.load(str(tmp_path / "out.onnx")), "fragile") == []


def test_a_study_reports_the_top_offenders_and_the_layers_kept_float(model, tmp_path):
    from autotune.cli import main

    source = tmp_path / "fragile.onnx"
    onnx.save(model, str(source))
    space = tmp_path / "space.yaml"
    space.write_text(
        "target: onnxruntime\nknobs:\n  precision: {type: categorical, choices: [int8], default: int8}\n"
        "  keep_float_layers: {type: categorical, choices: [auto], default: auto}\n"
    )
    results = tmp_path / "results"
    assert main(["start", str(source), "--space", str(space), "--trials", "1", "--foreground",
                 "--max-measure-s", "0.2", "--results-dir", str(results)]) == 0  # fmt: skip
    report = (results / "fragile" / "report.md").read_text()
    section = report[report.index("## Quantization sensitivity") :]
    assert "`fragile`" in section.splitlines()[2]  # the kept-float list
    assert "| fragile " in section and "| yes" in section


def test_a_repaired_tensorrt_rtx_build_runs_the_kept_layer_in_float_and_the_rest_in_int8(model, calibration, tmp_path):
    pytest.importorskip("tensorrt_rtx")
    from autotune.measure import StopRule
    from autotune.targets.base import TargetOptions
    from autotune.trial import TrialRequest, run_trial

    source = tmp_path / "fragile.onnx"
    onnx.save(model, str(source))
    request = TrialRequest(
        number=1, config={"precision": "int8", "keep_float_layers": "auto"}, model_path=source,
        target_name="tensorrt-rtx", target_options=TargetOptions(build_only=True),
        input_pool=models.random_feeds(model, batch=1, seed=7), dynamic_batch=True,
        reference_outputs={}, tolerance=GATE, stop_rule=StopRule(), workdir=tmp_path / "trial",
        calibration_feeds=calibration,
    )  # fmt: skip
    result = run_trial(request)
    assert result.state == "complete", result.reason
    assert "fragile" in result.build["mixed_precision"]["kept_float"]
    datatypes = {layer["name"]: layer["datatypes"] for layer in result.build["layers"]}
    assert next(types for name, types in datatypes.items() if name.startswith("fragile")) == ["Float"]
    assert any(types == ["Int8"] for types in datatypes.values())


def counting_ranking(monkeypatch) -> list[int]:
    """Counts `layer_sensitivity` calls (the real ranking still runs)."""
    import autotune.sensitivity as sensitivity

    calls: list[int] = []
    real = sensitivity.layer_sensitivity

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(sensitivity, "layer_sensitivity", counted)
    return calls


def test_a_fully_quantized_trial_does_not_rank_its_layers(model, calibration, held_out, tmp_path, monkeypatch):
    from autotune.measure import StopRule
    from autotune.targets.base import TargetOptions
    from autotune.trial import TrialRequest, run_trial

    calls = counting_ranking(monkeypatch)
    source = tmp_path / "fragile.onnx"
    onnx.save(model, str(source))
    request = TrialRequest(
        number=1, config={"precision": "int8", "keep_float_layers": 0}, model_path=source,
        target_name="onnxruntime", target_options=TargetOptions(), input_pool=held_out, dynamic_batch=True,
        reference_outputs={1: run(model, held_out)}, tolerance=GATE,
        stop_rule=StopRule(max_time_s=0.1), workdir=tmp_path / "trials" / "1", calibration_feeds=calibration,
    )  # fmt: skip
    result = run_trial(request)
    assert result.state == "complete", result.reason
    # judged on every held-out sample against a reference of every one (a 1-sample reference
    # judged only the first: issue 28)
    assert np.load(tmp_path / "trials" / "1" / OUTPUTS_FILE)["y"].shape[0] == held_out["x"].shape[0]
    assert calls == []
    mixed = result.build["mixed_precision"]
    assert (
        mixed["kept_float"] == [] and "sensitivity" not in mixed and mixed["quantized_layers"] == 5
    )  # 4 layers + the output


def test_trials_quantizing_the_same_graph_rank_it_once(model, calibration, tmp_path, monkeypatch):
    calls = counting_ranking(monkeypatch)
    source = tmp_path / "fragile.onnx"
    onnx.save(model, str(source))
    cache = tmp_path / "sensitivity-cache"
    found = {}
    for keep in (1, "auto", 0):
        details: dict = {}
        transform_model(source, {"precision": "int8", "keep_float_layers": keep}, tmp_path / f"{keep}.onnx",
                        calibration_feeds=calibration, scheme="asymmetric_u8", tolerance=GATE,
                        precision_details=details, sensitivity_cache=cache)  # fmt: skip
        found[keep] = details
    assert len(calls) == 1
    assert [found[keep]["ranking_cached"] for keep in (1, "auto", 0)] == [False, True, True]
    assert found["auto"]["kept_float"] == ["output:y", "fragile"]
    # a fully quantized trial after a ranked one gets the ranking for free (the report shows it)
    assert found[0]["sensitivity"] == found[1]["sensitivity"] and found[0]["kept_float"] == []


def test_another_calibration_set_is_ranked_again(model, calibration, tmp_path, monkeypatch):
    calls = counting_ranking(monkeypatch)
    cache = tmp_path / "sensitivity-cache"
    for feeds in (calibration, calibration[::-1][:2]):
        quantize_mixed(model, "int8", calibration_feeds=feeds, keep=1, ranking_cache=cache)
    assert len(calls) == 2


def test_a_pruned_repaired_trial_is_regenerated_with_the_studys_gate(model, tmp_path, monkeypatch):
    from types import SimpleNamespace

    import autotune.study._records
    from autotune.layout import INPUTS_FILE
    from autotune.study import regenerate_model

    source = tmp_path / "fragile.onnx"
    onnx.save(model, str(source))
    np.savez(tmp_path / INPUTS_FILE, **models.random_feeds(model, batch=2, seed=3))
    attrs = {"study_dir": str(tmp_path), "model_path": str(source), "target": "onnxruntime", "dynamic_batch": True,
             "accuracy_mode": "scale", "max_error": 0.05, "min_cosine": 0.9, "metric": "top1"}  # fmt: skip
    seen = {}
    monkeypatch.setattr(autotune.study._records, "transform_model", lambda *args, **kwargs: seen.update(kwargs))
    trial = SimpleNamespace(params={"precision": "int8", "keep_float_layers": "auto"})
    regenerate_model(SimpleNamespace(user_attrs=attrs), trial, tmp_path / "regenerated")
    assert seen["tolerance"] == Tolerance(mode="scale", max_error=0.05, min_cosine=0.9, metric="top1")


def test_non_gemm_leaves_every_layer_but_the_convolutions_float_without_a_ranking(model, calibration, monkeypatch):
    calls = counting_ranking(monkeypatch)
    quantized, details = quantize_mixed(model, "int8", calibration_feeds=calibration, scheme="asymmetric_u8",
                                        keep="non_gemm")  # fmt: skip
    assert calls == [] and details["kept_float"] == ["relu"]
    assert all(quantized_inputs(quantized, conv) for conv in ("stem", "fragile", "head"))
    onnx.checker.check_model(quantized)


def fused_int8_gemms(quantized: onnx.ModelProto) -> set[str]:
    """GEMM layers ONNX Runtime can run as INT8 kernels: every input through a DequantizeLinear
    (weights too) and the output straight into a QuantizeLinear."""
    producers = {output: node.op_type for node in quantized.graph.node for output in node.output}
    consumers: dict[str, list[str]] = {}
    for node in quantized.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node.op_type)
    return {
        node.name
        for node in quantized.graph.node
        if node.op_type == "Conv"
        and all(producers.get(name) == "DequantizeLinear" for name in node.input[:2])
        and consumers.get(node.output[0]) == ["QuantizeLinear"]
    }


def fragile_behind_two_convolutions() -> onnx.ModelProto:
    """fragile_model behind pre -> pre_relu -> pre2: what a repair floats must not cost them."""
    fragile = fragile_model()
    rng = np.random.default_rng(1)
    weights = {i.name: onnx.numpy_helper.to_array(i) for i in fragile.graph.initializer}
    weights |= {"w_pre": rng.standard_normal((4, 4, 1, 1)).astype(np.float32),
                "w_pre2": rng.standard_normal((4, 4, 1, 1)).astype(np.float32)}  # fmt: skip
    nodes = [helper.make_node("Conv", ["x", "w_pre"], ["p"], name="pre"),
             helper.make_node("Relu", ["p"], ["pr"], name="pre_relu"),
             helper.make_node("Conv", ["pr", "w_pre2"], ["q"], name="pre2")]  # fmt: skip
    for node in fragile.graph.node:
        node.input[:] = ["q" if name == "x" else name for name in node.input]
        nodes.append(node)
    return models.make_model(nodes, {"x": [models.BATCH, 4, 8, 8]}, ["y"], weights)


def repaired_behind_two_convolutions(keep: str):
    """(model, calibration feeds, repaired model, details) of `fragile_behind_two_convolutions`."""
    model = fragile_behind_two_convolutions()
    calibration = [models.random_feeds(model, batch=1, seed=seed) for seed in range(4)]
    quantized, details = quantize_mixed(model, "int8", calibration_feeds=calibration, scheme="asymmetric_u8",
                                        keep=keep, tolerance=GATE)  # fmt: skip
    return model, calibration, quantized, details


def test_non_gemm_auto_floats_the_fewest_convolutions_and_keeps_the_rest_fused():
    model, calibration, quantized, details = repaired_behind_two_convolutions("non_gemm_auto")
    assert details["repair_passed"] and "fragile" in details["kept_float_gemm"]
    assert {"relu", "pre_relu"} <= set(details["kept_float"])
    assert {"pre", "pre2"}.isdisjoint(details["kept_float_gemm"])
    assert {"pre", "pre2"} <= fused_int8_gemms(quantized)  # still INT8 kernels
    assert all(gate_passes(quantized, model, feed) for feed in calibration)  # the gate it repaired to
    onnx.checker.check_model(quantized)


def test_non_gemm_auto_returns_the_whole_int8_graph_when_it_passes(model, calibration):
    loose = Tolerance(max_error=float("inf"), min_cosine=-1.0)
    quantized, details = quantize_mixed(model, "int8", calibration_feeds=calibration, scheme="asymmetric_u8",
                                        keep="non_gemm_auto", tolerance=loose)  # fmt: skip
    assert details["kept_float"] == [] and details["repair_checks"] == 1
    assert fused_int8_gemms(quantized) == {"stem", "fragile", "head"}


def test_keep_float_fused_leaves_a_quantized_convolutions_output_rounded(model, calibration):
    quantized = apply_precision(model, "int8", calibration_feeds=calibration, scheme="asymmetric_u8")
    assert fused_int8_gemms(quantized) == {"stem", "fragile", "head"}
    plain = keep_float(quantized, model, ["relu", "head"])
    fused = keep_float(quantized, model, ["relu", "head"], fused=True)
    assert fused_int8_gemms(fused) == {"stem", "fragile"}  # relu still reads fragile's rounded output
    assert fused_int8_gemms(plain) == {"stem"}  # bypassing it left fragile without its output Q


def test_gemm_auto_floats_only_convolutions_and_keeps_every_other_layer_int8():
    model, calibration, quantized, details = repaired_behind_two_convolutions("gemm_auto")
    assert details["repair_passed"] and "fragile" in details["kept_float_gemm"]
    assert details["kept_float"] == details["kept_float_gemm"]  # no element-wise layer floated
    assert {"pre", "pre2"} <= fused_int8_gemms(quantized)
    assert quantized_inputs(quantized, "pre_relu")  # still INT8
    assert all(gate_passes(quantized, model, feed) for feed in calibration)


def test_convolutions_with_a_bias_are_measured_not_ranked_last_unmeasured():
    # ONNX Runtime dequantizes an int32 bias in float64; run as such, every biased Conv failed
    # and ranked last as unmeasured (NaN), so real CNNs' repairs floated everything else first.
    rng = np.random.default_rng(0)
    model = models.make_model(
        [
            helper.make_node("Conv", ["x", "w", "b"], ["a"], name="conv"),
            helper.make_node("Relu", ["a"], ["y"], name="relu"),
        ],
        {"x": [models.BATCH, 4, 8, 8]},
        ["y"],
        {"w": rng.standard_normal((4, 4, 3, 3)).astype(np.float32), "b": rng.standard_normal(4).astype(np.float32)},
    )
    calibration = [models.random_feeds(model, batch=1, seed=seed) for seed in range(2)]
    quantized = apply_precision(model, "int8", calibration_feeds=calibration, scheme="asymmetric_u8")
    conv = next(layer for layer in layer_sensitivity(model, quantized, calibration) if layer.node == "conv")
    assert 0 < conv.noise < 0.1 and np.isfinite(conv.sqnr_db)


SEEN_BATCHES: list[int] = []


def batch_recording_metric(candidate, reference):
    """A task metric (`Tolerance(metric="test_sensitivity:batch_recording_metric")`) that passes
    and records the batch it judged."""
    SEEN_BATCHES.append(int(next(iter(candidate.values())).shape[0]))
    return {"error": 0.0, "passed": True, "detail": "recorded"}


def test_the_repairs_gate_judges_the_calibration_set_as_one_batch(model, calibration):
    # A character error rate or an AP judged one sample at a time fails on one character or box;
    # the trial's verification judges its samples together, and so does the repair.
    SEEN_BATCHES.clear()
    gate = Tolerance(metric="test_sensitivity:batch_recording_metric")
    quantized, details = quantize_mixed(model, "int8", calibration_feeds=calibration, scheme="asymmetric_u8",
                                        keep="non_gemm_auto", tolerance=gate)  # fmt: skip
    assert details["kept_float"] == [] and SEEN_BATCHES == [len(calibration)]


def test_the_repair_checks_its_gate_on_samples_the_quantizer_did_not_calibrate_on(model, monkeypatch):
    import autotune.sensitivity as sensitivity

    feeds = [models.random_feeds(model, batch=1, seed=seed) for seed in range(8)]
    calibrated_on = []
    real = sensitivity.apply_precision

    def recording(*args, calibration_feeds, **kwargs):
        calibrated_on.append([feed["x"] for feed in calibration_feeds])
        return real(*args, calibration_feeds=calibration_feeds, **kwargs)

    monkeypatch.setattr(sensitivity, "apply_precision", recording)
    SEEN_BATCHES.clear()
    gate = Tolerance(metric="test_sensitivity:batch_recording_metric")
    quantize_mixed(model, "int8", calibration_feeds=feeds, scheme="asymmetric_u8", keep="non_gemm_auto", tolerance=gate)
    assert [len(batches) for batches in calibrated_on] == [4] and SEEN_BATCHES == [4]
    assert all(x is feed["x"] for x, feed in zip(calibrated_on[0], feeds[0::2], strict=True))


def test_the_report_names_the_convolutions_a_speed_repair_kept_float():
    import optuna

    from autotune.report import sensitivity_section

    mixed = {"kept_float": ["relu", "pre_relu", "fragile"], "kept_float_gemm": ["fragile"], "quantized_layers": 6,
             "sensitivity": [{"node": "fragile", "op": "Conv", "noise": 1.0, "sqnr_db": 0.0, "tensor": "a"}]}  # fmt: skip
    study = optuna.create_study()
    trial = optuna.trial.create_trial(
        params={"precision": "int8"},
        distributions={"precision": optuna.distributions.CategoricalDistribution(["fp32", "int8"])},
        value=1.0,
        user_attrs={"details": {"build": {"mixed_precision": mixed}}, "normalized_error": 0.0},
    )
    study.add_trial(trial)
    text = "\n".join(sensitivity_section(study, study.trials[0]))
    assert "3 of 6 layers kept in float (every layer but Conv/Gemm/MatMul, and 1 of those): `fragile`." in text


def test_the_repair_keeps_float_the_shortest_prefix_of_the_graph_when_the_ranking_scatters_it():
    """The gate needs the first three of eight chained layers float (noise the later layers
    amplify), and the sensitivity ranking interleaves them with the last ones: bisected in the
    ranking's order the repair keeps six float, in the graph's order three. It keeps the three.
    (The give-back is held off by a margin gate that never passes, so the bisection's choice shows.)"""
    rng = np.random.default_rng(1)
    names = [f"l{i}" for i in range(8)]
    chain = models.make_model(
        [helper.make_node("Conv", [f"a{i}", f"w{i}"], [f"a{i + 1}"], name=name) for i, name in enumerate(names)],
        {"a0": [models.BATCH, 4, 4, 4]},
        ["a8"],
        {f"w{i}": rng.standard_normal((4, 4, 1, 1)).astype(np.float32) for i in range(8)},
    )
    calibration = [models.random_feeds(chain, batch=1, seed=seed) for seed in range(4)]
    quantized = apply_precision(chain, "int8", calibration_feeds=calibration, scheme="symmetric")
    by_name = {layer.node: layer for layer in layer_sensitivity(chain, quantized, calibration)}
    scattered = [by_name[name] for name in ("l7", "l0", "l6", "l1", "l5", "l2", "l4", "l3")]

    def passes(candidate) -> bool:
        return all(quantized_inputs(candidate, name) == [] for name in ("l0", "l1", "l2"))

    repaired = repair(quantized, chain, scattered, passes, passes_with_margin=lambda candidate: False)
    assert repaired.passed and repaired.kept_float == ["l0", "l1", "l2"]
    assert repaired.bisected == {"ranking": 6, "graph": 3}
    assert passes(repaired.model) and quantized_inputs(repaired.model, "l3")  # the rest stays INT8
