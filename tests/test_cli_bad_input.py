"""Bad input: exit code 2, one line naming the problem, nothing written under results/."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from autotune.cli import main
from autotune.targets.onnxruntime import OnnxRuntimeTarget
from tests.conftest import make_dynamic_hw_model, make_tiny_model


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    err = capsys.readouterr().err.strip()
    return code, err


def assert_rejected(code: int, err: str, *fragments: str) -> None:
    assert code == 2
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, err


def start(results_dir: Path, *argv: str) -> list[str]:
    return ["start", *argv, "--foreground", "--trials", "2", "--results-dir", str(results_dir)]


def test_missing_model_file_is_rejected(capsys, results_dir, tmp_path):
    code, err = run_cli(capsys, *start(results_dir, str(tmp_path / "nope.onnx")))
    assert_rejected(code, err, "nope.onnx", "no such file")
    assert not results_dir.exists()


def test_a_file_that_is_not_onnx_is_rejected(capsys, results_dir, tmp_path):
    bogus = tmp_path / "notes.onnx"
    bogus.write_text("this is not a protobuf")
    code, err = run_cli(capsys, *start(results_dir, str(bogus)))
    assert_rejected(code, err, "notes.onnx", "not a valid ONNX model")
    assert not results_dir.exists()


def test_a_truncated_model_is_rejected(capsys, results_dir, tiny_model, tmp_path):
    truncated = tmp_path / "cut.onnx"
    truncated.write_bytes(tiny_model.read_bytes()[: tiny_model.stat().st_size // 2])
    code, err = run_cli(capsys, *start(results_dir, str(truncated)))
    assert_rejected(code, err, "cut.onnx")
    assert not results_dir.exists()


def test_a_model_onnxruntime_cannot_load_names_the_op(capsys, results_dir, tmp_path):
    node = helper.make_node("FancyOp", ["x"], ["y"], domain="com.example")
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)])
    path = tmp_path / "fancy.onnx"
    onnx.save(model, str(path))
    code, err = run_cli(capsys, *start(results_dir, str(path)))
    assert_rejected(code, err, "fancy.onnx", "ONNX Runtime cannot load", "FancyOp")
    assert not results_dir.exists()


@pytest.mark.parametrize(
    ("yaml_text", "fragment"),
    [
        ("knobs: [unclosed", "invalid YAML"),
        ("knobs:\n  warp_speed: {type: bool, default: false}\n", "unknown knob 'warp_speed'"),
        ("knobs:\n  batch_size: {type: categorical, choices: [], default: 1}\n", "empty or missing choice list"),
        ("knobs:\n  intra_op_threads: {type: int, low: 4, high: 1, default: 2}\n", "bad range"),
        (
            "knobs:\n  inter_op_threads: {type: int, low: 1, high: 2, default: 1, condition: {execution_mode: parallel}}\n",
            "condition on missing knob 'execution_mode'",
        ),
        ("knobs:\n  pass.make_it_fast: {type: bool, default: false}\n", "unknown graph pass"),
    ],
)
def test_invalid_search_space_is_rejected(capsys, results_dir, tiny_model, tmp_path, yaml_text, fragment):
    space = tmp_path / "space.yaml"
    space.write_text(yaml_text)
    code, err = run_cli(capsys, *start(results_dir, str(tiny_model), "--space", str(space)))
    assert_rejected(code, err, "space.yaml", fragment)
    assert not results_dir.exists()


@pytest.mark.parametrize("budget", ["10x", "m", "-5m", "0s", ""])
def test_bad_budget_string_is_rejected(capsys, results_dir, tiny_model, budget):
    code, err = run_cli(capsys, "start", str(tiny_model), "--budget", budget, "--results-dir", str(results_dir))
    assert_rejected(code, err, "--budget")
    assert not results_dir.exists()


def test_zero_trials_is_rejected(capsys, results_dir, tiny_model):
    code, err = run_cli(capsys, "start", str(tiny_model), "--trials", "0", "--results-dir", str(results_dir))
    assert_rejected(code, err, "--trials", "at least 1")
    assert not results_dir.exists()


def test_unwritable_results_dir_is_rejected(capsys, tiny_model, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where a directory should be")
    code, err = run_cli(capsys, *start(blocker / "results", str(tiny_model)))
    assert_rejected(code, err, "--results-dir", "not writable")


def test_existing_study_of_another_model_is_rejected(capsys, results_dir, tiny_model, tmp_path, small_space):
    code = main(
        start(results_dir, str(tiny_model), "--study", "shared", "--space", str(small_space), "--max-measure-s", "0.05")
    )
    assert code == 0
    capsys.readouterr()
    other = make_tiny_model(tmp_path / "other.onnx", seed=7)
    before = sorted(p.name for p in (results_dir / "shared").rglob("*"))
    code, err = run_cli(capsys, *start(results_dir, str(other), "--study", "shared"))
    assert_rejected(code, err, "--study shared", "different model")
    assert sorted(p.name for p in (results_dir / "shared").rglob("*")) == before


def test_inputs_with_wrong_names_are_rejected(capsys, results_dir, tiny_model, tmp_path):
    npz = tmp_path / "in.npz"
    np.savez(npz, pixels=np.zeros((1, 3, 8, 8), np.float32))
    code, err = run_cli(capsys, *start(results_dir, str(tiny_model), "--inputs", str(npz)))
    assert_rejected(code, err, "--inputs", "missing x", "unknown pixels")
    assert not results_dir.exists()


def test_inputs_with_wrong_shape_are_rejected(capsys, results_dir, tiny_model, tmp_path):
    npz = tmp_path / "in.npz"
    np.savez(npz, x=np.zeros((2, 3, 9, 8), np.float32))
    code, err = run_cli(capsys, *start(results_dir, str(tiny_model), "--inputs", str(npz)))
    assert_rejected(code, err, "--inputs", "'x'", "[2, 3, 9, 8]")
    assert not results_dir.exists()


def test_unknown_target_is_rejected(capsys, results_dir, tiny_model):
    code, err = run_cli(capsys, *start(results_dir, str(tiny_model), "--target", "tpu"))
    assert_rejected(code, err, "--target", "tpu")


def test_the_console_script_prints_one_line_and_exits_2(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "autotune.cli",
            "start",
            str(tmp_path / "missing.onnx"),
            "--results-dir",
            str(tmp_path / "r"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0
    assert "missing.onnx: no such file" in proc.stderr
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    ("flags", "fragments"),
    [
        (["--accuracy", "strict"], ["--accuracy 'strict'", "auto, scale or elementwise"]),
        (["--accuracy", "scale", "--atol", "1e-3"], ["--atol/--rtol", "--accuracy scale", "--max-error"]),
        (["--atol", "1e-3", "--max-error", "0.05"], ["--max-error", "--atol/--rtol"]),
        (["--min-cosine", "1.5"], ["--min-cosine '1.5'", "at most 1"]),
        (["--min-cosine", "0"], ["--min-cosine '0'", "greater than zero"]),
        (["--min-cosine", "high"], ["--min-cosine 'high'", "expected a number"]),
        (["--accuracy", "elementwise", "--min-cosine", "0.9"], ["--min-cosine '0.9'", "--accuracy scale or auto only"]),
        (["--output-role", "logits=boxes"], ["--output-role 'logits=boxes'", "classes"]),
        (["--output-role", "nope=classes"], ["--output-role nope", "no output 'nope'"]),
        (["--output-role", "y=classes", "--output-role", "y=generic"], ["--output-role y", "given twice"]),
        (["--judge", "cer=2"], ["--judge 'cer=2'", "between 0 and 1"]),
        (["--accuracy", "scale", "--judge", "cer=0.1"], ["--output-role/--judge", "not scale"]),
        (["--max-error", "-1"], ["--max-error '-1'"]),
    ],
)
def test_bad_accuracy_flags_are_rejected(capsys, results_dir, tiny_model, flags, fragments):
    code, err = run_cli(capsys, *start(results_dir, str(tiny_model), *flags))
    assert_rejected(code, err, *fragments)
    assert not results_dir.exists()


@pytest.mark.parametrize(
    ("metric", "fragment"),
    [
        ("top3", "expected module:function"),
        ("no_such_module_xyz:score", "cannot import no_such_module_xyz"),
        ("autotune.metrics:top7", "no callable 'top7'"),
        ("autotune.metrics:MIN_AGREEMENT", "no callable 'MIN_AGREEMENT'"),
    ],
)
def test_a_metric_that_cannot_be_loaded_is_rejected(capsys, results_dir, tiny_model, metric, fragment):
    code, err = run_cli(capsys, *start(results_dir, str(tiny_model), "--metric", metric))
    assert_rejected(code, err, f"--metric {metric!r}", fragment)
    assert not results_dir.exists()


def test_dynamic_dims_are_never_invented_start_names_them_and_suggests_a_shape(capsys, results_dir, tmp_path):
    model = make_dynamic_hw_model(tmp_path / "det.onnx")
    code, err = run_cli(capsys, *start(results_dir, str(model)))
    assert_rejected(code, err, "det.onnx", "input 'x' dims H, W", "--shape x:1,3,224,224")
    assert not results_dir.exists()


def test_the_short_shape_form_sets_the_spatial_dims_of_the_only_image_input(tmp_path):
    from autotune.cli import build_parser, prepare_start

    model = make_dynamic_hw_model(tmp_path / "det.onnx")
    args = build_parser().parse_args(
        ["start", str(model), "--shape", "640x480", "--trials", "1", "--results-dir", str(tmp_path / "r")]
    )
    spec = prepare_start(args)[0]
    assert spec.shape_overrides == {"x": (1, 3, 640, 480)}
    assert spec.input_pool["x"].shape[2:] == (640, 480)


def test_a_bad_short_shape_is_rejected(capsys, results_dir, tmp_path):
    model = make_dynamic_hw_model(tmp_path / "det.onnx")
    code, err = run_cli(capsys, *start(results_dir, str(model), "--shape", "640x480x3"))
    assert_rejected(code, err, "--shape '640x480x3'", "HxW")


def test_rerunning_a_study_with_other_shapes_is_refused_not_silently_resumed(capsys, results_dir, tmp_path):
    import optuna

    model = make_dynamic_hw_model(tmp_path / "det.onnx")
    first = [*start(results_dir, str(model), "--shape", "32x32", "--study", "det"), "--max-measure-s", "0.05"]
    assert main(first) == 0
    capsys.readouterr()
    storage = f"sqlite:///{results_dir / 'det' / 'study.db'}"
    trials_before = len(optuna.load_study(study_name="det", storage=storage).trials)
    code, err = run_cli(capsys, *start(results_dir, str(model), "--shape", "64x64", "--study", "det"))
    assert_rejected(code, err, "--study det", "--shape", "pick another --study name")
    assert len(optuna.load_study(study_name="det", storage=storage).trials) == trials_before
    # The same inputs continue the study.
    assert main([*first[:-4], "--trials", "3", "--results-dir", str(results_dir), "--max-measure-s", "0.05"]) == 0


def test_argparse_errors_are_prefixed_once_and_version_is_printed(capsys):
    code, err = run_cli(capsys, "start", "--trials")
    assert_rejected(code, err, "start: argument --trials")
    assert err.count("autotune") == 1
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0 and capsys.readouterr().out.startswith("autotune ")


def test_batch_limits_the_deployment_batch_sizes_and_a_static_model_refuses_others(capsys, results_dir, tmp_path):
    from autotune.cli import build_parser, prepare_start

    args = build_parser().parse_args(
        ["start", str(make_tiny_model(tmp_path / "t.onnx")), "--batch", "8,1", "--results-dir", str(results_dir)]
    )
    spec = prepare_start(args)[0]
    assert spec.space["batch_size"].values() == (1, 8) and spec.space["batch_size"].default == 1
    assert all(entry.get("batch_size", 1) in (1, 8) for entry in spec.known_good)
    static = make_tiny_model(tmp_path / "static.onnx", dynamic_batch=False)
    code, err = run_cli(capsys, *start(results_dir, str(static), "--batch", "8"))
    assert_rejected(code, err, "--batch 8", "no dynamic batch dimension")
    code, err = run_cli(capsys, *start(results_dir, str(static), "--batch", "0"))
    assert_rejected(code, err, "--batch '0'", "positive batch sizes")


class OldStylePluginTarget(OnnxRuntimeTarget):
    """A plugin written to `base.Target`'s first declaration: `unavailable_reason(cls)`."""

    name = "old-style-plugin"

    @classmethod
    def unavailable_reason(cls) -> str | None:  # no build_only argument
        return None


