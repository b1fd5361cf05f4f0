"""Where the time goes: profiles of real ONNX Runtime sessions on generated models whose answer
is known, the seed's diagnoses, and `autotune profile` on a finished study."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import optuna
import pytest
from onnx import TensorProto, helper, numpy_helper

from autotune.cli import main
from autotune.diagnoses import diagnose
from autotune.passes import remove_redundant_transposes
from autotune.profile import PROFILE_FILE, profile_after_search
from autotune.targets._onnxruntime_profile import parse_ort_profile, profile_onnxruntime
from autotune.targets._tensorrt_profile import profile_tensorrt
from tests.conftest import make_tiny_model


def save(path: Path, nodes, inputs, outputs, inits) -> Path:
    graph = helper.make_graph(nodes, path.stem, inputs, outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def make_one_big_matmul(path: Path) -> Path:
    """x[64, 1024] @ W[1024, 1024], then a Relu: nearly all the work is the GEMM."""
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.standard_normal((1024, 1024)).astype(np.float32), "w")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"], name="big"), helper.make_node("Relu", ["m"], ["y"])]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [64, 1024])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [64, 1024])
    return save(path, nodes, [x], [y], [weight])


def make_transpose_pair(path: Path) -> Path:
    """Transpose to NHWC, Relu, Transpose back to NCHW: the pair cancels out."""
    nodes = [
        helper.make_node("Transpose", ["x"], ["t1"], perm=[0, 2, 3, 1], name="to_nhwc"),
        helper.make_node("Relu", ["t1"], ["r"], name="relu"),
        helper.make_node("Transpose", ["r"], ["y"], perm=[0, 3, 1, 2], name="to_nchw"),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])
    return save(path, nodes, [x], [y], [])


def test_a_model_dominated_by_one_big_matmul_spends_most_of_its_time_in_gemm(tmp_path):
    model = make_one_big_matmul(tmp_path / "matmul.onnx")
    feeds = {"x": np.random.default_rng(0).standard_normal((64, 1024)).astype(np.float32)}

    profile = profile_onnxruntime(model, {"graph_optimization_level": "disable"}, feeds, min_runs=5, min_s=0.05)

    assert profile["timed"] and profile["runs"] >= 5
    assert profile["gemm_share"] >= 0.8, profile["by_class_ms"]
    assert profile["top"][0]["name"] == "big"
    assert profile["top"][0]["op_type"] == "MatMul"
    assert profile["top"][0]["precision"] == "fp32"


def test_a_redundant_transpose_pair_is_diagnosed_naming_its_nodes(tmp_path):
    model = onnx.load(str(make_transpose_pair(tmp_path / "pair.onnx")))

    found = {d["kind"]: d for d in diagnose(model)}

    pair = found["redundant_transposes"]
    assert pair["nodes"] == ["Transpose to_nhwc", "Transpose to_nchw"]
    assert pair["knob"] == "pass.remove_redundant_transposes"


def test_after_remove_redundant_transposes_the_diagnosis_is_gone(tmp_path):
    model = onnx.load(str(make_transpose_pair(tmp_path / "pair.onnx")))
    rewritten, removed = remove_redundant_transposes(model)

    assert removed == 2
    assert "redundant_transposes" not in {d["kind"] for d in diagnose(rewritten)}


def test_unnamed_nodes_are_named_as_tensorrt_names_them_and_batchnorm_is_diagnosed_with_its_conv(tmp_path):
    model = onnx.load(str(make_tiny_model(tmp_path / "tiny.onnx")))

    found = {d["kind"]: d for d in diagnose(model)}

    assert found["redundant_transposes"]["nodes"] == ["Transpose node_of_t1", "Transpose node_of_t2"]
    assert found["batchnorm_not_folded"]["nodes"] == ["Conv node_of_c", "BatchNormalization node_of_bn"]
    assert found["batchnorm_not_folded"]["knob"] == "pass.fold_batchnorm_into_conv"


def test_unaligned_gemms_are_diagnosed_only_where_fp16_is_in_reach(tmp_path):
    model = onnx.load(str(make_tiny_model(tmp_path / "tiny.onnx")))  # its MatMul has K=12, N=5

    assert "gemm_not_aligned" not in {d["kind"] for d in diagnose(model, precision="fp32")}
    for found in (diagnose(model, precision="fp16"), diagnose(model, gpu=True)):
        unaligned = next(d for d in found if d["kind"] == "gemm_not_aligned")
        assert unaligned["nodes"] == ["MatMul node_of_y"]
        assert unaligned["knob"] == "pass.pad_matmul_to_multiple"


def test_layers_a_precision_pass_left_in_fp32_are_named(tmp_path):
    from autotune.passes import apply_precision

    model = onnx.load(str(make_tiny_model(tmp_path / "tiny.onnx")))
    low = apply_precision(model, "fp16")

    left = next(d for d in diagnose(low, precision="fp16") if d["kind"] == "left_in_fp32")

    assert any(name.startswith("ReduceMean") for name in left["nodes"])  # on the FP32 block list
    assert not any(name.startswith("MatMul") or name.startswith("Conv ") for name in left["nodes"])


def test_cuda_kernel_events_are_charged_to_their_node_and_warmup_runs_are_left_out():
    def run(ts: float) -> list[dict]:
        return [
            {"cat": "Session", "name": "model_run", "ts": ts, "dur": 100},
            {"cat": "Node", "name": "mm_kernel_time", "ts": ts + 1, "dur": 5, "args": {"op_name": "MatMul"}},
            {"cat": "Kernel", "name": "ampere_sgemm", "ts": ts + 2, "dur": 60, "args": {}},
            {"cat": "Node", "name": "t_kernel_time", "ts": ts + 70, "dur": 5, "args": {"op_name": "Transpose"}},
            {"cat": "Kernel", "name": "transpose_kernel", "ts": ts + 71, "dur": 20, "args": {}},
        ]

    warm = [{**e, "dur": e["dur"] * 10} for e in run(0)]  # a slow first run, left out
    parsed = parse_ort_profile(warm + run(1000) + run(2000), warmup_runs=1)

    times = {n["name"]: n["time_ms"] for n in parsed["nodes"]}
    assert parsed["timing"] == "kernel" and parsed["runs"] == 2
    assert times == {"mm": pytest.approx(0.060), "t": pytest.approx(0.020)}


def test_tensorrt_layers_are_classed_by_their_fused_onnx_nodes_and_untimed_without_a_gpu(tmp_path):
    model = onnx.load(str(make_tiny_model(tmp_path / "tiny.onnx")))
    layers = [  # as a TensorRT-RTX 1.7 build on this model logs them
        {"name": "__myl_Move_myl0_0", "type": "kgen", "onnx_nodes": [], "datatypes": ["Float"]},
        {"name": "__myl_CorrMulAddRelu_myl0_1", "type": "runtime_fusion",
         "onnx_nodes": ["node_of_c", "node_of_bn", "node_of_r"], "datatypes": ["Half"]},
        {"name": "__myl_TranReluTranMean_myl0_2", "type": "kgen",
         "onnx_nodes": ["node_of_t1", "node_of_r2", "node_of_pooled", "node_of_t2"], "datatypes": ["Float"]},
        {"name": "__myl_ReshMulSum_myl0_3", "type": "kgen", "onnx_nodes": ["node_of_y"], "datatypes": ["Float"]},
    ]  # fmt: skip

    profile = profile_tensorrt(layers, model=model)

    assert [n["class"] for n in profile["nodes"]] == ["data_movement", "gemm", "other", "gemm"]
    assert [n["precision"] for n in profile["nodes"]] == ["fp32", "fp16", "fp32", "fp32"]
    assert profile["timed"] is False and profile["gemm_share"] is None
    assert "need a GPU" in profile["note"]
    assert profile["count_by_class"]["gemm"] == 2


def test_a_real_tensorrt_rtx_build_is_profiled_from_its_layer_table_and_says_timing_needs_a_gpu(tmp_path):
    pytest.importorskip("tensorrt_rtx")
    from autotune.targets import target_class
    from autotune.targets.base import TargetOptions
    from autotune.targets.tensorrt import visible_gpu

    if visible_gpu().get("count"):
        pytest.skip("a GPU is visible: this test is of the build-only path")
    path = make_tiny_model(tmp_path / "tiny.onnx", dynamic_batch=False)
    target = target_class("tensorrt-rtx")(TargetOptions(build_only=True, cache_dir=tmp_path))
    built = target.build(path, {}, tmp_path / "build", {"x": [1, 3, 8, 8]})
    feeds = {"x": np.zeros((1, 3, 8, 8), np.float32)}

    profile = profile_tensorrt(
        built.info["layers"],
        model=onnx.load(str(path)),
        engine_path=built.artifact,
        module_name="tensorrt_rtx",
        feeds=feeds,
    )

    assert profile["nodes"] and profile["timed"] is False
    assert "no GPU is visible" in profile["note"]
    assert profile["count_by_class"]["gemm"] >= 1  # the Conv (fused with BN and ReLU) and the MatMul


# ---------------------------------------------------------------- a finished study


SPACE = """
target: onnxruntime
knobs:
  graph_optimization_level: {type: categorical, choices: [basic, all], default: all}
  pass.remove_redundant_transposes: {type: bool, default: false}
