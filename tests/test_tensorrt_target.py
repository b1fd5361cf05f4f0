"""The TensorRT targets, with real TensorRT-RTX builds on the CPU (build-only mode).

Every build runs in a child process, as in a study; tiny ONNX models are made here.
"""

from __future__ import annotations

import importlib.util
import multiprocessing
import shlex
from pathlib import Path

import numpy as np
import onnx
import pytest
import yaml
from onnx import TensorProto, helper, numpy_helper

from autotune.errors import BuildError
from autotune.space import load_space, parse_space
from autotune.targets import _tensorrt_build, tensorrt
from autotune.targets.base import Built, TargetOptions
from autotune.targets.tensorrt import TensorRTRTXTarget, TensorRTTarget, builder_settings

HAS_RTX = importlib.util.find_spec("tensorrt_rtx") is not None
needs_rtx = pytest.mark.skipif(not HAS_RTX, reason="TensorRT-RTX (tensorrt-rtx-cu13) is not installed")

REPO = Path(__file__).resolve().parent.parent


def conv_model(path: Path, batch: str | int = "N", seed: int = 0) -> Path:
    """input[N,3,32,32] -> Conv -> Relu -> Flatten -> MatMul -> output[N,10]."""
    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w"),
        numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "b"),
        numpy_helper.from_array(rng.standard_normal((8 * 32 * 32, 10)).astype(np.float32), "w2"),
    ]
    nodes = [
        helper.make_node("Conv", ["input", "w", "b"], ["c"], pads=[1, 1, 1, 1], name="conv0"),
        helper.make_node("Relu", ["c"], ["r"], name="relu0"),
        helper.make_node("Flatten", ["r"], ["f"], name="flat"),
        helper.make_node("MatMul", ["f", "w2"], ["output"], name="fc"),
    ]
    graph = helper.make_graph(
        nodes,
        "conv",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, 32, 32])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [batch, 10])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def unknown_op_model(path: Path) -> Path:
    node = helper.make_node("FrobnicateOp", ["input"], ["output"], name="mystery_node", domain="example.custom")
    graph = helper.make_graph(
        [node],
        "bad",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 4])],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("example.custom", 1)]
    )
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return conv_model(tmp_path_factory.mktemp("models") / "conv.onnx")


@pytest.fixture
def rtx(tmp_path) -> TensorRTRTXTarget:
    return TensorRTRTXTarget(TargetOptions(cache_dir=tmp_path / "study", build_only=True))


# --------------------------------------------------------------------------- knob mapping


@needs_rtx
def test_every_knob_value_reaches_the_builder_config(model, tmp_path):
    target = TensorRTRTXTarget(TargetOptions(build_only=True))
    space = load_space(target.default_space_path(), target)
    configs, expected = [], []
    for level in range(0, 6):
        configs.append({"builder_optimization_level": level})
        expected.append(("builder_optimization_level", level))
    for streams in space["max_aux_streams"].choices:
        configs.append({"max_aux_streams": streams})
        expected.append(("max_aux_streams", streams))
    for tiling in space["tiling_optimization_level"].choices:
        configs.append({"tiling_optimization_level": tiling})
        expected.append(("tiling_optimization_level", tiling))
    for limit in space["l2_limit_for_tiling"].choices:
        if limit > 0:
            configs.append({"tiling_optimization_level": "FAST", "l2_limit_for_tiling": limit})
            expected.append(("l2_limit_for_tiling", limit))
    for precision, tf32 in (("fp32", False), ("tf32", True), ("fp16", True), ("int8", True)):
        configs.append({"precision": precision})
        expected.append(("tf32", tf32))
    for sparse in (False, True):
        configs.append({"sparse_weights": sparse})
        expected.append(("sparse", sparse))
    for source in ("EDGE_MASK_CONVOLUTIONS", "JIT_CONVOLUTIONS"):
        for on in (False, True):
            configs.append({f"tactic.{source}": on})
            expected.append((f"tactic.{source}", on))

    read_back = target.describe_builder_configs(model, configs)

    assert len(read_back) == len(configs)
    for (what, value), got in zip(expected, read_back, strict=True):
        if what == "tf32":
            assert ("TF32" in got["flags"]) is value, got
        elif what == "sparse":
            assert ("SPARSE_WEIGHTS" in got["flags"]) is value, got
        elif what.startswith("tactic."):
            assert (what.split(".", 1)[1] in got["tactic_sources"]) is value, got
        else:
            assert got[what] == value, (what, got)
        assert got["profiling_verbosity"] == "DETAILED"  # the layer table needs it