def test_a_plugin_target_declaring_unavailable_reason_without_build_only_runs(
    capsys, results_dir, tiny_model, tmp_path
):
    space = tmp_path / "plugin.yaml"
    space.write_text("target: old-style-plugin\nknobs:\n  graph_optimization_level: {type: categorical, "
                     "choices: [basic, all], default: all}\n")  # fmt: skip
    target = f"{__name__}:OldStylePluginTarget"
    argv = [*start(results_dir, str(tiny_model), "--target", target, "--space", str(space)), "--max-measure-s", "0.05"]
    code = main(argv)
    assert code == 0, capsys.readouterr().err
    assert (results_dir / "tiny" / "study.db").is_file()


# ---------------------------------------------------------------- issue 11: a newcomer's small items


def _npz(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


def test_nan_values_in_inputs_are_rejected_naming_the_input(capsys, results_dir, tiny_model, tmp_path):
    x = np.zeros((2, 3, 8, 8), np.float32)
    x[1, 2, 3, 4] = np.nan
    code, err = run_cli(capsys, *start(results_dir, str(tiny_model), "--inputs", str(_npz(tmp_path / "i.npz", x=x))))
    assert_rejected(code, err, "--inputs", "'x' holds 1 NaN", "(1, 2, 3, 4)")
    assert not results_dir.exists()


def _int32_input_model(path: Path) -> Path:
    """One int32 input `ids` [N, 3], cast to float: an index or token input."""
    ids = helper.make_tensor_value_info("ids", TensorProto.INT32, ["N", 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])
    graph = helper.make_graph([helper.make_node("Cast", ["ids"], ["y"], to=TensorProto.FLOAT)], "ids", [ids], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _prepared(results_dir: Path, *argv: str) -> tuple[object, str]:
    from autotune.cli import build_parser, prepare_start

    return prepare_start(build_parser().parse_args(["start", *argv, "--results-dir", str(results_dir)]))


def test_float64_inputs_for_a_float32_model_are_converted_with_a_line_saying_so(results_dir, tiny_model, tmp_path):
    """Issue 29: float64 inputs for a float32 model were cast without a word."""
    wide = np.random.default_rng(0).standard_normal((2, 3, 8, 8))
    inputs = _npz(tmp_path / "f64.npz", x=wide)
    spec, message = _prepared(results_dir, str(tiny_model), "--inputs", str(inputs))
    assert f"--inputs {inputs}: 'x' is float64, converted to the model's float32" in message.splitlines()
    assert spec.input_pool["x"].dtype == np.float32
    assert not results_dir.exists()


def test_integer_inputs_a_float_input_holds_exactly_are_converted_others_refused(
    capsys, results_dir, tiny_model, tmp_path
):
    """int64 ones into float32 keep every value: converted, said. 2**24 + 1 has no float32: refused."""
    ints = _npz(tmp_path / "i.npz", x=np.ones((2, 3, 8, 8), np.int64))
    _, message = _prepared(results_dir, str(tiny_model), "--inputs", str(ints))
    assert "'x' is int64, converted to the model's float32" in message
    big = np.ones((2, 3, 8, 8), np.int64)
    big[1, 0, 2, 3] = 2**24 + 1
    code, err = run_cli(capsys, *start(results_dir, str(tiny_model), "--inputs", str(_npz(tmp_path / "b.npz", x=big))))
    assert_rejected(code, err, "'x' is int64 and holds 16777217 at index (1, 0, 2, 3)", "float32 cannot hold exactly")
    assert not results_dir.exists()


@pytest.mark.parametrize(
    ("values", "fragments"),
    [
        (np.full((2, 3), 1.5), ("'ids' is float64 and holds 1.5", "not a whole number (int32 holds integers)")),
        (np.full((2, 3), 2**40, np.int64), ("'ids' is int64 and holds 1099511627776", "outside int32's range")),
        (np.full((2, 3), np.inf), ("'ids' is float64 and holds inf", "an input of int32 cannot hold")),
    ],
)
def test_values_an_integer_input_cannot_take_are_refused(capsys, results_dir, tmp_path, values, fragments):
    model = _int32_input_model(tmp_path / "ids.onnx")
    inputs = _npz(tmp_path / "ids.npz", ids=values)
    code, err = run_cli(capsys, *start(results_dir, str(model), "--inputs", str(inputs)))
    assert_rejected(code, err, f"--inputs {inputs}", *fragments)
    assert not results_dir.exists()


def test_whole_floats_for_an_integer_input_are_converted(results_dir, tmp_path):
    model = _int32_input_model(tmp_path / "ids.onnx")
    inputs = _npz(tmp_path / "ids.npz", ids=np.arange(12, dtype=np.float32).reshape(4, 3))
    spec, message = _prepared(results_dir, str(model), "--inputs", str(inputs))
    assert "'ids' is float32, converted to the model's int32" in message
    assert spec.input_pool["ids"].dtype == np.int32


def test_a_directory_of_float64_samples_says_the_conversion_once(results_dir, tiny_model, tmp_path):
    samples = tmp_path / "samples"
    samples.mkdir()
    for i in range(4):
        np.save(samples / f"{i}.npy", np.zeros((3, 8, 8)))
    _, message = _prepared(results_dir, str(tiny_model), "--inputs", str(samples))
    said = [line for line in message.splitlines() if "converted" in line]
    assert said == [f"--inputs {samples}: 'x' is float64, converted to the model's float32"]


def test_exact_widenings_of_inputs_are_still_accepted(tmp_path, tiny_model):
    from autotune.model import load_input_pool, load_model_info

    info = load_model_info(tiny_model)
    for array in (np.ones((2, 3, 8, 8), np.uint8), np.ones((2, 3, 8, 8), np.float64)):
        notes: list[str] = []
        pool = load_input_pool(_npz(tmp_path / f"{array.dtype}.npz", x=array), info, notes)
        assert pool["x"].dtype == np.float32
        assert notes == [
            f"--inputs {tmp_path / f'{array.dtype}.npz'}: 'x' is {array.dtype}, converted to the model's float32"
        ]


def test_inputs_with_a_conflicting_shape_are_refused(capsys, results_dir, tmp_path):
    model = make_dynamic_hw_model(tmp_path / "det.onnx")
    inputs = _npz(tmp_path / "i.npz", x=np.zeros((1, 3, 32, 32), np.float32))
    code, err = run_cli(capsys, *start(results_dir, str(model), "--inputs", str(inputs), "--shape", "64x64"))
    assert_rejected(code, err, "--shape x:1,3,64,64", "conflicts with --inputs", "[1, 3, 32, 32]")
    assert not results_dir.exists()
    # The same shape as the inputs (any sample count on a dynamic batch) is accepted.
    from autotune.cli import build_parser, prepare_start

    args = build_parser().parse_args(
        ["start", str(model), "--inputs", str(inputs), "--shape", "32x32", "--results-dir", str(results_dir)]
    )
    assert prepare_start(args)[0].input_pool["x"].shape[1:] == (3, 32, 32)


def _ort_load_error(path: Path) -> str:
    """ONNX Runtime's real message for a model whose Add mixes float and float16."""
    import onnxruntime as ort

    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, [2])
    b = helper.make_tensor_value_info("b", TensorProto.FLOAT16, [2])
    c = helper.make_tensor_value_info("c", TensorProto.FLOAT, [2])
    graph = helper.make_graph([helper.make_node("Add", ["a", "b"], ["c"], name="add0")], "g", [a, b], [c])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    with pytest.raises(Exception) as caught:
        ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return str(caught.value)


def test_a_failure_reason_keeps_the_error_not_just_the_path(tmp_path):
    import optuna

    from autotune.errors import condense_reason
    from autotune.report import failure_reasons

    deep = tmp_path / ("trial-workdir-" * 8) / "passes" / "0123456789abcdef" / "model.onnx"
    message = _ort_load_error(deep)
    assert "Load model from" in message and str(deep) in message
    assert "bound to different types" in condense_reason(message, 160)
    study = optuna.create_study(directions=["maximize", "minimize"])
    trial = study.ask()
    trial.set_user_attr("reason", f"build: ONNX Runtime could not create a session: {message}")
    study.tell(trial, state=optuna.trial.TrialState.FAIL)
    (reason,) = failure_reasons(study)
    assert "bound to different types" in reason and "trial-workdir" not in reason


def test_status_says_finalizing_while_the_daemon_finalizes(tmp_path, monkeypatch):
    from autotune import daemon, layout

    study_dir = tmp_path / "s"
    study_dir.mkdir()
    monkeypatch.setattr(layout, "lock_holder", lambda _: 4242)  # daemon_state reads the lock there
    daemon.write_state(study_dir, "finalizing")
    assert daemon.daemon_state(study_dir) == "finalizing (pid 4242)"
    daemon.write_state(study_dir, "running")
    assert daemon.daemon_state(study_dir) == "running (pid 4242)"
    monkeypatch.setattr(layout, "lock_holder", lambda _: None)
    daemon.write_state(study_dir, "finalizing")  # a daemon that died while finalizing
    assert daemon.daemon_state(study_dir).startswith("crashed")


def test_the_daemon_records_finalizing_before_it_finalizes(tmp_path, tiny_model, small_space, monkeypatch):
    import signal

    import autotune.finalize
    from autotune import daemon

    seen = []
    real = autotune.finalize.finalize

    def spying_finalize(study, *args, **kwargs):
        seen.append(daemon.read_state(tmp_path / "r" / "tiny").get("state"))
        return real(study, *args, **kwargs)

    monkeypatch.setattr(daemon, "finalize", spying_finalize)  # the name the daemon calls
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)}
    try:
        argv = [str(tiny_model), "--trials", "2", "--space", str(small_space), "--no-ray", "--max-measure-s", "0.05"]
        code = daemon.run_daemon([*argv, "--results-dir", str(tmp_path / "r")])
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    assert code == 0
    assert seen == ["finalizing"]
    assert daemon.read_state(tmp_path / "r" / "tiny")["state"] == "finished"


