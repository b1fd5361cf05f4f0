"""Runs `autotune` on bad inputs a newcomer might give and writes what each gets (bench/BAD_INPUTS.md).

Every case runs the installed console script in a scratch directory, as a user would. The
contract (README, "Exit codes"): bad input is exit code 2, one line naming the flag, file or
value, no traceback, and nothing written. The table records, for each case, the exit code, the
message, and whether anything appeared under the results directory or the export target, and
flags every case that breaks the contract.

    .venv/bin/python bench/bad_inputs.py [--out bench/BAD_INPUTS.md]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import make_tiny_model  # noqa: E402
from tests.trained_models import model_path  # noqa: E402

AUTOTUNE = str(Path(sys.executable).with_name("autotune"))


@dataclass
class Case:
    group: str
    what: str
    argv: list[str]
    # A case that is not refused but stated: it starts (exit 0, so it writes a study) and must
    # print this line on stdout before it does.
    stated: str = ""


def _fixtures(work: Path) -> dict[str, Path]:
    """Models, inputs and spaces the cases point at, all inside `work`."""
    files = {
        "tiny": make_tiny_model(work / "tiny.onnx"),
        "static": make_tiny_model(work / "static.onnx", dynamic_batch=False),
    }
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, "H", "W"])
    model = helper.make_model(
        helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "hw", [x], [y]),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    model.ir_version = 8
    onnx.save(model, str(work / "dynamic_hw.onnx"))
    files["dynamic_hw"] = work / "dynamic_hw.onnx"
    unknown = helper.make_model(
        helper.make_graph([helper.make_node("NoSuchOp", ["x"], ["y"], domain="custom.x")], "u", [x], [y]),
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("custom.x", 1)],
    )
    unknown.ir_version = 8
    onnx.save(unknown, str(work / "unknown_op.onnx"))
    files["unknown_op"] = work / "unknown_op.onnx"
    (work / "notes.onnx").write_text("this is not a model\n")
    (work / "empty.onnx").write_bytes(b"")
    data = files["tiny"].read_bytes()
    (work / "truncated.onnx").write_bytes(data[: len(data) // 2])
    (work / "a_directory.onnx").mkdir()
    good = np.random.default_rng(0).standard_normal((4, 3, 8, 8)).astype(np.float32)
    np.savez(work / "good.npz", x=good)
    np.savez(work / "wrong_name.npz", image=good)
    np.savez(work / "wrong_shape.npz", x=np.zeros((4, 3, 9, 9), np.float32))
    np.savez(work / "wrong_rank.npz", x=np.zeros((4, 3, 8), np.float32))
    nan = good.copy()
    nan[0, 0, 0, 0] = np.nan
    np.savez(work / "nan.npz", x=nan)
    beyond = np.ones((4, 3, 8, 8), np.int64)
    beyond[1, 0, 2, 3] = 2**24 + 1  # no float32 holds it
    np.savez(work / "int64.npz", x=beyond)
    np.savez(work / "float64.npz", x=good.astype(np.float64))
    ids = helper.make_model(  # an int32 index input, as a recognizer's or a language model's
        helper.make_graph(
            [helper.make_node("Cast", ["ids"], ["y"], to=TensorProto.FLOAT)],
            "ids",
            [helper.make_tensor_value_info("ids", TensorProto.INT32, ["N", 3])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        ),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    ids.ir_version = 8
    onnx.save(ids, str(work / "ids.onnx"))
    np.savez(work / "ids_fraction.npz", ids=np.full((4, 3), 1.5))
    np.savez(work / "ids_beyond.npz", ids=np.full((4, 3), 2**40, np.int64))
    probability_map = helper.make_model(  # a text detector's [N, 1, H, W] probability map
        helper.make_graph(
            [helper.make_node("Sigmoid", ["x"], ["map"])],
            "map",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 16, 16])],
            [helper.make_tensor_value_info("map", TensorProto.FLOAT, ["N", 1, 16, 16])],
        ),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    probability_map.ir_version = 8
    onnx.save(probability_map, str(work / "dense_map.onnx"))
    shutil.copyfile(model_path("yolov8n"), work / "yolov8n.onnx")  # a trained detector, [b, 84, 8400]
    np.savez(work / "strings.npz", x=np.array(["a", "b"]))
    np.savez(work / "hw32.npz", x=np.zeros((1, 3, 32, 32), np.float32))
    inf = good.copy()
    inf[0, 0, 0, 0] = np.inf
    np.savez(work / "inf.npz", x=inf)
    images = work / "images"  # a directory of images, no --preprocess
    images.mkdir()
    from PIL import Image

    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(images / "a.png")
    reshaped = helper.make_model(  # runs only at 8x8: a Reshape to a fixed size, as a recognizer's
        helper.make_graph(
            [helper.make_node("Reshape", ["x", "shape"], ["y"])],
            "r",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3 * 8 * 8])],
            initializer=[numpy_helper.from_array(np.array([-1, 3 * 8 * 8], np.int64), "shape")],
        ),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    reshaped.ir_version = 8
    onnx.save(reshaped, str(work / "fixed_reshape.onnx"))
    (work / "notes.npz").write_text("not an archive\n")
    spaces = {
        "syntax": "knobs: [unclosed\n",
        "no_default": "knobs:\n  graph_optimization_level: {type: categorical, choices: [basic, all]}\n",
        "unknown_knob": "knobs:\n  warp_speed: {type: bool, default: false}\n",
        "wrong_target": "target: tensorrt\nknobs:\n  graph_optimization_level: {type: categorical, choices: [all], "
        "default: all}\n",
        "empty_choices": "knobs:\n  graph_optimization_level: {type: categorical, choices: [], default: all}\n",
        "default_outside": "knobs:\n  intra_op_threads: {type: int, low: 1, high: 2, default: 9}\n",
        "not_a_mapping": "- just\n- a list\n",
        "bad_type": "knobs:\n  intra_op_threads: {type: complex, default: 1}\n",
        "huge_batch": "knobs:\n  batch_size: {type: categorical, choices: [1, 100000000], default: 1}\n",
    }
    for name, text in spaces.items():
        (work / f"space_{name}.yaml").write_text(text)
    (work / "a_file").write_text("results cannot live in a file\n")
    (work / "export_full").mkdir()
    (work / "export_full" / "keep.txt").write_text("do not overwrite\n")
    return files


def cases(port_taken: int) -> list[Case]:
    start = ["start", "tiny.onnx", "--foreground", "--trials", "1"]
    other = [
        # model file
        Case("model", "no such model file", ["start", "missing.onnx", "--foreground"]),
        Case("model", "a directory instead of a model", ["start", "a_directory.onnx", "--foreground"]),
        Case("model", "a text file named .onnx", ["start", "notes.onnx", "--foreground"]),
        Case("model", "an empty file", ["start", "empty.onnx", "--foreground"]),
        Case("model", "a truncated model", ["start", "truncated.onnx", "--foreground"]),
        Case("model", "an op ONNX Runtime does not have", ["start", "unknown_op.onnx", "--foreground"]),
        Case("model", "dynamic H and W, no --shape", ["start", "dynamic_hw.onnx", "--foreground"]),
        Case("model", "no model and no --resume", ["start", "--foreground"]),
        # budget and counts
        Case("budget", "--budget abc", [*start, "--budget", "abc"]),
        Case("budget", "--budget 0s", [*start, "--budget", "0s"]),
        Case("budget", "--budget -5m", [*start, "--budget=-5m"]),
        Case("budget", "--budget ''", [*start, "--budget", ""]),
        Case("budget", "--trials 0", ["start", "tiny.onnx", "--foreground", "--trials", "0"]),
        Case("budget", "--trials -1", ["start", "tiny.onnx", "--foreground", "--trials=-1"]),
        Case("budget", "--trials 1.5", ["start", "tiny.onnx", "--foreground", "--trials", "1.5"]),
        Case("budget", "--trials many", ["start", "tiny.onnx", "--foreground", "--trials", "many"]),
        Case("budget", "--seed abc", [*start, "--seed", "abc"]),
        Case("budget", "--max-measure-s 0", [*start, "--max-measure-s", "0"]),
        Case("budget", "--max-measure-s fast", [*start, "--max-measure-s", "fast"]),
        Case("budget", "--trial-timeout 0s", [*start, "--trial-timeout", "0s"]),
        Case("budget", "--trial-timeout soon", [*start, "--trial-timeout", "soon"]),
        Case("budget", "--workers 0", [*start, "--workers", "0"]),
        Case("budget", "--workers two", [*start, "--workers", "two"]),
        # target and space
        Case("target", "--target nonexistent", [*start, "--target", "nonexistent"]),
        Case("target", "--target tensorrt without a GPU", [*start, "--target", "tensorrt"]),
        Case("target", "--target tensorrt-rtx without --build-only", [*start, "--target", "tensorrt-rtx"]),
        Case("target", "--target a plugin that does not import", [*start, "--target", "nosuchpkg.mod:Target"]),
        Case("target", "--target a class that is not a Target", [*start, "--target", "pathlib:Path"]),
        Case("space", "--space missing.yaml", [*start, "--space", "missing.yaml"]),
        *(
            Case("space", f"--space with {name.replace('_', ' ')}", [*start, "--space", f"space_{name}.yaml"])
            for name in (
                "syntax",
                "no_default",
                "unknown_knob",
                "wrong_target",
                "empty_choices",
                "default_outside",
                "not_a_mapping",
                "bad_type",
            )
        ),
        # accuracy gate
        Case("accuracy", "--accuracy fuzzy", [*start, "--accuracy", "fuzzy"]),
        Case("accuracy", "--max-error 0", [*start, "--max-error", "0"]),
        Case("accuracy", "--max-error -1", [*start, "--max-error=-1"]),
        Case("accuracy", "--atol with --accuracy scale", [*start, "--accuracy", "scale", "--atol", "1e-3"]),
        Case("accuracy", "--min-cosine 2", [*start, "--min-cosine", "2"]),
        Case("accuracy", "--min-cosine with elementwise", [*start, "--accuracy", "elementwise", "--min-cosine", "0.9"]),
        Case("accuracy", "--metric from a missing module", [*start, "--metric", "nosuchmodule:score"]),
        Case("accuracy", "--latency-sla-ms 0", [*start, "--latency-sla-ms", "0"]),
        # batch and shapes
        Case("batch", "--batch 0", [*start, "--batch", "0"]),
        Case("batch", "--batch a,b", [*start, "--batch", "a,b"]),
        Case("batch", "--batch 8 on a static-batch model", ["start", "static.onnx", "--foreground", "--batch", "8"]),
        Case("shape", "--shape without a name", ["start", "dynamic_hw.onnx", "--foreground", "--shape", "1,3,8,8"]),
        Case(
            "shape",
            "--shape for an input the model lacks",
            ["start", "dynamic_hw.onnx", "--foreground", "--shape", "img:1,3,8,8"],
        ),
        Case("shape", "--shape of the wrong rank", ["start", "dynamic_hw.onnx", "--foreground", "--shape", "x:1,3,8"]),
        Case(
            "shape",
            "--shape 640x480x3 (short form)",
            ["start", "dynamic_hw.onnx", "--foreground", "--shape", "640x480x3"],
        ),
        Case(
            "shape",
            "--shape contradicting a fixed dim",
            ["start", "dynamic_hw.onnx", "--foreground", "--shape", "x:1,4,8,8"],
        ),
        # inputs
        Case("inputs", "--inputs missing.npz", [*start, "--inputs", "missing.npz"]),
        Case("inputs", "--inputs a text file", [*start, "--inputs", "notes.npz"]),
        Case("inputs", "--inputs with the wrong input name", [*start, "--inputs", "wrong_name.npz"]),
        Case("inputs", "--inputs with the wrong shape", [*start, "--inputs", "wrong_shape.npz"]),
        Case("inputs", "--inputs with the wrong rank", [*start, "--inputs", "wrong_rank.npz"]),
        Case("inputs", "--inputs holding NaN", [*start, "--inputs", "nan.npz"]),
        Case("inputs", "--inputs int64 beyond float32's exact integers", [*start, "--inputs", "int64.npz"]),
        Case("inputs", "--inputs of strings", [*start, "--inputs", "strings.npz"]),
        Case(
            "inputs",
            "--inputs with a conflicting --shape",
            ["start", "dynamic_hw.onnx", "--foreground", "--inputs", "hw32.npz", "--shape", "64x64"],
        ),
        # issue 29: each was accepted without a word
        Case(
            "shape",
            "--shape the model cannot run",
            ["start", "fixed_reshape.onnx", "--foreground", "--shape", "x:1,3,9,9"],
        ),
        Case(
            "shape",
            "--shape given twice",
            ["start", "dynamic_hw.onnx", "--foreground", "--shape", "x:1,3,8,8", "--shape", "x:1,3,16,16"],
        ),  # fmt: skip
        Case("inputs", "--inputs holding inf", [*start, "--inputs", "inf.npz"]),
        Case("inputs", "--inputs images without --preprocess", [*start, "--inputs", "images"]),
        Case("accuracy", "--max-error inf", [*start, "--max-error", "inf"]),
        Case("budget", "--budget 99999999h", [*start, "--budget", "99999999h"]),
        Case("budget", "--workers 64 on fewer cores", [*start, "--workers", "64"]),
        Case("study", "--study ../../escape", [*start, "--study", "../../escape"]),
        # issue 29, the remaining items
        Case(
            "inputs",
            "--inputs float64 for a float32 model (converted, stated)",
            [*start, "--inputs", "float64.npz", "--study", "converted", "--max-measure-s", "0.05"],
            stated="--inputs float64.npz: 'x' is float64, converted to the model's float32",
        ),
        Case(
            "inputs",
            "--inputs fractions for an int32 input",
            ["start", "ids.onnx", "--foreground", "--inputs", "ids_fraction.npz"],
        ),
        Case(
            "inputs",
            "--inputs int64 beyond an int32 input's range",
            ["start", "ids.onnx", "--foreground", "--inputs", "ids_beyond.npz"],
        ),
        Case(
            "accuracy",
            "--metric top1 on a detector (yolov8n)",
            ["start", "yolov8n.onnx", "--foreground", "--metric", "top1"],
        ),
        Case(
            "accuracy", "--metric top5 on a dense map", ["start", "dense_map.onnx", "--foreground", "--metric", "top5"]
        ),
        Case("accuracy", "--output-role detections on class scores", [*start, "--output-role", "y=detections"]),
        Case("space", "--space with batch_size up to 100000000", [*start, "--space", "space_huge_batch.yaml"]),
        Case("study", "--ray-address 10.255.255.1:6379 (unroutable)", [*start, "--ray-address", "10.255.255.1:6379"]),
        Case("study", "--results-dir /proc/autotune", [*start, "--results-dir", "/proc/autotune"]),
        # study and results
        Case("study", "--study '///'", [*start, "--study", "///"]),
        Case("study", "--results-dir is a file", [*start, "--results-dir", "a_file"]),
        Case("study", "--resume a study that does not exist", ["start", "--resume", "nosuch", "--foreground"]),
        Case(
            "study",
            "--study of another model's study",
            ["start", "static.onnx", "--foreground", "--trials", "1", "--study", "tiny"],
        ),
        Case("study", "--storage with an unknown scheme", [*start, "--storage", "bogus://x"]),
        Case("study", "--ray-address where nothing listens", [*start, "--ray-address", "127.0.0.1:1"]),
        # other commands
        Case("commands", "status of a study that does not exist", ["status", "nosuch"]),
        Case("commands", "report of a study that does not exist", ["report", "nosuch"]),
        Case("commands", "stop a study that does not exist", ["stop", "nosuch"]),
        Case("commands", "export a study that does not exist", ["export", "nosuch", "-o", "export_new"]),
        Case("commands", "export into a non-empty directory", ["export", "tiny", "-o", "export_full"]),
        Case("commands", "export --trial 99", ["export", "tiny", "-o", "export_new", "--trial", "99"]),
        Case(
            "commands",
            "export --trial and --batch",
            ["export", "tiny", "-o", "export_new", "--trial", "0", "--batch", "1"],
        ),
        Case(
            "commands", "export --batch 64 (no answer there)", ["export", "tiny", "-o", "export_new", "--batch", "64"]
        ),
        Case("commands", "profile --trial abc", ["profile", "tiny", "--trial", "abc"]),
        Case("commands", "dashboard --port 70000", ["dashboard", "tiny", "--port", "70000"]),
        Case("commands", "dashboard --port http", ["dashboard", "tiny", "--port", "http"]),
        Case("commands", "dashboard on a taken port", ["dashboard", "tiny", "--port", str(port_taken)]),
        Case("commands", "dashboard of a study that does not exist", ["dashboard", "nosuch"]),
        Case("commands", "an unknown subcommand", ["tune", "tiny.onnx"]),
        Case("commands", "no subcommand", []),
        Case("commands", "an unknown flag", [*start, "--turbo"]),
    ]
    return other


def snapshot(work: Path) -> set[str]:
    """Every path under the results directory and the export targets."""
    found = set()
    for top in ("results", "export_new", "export_full", "a_file"):
        base = work / top
        if base.exists():
            found |= {str(p.relative_to(work)) for p in [base, *base.rglob("*")]}
    return found


def run_case(case: Case, work: Path, env: dict[str, str]) -> dict[str, object]:
    before = snapshot(work)
    started = time.monotonic()
    proc = subprocess.run([AUTOTUNE, *case.argv], cwd=work, env=env, capture_output=True, text=True, timeout=600)
    written = sorted(snapshot(work) - before)
    err = proc.stderr.strip().splitlines()
    if case.stated:  # not refused: started, after saying what it assumed
        ok = proc.returncode == 0 and case.stated in proc.stdout.splitlines() and "Traceback" not in proc.stderr
        err = [case.stated]
    else:
        ok = proc.returncode == 2 and len(err) == 1 and "Traceback" not in proc.stderr and not written
    return {
        "case": case,
        "code": proc.returncode,
        "message": (err[-1] if err else "").replace(str(work) + os.sep, ""),
        "lines": len(err),
        "traceback": "Traceback" in proc.stderr,
        "written": written,
        "ok": ok,
        "seconds": time.monotonic() - started,
    }


def markdown(rows: list[dict[str, object]], seconds: float) -> str:
    held = sum(1 for r in rows if r["ok"])
    out = [
        "# Bad inputs and what each gets",
        "",
        f"Generated by `bench/bad_inputs.py` (`make bad-inputs`): {len(rows)} bad inputs given to the installed "
        f"`autotune` console script in a scratch directory holding a small model, inputs and spaces, and a "
        f"finished 1-trial study `tiny` for the commands that read one ({seconds:.0f} s in all).",
        "",
        "The contract: exit code 2, one line on stderr naming the flag, file or value, no traceback, nothing "
        "written under the results directory or the export target. An input autotune converts rather than "
        "refuses (a dtype that converts without changing a value) is stated instead: the line it prints on "
        "stdout before it starts, exit 0. "
        f"**{held} of {len(rows)} cases keep it**"
        + ("." if held == len(rows) else "; the others are marked ✗ and listed below the table."),
        "",
        "| # | group | bad input | exit | stderr (one line), or the line stated | contract |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for i, row in enumerate(rows, 1):
        case: Case = row["case"]  # type: ignore[assignment]
        message = str(row["message"]).replace("|", "\\|")
        problems = []
        if row["code"] != (0 if case.stated else 2):
            problems.append(f"exit {row['code']}")
        if row["lines"] != 1 and not case.stated:
            problems.append(f"{row['lines']} lines")
        if row["traceback"]:
            problems.append("traceback")
        if row["written"] and not case.stated:
            problems.append("wrote " + ", ".join(row["written"][:3]))  # type: ignore[index]
        if case.stated and not row["ok"] and not problems:
            problems.append("did not state it")
        verdict = ("✓ stated" if case.stated else "✓") if row["ok"] else "✗ " + "; ".join(problems)
        out.append(f"| {i} | {case.group} | {case.what} | {row['code']} | `{message}` | {verdict} |")
    broken = [r for r in rows if not r["ok"]]
    if broken:
        out += ["", "## Cases outside the contract", ""]
        for row in broken:
            out.append(f"- {row['case'].what}: exit {row['code']}, {row['lines']} stderr line(s)")  # type: ignore[union-attr]
    return "\n".join(out) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "BAD_INPUTS.md")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="autotune-bad-inputs-"))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(RAY_USAGE_STATS_ENABLED="0", AUTOTUNE_ORT_PROVIDER="cpu")
    started = time.monotonic()
    try:
        _fixtures(work)
        made = subprocess.run(
            [
                AUTOTUNE,
                "start",
                "tiny.onnx",
                "--foreground",
                "--trials",
                "1",
                "--max-measure-s",
                "0.05",
                "--target",
                "onnxruntime",
            ],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if made.returncode != 0:
            print(made.stderr, file=sys.stderr)
            return 1
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            rows = []
            for case in cases(taken.getsockname()[1]):
                row = run_case(case, work, env)
                print(f"{'ok ' if row['ok'] else 'BAD'} {row['code']:>3} {case.what}: {row['message']}", flush=True)
                rows.append(row)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    args.out.write_text(markdown(rows, time.monotonic() - started))
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
