"""Pure translations between autotune and TensorRT's text formats, with no TensorRT import.

- `trtexec_shape_spec`: a `--minShapes/--optShapes/--maxShapes` value trtexec parses back
  to the same names.
- `layer_from_inspector`: one layer of `IEngineInspector.get_engine_information(JSON)`, in
  the TensorRT 10.x schema or the 11.x one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

_ONNX_LAYER = re.compile(r"\[ONNX Layer: ([^\]]*)\]")
# The datatype inside a 10.x "Format/Datatype" description ("Row major linear FP32 format",
# "Channel major FP16 format where channel % 8 == 0", "Row major Int8 format").
_FORMAT_DATATYPE = re.compile(
    r"\b(FP32|FP16|BF16|FP8|FP4|Int8|INT8|Int4|INT4|Int32|INT32|Int64|INT64|UInt8|Bool|Half|Float)\b"
)


def trtexec_shape_spec(profile: Mapping[str, Sequence[Sequence[int]]], index: int) -> str:
    """`name:1x3x32x32,other:...` for one of min (0), opt (1), max (2).

    trtexec (sampleOptions.cpp `getShapesBuild`) splits the value on every ',' first, then
    each pair on ':'; a name wrapped in single quotes may contain ':' ("Input names can be
    wrapped with escaped single quotes (ex: 'Input:0')"). Names are quoted only when they
    need it, so ordinary commands stay as trtexec's documentation writes them.

    Raises:
        ValueError: a name has ',' or a single quote, which trtexec cannot parse back.
    """
    pairs = []
    for name, dims in profile.items():
        if "," in name or "'" in name:
            raise ValueError(f"trtexec cannot express input name {name!r} in a shape spec (it splits on ',')")
        quoted = f"'{name}'" if ":" in name else name
        pairs.append(f"{quoted}:{'x'.join(str(int(d)) for d in dims[index])}")
    return ",".join(pairs)


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
    stream = layer.get("StreamId")
    tactic = layer.get("TacticName") or layer.get("TacticValue") or layer.get("Tactic") or ""
    return {
        "name": str(layer.get("Name", "")),
        "type": str(layer.get("LayerType", "")),
        "onnx_nodes": _ONNX_LAYER.findall(str(metadata)),
        "datatypes": _datatypes(layer.get("Outputs")),
        "tactic": str(tactic),
        "stream": int(stream) if str(stream).lstrip("-").isdigit() else None,
    }


def inspector_layers(engine_information: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every layer of a parsed `get_engine_information(JSON)` document (both schemas)."""
    return [layer_from_inspector(layer) for layer in engine_information.get("Layers", [])]