def test_a_build_only_study_exports_without_trial_even_before_finalize(capsys, results_dir, tiny_model, tmp_path):
    import optuna

    assert main([*start(results_dir, str(tiny_model), "--build-only", "--target", "onnxruntime")]) == 0
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{results_dir / 'tiny' / 'study.db'}")
    study.set_user_attr("best_trial", None)  # as a study stopped before finalize leaves it
    capsys.readouterr()
    code = main(["export", "tiny", "-o", str(tmp_path / "out"), "--results-dir", str(results_dir)])
    assert code == 0, capsys.readouterr().err
    assert (tmp_path / "out" / "manifest.json").is_file()


def test_an_exported_script_whose_tool_is_missing_says_where_it_comes_from(tmp_path):
    from autotune.export import runnable_script

    script = tmp_path / "tensorrt_rtx.sh"
    script.write_text(runnable_script("tensorrt_rtx --onnx=model.onnx --saveEngine=engine.plan"))
    script.chmod(0o755)
    run = subprocess.run([str(script)], capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"})
    assert run.returncode == 127
    assert run.stderr.strip().splitlines() == [
        "tensorrt_rtx: not found on PATH; it ships in bin/ of the TensorRT-RTX SDK download, not in the "
        "tensorrt-rtx pip wheel"
    ]
    # With the tool on PATH the command itself runs, in the script's directory.
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "tensorrt_rtx").write_text('#!/bin/sh\necho "$PWD $*"\n')
    (fake / "tensorrt_rtx").chmod(0o755)
    run = subprocess.run(["/bin/sh", str(script)], capture_output=True, text=True,
                         cwd="/", env={"PATH": f"{fake}:/usr/bin:/bin"})  # fmt: skip
    assert run.returncode == 0 and run.stdout.strip() == f"{tmp_path} --onnx=model.onnx --saveEngine=engine.plan"


