"""Real samples in (--inputs files and directories, image preprocessing) and the split between
what INT8/FP8 calibrate on and what every trial is verified on."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from autotune.calibration import Preprocess, load_inputs, parse_preprocess, preprocess_image, split_samples
from autotune.cli import build_parser, main, prepare_start
from autotune.errors import UsageError
from autotune.model import load_model_info
from tests.conftest import make_tiny_model


def rows(arrays) -> set[bytes]:
    return {sample.tobytes() for array in arrays for sample in array}


def test_calibration_and_verification_samples_are_disjoint_and_cover_the_pool(tiny_model):
    info = load_model_info(tiny_model)
    pool = {"x": np.random.default_rng(0).standard_normal((6, 3, 8, 8)).astype(np.float32)}
    split = split_samples(pool, info)
    calibrated = rows(feed["x"] for feed in split.calibration_feeds)
    verified = rows([split.verification_pool["x"]])
    assert (split.calibration_samples, split.verification_samples) == (3, 3)
    assert not calibrated & verified
    assert calibrated | verified == rows([pool["x"]])


def test_a_static_batch_model_verifies_on_one_batch_and_calibrates_on_the_others(tmp_path):
    info = load_model_info(make_tiny_model(tmp_path / "static.onnx", dynamic_batch=False))
    batch = info.inputs[0].shape[0]
    pool = {"x": np.random.default_rng(1).standard_normal((3 * batch, *info.inputs[0].shape[1:])).astype(np.float32)}
    split = split_samples(pool, info)
    assert split.verification_pool["x"].shape[0] == batch
    assert all(feed["x"].shape[0] == batch for feed in split.calibration_feeds)
    assert not rows(feed["x"] for feed in split.calibration_feeds) & rows([split.verification_pool["x"]])


def test_start_calibrates_on_samples_it_never_verifies_on(tiny_model, tmp_path):
    directory = tmp_path / "samples"
    directory.mkdir()
    rng = np.random.default_rng(2)
    for index in range(4):
        np.save(directory / f"{index}.npy", rng.standard_normal((3, 8, 8)).astype(np.float32))  # no batch dim
    args = build_parser().parse_args(
        ["start", str(tiny_model), "--inputs", str(directory), "--results-dir", str(tmp_path / "r")]
    )
    args.argv = []
    spec, _ = prepare_start(args)
    assert spec.input_pool["x"].shape == (2, 3, 8, 8)
    assert len(spec.calibration_feeds) == 2
    assert not rows(f["x"] for f in spec.calibration_feeds) & rows([spec.input_pool["x"]])


def test_one_sample_cannot_both_calibrate_and_verify_so_int8_leaves_the_space(tmp_path, capsys):
    model = make_tiny_model(tmp_path / "static.onnx", dynamic_batch=False)
    info = load_model_info(model)
    npz = tmp_path / "one.npz"
    np.savez(npz, x=np.zeros([d if isinstance(d, int) else 1 for d in info.inputs[0].shape], np.float32))
    space = tmp_path / "space.yaml"
    space.write_text(
        "target: onnxruntime\nknobs:\n  precision: {type: categorical, choices: [fp32, int8], default: fp32}\n"
    )
    args = build_parser().parse_args(
        ["start", str(model), "--inputs", str(npz), "--space", str(space), "--results-dir", str(tmp_path / "r")]
    )
    args.argv = []
    spec, message = prepare_start(args)
    assert "precision" not in spec.space or list(spec.space["precision"].values()) == ["fp32"]
    assert "int8/fp8 need at least 2" in message


def test_a_directory_of_npz_samples_is_checked_like_a_file(tiny_model, tmp_path):
    directory = tmp_path / "bad"
    directory.mkdir()
    np.savez(directory / "a.npz", x=np.zeros((1, 3, 9, 8), np.float32))
    with pytest.raises(UsageError, match=r"a\.npz.*\[1, 3, 9, 8\]"):
        load_inputs(directory, load_model_info(tiny_model))


def test_image_preprocessing_matches_a_hand_computed_tensor(tmp_path):
    pixels = np.array(
        [[[10, 20, 30], [40, 50, 60], [70, 80, 90]], [[0, 255, 128], [1, 2, 3], [200, 100, 50]]], np.uint8
    )
    path = tmp_path / "image.png"
    Image.fromarray(pixels).save(path)
    spec = parse_preprocess(
        {"mean": "0.5,0.4,0.3", "std": [0.2, 0.25, 0.5], "scale": 0.01, "channel_order": "bgr", "size": "2,3"},
        "--preprocess",
    )
    tensor = preprocess_image(path, spec)
    bgr = pixels[..., ::-1].astype(np.float32)
    expected = (
        (bgr * 0.01 - np.array([0.5, 0.4, 0.3], np.float32)) / np.array([0.2, 0.25, 0.5], np.float32)
    ).transpose(2, 0, 1)[None]
    assert tensor.shape == (1, 3, 2, 3) and tensor.dtype == np.float32
    np.testing.assert_allclose(tensor, expected, rtol=1e-6)
    nhwc = preprocess_image(path, Preprocess(layout="NHWC"))
    np.testing.assert_allclose(nhwc, pixels[None].astype(np.float32) / 255, rtol=1e-6)


def test_an_image_directory_becomes_the_pool_at_the_models_size(tiny_model, tmp_path):
    directory = tmp_path / "images"
    directory.mkdir()
    for index in range(3):
        Image.fromarray(np.full((20, 16, 3), 40 * index, np.uint8)).save(directory / f"{index}.jpg")
    pool = load_inputs(directory, load_model_info(tiny_model), Preprocess())
    assert pool["x"].shape == (3, 3, 8, 8)
    np.testing.assert_allclose(pool["x"][2], 80 / 255, atol=0.02)


def test_a_bad_preprocessing_value_is_one_line_naming_flag_and_value(tiny_model, tmp_path, capsys):
    directory = tmp_path / "images"
    directory.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(directory / "a.png")
    results = tmp_path / "results"
    code = main(
        ["start", str(tiny_model), "--inputs", str(directory), "--preprocess", "layout=CHWN",
         "--foreground", "--trials", "1", "--results-dir", str(results)]
    )  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert "--preprocess" in err and "'CHWN'" in err
    assert not results.exists()


def test_status_shows_the_split_sizes_and_an_int8_trial_runs_on_it(tiny_model, tmp_path, capsys):
    space = tmp_path / "space.yaml"
    space.write_text("target: onnxruntime\nknobs:\n  precision: {type: categorical, choices: [int8], default: int8}\n")
    results = tmp_path / "results"
    directory = tmp_path / "samples"
    directory.mkdir()
    rng = np.random.default_rng(3)
    for index in range(6):
        np.savez(directory / f"{index}.npz", x=rng.standard_normal((1, 3, 8, 8)).astype(np.float32))
    common = ["--results-dir", str(results)]
    assert main(["start", str(tiny_model), "--inputs", str(directory), "--space", str(space), "--trials", "1",
                 "--foreground", "--max-measure-s", "0.2", *common]) == 0  # fmt: skip
    capsys.readouterr()
    assert main(["status", "tiny", *common]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "3 calibrate int8/fp8, 3 held out" in out
    assert (results / "tiny" / "calibration.npz").exists()


def _steps_first_model(path):
    """x [N, 3, 4] -> y = Transpose(x) [3, N, 4]: samples on axis 1, as ddddocr's recognizer."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Transpose", ["x"], ["y"], perm=[1, 0, 2])],
        "steps_first",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, "N", 4])],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_verification_runs_every_held_out_sample_and_joins_outputs_on_their_batch_axis(tmp_path):
    from autotune.model import axes_like, fp32_cpu_session, join_outputs, output_batch_axes, verification_feeds

    session = fp32_cpu_session(_steps_first_model(tmp_path / "steps.onnx"))

    def run(feeds):
        return {"y": session.run(["y"], feeds)[0]}

    pool = {"x": np.arange(5 * 12, dtype=np.float32).reshape(5, 3, 4)}
    feeds = verification_feeds(pool, 2, True)
    assert [f["x"].shape[0] for f in feeds] == [2, 2, 2]  # the last one topped up from the start
    assert np.array_equal(feeds[2]["x"], pool["x"][[4, 0]])
    axes, proportional = output_batch_axes(run, pool)
    assert axes == {"y": 1} and proportional
    parts = [run(f) for f in feeds]
    joined = join_outputs(parts, 5, axes, 2)
    assert np.array_equal(joined["y"], run(pool)["y"])  # every sample once, in order
    assert axes_like(parts, joined) == {"y": 1}
    assert join_outputs(parts[:1], 1, axes, 2)["y"].shape == (3, 1, 4)  # a pool smaller than the batch
    with pytest.raises(ValueError, match="output 'y'"):
        axes_like(parts, {"y": np.zeros((4, 5, 4), np.float32)})  # two axes differ: no way to match


