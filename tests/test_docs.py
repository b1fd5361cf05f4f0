"""Every command line the README shows parses (issue 29: its `--preprocess` example did not)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from autotune.cli import build_parser

README = Path(__file__).resolve().parent.parent / "README.md"

# Placeholders of the README's synopses, as a user would fill them in.
FILLED = {
    "<study>": "mystudy", "MODEL": "model.onnx", "STUDY": "mystudy", "DIR": "deploy", "URL": "sqlite:///s.db",
    "ADDR": "10.0.0.1:6379", "HEAD:6379": "10.0.0.1:6379", "N": "3",
}  # fmt: skip


def readme_commands() -> list[str]:
    text = README.read_text()
    found = re.findall(
        r"^\s*(autotune (?:start|status|list|stop|export|profile|report|dashboard)\b[^#\n]*)", text, re.M
    )
    found += re.findall(r"`(autotune (?:start|status|list|stop|export|profile|report|dashboard)\b[^`]*)`", text)
    commands = []
    for command in found:
        command = command.replace("\\|", "|").strip()
        command = re.sub(r"\[([^\]|]*)\|[^\]]*\]", r"\1", command)  # [a | b]: the first alternative
        command = command.replace("[", "").replace("]", "")
        words = [FILLED.get(word, word) for word in command.split()]
        commands.append(" ".join(words))
    return sorted(set(commands))


def test_the_readme_shows_commands_of_every_subcommand():
    shown = {command.split()[1] for command in readme_commands()}
    assert shown >= {"start", "status", "list", "stop", "export", "profile", "report", "dashboard"}


@pytest.mark.parametrize("command", readme_commands())
def test_every_readme_command_line_parses(command):
    build_parser().parse_args(shlex.split(command)[1:])  # argparse exits 2 on a line that does not parse


def test_the_readme_preprocess_example_parses_into_its_values():
    from autotune.calibration import parse_preprocess, parse_preprocess_flags
    from autotune.spec import parse_start

    example = re.search(r"`(--preprocess size=[^`]*)`", README.read_text()).group(1)
    args = parse_start(["model.onnx", "--inputs", "images/", *shlex.split(example)])
    parsed = parse_preprocess(parse_preprocess_flags(args.preprocess), "--preprocess")
    assert parsed.size == (224, 224) and parsed.scale == 1 / 255 and parsed.channel_order == "RGB"
    assert parsed.mean == (0.485, 0.456, 0.406) and parsed.std == (0.229, 0.224, 0.225)