@needs_rtx
def test_unset_knobs_keep_tensorrt_defaults(model):
    (got,) = TensorRTRTXTarget(TargetOptions(build_only=True)).describe_builder_configs(model, [{}])
    assert got["builder_optimization_level"] == 3
    assert got["max_aux_streams"] == -1
    assert "TF32" in got["flags"]
    assert got["tiling_optimization_level"] == "NONE"
    assert sorted(got["tactic_sources"]) == ["EDGE_MASK_CONVOLUTIONS", "JIT_CONVOLUTIONS"]


def test_settings_choose_typing_and_legacy_flags():
    assert builder_settings({"precision": "fp16_flag"}, flavor="tensorrt")["legacy_flags"] == ["FP16"]
    assert not builder_settings({"precision": "fp16_flag"}, flavor="tensorrt")["strongly_typed"]
    assert builder_settings({"precision": "int8"}, flavor="tensorrt")["strongly_typed"]
    assert not builder_settings({"precision": "tf32"}, flavor="tensorrt")["strongly_typed"]
    assert builder_settings({"precision": "fp32"}, flavor="tensorrt")["tf32"] is False
    assert builder_settings({}, flavor="tensorrt")["tf32"] is True  # TensorRT's default


def test_dynamic_batch_becomes_an_optimization_profile():
    profile = tensorrt.optimization_profile({"input": [None, 3, 32, 32]}, {"input": [8, 3, 32, 32]})
    assert profile == {"input": [[1, 3, 32, 32], [8, 3, 32, 32], [8, 3, 32, 32]]}
    assert tensorrt.optimization_profile({"input": [1, 3, 32, 32]}, {"input": [1, 3, 32, 32]}) is None


# --------------------------------------------------------------------------- capabilities


@needs_rtx
def test_space_is_filtered_by_what_tensorrt_rtx_offers(rtx):
    # The full TensorRT space, filtered by TensorRT-RTX's capabilities.
    data = yaml.safe_load((REPO / "search_spaces" / "tensorrt.yaml").read_text())
    space = parse_space(dict(data, target=rtx.name), rtx)
    names = {k.name for k in space.knobs}
    assert "tactic.JIT_CONVOLUTIONS" in names and "tactic.EDGE_MASK_CONVOLUTIONS" in names
    assert not {"tactic.CUBLAS", "tactic.CUBLAS_LT", "tactic.CUDNN"} & names  # not in RTX's TacticSource
    assert "build_route" not in names  # all_build_routes is empty on RTX 1.7
    assert "cuda_graph" not in names  # build-only: nothing runs
    assert "tiling_optimization_level" in names
    # no *_flag; no fp8 until its calibration holds up (the space says why)
    assert set(space["precision"].choices) == {"tf32", "fp32", "fp16", "bf16", "int8"}


class _FakeEnum:
    def __init__(self, *names: str) -> None:
        self.__members__ = {name: i for i, name in enumerate(names)}


class _FakeConfigClass:
    builder_optimization_level = 3
    max_aux_streams = -1
    build_route = ""
    all_build_routes = ""


class _FakeTrt10:
    """A TensorRT 10.x-like module: weak-typing flags, no tiling, no build routes."""

    __version__ = "10.0.0"
    TacticSource = _FakeEnum("CUBLAS", "CUBLAS_LT", "CUDNN", "EDGE_MASK_CONVOLUTIONS", "JIT_CONVOLUTIONS")
    BuilderFlag = _FakeEnum("FP16", "INT8", "TF32", "SPARSE_WEIGHTS")
    DataType = _FakeEnum("FLOAT", "HALF", "INT8")
    IBuilderConfig = _FakeConfigClass