def test_a_trial_verifies_on_every_held_out_sample_not_only_its_first_batch(tiny_model, tmp_path):
    """10 samples: 5 held out; a batch-2 trial runs them as 3 batches and compares all 5 (it used
    to compare the first batch of 2 only, so a sample beyond it could never fail a trial)."""
    space = tmp_path / "space.yaml"
    space.write_text("target: onnxruntime\nknobs:\n  batch_size: {type: categorical, choices: [2], default: 2}\n")
    rng = np.random.default_rng(4)
    pool = rng.standard_normal((10, 3, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "inputs.npz", x=pool)
    results = tmp_path / "results"
    assert main(["start", str(tiny_model), "--inputs", str(tmp_path / "inputs.npz"), "--space", str(space),
                 "--metric", "top1", "--trials", "1", "--foreground", "--max-measure-s", "0.2",
                 "--results-dir", str(results)]) == 0  # fmt: skip
    with np.load(results / "tiny" / "trials" / "0" / "outputs.npz") as saved:
        outputs = saved["y"]
    held_out = pool[1::2]
    from autotune.model import fp32_cpu_session

    expected = fp32_cpu_session(tiny_model).run(["y"], {"x": held_out})[0]
    assert outputs.shape == (5, 5)
    np.testing.assert_allclose(outputs, expected, rtol=1e-4, atol=1e-5)


def test_one_fp32_reference_of_every_held_out_sample_serves_every_batch_size(tiny_model, tmp_path):
    """The references hold the whole held-out pool's outputs once, not once per batch size."""
    from autotune.model import fp32_cpu_session
    from autotune.study import compute_references

    rng = np.random.default_rng(5)
    pool = rng.standard_normal((14, 3, 8, 8)).astype(np.float32)  # 7 held out: no batch of 2, 4, 8 divides it
    np.savez(tmp_path / "inputs.npz", x=pool)
    args = build_parser().parse_args(
        ["start", str(tiny_model), "--inputs", str(tmp_path / "inputs.npz"), "--results-dir", str(tmp_path / "r")]
    )
    args.argv = []
    spec, _ = prepare_start(args)
    references = compute_references(spec)
    assert sorted(references) == [1, 2, 4, 8]
    assert len({id(outputs) for outputs in references.values()}) == 1
    expected = fp32_cpu_session(tiny_model).run(["y"], {"x": pool[1::2]})[0]
    np.testing.assert_allclose(references[1]["y"], expected, rtol=1e-5, atol=1e-6)


def _nonzero_model(path):
    """x [N, 4] -> the indices of its positive values, [2, k]: k depends on the data, and the
    first row numbers samples within the batch (as detections after NMS do)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("Greater", ["x", "zero"], ["positive"]), helper.make_node("NonZero", ["positive"], ["y"])],
        "nonzero",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.INT64, [2, "k"])],
        [numpy_helper.from_array(np.zeros(1, np.float32), "zero")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_a_data_dependent_output_is_verified_against_a_reference_batched_as_the_trial(tmp_path):
    """NonZero numbers samples within their batch: a batch-1 trial's outputs match a reference
    run at batch 1, not one run at batch 2, so such a model keeps one reference per batch size."""
    from autotune.study import compute_references

    model = _nonzero_model(tmp_path / "nonzero.onnx")
    pool = np.tile(np.array([[1, -1, 1, -1]], np.float32), (10, 1))  # two positives per sample
    np.savez(tmp_path / "inputs.npz", x=pool)
    common = ["--inputs", str(tmp_path / "inputs.npz"), "--batch", "1,2", "--results-dir", str(tmp_path / "r")]
    args = build_parser().parse_args(["start", str(model), *common])
    args.argv = []
    spec, _ = prepare_start(args)
    references = compute_references(spec)
    assert references[1]["y"].shape == (2, 10)  # 5 held out, 2 positives each
    # batch 2: the sample topping up the last batch stays (a data-dependent output cannot be cut)
    assert references[2]["y"].shape == (2, 12)
    assert set(references[1]["y"][0]) == {0} and set(references[2]["y"][0]) == {0, 1}  # numbered per batch
    space = tmp_path / "space.yaml"
    space.write_text("target: onnxruntime\nknobs:\n  batch_size: {type: categorical, choices: [1, 2], default: 1}\n")
    assert main(["start", str(model), *common, "--space", str(space), "--trials", "2", "--foreground",
                 "--max-measure-s", "0.2"]) == 0  # fmt: skip
    import optuna

    study = optuna.load_study(study_name="nonzero", storage=f"sqlite:///{tmp_path / 'r' / 'nonzero' / 'study.db'}")
    told = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert {t.params.get("batch_size") for t in told} == {1, 2}
    assert all(t.user_attrs["passed"] for t in told)


def test_an_image_directory_without_preprocess_is_refused_with_the_flag_to_give(tiny_model, tmp_path, capsys):
    """Issue 29: images were resized and scaled to [0, 1] without a word."""
    directory = tmp_path / "images"
    directory.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(directory / "a.png")
    results = tmp_path / "results"
    code = main(["start", str(tiny_model), "--inputs", str(directory), "--foreground", "--trials", "1",
                 "--results-dir", str(results)])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert "images need --preprocess" in err and "--preprocess size=8,8 layout=NCHW scale=1/255" in err
    assert not results.exists()