"""


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    root = tmp_path_factory.mktemp("profile_study")
    model = make_tiny_model(root / "tiny.onnx")
    space = root / "space.yaml"
    space.write_text(SPACE)
    results = root / "results"
    argv = ["start", str(model), "--foreground", "--trials", "3", "--space", str(space)]
    assert main([*argv, "--results-dir", str(results), "--max-measure-s", "0.05"]) == 0
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{results / 'tiny' / 'study.db'}")
    return results, study


def test_finalize_profiles_the_defaults_and_the_answer_and_attaches_the_profile(finished):
    from optuna.artifacts import get_all_artifact_meta

    results, study = finished
    data = json.loads((results / "tiny" / PROFILE_FILE).read_text())

    assert data["defaults"]["trial"] == 0 and data["defaults"]["timed"]
    assert data["best"]["trial"] == study.user_attrs["best_trial"]
    assert (results / "tiny" / "trials" / "0" / PROFILE_FILE).is_file()
    assert any(meta.filename.endswith("-" + PROFILE_FILE) for meta in get_all_artifact_meta(study))
    pair = next(d for d in data["diagnoses"] if d["kind"] == "redundant_transposes")
    assert pair["search"]["knob"] == "pass.remove_redundant_transposes"
    assert pair["search"]["tried_trials"], "the search tried the pass on"


def test_autotune_profile_regenerates_profile_json_and_the_report_section(finished, capsys):
    results, _ = finished
    study_dir = results / "tiny"
    (study_dir / PROFILE_FILE).unlink()
    (study_dir / "report.md").write_text("# stale\n")

    assert main(["profile", "tiny", "--results-dir", str(results)]) == 0

    assert json.loads((study_dir / PROFILE_FILE).read_text())["defaults"]["nodes"]
    report = (study_dir / "report.md").read_text()
    assert "## Where the time goes" in report
    assert "GEMM-class share" in report
    # ONNX Runtime removes the pair at every level the space offers: the report says so and
    # names no Transpose (none ran).
    assert "redundant Transpose pair" in report and "not in the graph that ran" in report
    assert "Transpose_3" not in report and "node_of_t1" not in report
    assert "GEMM-class share" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [(["--trial", "999"], "--trial 999"), (["--trial", "one"], "expected an integer"), ([], "not found")],
)
def test_autotune_profile_rejects_bad_input_with_one_line_and_exit_2(finished, capsys, argv, fragment):
    results, _ = finished
    study = "nope" if not argv else "tiny"
    code = main(["profile", study, *argv, "--results-dir", str(results)])
    err = capsys.readouterr().err.strip()

    assert code == 2
    assert len(err.splitlines()) == 1 and fragment in err, err


def test_a_failed_profile_never_fails_finalize_and_leaves_no_stale_profile(finished, monkeypatch):
    import autotune.profile as profile_module

    results, study = finished

    def broken(*args, **kwargs):
        raise RuntimeError("profiler exploded")

    monkeypatch.setattr(profile_module, "profile_study", broken)
    assert profile_after_search(study) is None
    assert not (results / "tiny" / PROFILE_FILE).exists()
    assert "profiler exploded" in study.user_attrs["profile_error"]


# ---------------------------------------------------------------- spread (issue 30)


def test_the_profile_stores_a_median_and_a_range_per_share_from_interleaved_repeats(finished):
    from autotune.profile import OP_CLASSES, profile_study

    _, study = finished
    other = next(t.number for t in study.trials if t.number != 0 and t.state.name == "COMPLETE")

    data = profile_study(study, other, repeats=3)

    assert data["profile_order"] == ["defaults", "best"] * 3
    for key in ("defaults", "best"):
        profile = data[key]
        assert profile["repeats"] == 3
        for cls in OP_CLASSES:
            repeats, spread = profile["share_repeats"][cls], profile["share_spread"][cls]
            assert len(repeats) == 3
            assert spread["median"] == pytest.approx(float(np.median(repeats)))
            assert (spread["low"], spread["high"]) == (pytest.approx(min(repeats)), pytest.approx(max(repeats)))
        assert profile["gemm_share"] == pytest.approx(profile["share_spread"]["gemm"]["median"])


def test_the_repeat_count_asked_for_is_the_one_run_and_stored(finished):
    from autotune.profile import profile_study

    results, study = finished
    other = next(t.number for t in study.trials if t.number != 0 and t.state.name == "COMPLETE")

    data = profile_study(study, other, repeats=4)

    assert data["profile_order"] == ["defaults", "best"] * 4
    assert data["defaults"]["repeats"] == data["best"]["repeats"] == 4
    assert all(len(data["best"]["share_repeats"][cls]) == 4 for cls in data["best"]["share_repeats"])
    stored = json.loads((results / "tiny" / PROFILE_FILE).read_text())
    assert stored["spread"]["repeats"] == 4 and stored["spread"]["interval"] == "range of 4 interleaved runs"


def test_finalize_profiles_each_configuration_the_default_number_of_times(finished):
    from autotune.profile import PROFILE_REPEATS

    _, study = finished

    data = profile_after_search(study)  # what finalize runs on a CPU target

    assert data is not None
    assert PROFILE_REPEATS >= 5, "a range of fewer runs holds the median share with under 94% confidence"
    assert data["defaults"]["repeats"] == data["best"]["repeats"] == PROFILE_REPEATS
    assert data["profile_order"].count("defaults") == PROFILE_REPEATS


def test_a_measurement_passed_as_after_each_runs_interleaved_in_the_same_rounds(finished):
    from autotune.profile import profile_study

    _, study = finished
    other = next(t.number for t in study.trials if t.number != 0 and t.state.name == "COMPLETE")
    calls: list[tuple[str, int]] = []

    data = profile_study(study, other, repeats=2, after_each=lambda key, trial: calls.append((key, trial.number)))

    assert calls == [("defaults", data["defaults"]["trial"]), ("best", other)] * 2


def test_the_stated_spread_is_what_the_range_of_n_runs_does_on_any_distribution():
    """The range of N exchangeable runs holds the median with probability 1 - 2^(1-N), and a further
    run falls outside it with probability 2/(N+1): checked by drawing from a skewed distribution."""
    from autotune.profile import spread_statement

    rng = np.random.default_rng(0)
    draws = rng.lognormal(0.0, 1.0, size=(40000, 6))  # 5 runs and one further run per row
    median = float(np.exp(0.0))
    runs, further = draws[:, :5], draws[:, 5]
    low, high = runs.min(axis=1), runs.max(axis=1)

    stated = spread_statement(5)

    assert stated["interval"] == "range of 5 interleaved runs"
    assert np.mean((low <= median) & (median <= high)) == pytest.approx(stated["median_confidence"], abs=0.01)
    assert np.mean((further < low) | (further > high)) == pytest.approx(stated["next_run_outside"], abs=0.01)


def test_the_report_names_the_interval_its_ranges_are(finished):
    from autotune.profile import profile_study
    from autotune.profile_render import render_section

    _, study = finished
    other = next(t.number for t in study.trials if t.number != 0 and t.state.name == "COMPLETE")

    text = "\n".join(render_section(profile_study(study, other, repeats=3)))

    assert "range of 3 interleaved runs (holds the median share with 75% confidence" in text
    assert "a single further run falls outside it with probability 50%" in text


def _repeated(path: Path, feeds: dict, level: str, times: int = 3) -> list[dict]:
    return [
        profile_onnxruntime(path, {"graph_optimization_level": level}, feeds, min_runs=5, min_s=0.02)
        for _ in range(times)
    ]


def test_a_difference_inside_the_spread_is_labelled_as_no_measured_difference(tmp_path):
    from autotune.diagnoses import moved
    from autotune.profile import combine_repeats
    from autotune.profile_render import render_section

    model = make_transpose_pair(tmp_path / "pair.onnx")
    feeds = {"x": np.random.default_rng(0).standard_normal((1, 4, 8, 8)).astype(np.float32)}
    a, b = combine_repeats(_repeated(model, feeds, "disable")), combine_repeats(_repeated(model, feeds, "disable"))
    # the same configuration twice: whatever the medians, it is a difference inside the spread when
    # the ranges overlap, and outside it when they do not
    a["share_spread"]["gemm"] = {"median": 0.50, "low": 0.46, "high": 0.52}
    b["share_spread"]["gemm"] = {"median": 0.49, "low": 0.47, "high": 0.53}
    a["trial"], b["trial"] = 0, 1
    change = moved(a, b)
    text = "\n".join(render_section({"defaults": a, "best": b, "moved": change, "diagnoses": []}))

    assert change["shares"]["gemm"]["within_spread"] is True
    assert "inside the spread of the repeats: no measured difference" in text

    b["share_spread"]["gemm"] = {"median": 0.70, "low": 0.68, "high": 0.72}
    change = moved(a, b)
    text = "\n".join(render_section({"defaults": a, "best": b, "moved": change, "diagnoses": []}))
    assert change["shares"]["gemm"]["within_spread"] is False
    assert "outside the spread of the repeats" in text


def test_a_real_change_of_share_is_outside_the_spread_of_real_repeats(tmp_path):
    from autotune.diagnoses import moved
    from autotune.profile import combine_repeats

    matmul = make_one_big_matmul(tmp_path / "matmul.onnx")
    pair = make_transpose_pair(tmp_path / "pair.onnx")
    big = combine_repeats(_repeated(matmul, {"x": np.ones((64, 1024), np.float32)}, "disable"))
    small = combine_repeats(_repeated(pair, {"x": np.ones((1, 4, 8, 8), np.float32)}, "disable"))

    change = moved(small, big)["shares"]["gemm"]
    assert small["share_spread"]["gemm"]["high"] == 0.0 and big["share_spread"]["gemm"]["low"] > 0.5
    assert change["within_spread"] is False


# ---------------------------------------------------------------- diagnoses vs the graph that ran


def make_conv_bn_conv(path: Path) -> Path:
    """Conv c0 -> BatchNormalization bn0 -> Conv c1: only c0 has a BatchNorm after it (c1 reads the
    BatchNorm's output, which the fold rewires)."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w0"),
        numpy_helper.from_array(rng.standard_normal((8, 8, 3, 3)).astype(np.float32), "w1"),
        numpy_helper.from_array(np.ones(8, np.float32), "s"),
        numpy_helper.from_array(np.zeros(8, np.float32), "b"),
        numpy_helper.from_array(np.zeros(8, np.float32), "m"),
        numpy_helper.from_array(np.ones(8, np.float32), "v"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w0"], ["c0"], pads=[1, 1, 1, 1], name="c0"),
        helper.make_node("BatchNormalization", ["c0", "s", "b", "m", "v"], ["bn"], name="bn0"),
        helper.make_node("Conv", ["bn", "w1"], ["y"], pads=[1, 1, 1, 1], name="c1"),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 16, 16])
    return save(path, nodes, [x], [y], inits)