def test_a_module_without_an_attribute_loses_the_knob():
    caps = _tensorrt_build.capabilities_of(_FakeTrt10)
    target = TensorRTTarget(TargetOptions(build_only=True), capabilities=caps)
    space = load_space(REPO / "search_spaces" / "tensorrt.yaml", target)
    names = {k.name for k in space.knobs}
    assert "tiling_optimization_level" not in names  # no trt.TilingOptimizationLevel
    assert "l2_limit_for_tiling" not in names
    assert "build_route" not in names
    assert {"tactic.CUBLAS", "tactic.CUDNN"} <= names
    # int8_flag is never offered, even where BuilderFlag.INT8 exists (no calibrator: no INT8 engine)
    assert set(space["precision"].choices) == {"tf32", "fp32", "fp16", "int8", "fp16_flag"}


def test_build_routes_are_offered_where_tensorrt_lists_them():
    caps = dict(_tensorrt_build.capabilities_of(_FakeTrt10), build_routes=["fast", "thorough"])
    caps["config_attributes"] = [*caps["config_attributes"], "build_route"]
    target = TensorRTTarget(TargetOptions(build_only=True), capabilities=caps)
    assert target.supported_choices("build_route", ["default", "*"]) == ["default", "fast", "thorough"]


# --------------------------------------------------------------------------- availability


def test_missing_tensorrt_names_the_pip_extra_and_the_guide(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "tensorrt" else real(name))
    reason = TensorRTTarget.unavailable_reason()
    assert "pip install 'autotune[tensorrt]'" in reason
    assert "pypi.nvidia.com" in reason and "docs.nvidia.com" in reason
    assert "\n" not in reason


@needs_rtx
def test_tensorrt_rtx_needs_no_gpu_to_build_only(monkeypatch):
    monkeypatch.setattr(tensorrt, "visible_gpu", lambda: {"count": 0, "error": "no CUDA driver"})
    assert TensorRTRTXTarget.unavailable_reason(build_only=True) is None
    assert "--build-only" in TensorRTRTXTarget.unavailable_reason(build_only=False)


# --------------------------------------------------------------------------- builds


@needs_rtx
def test_build_writes_an_engine_with_its_layer_table(rtx, model, tmp_path):
    built = rtx.build(model, {"precision": "tf32"}, tmp_path / "trial0", {"input": [4, 3, 32, 32]})
    assert built.artifact.exists() and built.artifact.stat().st_size == built.info["engine_size_bytes"] > 0
    assert built.info["build_time_s"] > 0
    assert built.info["layer_count"] == len(built.info["layers"]) > 0
    fused = {node for layer in built.info["layers"] for node in layer["onnx_nodes"]}
    assert {"conv0", "relu0", "fc"} <= fused
    assert all({"name", "type", "onnx_nodes", "datatypes", "tactic"} <= set(layer) for layer in built.info["layers"])
    assert built.info["builder_config"]["num_optimization_profiles"] == 1
    assert Path(built.info["build_log"]).exists()


@needs_rtx
def test_a_build_only_layer_profile_lists_the_engines_layers_untimed_and_says_why(rtx, model, tmp_path):
    built = rtx.build(model, {}, tmp_path / "trial0", {"input": [1, 3, 32, 32]})
    feeds = {"input": np.zeros((1, 3, 32, 32), np.float32)}

    profile = rtx.layer_profile(built, model, {}, feeds)

    assert [n["name"] for n in profile["nodes"]] == [layer["name"] for layer in built.info["layers"]]
    assert profile["timed"] is False and "(a build-only study runs no engine)" in profile["note"]


@needs_rtx
def test_unsupported_op_fails_with_the_parsers_message(rtx, tmp_path):
    bad = unknown_op_model(tmp_path / "bad.onnx")
    with pytest.raises(BuildError) as info:
        rtx.build(bad, {}, tmp_path / "trial", {"input": [1, 4]})
    message = str(info.value)
    assert "FrobnicateOp" in message and "mystery_node" in message
    assert "Thread context" not in message