def test_every_subcommand_help_has_a_description_and_every_option_a_help_line():
    from autotune.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, command in sub.choices.items():
        assert command.description and len(command.description) > 40, name
        for action in command._actions:
            if action.dest != "help" and action.help != "==SUPPRESS==":
                assert action.help, f"{name} {action.option_strings or action.dest}"
    workers = next(a for a in sub.choices["start"]._actions if a.dest == "workers")
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert "one on CPU targets" in workers.help and "The CPU default is one worker" in readme


# ---------------------------------------------------------------- a study is its inputs (issue 11 item 3)

NEUTRAL_SPACE = """
knobs:
  graph_optimization_level: {type: categorical, choices: [basic, all], default: all}
  batch_size: {type: categorical, choices: [1, 4], default: 1}
"""


def _record_study(tmp_path: Path) -> tuple[list[str], Path, Path]:
    """A finished 2-trial study "tiny", tuned on real inputs from a file, with a target-neutral space."""
    results_dir = tmp_path / "results"
    tiny_model = make_tiny_model(tmp_path / "tiny.onnx")
    space = tmp_path / "space.yaml"
    space.write_text(NEUTRAL_SPACE)
    inputs = _npz(tmp_path / "inputs.npz", x=np.random.default_rng(1).standard_normal((4, 3, 8, 8)).astype(np.float32))
    argv = [
        *start(results_dir, str(tiny_model), "--space", str(space), "--inputs", str(inputs)),
        "--max-measure-s",
        "0.05",
    ]
    assert main([*argv, "--target", "onnxruntime"]) == 0
    return argv, space, inputs