def test_the_batchnorm_diagnosis_names_only_the_conv_that_feeds_a_batchnorm(tmp_path):
    model = onnx.load(str(make_conv_bn_conv(tmp_path / "cbc.onnx")))

    found = next(d for d in diagnose(model) if d["kind"] == "batchnorm_not_folded")

    assert found["nodes"] == ["Conv c0", "BatchNormalization bn0"]
    assert found["pairs"] == [["c0", "bn0"]]


def test_a_batchnorm_the_runtime_folded_is_not_named_and_one_that_runs_is(tmp_path):
    from autotune.diagnoses import diagnose_graph_that_ran

    path = make_conv_bn_conv(tmp_path / "cbc.onnx")
    model = onnx.load(str(path))
    feeds = {"x": np.ones((1, 3, 16, 16), np.float32)}
    folded = profile_onnxruntime(path, {"graph_optimization_level": "basic"}, feeds, min_runs=3, min_s=0.01)
    unfolded = profile_onnxruntime(path, {"graph_optimization_level": "disable"}, feeds, min_runs=3, min_s=0.01)
    assert "bn0" not in {n["name"] for n in folded["nodes"]}  # ONNX Runtime folded it into c0

    holding, removed = diagnose_graph_that_ran(model, folded)
    assert "batchnorm_not_folded" not in holding and "batchnorm_not_folded" in removed

    holding, removed = diagnose_graph_that_ran(model, unfolded)
    bn = holding["batchnorm_not_folded"]
    assert [text.split(" (")[0] for text in bn["nodes"]] == ["Conv c0", "BatchNormalization bn0"]
    assert bn["pairs"] == [["c0", "bn0"]] and bn["knob"] == "pass.fold_batchnorm_into_conv"
    ran = {n["name"] for n in unfolded["nodes"]}
    assert all(text.split(" ")[1] in ran for text in bn["nodes"])


