"""Every example value `autotune start --help` shows is accepted as shown (issue 29: its own
`scale=1/255` was refused). The examples are read from the help text itself, so a new one is
checked without touching this file, and an example that stops parsing fails here."""

from __future__ import annotations

import re

import pytest

from autotune.calibration import parse_preprocess, parse_preprocess_flags
from autotune.judges import parse_limits, parse_role
from autotune.spec import parse_budget, parse_start, start_parser


def help_of(flag: str) -> str:
    action = next(a for a in start_parser()._actions if flag in a.option_strings)
    return " ".join(str(action.help).split())


def test_every_budget_example_parses():
    examples = re.findall(r"\b\d+[smh](?:\d+[sm])?\b", help_of("--budget"))
    assert {"90s", "10m", "2h", "1h30m"} <= set(examples)
    assert [parse_budget(e) for e in ("90s", "10m", "2h", "1h30m")] == [90, 600, 7200, 5400]
    for example in examples:
        assert parse_budget(example) > 0
    with pytest.raises(Exception, match="--budget"):
        parse_budget("ten minutes")  # the check can fail


def test_every_judge_limit_example_parses_to_its_value():
    examples = re.findall(r"\b\w+=[\d.]+\b", help_of("--judge"))
    assert len(examples) >= 9
    limits = parse_limits(examples)
    for example in examples:
        key, value = example.split("=")
        assert float(getattr(limits, key)) == float(value)
    with pytest.raises(ValueError, match="--judge"):
        parse_limits(["cer=2"])


def test_every_output_role_example_is_a_role():
    text = help_of("--output-role")
    roles = re.findall(r"\b(classes|labels|sequence|detections(?::[\w-]+)?|dense_map|embedding|generic)\b", text)
    assert {"classes", "sequence", "detections:objectness", "detections:no-objectness", "dense_map"} <= set(roles)
    for role in roles:
        assert parse_role(f"y={role}") == ("y", role)
    with pytest.raises(ValueError, match="--output-role"):
        parse_role("y=boxes")


def test_the_preprocess_example_parses_with_its_placeholders_filled():
    shown = help_of("--preprocess")
    filled = (
        shown.replace("size=H,W", "size=48,192").replace("layout=NCHW|NHWC", "layout=NHWC")
        .replace("mean=R,G,B", "mean=0.5,0.5,0.5").replace("std=R,G,B", "std=0.5,0.5,0.5")
        .replace("channel_order=RGB|BGR", "channel_order=BGR")
    )  # fmt: skip
    items = re.findall(r"\b\w+=\S+", filled.split(":", 1)[1])
    assert len(items) == 6 and "scale=1/255" in items
    args = parse_start(["model.onnx", "--inputs", "images/", "--preprocess", *items])
    parsed = parse_preprocess(parse_preprocess_flags(args.preprocess), "--preprocess")
    assert parsed.size == (48, 192) and parsed.scale == pytest.approx(1 / 255) and parsed.channel_order == "BGR"


@pytest.mark.parametrize("flag", ["--batch", "--target", "--accuracy", "--metric", "--trial-timeout"])
def test_the_other_examples_parse_on_the_command_line(flag):
    text = help_of(flag)
    examples = {
        "--batch": re.findall(r"\b\d+(?:,\d+)*\b", text),
        "--target": re.findall(r"\b(auto|onnxruntime|tensorrt-rtx|tensorrt)\b", text),
        "--accuracy": re.findall(r"\b(auto|scale|elementwise)\b(?= \(default\)|:)", text),
        "--metric": re.findall(r"\b(top1|top5)\b", text),
        "--trial-timeout": re.findall(r"\b\d+[smh]\b", text),
    }[flag]
    assert examples, text
    for example in examples:
        assert getattr(parse_start(["model.onnx", flag, example]), flag[2:].replace("-", "_")) == example
    if flag == "--trial-timeout":
        assert all(parse_budget(e, flag) > 0 for e in examples)