@pytest.fixture(scope="module")
def recorded_study(tmp_path_factory):
    """One recorded study shared by the refusal cases (a refusal changes nothing; checked)."""
    return _record_study(tmp_path_factory.mktemp("recorded"))


@pytest.mark.parametrize(
    "change, fragment",
    [
        ("space", "the search space"),
        ("inputs", "the input data"),
        ("target", "target onnxruntime -> tests.test_cli_bad_input:OldStylePluginTarget"),
        ("batch", "the search space"),
    ],
)
def test_rerunning_a_study_with_another_target_space_or_inputs_is_refused(
    capsys, recorded_study, tmp_path, change, fragment
):
    argv, space, inputs = recorded_study
    results_dir = Path(argv[argv.index("--results-dir") + 1])
    capsys.readouterr()
    if change == "space":
        other = tmp_path / "other.yaml"
        other.write_text(NEUTRAL_SPACE.replace("[basic, all]", "[disable, basic, all]"))
        argv = [*argv, "--space", str(other), "--target", "onnxruntime"]
    elif change == "inputs":
        argv = [*argv, "--inputs", str(_npz(tmp_path / "other.npz", x=np.ones((4, 3, 8, 8), np.float32)))]
        argv += ["--target", "onnxruntime"]
    elif change == "target":
        argv = [*argv, "--target", "tests.test_cli_bad_input:OldStylePluginTarget"]
    else:
        argv = [*argv, "--batch", "4", "--target", "onnxruntime"]
    db = results_dir / "tiny" / "study.db"
    import sqlite3

    def dump():
        with sqlite3.connect(db) as c:
            return list(c.iterdump())

    before = dump()
    code, err = run_cli(capsys, *argv)
    assert_rejected(code, err, "--study tiny", fragment, "pick another --study name")
    after = dump()
    assert [line for line in after if line not in before] == [] and len(after) == len(before)