def test_an_unnamed_node_is_named_as_the_runtime_names_it_in_the_graph_that_ran(tmp_path):
    from autotune.diagnoses import diagnose_graph_that_ran

    path = make_tiny_model(tmp_path / "tiny.onnx", dynamic_batch=False)
    feeds = {"x": np.ones((1, 3, 8, 8), np.float32)}
    profile = profile_onnxruntime(path, {"graph_optimization_level": "disable"}, feeds, min_runs=3, min_s=0.01)

    holding, _ = diagnose_graph_that_ran(onnx.load(str(path)), profile)

    pair = holding["redundant_transposes"]
    assert [text.split(" (")[0] for text in pair["nodes"]] == ["Transpose Transpose_3", "Transpose Transpose_5"]


INT8_SPACE = """
target: onnxruntime
knobs:
  precision: {type: categorical, choices: [fp32, int8], default: fp32}
  calibration_method: {type: categorical, choices: [minmax], default: minmax, condition: {precision: int8}}
  keep_float_layers: {type: categorical, choices: [0, 16], default: 0, condition: {precision: int8}}
known_good:
  - {precision: int8, calibration_method: minmax, keep_float_layers: 0}
  - {precision: int8, calibration_method: minmax, keep_float_layers: 16}
"""


def test_fp32_layers_under_int8_name_keep_float_layers_and_its_search_status(tmp_path):
    """The INT8 trial that keeps its 16 most sensitive layers (all of them) in float: the diagnosis names the FP32
    GEMM-class nodes that ran, the knob that decides them (`keep_float_layers`, not `precision`)
    and what the search tried of it."""
    from autotune.profile import profile_study
    from autotune.profile_render import render_section

    model = make_tiny_model(tmp_path / "tiny.onnx")
    space = tmp_path / "space.yaml"
    space.write_text(INT8_SPACE)
    results = tmp_path / "results"
    argv = ["start", str(model), "--foreground", "--trials", "3", "--space", str(space), "--results-dir"]
    assert main([*argv, str(results), "--max-measure-s", "0.05"]) == 0
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{results / 'tiny' / 'study.db'}")
    kept = next(t for t in study.trials if t.params.get("keep_float_layers") == 16 and t.state.name == "COMPLETE")

    data = profile_study(study, kept.number, repeats=1)

    left = next(d for d in data["diagnoses"] if d["kind"] == "left_in_fp32")
    assert left["knob"] == "keep_float_layers" and left["in_best"]
    ran = {n["name"]: n for n in data["best"]["nodes"]}
    named = [text.split(" ")[1] for text in left["nodes"]]
    assert named and all(ran[n]["precision"] == "fp32" and ran[n]["class"] == "gemm" for n in named)
    search = left["search"]
    assert search["value"] == 16
    assert {v["value"]: v["tried_trials"] for v in search["values"]}[16] == [kept.number]
    text = "\n".join(render_section(data))
    assert "Addressed by `keep_float_layers`" in text and "this configuration runs keep_float_layers=16" in text
    assert "not a searched knob" not in text