@needs_rtx
def test_a_build_past_its_time_limit_fails(model, tmp_path):
    target = TensorRTRTXTarget(TargetOptions(build_only=True, build_timeout_s=0.01))
    with pytest.raises(BuildError, match="timed out"):
        target.build(model, {}, tmp_path / "trial", {"input": [1, 3, 32, 32]})


@needs_rtx
def test_identical_engines_share_a_digest_and_different_ones_do_not(rtx, model, tmp_path):
    shapes = {"input": [2, 3, 32, 32]}
    a = rtx.build(model, {"precision": "tf32"}, tmp_path / "a", shapes)
    b = rtx.build(model, {"precision": "tf32"}, tmp_path / "b", shapes)
    c = rtx.build(model, {"precision": "fp32"}, tmp_path / "c", shapes)  # TF32 off changes the engine
    assert a.digest == b.digest == a.info["engine_sha256"]
    assert a.artifact.read_bytes() == b.artifact.read_bytes()
    assert c.digest != a.digest


def _build_one(args: tuple[str, str, int]) -> str:
    cache_dir, workdir, level = args
    target = TensorRTRTXTarget(TargetOptions(cache_dir=Path(cache_dir), build_only=True))
    model = conv_model(Path(workdir) / "model.onnx", seed=level)
    built = target.build(model, {"builder_optimization_level": level}, Path(workdir), {"input": [1, 3, 32, 32]})
    return built.info["timing_cache"]


@needs_rtx
def test_timing_cache_survives_concurrent_builds(tmp_path):
    import tensorrt_rtx as trt

    jobs = [(str(tmp_path / "study"), str(tmp_path / f"w{i}"), i % 6) for i in range(4)]
    for _, workdir, _ in jobs:
        Path(workdir).mkdir()
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        caches = pool.map(_build_one, jobs)
    assert len(set(caches)) == 1  # one file per (GPU, TensorRT version)
    cache = Path(caches[0])
    assert cache.exists() and cache.stat().st_size > 0
    assert not list(cache.parent.glob("*.tmp"))  # every merge replaced the file whole
    config = trt.Builder(trt.Logger(trt.Logger.ERROR)).create_builder_config()
    assert config.create_timing_cache(cache.read_bytes()) is not None


# --------------------------------------------------------------------------- deployment


def _built(settings: dict, read_back: dict | None = None) -> Built:
    return Built(artifact=Path("engine.plan"), info={"settings": settings, "builder_config": read_back or {}})


def test_deploy_commands_map_every_knob_to_its_flag():
    config = {
        "precision": "fp16_flag",
        "builder_optimization_level": 5,
        "max_aux_streams": 0,
        "tactic.CUDNN": True,
        "tactic.JIT_CONVOLUTIONS": False,
        "tiling_optimization_level": "MODERATE",
        "l2_limit_for_tiling": 4194304,
        "sparse_weights": True,
        "cuda_graph": True,
    }
    profile = {"input": [[1, 3, 32, 32], [8, 3, 32, 32], [8, 3, 32, 32]]}
    settings = builder_settings(config, flavor="tensorrt", profile=profile)
    read_back = {"tactic_sources": ["CUDNN", "EDGE_MASK_CONVOLUTIONS"]}
    target = TensorRTTarget(TargetOptions(build_only=True), capabilities={})
    commands = target.deploy_commands(_built(settings, read_back), config)

    trtexec = shlex.split(commands["trtexec"])
    assert trtexec[0] == "trtexec"
    for flag in (
        "--onnx=model.onnx",
        "--saveEngine=engine.plan",
        "--fp16",
        "--builderOptimizationLevel=5",
        "--maxAuxStreams=0",
        "--tacticSources=+CUDNN,-JIT_CONVOLUTIONS",
        "--tilingOptimizationLevel=2",
        "--l2LimitForTiling=4194304",
        "--sparsity=enable",
        "--minShapes=input:1x3x32x32",
        "--optShapes=input:8x3x32x32",
        "--maxShapes=input:8x3x32x32",
        "--timingCacheFile=timing.cache",
        "--profilingVerbosity=detailed",
        "--skipInference",
    ):
        assert flag in trtexec, flag
    assert "--noTF32" not in trtexec
    timing = shlex.split(commands["trtexec timing"])
    for flag in ("--loadEngine=engine.plan", "--shapes=input:8x3x32x32", "--profilingVerbosity=layer_names_only"):
        assert flag in timing, flag
    assert "--useCudaGraph" in timing and "--useCudaGraph" not in trtexec

    poly = commands["polygraphy"]
    for fragment in (
        "polygraphy convert model.onnx -o engine.plan",
        "--tf32",
        "--fp16",
        "--builder-optimization-level 5",
        "--max-aux-streams 0",
        "--tactic-sources CUDNN EDGE_MASK_CONVOLUTIONS",
        "--tiling-optimization-level moderate",
        "--sparse-weights",
        "--trt-opt-shapes 'input:[8,3,32,32]'",
        "--trt-config-postprocess-script trt_config_postprocess.py:postprocess_config",
        "--load-timing-cache timing.cache",
    ):
        assert fragment in poly, fragment