def test_resume_continues_with_the_recorded_inputs_and_refuses_a_changed_file(capsys, tmp_path):
    from autotune.cli import build_parser, prepare_start
    from autotune.model import pool_sha256
    from autotune.study import existing_study_model

    _, _, inputs = _record_study(tmp_path)
    results_dir = tmp_path / "results"
    with np.load(inputs) as data:
        original = {"x": data["x"]}
    args = build_parser().parse_args(["start", "--resume", "tiny", "--results-dir", str(results_dir)])
    spec = prepare_start(args)[0]
    assert spec.target_name == "onnxruntime"
    recorded = existing_study_model(results_dir, "tiny", None)
    assert recorded["inputs_sha256"] == pool_sha256(spec.input_pool)  # the very arrays it was tuned on
    assert np.isin(spec.input_pool["x"], original["x"]).all()
    # The recorded file changed underneath the study: refused, not silently mixed.
    np.savez(inputs, x=original["x"] + 1)
    capsys.readouterr()
    code, err = run_cli(capsys, "start", "--resume", "tiny", "--results-dir", str(results_dir))
    assert_rejected(code, err, "tiny", "the input data")


def _widening_model(path: Path) -> Path:
    """A 1x1 convolution from 3 channels to 512 over [N, 3, H, W]: its output is 170x its input,
    as a recognizer's first layers are many times a long line's pixels."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 512, "H", "W"])
    weight = helper.make_tensor("w", TensorProto.FLOAT, [512, 3, 1, 1], np.ones(512 * 3, np.float32))
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"])], "wide", [x], [y], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_shapes_or_batches_whose_trial_cannot_fit_in_memory_are_refused_naming_the_flag(capsys, tmp_path):
    """Issue 25: the memory check counted only the input pool, so a recognizer at width 2,000,000
    grew the daemon to 19 GB until the kernel killed other processes. Here the input pool fits
    (~0.5 GiB at 3x8000x8000) but one trial's tensors cannot (~250 GiB), at batch 1 through
    --shape, and through --batch at a shape that fits alone."""
    model = _widening_model(tmp_path / "wide.onnx")
    results_dir = tmp_path / "results"
    code, err = run_cli(capsys, *start(results_dir, str(model), "--shape", "x:1,3,8000,8000", "--batch", "1"))
    assert_rejected(code, err, "--shape x:1,3,8000,8000: a trial needs about", "GiB free", "pass smaller")
    code, err = run_cli(capsys, *start(results_dir, str(model), "--shape", "x:1,3,1000,1000", "--batch", "2048"))
    assert_rejected(code, err, "--shape x:1,3,1000,1000 with --batch (up to 2048): a trial needs about")
    assert not results_dir.exists() or not any(results_dir.iterdir())  # nothing half-written
    # the same model at a shape a machine holds starts as before
    code, err = run_cli(capsys, *start(results_dir, str(model), "--shape", "x:1,3,32,32", "--batch", "1"))
    assert code == 0, err


def test_a_shape_the_model_cannot_run_is_one_line_naming_the_shape_before_anything_is_written(capsys, results_dir):
    """Issue 29: a recognizer [b, 3, 48, W] started at 224x224 failed 41 s later, in the daemon."""
    from tests.trained_models import model_path

    rec = model_path("ppocr_rec")
    code, err = run_cli(capsys, *start(results_dir, str(rec), "--shape", "x:1,3,224,224"))
    assert_rejected(code, err, "--shape x:1,3,224,224", "cannot run at x:1,3,224,224", "reshape")
    assert not results_dir.exists()


def test_the_suggested_shape_keeps_the_static_dims_and_is_one_the_model_runs(capsys, results_dir):
    from autotune.model import _runs_at, fp32_cpu_session, load_model_info
    from tests.trained_models import model_path

    rec = model_path("ppocr_rec")
    code, err = run_cli(capsys, *start(results_dir, str(rec)))
    assert_rejected(code, err, "dynamic dims without a value", "--shape x:1,3,48,320")
    info = load_model_info(rec)
    session = fp32_cpu_session(rec)
    assert _runs_at(session, info, {"x": (1, 3, 48, 320)}) and not _runs_at(session, info, {"x": (1, 3, 224, 224)})
    assert not results_dir.exists()


def test_inputs_with_non_finite_values_are_refused(capsys, results_dir, tmp_path):
    model = make_tiny_model(tmp_path / "tiny.onnx")
    info_input = onnx.load(str(model)).graph.input[0]
    dims = [d.dim_value or 8 for d in info_input.type.tensor_type.shape.dim]
    data = np.ones(dims, np.float32)
    data[0, 0] = np.inf
    np.savez(tmp_path / "inf.npz", **{info_input.name: data})
    code, err = run_cli(capsys, *start(results_dir, str(model), "--inputs", str(tmp_path / "inf.npz")))
    assert_rejected(code, err, f"--inputs {tmp_path / 'inf.npz'}", "non-finite values")
    assert not results_dir.exists()


@pytest.mark.parametrize(
    ("argv", "fragments"),
    [
        (("--max-error", "inf"), ("--max-error 'inf'", "finite")),
        (("--budget", "99999999h"), ("--budget '99999999h'", "longer than a year")),
        (("--study", "../../escape"), ("--study '../../escape'", "not a path")),
        (("--workers", "64"), ("--workers 64", "CPU cores")),
        (("--shape", "x:1,3,8,8", "--shape", "x:1,3,16,16"), ("--shape 'x:1,3,16,16'", "twice")),
    ],
)
def test_silent_assumptions_are_refused_with_one_line(capsys, results_dir, tmp_path, argv, fragments):
    """Issue 29: each of these was accepted without a word."""
    if len(__import__("os").sched_getaffinity(0)) >= 64 and "--workers" in argv:
        pytest.skip("this machine has 64 cores or more: --workers 64 is possible here")
    model = make_dynamic_hw_model(tmp_path / "hw.onnx")
    shape = [] if "--shape" in argv else ["--shape", "x:1,3,8,8"]
    code, err = run_cli(capsys, *start(results_dir, str(model), *shape, *argv))
    assert_rejected(code, err, *fragments)
    assert not results_dir.exists()


def test_preprocess_takes_the_readme_form_and_fractions(tmp_path):
    from autotune.calibration import parse_preprocess, parse_preprocess_flags
    from autotune.spec import parse_start

    args = parse_start(["m.onnx", "--preprocess", "size=32,32", "layout=NCHW", "scale=1/255", "channel_order=RGB"])
    options = parse_preprocess_flags(args.preprocess)
    assert options == {"size": "32,32", "layout": "NCHW", "scale": "1/255", "channel_order": "RGB"}
    parsed = parse_preprocess(options, "--preprocess")
    assert parsed.scale == 1 / 255 and parsed.size == (32, 32) and parsed.layout == "NCHW"


def _probability_map_model(path: Path) -> Path:
    """Sigmoid over [N, 1, 16, 16]: a text detector's probability map (a dense map)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 16, 16])
    y = helper.make_tensor_value_info("map", TensorProto.FLOAT, ["N", 1, 16, 16])
    graph = helper.make_graph([helper.make_node("Sigmoid", ["x"], ["map"])], "map", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_a_builtin_metric_on_a_detector_is_refused_naming_the_output_and_its_role(capsys, results_dir):
    """Issue 29: `--metric top1` on YOLOv8's [b, 84, 8400] was accepted, and every trial judged by
    an argmax over box and score fields."""
    from tests.trained_models import model_path

    code, err = run_cli(capsys, *start(results_dir, str(model_path("yolov8n")), "--metric", "top1"))
    assert_rejected(code, err, "--metric top1", "output 'output0' (1x84x8400) holds packed detections (inferred)")
    assert not results_dir.exists()


def test_a_builtin_metric_on_a_dense_map_is_refused(capsys, results_dir, tmp_path):
    model = _probability_map_model(tmp_path / "det.onnx")
    code, err = run_cli(capsys, *start(results_dir, str(model), "--metric", "top5"))
    assert_rejected(code, err, "--metric top5", "'map' (1x1x16x16) holds a dense map", "which top5 reads")
    assert not results_dir.exists()


def test_a_builtin_metric_on_class_scores_is_accepted(results_dir, tiny_model):
    spec, _ = _prepared(results_dir, str(tiny_model), "--metric", "top1")
    assert spec.tolerance.metric == "autotune.metrics:top1"


@pytest.mark.parametrize(
    ("role", "fragment"),
    [
        ("detections", "detections need [b, fields, rows] or [b, rows, fields]"),
        ("sequence", "a sequence needs [b, T, symbols]"),
        ("dense_map", "a dense map needs [b, H, W]"),
        ("labels", "labels are integers; it holds float32"),
    ],
)
def test_an_output_role_the_output_cannot_have_is_refused(capsys, results_dir, tiny_model, role, fragment):
    """The tiny model's `y` is [b, 5] class logits: no detections, sequence, map or labels."""
    code, err = run_cli(capsys, *start(results_dir, str(tiny_model), "--output-role", f"y={role}"))
    assert_rejected(code, err, f"--output-role y={role}", fragment, "it is 1x5" if role != "labels" else "(1x5)")
    assert not results_dir.exists()


def test_an_output_role_keeps_the_study_named_after_the_model(results_dir, tiny_model):
    """`--output-role y=...` named the study `y` (a loop variable shadowed the study's name)."""
    spec, _ = _prepared(results_dir, str(tiny_model), "--output-role", "y=embedding")
    assert spec.name == "tiny"


def test_a_space_whose_largest_batch_cannot_fit_is_refused_naming_the_space_and_the_knob(capsys, tmp_path):
    """Issue 29: a space with batch_size up to 10^8 started, and its daemon died 141 s later of
    memory, naming neither the space nor the knob. Batch 1 fits: the space's batch is the cause."""
    model = _widening_model(tmp_path / "wide.onnx")
    space = tmp_path / "big.yaml"
    space.write_text("knobs:\n  batch_size: {type: categorical, choices: [1, 100000000], default: 1}\n")
    results_dir = tmp_path / "results"
    code, err = run_cli(capsys, *start(results_dir, str(model), "--shape", "x:1,3,8,8", "--space", str(space)))
    assert_rejected(
        code, err, f"--space {space}: knob batch_size up to 100000000 at --shape x:1,3,8,8: a trial needs about"
    )
    assert not results_dir.exists()
    # --batch caps what the space offers: the same space then starts
    assert _prepared(results_dir, str(model), "--shape", "x:1,3,8,8", "--space", str(space), "--batch", "1")


@pytest.mark.skipif(not Path("/proc/self").exists(), reason="no /proc on this system")
def test_a_results_dir_no_directory_can_be_made_in_is_one_line(capsys, tiny_model):
    """`--results-dir /proc/autotune` passed the permission check (root may write anything, by the
    bits) and was a FileNotFoundError traceback: a directory is now made and removed for real."""
    for foreground in ([], ["--foreground"]):
        code, err = run_cli(
            capsys, "start", str(tiny_model), "--trials", "1", "--results-dir", "/proc/autotune", *foreground
        )
        assert_rejected(code, err, "--results-dir /proc/autotune: not writable", "/proc")
