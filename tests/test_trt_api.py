"""autotune against the real Python API of TensorRT 10.0, 10.8, 10.16 and 11.4.

The bindings wheels are real (PyPI); only their shared libraries are a stub
(tests/trt_api/stub_nvinfer.c, compiled with gcc), so every enum, class, attribute and
docstring read here is NVIDIA's. Each version is imported in its own subprocess
(tests/trt_api/probe.py). First run: about 5 MB of wheels, cached (tests/trt_api/bindings.py).

Expected values, with their sources:
- TacticSource values: NvInfer.h of each release (10.x: kCUBLAS=0 ... kJIT_CONVOLUTIONS=4;
  11.x keeps kEDGE_MASK_CONVOLUTIONS=0 and kJIT_CONVOLUTIONS=1, cuBLAS/cuDNN sources removed).
- Weak-typing flags (FP16/BF16/INT8/FP8), `int8_calibrator`: present in 10.x, removed in 11.x
  (TensorRT 10.x → 11.x migration guide, "Strongly Typed Networks Are Now Required").
- Tiling (`TilingOptimizationLevel`, `l2_limit_for_tiling`): added in TensorRT 10.8 (release notes).
- Build routes (`build_route`, `all_build_routes`): TensorRT 11.x (NvInfer.h; 11.4 docstrings).
- trtexec flags (TRTEXEC_FLAGS below): trtexec --help of each major (samples/common/sampleOptions.cpp);
  --setBuildRoute from samples/common/sampleTuning.h (11.x, the tuner's child command line);
  11.x times with a CUDA graph unless --noCudaGraph (issue 17 audit of 11.x's option parser).
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "trt_api"))
import bindings

VERSIONS = list(bindings.VERSIONS)
MAJOR = {v: int(v.split(".")[0]) for v in VERSIONS}

# TacticSource name -> value, from each release's NvInfer.h.
TACTIC_VALUES_10 = {"CUBLAS": 0, "CUBLAS_LT": 1, "CUDNN": 2, "EDGE_MASK_CONVOLUTIONS": 3, "JIT_CONVOLUTIONS": 4}
TACTIC_VALUES_11 = {"EDGE_MASK_CONVOLUTIONS": 0, "JIT_CONVOLUTIONS": 1}

# Knobs each version offers (the rest of the search space is graph passes and batch size).
HAS_TILING = {"10.0.1": False, "10.8.0.43": True, "10.16.1.11": True, "11.4.0.106": True}

# flag -> the trtexec majors that accept it (trtexec --help; see the module docstring).
TRTEXEC_FLAGS = {
    "--onnx": {10, 11},
    "--saveEngine": {10, 11},
    "--noTF32": {10, 11},
    "--fp16": {10},
    "--bf16": {10},
    "--stronglyTyped": {10, 11},
    "--builderOptimizationLevel": {10, 11},
    "--maxAuxStreams": {10, 11},
    "--tacticSources": {10, 11},
    "--tilingOptimizationLevel": {10, 11},
    "--l2LimitForTiling": {10, 11},
    "--sparsity": {10, 11},
    "--memPoolSize": {10, 11},
    "--minShapes": {10, 11},
    "--optShapes": {10, 11},
    "--maxShapes": {10, 11},
    "--timingCacheFile": {10, 11},
    "--profilingVerbosity": {10, 11},
    "--useCudaGraph": {10, 11},
    "--noCudaGraph": {11},
    "--setBuildRoute": {11},
    "--skipInference": {10, 11},
    "--loadEngine": {10, 11},
    "--shapes": {10, 11},
    "--noDataTransfers": {10, 11},
}
# Accepted by trtexec 11 but deprecated no-ops there, printing a warning (every network is
# strongly typed; timing uses a CUDA graph unless --noCudaGraph).
DEPRECATED_11 = {"--stronglyTyped", "--useCudaGraph"}


@pytest.fixture(scope="module")
def reports() -> dict[str, dict]:
    return {version: bindings.run_probe(version) for version in VERSIONS}


def test_the_real_modules_are_the_versions_named(reports):
    assert {v: r["version"] for v, r in reports.items()} == {v: v for v in VERSIONS}


def test_capability_detection_follows_each_versions_api(reports):
    for version, report in reports.items():
        caps = report["capabilities"]
        weak = MAJOR[version] == 10
        assert ("FP16" in caps["builder_flags"]) is weak, version
        assert ("INT8" in caps["builder_flags"]) is weak, version
        assert report["int8_calibrator"] is weak, version  # what Polygraphy < 0.49.22 reads
        assert bool(caps["tiling_levels"]) is HAS_TILING[version], version
        assert ("build_route" in caps["config_attributes"]) is (MAJOR[version] == 11), version
        assert {"BF16", "FP8"} <= set(caps["datatypes"]), version


def test_every_knob_maps_to_an_attribute_or_enum_that_exists_where_it_is_offered(reports):
    for version, report in reports.items():
        api = {knob: all(found.values()) for knob, found in report["knob_api"].items()}
        offered = report["offered"]
        precisions = set(offered["precision"])
        assert ("fp16_flag" in precisions) is api["precision fp16_flag (10.x)"], version
        assert ("bf16_flag" in precisions) is api["precision bf16_flag (10.x)"], version
        assert not {"int8_flag", "fp8_flag"} & precisions, version  # issue 17 item 5
        assert ("tiling_optimization_level" in offered) is api["tiling_optimization_level"], version
        assert ("l2_limit_for_tiling" in offered) is api["l2_limit_for_tiling"], version
        assert ("sparse_weights" in offered) is api["sparse_weights"], version
        assert ("workspace_limit_mib" in offered) is api["workspace_limit_mib"], version
        for knob in (
            "builder_optimization_level",
            "max_aux_streams",
            "workspace_limit_mib",
            "batch_size (profile)",
            "timing cache",
        ):
            assert api[knob], (version, knob)
        # No builder instance without the real library: build routes are never offered here.
        assert "build_route" not in offered, version


def test_tactic_sources_use_each_versions_enum_values(reports):
    for version, report in reports.items():
        expected = TACTIC_VALUES_11 if MAJOR[version] == 11 else TACTIC_VALUES_10
        assert report["tactic_values"] == expected, version
        assert {k for k in report["offered"] if k.startswith("tactic.")} == {f"tactic.{n}" for n in expected}
        # Turning JIT off keeps every other source: the bit is the version's own value.
        assert report["tactic_without_jit"] == [n for n in expected if n != "JIT_CONVOLUTIONS"], version
        # The exported Polygraphy postprocess script flips the same bit with the real enum.
        assert report["script_tactic_sources"] == report["tactic_without_jit"], version


def test_build_route_parsing_matches_the_11x_documentation(reports):
    docs = reports["11.4.0.106"]["docs"]
    assert "JSON" in docs["all_build_routes"]
    assert "whitespace-separated list of ``-name=value``" in docs["build_route"]
    from autotune.targets._tensorrt_build import one_off_build_routes, parse_build_routes

    fixture = (Path(__file__).resolve().parent / "trt_api" / "fixtures" / "all_build_routes.json").read_text()
    for route in one_off_build_routes(parse_build_routes(fixture)):
        assert len(route.split()) == 1 and route.startswith("-") and "=" in route  # one documented token
    assert "build_route" not in reports["10.16.1.11"]["docs"]["build_route"]  # no such attribute in 10.x


def test_the_runtime_uses_only_api_every_version_has(reports):
    for version, report in reports.items():
        assert all(report["runtime_api"].values()), (version, report["runtime_api"])
        # nvtx_verbosity: the context starts at the build verbosity, which adds enqueue latency.
        assert "increase latency in enqueueV3" in report["docs"]["nvtx_verbosity"], version
        dtypes = report["dtypes"]
        assert dtypes["BF16"] == "bfloat16" and dtypes["FP8"] == "float8_e4m3fn", version
        assert all(dtypes[n] == "packed" for n in ("INT4", "FP4", "E8M0") if n in dtypes), version


def test_per_layer_profiling_hooks_exist_in_every_version(reports):
    for version, report in reports.items():
        assert all(report["profiling_api"].values()), (version, report["profiling_api"])


def _trtexec_flags(command: str) -> dict[str, str]:
    return dict(arg.partition("=")[::2] for arg in shlex.split(command)[1:])


def test_trtexec_commands_use_only_flags_their_version_accepts(reports):
    for version, report in reports.items():
        flags = _trtexec_flags(report["commands"]["trtexec"])
        timing = _trtexec_flags(report["commands"]["trtexec timing"])
        for flag in [*flags, *timing]:
            assert MAJOR[version] in TRTEXEC_FLAGS[flag], (version, flag)
            assert MAJOR[version] == 10 or flag not in DEPRECATED_11, (version, flag)
        assert "--maxAuxStreams" not in flags, version  # -1 is TensorRT's own default
        assert flags["--memPoolSize"] == "workspace:256", version  # MiB: trtexec's unit without a suffix
        assert flags["--optShapes"] == "'input:0':8x3x32x32" == timing["--shapes"], version
        assert flags["--profilingVerbosity"] == "detailed" and "--skipInference" in flags, version
        assert timing["--loadEngine"] == "engine.plan" and timing["--profilingVerbosity"] == "layer_names_only"
        if MAJOR[version] == 11:
            assert flags["--setBuildRoute"] == "-conv_use_long_w=off" and "--noCudaGraph" in timing
        else:
            assert "--noCudaGraph" not in timing and "--useCudaGraph" not in timing
        assert ("--tilingOptimizationLevel" in flags) is HAS_TILING[version], version


def test_polygraphy_commands_parse_with_polygraphys_own_cli(reports):
    from polygraphy.tools.args.util import util as args_util
    from polygraphy.tools.convert import Convert

    for version, report in reports.items():
        command = shlex.split(report["commands"]["polygraphy"])
        parser = argparse.ArgumentParser()
        Convert().setup_parser(parser.add_subparsers())
        args = parser.parse_args(command[1:])
        assert args.max_aux_streams is None, version
        opt = args_util.parse_meta(args.trt_opt_shapes[0], includes_dtype=False)
        assert list(opt["input:0"].shape) == [8, 3, 32, 32], version
        assert args.builder_optimization_level == 5, version
        pools = args_util.parse_arglist_to_dict(args.memory_pool_limit, cast_to=args_util.parse_num_bytes)
        assert pools == {"workspace": 256 << 20}, version  # what Polygraphy's TrtConfigArgs reads
        # No read-back here: the JIT toggle goes to the postprocess script, never an empty list
        # (which Polygraphy takes as "disable every source").
        assert args.tactic_sources is None and args.trt_config_postprocess_script, version


@pytest.mark.parametrize(
    "polygraphy_version, survives",
    [(bindings.POLYGRAPHY_BEFORE_FIX, False), (None, True)],  # None: the floor in pyproject.toml
)
def test_polygraphys_floor_survives_the_11x_builder_config(polygraphy_version, survives):
    from autotune.targets.tensorrt import MIN_POLYGRAPHY

    version = polygraphy_version or MIN_POLYGRAPHY
    result = bindings.run_probe("11.4.0.106", "polygraphy", bindings.install_polygraphy(version))
    assert result["polygraphy"] == version
    assert (result["error"] is None) is survives, result
    if survives:
        assert result["has_rtx_backend"]
    else:
        assert "int8_calibrator" in result["error"]


def test_the_versions_page_is_generated_from_these_bindings(reports, tmp_path):
    script = Path(__file__).resolve().parent / "trt_api" / "write_versions_doc.py"
    out = tmp_path / "tensorrt-versions.md"
    subprocess.run([sys.executable, str(script), str(out)], check=True)
    committed = Path(__file__).resolve().parent.parent / "docs" / "tensorrt-versions.md"
    assert out.read_text() == committed.read_text(), (
        "docs/tensorrt-versions.md is stale: run python tests/trt_api/write_versions_doc.py"
    )