def test_strict_fp32_turns_tf32_off_in_both_commands():
    settings = builder_settings({"precision": "fp32"}, flavor="tensorrt")
    target = TensorRTTarget(TargetOptions(build_only=True), capabilities={})
    commands = target.deploy_commands(_built(settings), {"precision": "fp32"})
    assert "--noTF32" in commands["trtexec"]
    assert "--tf32" not in commands["polygraphy"]


def test_tensorrt_rtx_commands_select_the_rtx_backend():
    settings = builder_settings({"precision": "int8"}, flavor="tensorrt-rtx")
    target = TensorRTRTXTarget(TargetOptions(build_only=True), capabilities={})
    commands = target.deploy_commands(_built(settings), {})
    assert commands["tensorrt_rtx"].startswith("tensorrt_rtx --onnx=model.onnx")
    assert commands["polygraphy"].startswith("POLYGRAPHY_USE_TENSORRT_RTX=1 polygraphy convert")
    assert "--tf32" not in commands["polygraphy"] and "--int8" not in commands["polygraphy"]


@needs_rtx
def test_export_writes_engine_timing_cache_and_build_info(rtx, model, tmp_path):
    built = rtx.build(
        model,
        {"tiling_optimization_level": "FAST", "l2_limit_for_tiling": 4194304},
        tmp_path / "t",
        {"input": [1, 3, 32, 32]},
    )
    files = {p.name for p in rtx.export(built, {}, tmp_path / "best")}
    assert {"engine.plan", "timing.cache", "build_info.json", "build.log", "trt_config_postprocess.py"} <= files
    script = (tmp_path / "best" / "trt_config_postprocess.py").read_text()
    assert "config.l2_limit_for_tiling = 4194304" in script


# --------------------------------------------------------------------------- log parsing


def test_first_error_skips_harmless_lines():
    log = "\n".join(
        [
            "[E] [defaultAllocator.cpp::nvinfer1::internal::...] Thread context has not been set!",
            "[E] cudaError 35 ...",
            '[E] ModelImporter.cpp:140: While parsing node number 3 [Foo -> "y"]:',
            "[E] In node 3 with name: n3 and operator: Foo (parseNode): INVALID_NODE: No importer",
            "[!] Could not parse ONNX correctly",
        ]
    )
    assert tensorrt.first_error(log).startswith("In node 3 with name: n3 and operator: Foo")


def test_layer_table_reads_the_older_engine_layer_information_format():
    log = (
        "[V] Engine Layer Information:\n"
        "Layer(CaskConvolution): conv0 + relu0, Tactic: 0x00000000000003ea, input (Float[1,3,32,32]) -> r (Half[1,8,32,32])\n"
        "Layer(Reformat): r_copy, Tactic: 0x0000000000000000, r (Half[1,8,32,32]) -> out (Float[1,8,32,32])\n"
        "[V] done\n"
    )
    layers = tensorrt.parse_layer_table(log)
    assert [layer["onnx_nodes"] for layer in layers] == [["conv0", "relu0"], ["r_copy"]]
    assert layers[0]["type"] == "CaskConvolution" and layers[0]["datatypes"] == ["Half"]
