"""What TensorRT says about a build, read back with no TensorRT import: the builder's log and the
engine inspector's layers.

- `first_error`: the first real error in a build log (the one line a failed trial reports).
- `parse_layer_table`: the per-layer table a DETAILED build prints.
- `layer_from_inspector` / `inspector_layers`: one layer / every layer of
  `IEngineInspector.get_engine_information(JSON)`, in the TensorRT 10.x schema or the 11.x one.

Both layer readers give the same dict: name, type, onnx_nodes, datatypes, tactic, stream.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

# Log lines TensorRT-RTX prints on every healthy build: never "the" error.
HARMLESS_LOG_PATTERNS = ("Thread context has not been set!", "cudaError 35")

_ERROR_LINE = re.compile(r"^\[(E|!)\] (.*)$")
_IMPORTER_ERROR = re.compile(r"No importer registered for op: (\S+)")
# Polygraphy's and TensorRT's generic summaries, said after the specific message.
_GENERIC_ERRORS = (
    "Could not parse ONNX correctly",
    "Failed to parse ONNX model",
    "Invalid Engine",
    "--- Begin node",
    "--- End node",
)

_ONNX_LAYER = re.compile(r"\[ONNX Layer: ([^\]]*)\]")
_DATATYPE = re.compile(r"Datatype: (\w+)")
_LEGACY_LAYER = re.compile(r"^Layer\((?P<type>[^)]*)\): (?P<name>.*?), Tactic: (?P<tactic>\S+?),? (?P<io>.*)$")
# The datatype inside a 10.x "Format/Datatype" description ("Row major linear FP32 format",
# "Channel major FP16 format where channel % 8 == 0", "Row major Int8 format").
_FORMAT_DATATYPE = re.compile(
    r"\b(FP32|FP16|BF16|FP8|FP4|Int8|INT8|Int4|INT4|Int32|INT32|Int64|INT64|UInt8|Bool|Half|Float)\b"
)


def first_error(log_text: str) -> str:
    """The first real error in a build log, with the op and layer where TensorRT names them.

    Skips the harmless lines TensorRT-RTX prints on every build, and Polygraphy's generic
    summaries ("Could not parse ONNX correctly") when a specific message came before.
    """
    errors: list[str] = []
    lines = log_text.splitlines()
    for i, line in enumerate(lines):
        match = _ERROR_LINE.match(line)
        if not match or any(p in line for p in HARMLESS_LOG_PATTERNS):
            continue
        message = match.group(2).strip()
        # TensorRT's messages continue on indented lines (the parser's node, op and stack).
        for extra in lines[i + 1 : i + 4]:
            if extra.startswith((" ", "\t")) and extra.strip():
                message += " " + extra.strip()
            else:
                break
        errors.append(message)
    # The parser's one-line summary names the node and the op: the most useful message.
    for message in errors:
        if re.search(r"In node .* operator: ", message) or _IMPORTER_ERROR.search(message):
            return message
    specific = [e for e in errors if not any(n in e for n in _GENERIC_ERRORS)]
    if specific:
        return specific[0]
    if errors:
        return errors[0]
    tail = [line for line in lines if line.strip() and not any(p in line for p in HARMLESS_LOG_PATTERNS)]
    return tail[-1].strip() if tail else "no error message in the build log"


def _split_top_level(text: str, sep: str = ",") -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    for ch in text:
        if ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth = max(depth - 1, 0)
        if ch == sep and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return [p.strip() for p in parts if p.strip()]


def _layer(fields: Mapping[str, Any], metadata: str, datatypes: list[str]) -> dict[str, Any]:
    """The layer dict from a layer's fields, named alike in the log and in the inspector's JSON."""
    stream = fields.get("StreamId")
    tactic = fields.get("TacticName") or fields.get("TacticValue") or fields.get("Tactic") or ""
    return {
        "name": str(fields.get("Name", "")),
        "type": str(fields.get("LayerType", "")),
        "onnx_nodes": _ONNX_LAYER.findall(metadata),
        "datatypes": datatypes,
        "tactic": str(tactic),
        "stream": int(str(stream)) if str(stream).lstrip("-").isdigit() else None,
    }


def parse_layer_table(log_text: str) -> list[dict[str, Any]]:
    """The engine's layers as printed at build time, one dict per layer.

    Keys: name, type, onnx_nodes (fused ONNX node names from the layer Metadata), datatypes
    (of its outputs), tactic, stream. Reads both the DETAILED "Layers:" block (TensorRT
    10+/RTX: ``Name: ..., LayerType: ..., TacticName: ..., Metadata: [ONNX Layer: ...]``) and
    the older "Engine Layer Information" lines (``Layer(Type): a + b, Tactic: 0x.., in -> out``).
    """
    layers: list[dict[str, Any]] = []
    lines = log_text.splitlines()
    for i, line in enumerate(lines):
        stripped = line.strip()
        if stripped.endswith("Layers:") and not layers:
            for item in lines[i + 1 :]:
                item = item.strip()
                if not item.startswith("Name: "):
                    break
                fields = {}
                for part in _split_top_level(item):
                    key, _, value = part.partition(": ")
                    fields[key.strip()] = value.strip()
                datatypes = sorted(set(_DATATYPE.findall(str(fields.get("Outputs", "")))))
                layers.append(_layer(fields, str(fields.get("Metadata", "") or ""), [d for d in datatypes if d]))
        elif "Engine Layer Information:" in stripped and not layers:
            for item in lines[i + 1 :]:
                match = _LEGACY_LAYER.match(item.strip())
                if not match:
                    break
                name = match.group("name")
                layers.append(
                    {
                        "name": name,
                        "type": match.group("type"),
                        "onnx_nodes": [n.strip() for n in name.split(" + ")],
                        "datatypes": sorted(set(re.findall(r"(\w+)\[", match.group("io").split("->")[-1]))),
                        "tactic": match.group("tactic"),
                        "stream": None,
                    }
                )
    return layers


def _datatypes(tensors: Any) -> list[str]:
    names = set()
    for tensor in tensors if isinstance(tensors, list) else []:
        if not isinstance(tensor, Mapping):
            continue
        if tensor.get("DataType"):  # 11.x: Format and DataType are separate fields
            names.add(str(tensor["DataType"]))
            continue
        # 10.x: one "Format/Datatype" description
        match = _FORMAT_DATATYPE.search(str(tensor.get("Format/Datatype", "")))
        if match:
            names.add(match.group(1))
    return sorted(names)


def layer_from_inspector(layer: Mapping[str, Any] | str) -> dict[str, Any]:
    """One engine-inspector layer as autotune's layer dict.

    Keys: name, type, onnx_nodes (from the "[ONNX Layer: ...]" entries of Metadata),
    datatypes (of its outputs), tactic, stream. Reads TensorRT 10.x layers (outputs carry
    "Format/Datatype": "Row major linear FP32 format") and 11.x ones (separate "Format" and
    "DataType" fields, per the 10.x → 11.x IEngineInspector migration guide). A bare string
    is a LAYER_NAMES_ONLY entry: its name only.
    """
    if not isinstance(layer, Mapping):
        return {"name": str(layer), "type": "", "onnx_nodes": [], "datatypes": [], "tactic": "", "stream": None}
    metadata = layer.get("Metadata", "") or ""
    if isinstance(metadata, list):
        metadata = " ".join(str(m) for m in metadata)
    return _layer(layer, str(metadata), _datatypes(layer.get("Outputs")))


def inspector_layers(engine_information: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every layer of a parsed `get_engine_information(JSON)` document (both schemas)."""
    return [layer_from_inspector(layer) for layer in engine_information.get("Layers", [])]
