"""The model under tuning: loading, validation, input specs and the fixed input pool.

Everything the user hands in (the ONNX file, `--inputs FILE.npz`, `--shape name:dims`) is
checked here, before anything is written, and turned into `UsageError` with a one-line
message naming the offending file, input or value.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from autotune.errors import UsageError, first_line

# Inputs whose name says they are masks get ones, so attention is not masked out at random.
_MASK_NAME = re.compile(r"mask", re.IGNORECASE)
DEFAULT_DYNAMIC_DIM = 16
POOL_BATCH = 8


@dataclass(frozen=True)
class InputSpec:
    """One model input: name, numpy dtype and shape (ints, or strings for symbolic dims)."""

    name: str
    dtype: np.dtype
    shape: tuple[int | str, ...]

    @property
    def has_dynamic_batch(self) -> bool:
        return bool(self.shape) and not isinstance(self.shape[0], int)


@dataclass(frozen=True)
class ModelInfo:
    """What autotune knows about the model: path, content hash, inputs and outputs."""

    path: Path
    sha256: str
    inputs: tuple[InputSpec, ...]
    output_names: tuple[str, ...]
    opset: int

    @property
    def dynamic_batch(self) -> bool:
        """True when every input's first dimension is symbolic (a batch size knob applies)."""
        return all(spec.has_dynamic_batch for spec in self.inputs)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def model_sha256(path: Path, model: onnx.ModelProto) -> str:
    """The digest of what the model is: the `.onnx` file, and each external data file its
    tensors name (a model with none gets its file's digest, as before). Changing the weights
    beside a model changes the model."""
    digest = file_sha256(path)
    locations: set[str] = set()
    for tensor in onnx.external_data_helper._get_all_tensors(model):
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            locations.update(e.value for e in tensor.external_data if e.key == "location")
    if not locations:
        return digest
    combined = hashlib.sha256(digest.encode())
    for location in sorted(locations):
        data = path.parent / location
        combined.update(f"\0{location}\0".encode())
        combined.update(file_sha256(data).encode() if data.is_file() else b"missing")
    return combined.hexdigest()


def _dim(d: onnx.TensorShapeProto.Dimension, index: int) -> int | str:
    if d.HasField("dim_value") and d.dim_value > 0:
        return int(d.dim_value)
    return d.dim_param or f"dim{index}"


def load_model_info(path: Path) -> ModelInfo:
    """Loads and validates the ONNX file at `path`, and checks ONNX Runtime can load it.

    Raises:
        UsageError: missing file, not ONNX / truncated, invalid graph, or an op ONNX Runtime
            does not implement (named in the message).
    """
    if not path.exists():
        raise UsageError(f"{path}: no such file")
    if not path.is_file():
        raise UsageError(f"{path}: not a file")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - onnx raises DecodeError and friends
        raise UsageError(f"{path}: not a valid ONNX model ({first_line(exc)})") from None
    if not model.graph.node:
        raise UsageError(f"{path}: not a valid ONNX model (the graph has no nodes; truncated or not ONNX)")
    try:
        onnx.checker.check_model(str(path))
    except Exception as exc:  # noqa: BLE001 - any error of the library here is reported as this one line
        raise UsageError(f"{path}: invalid ONNX model ({first_line(exc)})") from None
    _check_onnxruntime_loads(path)
    initializers = {init.name for init in model.graph.initializer}
    inputs = []
    for value in model.graph.input:
        if value.name in initializers:
            continue
        tensor = value.type.tensor_type
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type)
        shape = tuple(_dim(d, i) for i, d in enumerate(tensor.shape.dim))
        inputs.append(InputSpec(value.name, np.dtype(dtype), shape))
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    return ModelInfo(
        path=path.resolve(),
        sha256=model_sha256(path, model),
        inputs=tuple(inputs),
        output_names=tuple(o.name for o in model.graph.output),
        opset=opset,
    )


def fp32_cpu_session(path: Path) -> ort.InferenceSession:
    """An ONNX Runtime CPU session of the model as written, graph optimizations off: the FP32
    reference every trial is compared with, and the proof at load time that ONNX Runtime runs it."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _check_onnxruntime_loads(path: Path) -> None:
    try:
        fp32_cpu_session(path)
    except Exception as exc:  # noqa: BLE001 - any error of the library here is reported as this one line
        message = first_line(exc)
        op = re.search(r"(?:op|Op|node)\s*(?:type)?\s*[:(]?\s*'?\(?([A-Za-z0-9_]+)\)?'?", message)
        named = re.search(r"Could not find an implementation for (\S+)", message)
        detail = named.group(1) if named else (op.group(1) if op else "")
        what = f"unsupported op {detail}: " if detail else ""
        raise UsageError(f"{path}: ONNX Runtime cannot load this model ({what}{message})") from None


def parse_shape_overrides(values: Sequence[str], info: ModelInfo) -> dict[str, tuple[int, ...]]:
    """Parses `--shape name:d0,d1,...` (or `name:d0xd1x...`) flags against the model's inputs."""
    shapes: dict[str, tuple[int, ...]] = {}
    names = {spec.name: spec for spec in info.inputs}
    for value in values:
        name, sep, dims_text = value.rpartition(":")
        if not sep or not name:
            raise UsageError(f"--shape {value!r}: expected NAME:DIMS, e.g. images:1,3,224,224")
        if name not in names:
            raise UsageError(f"--shape {value!r}: the model has no input {name!r} (inputs: {', '.join(names)})")
        if name in shapes:
            raise UsageError(f"--shape {value!r}: input {name!r} was given a shape twice; give one")
        try:
            dims = tuple(int(d) for d in re.split(r"[,x]", dims_text))
        except ValueError:
            raise UsageError(f"--shape {value!r}: dims must be integers separated by ',' or 'x'") from None
        spec = names[name]
        if len(dims) != len(spec.shape) or any(d <= 0 for d in dims):
            raise UsageError(f"--shape {value!r}: input {name!r} has rank {len(spec.shape)}, dims must be positive")
        for fixed, given in zip(spec.shape, dims, strict=True):
            if isinstance(fixed, int) and fixed != given:
                raise UsageError(f"--shape {value!r}: dimension {given} contradicts the model's fixed {fixed}")
        shapes[name] = dims
    return shapes


_ANONYMOUS_DIM = re.compile(r"^(\?|dim\d+|)$")  # "?" (as some exporters write), or unnamed (`_dim`)


def shared_dim_name(dim: int | str) -> str | None:
    """The name by which a symbolic dim is shared between inputs; None for a fixed dim and for an
    anonymous one ("?", or unnamed), which stands only for its own position."""
    return dim if isinstance(dim, str) and not _ANONYMOUS_DIM.match(dim) else None


def unresolved_dims(info: ModelInfo, overrides: Mapping[str, Sequence[int]]) -> dict[str, list[str]]:
    """Symbolic dims (other than a dynamic batch dim) that neither `--shape` nor a shared dim
    name fixes, per input: the dims autotune would otherwise have to guess."""
    known = set()
    for spec in info.inputs:
        if spec.name in overrides:
            known |= {name for name in map(shared_dim_name, spec.shape) if name is not None}
    missing: dict[str, list[str]] = {}
    for spec in info.inputs:
        if spec.name in overrides:
            continue
        dims = [
            dim
            for i, dim in enumerate(spec.shape)
            if isinstance(dim, str) and not (i == 0 and info.dynamic_batch) and shared_dim_name(dim) not in known
        ]
        if dims:
            missing[spec.name] = dims
    return missing


# The values a suggested --shape tries for dynamic dims, in order: image sizes, then text-line
# heights with a line's width (an OCR recognizer's [b, 3, 48, W]), then sequence lengths.
_SUGGESTED_DIMS = ((224, 224), (640, 640), (48, 320), (32, 320), (64, 256), (128, 128), (320, 320))


def example_shape_flag(info: ModelInfo, name: str) -> str:
    """A `--shape` flag for input `name` that keeps every static dim and that the model runs at
    (tried here in FP32 on one sample, others inputs at their own suggestion); the first
    plausible one, said to be unchecked, when none of the tried values runs."""
    spec = next(s for s in info.inputs if s.name == name)
    candidates = []
    for first, second in _SUGGESTED_DIMS:
        dims, free = [], 0
        for i, dim in enumerate(spec.shape):
            if isinstance(dim, int):
                dims.append(dim)
            elif i == 0:
                dims.append(1)
            else:
                dims.append(first if free == 0 else second)
                free += 1
        if dims not in candidates:
            candidates.append(dims)
    session = fp32_cpu_session(info.path)
    for dims in candidates:
        if _runs_at(session, info, {name: tuple(dims)}):
            return f"--shape {name}:{','.join(map(str, dims))}"
    return f"--shape {name}:{','.join(map(str, candidates[0]))} (not checked: no tried shape ran)"


def _runs_at(session: ort.InferenceSession, info: ModelInfo, overrides: Mapping[str, Sequence[int]]) -> bool:
    """Whether the FP32 `session` runs one synthetic sample at `overrides` (inputs not named
    there at their default shapes)."""
    quiet = ort.RunOptions()
    quiet.log_severity_level = 4  # a shape that fails is an answer here, not an error to print
    try:
        session.run(None, synthetic_pool(info, overrides, samples=1), quiet)
    except Exception:  # noqa: BLE001 - any failure means "not this shape"
        return False
    return True


def require_resolved_dims(info: ModelInfo, overrides: Mapping[str, Sequence[int]]) -> None:
    """UsageError naming each dynamic dim no `--shape` fixes: a dim is never invented."""
    missing = unresolved_dims(info, overrides)
    if not missing:
        return
    what = "; ".join(f"input {name!r} dims {', '.join(dims)}" for name, dims in missing.items())
    examples = " ".join(example_shape_flag(info, name) for name in missing)
    raise UsageError(
        f"{info.path.name}: dynamic dims without a value ({what}); autotune does not guess them: "
        f"give the deployment shape, e.g. {examples}"
    )


def expand_short_shapes(values: Sequence[str], info: ModelInfo) -> list[str]:
    """`--shape 640x640` (no input name) sets the two dynamic spatial dims of the model's only
    rank-4 input; other values pass through unchanged."""
    expanded = []
    for value in values:
        if ":" in value:
            expanded.append(value)
            continue
        images = [s for s in info.inputs if len(s.shape) == 4]
        parts = re.split(r"[,x]", value)
        if len(images) != 1 or len(parts) != 2 or not all(p.isdigit() for p in parts):
            raise UsageError(
                f"--shape {value!r}: the short form HxW needs a model with exactly one 4-D input; "
                "otherwise give NAME:D0,D1,..."
            )
        spec = images[0]
        dims = [1 if i == 0 and isinstance(d, str) else d for i, d in enumerate(spec.shape)]
        dims[2], dims[3] = int(parts[0]), int(parts[1])
        expanded.append(f"{spec.name}:{','.join(map(str, dims))}")
    return expanded


def concrete_shapes(info: ModelInfo, batch_size: int, overrides: Mapping[str, Sequence[int]]) -> dict[str, list[int]]:
    """The shape of every input at `batch_size`, with symbolic dims resolved.

    A `--shape` override fixes all of its input's dims by position, except a dynamic batch dim,
    which the batch size knob sets; an input without one takes a named dim's value from an input
    that shares the name (never an anonymous dim's, "?": issue 29). (`start` refuses a model whose
    other symbolic dims no `--shape` fixes: `require_resolved_dims`; 16 remains only as the
    fallback of library callers.)
    """
    symbols: dict[str, int] = {}
    for spec in info.inputs:
        if spec.name in overrides:
            for dim, value in zip(spec.shape, overrides[spec.name], strict=True):
                name = shared_dim_name(dim)
                if name is not None:
                    symbols.setdefault(name, int(value))
    shapes = {}
    for spec in info.inputs:
        given = overrides.get(spec.name)
        shape = []
        for i, dim in enumerate(spec.shape):
            if i == 0 and info.dynamic_batch:
                shape.append(batch_size)
            elif isinstance(dim, int):
                shape.append(dim)
            elif given is not None:
                shape.append(int(given[i]))  # by position: two dims may share a name ("?")
            else:
                name = shared_dim_name(dim)
                shape.append(symbols.setdefault(name, DEFAULT_DYNAMIC_DIM) if name else DEFAULT_DYNAMIC_DIM)
        shapes[spec.name] = shape
    return shapes


def synthetic_pool(
    info: ModelInfo, overrides: Mapping[str, Sequence[int]], seed: int = 0, samples: int = POOL_BATCH
) -> dict[str, np.ndarray]:
    """Seeded inputs for a pool of samples: floats in [-1, 1), ints in [0, 100), masks of ones.

    For a dynamic-batch model the pool holds `samples` samples along dim 0 (POOL_BATCH unless
    memory is short); feeds at any batch size are drawn from it (`feeds_at_batch`). Each array is
    drawn in its own dtype: a float32 pool never passes through a float64 copy twice its size.
    """
    rng = np.random.default_rng(seed)
    shapes = concrete_shapes(info, samples if info.dynamic_batch else 1, overrides)
    pool: dict[str, np.ndarray] = {}
    for spec in info.inputs:
        shape = shapes[spec.name]
        if spec.dtype == np.bool_:
            pool[spec.name] = rng.random(shape, dtype=np.float32) < 0.5
        elif np.issubdtype(spec.dtype, np.integer):
            if _MASK_NAME.search(spec.name):
                pool[spec.name] = np.ones(shape, spec.dtype)
            else:
                pool[spec.name] = rng.integers(0, 100, size=shape, dtype=spec.dtype)
        else:
            draw = np.float64 if spec.dtype == np.float64 else np.float32
            values = rng.random(shape, dtype=draw)
            values *= 2.0
            values -= 1.0
            pool[spec.name] = values if values.dtype == spec.dtype else values.astype(spec.dtype)
    return pool


def synthetic_pool_bytes(info: ModelInfo, overrides: Mapping[str, Sequence[int]], samples: int) -> int:
    """The bytes `synthetic_pool(info, overrides, samples=samples)` allocates at its peak."""
    shapes = concrete_shapes(info, samples if info.dynamic_batch else 1, overrides)
    total = 0
    for spec in info.inputs:
        size = math.prod(shapes[spec.name])
        floating = not (spec.dtype == np.bool_ or np.issubdtype(spec.dtype, np.integer))
        drawn = 8 if spec.dtype == np.float64 else 4 if floating or spec.dtype == np.bool_ else 0
        total += size * (spec.dtype.itemsize + (drawn if spec.dtype.itemsize != drawn else 0))
    return total


def synthetic_samples_that_fit(
    info: ModelInfo, overrides: Mapping[str, Sequence[int]], largest_batch: int, free_bytes: int
) -> tuple[int, int]:
    """(samples per pool, bytes two pools need): POOL_BATCH samples where two pools (verification
    and calibration) fit in `free_bytes`, else the largest batch tuned; the caller refuses when the
    bytes still exceed what is free."""
    for samples in sorted({POOL_BATCH, max(1, min(largest_batch, POOL_BATCH))}, reverse=True):
        need = 2 * synthetic_pool_bytes(info, overrides, samples)
        if need <= free_bytes:
            break
    return samples, need


def free_memory_bytes() -> int | None:
    """The machine's MemAvailable (what can be allocated without pushing others out), else its
    free pages; None where neither can be read."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


LARGEST_LIVE_TENSORS = 3  # tensors a runtime holds at once at its peak (a node's inputs, output, a skip)
SESSION_COPIES = 3  # the model's weights in memory during a trial: the file, the session, a rewritten copy


def trial_memory_bytes(info: ModelInfo, shapes: Mapping[str, Sequence[int]]) -> int | None:
    """A trial's memory at these input shapes, estimated before anything runs: the weights
    `SESSION_COPIES` times, plus twice (the reference's run and the candidate's) the
    `LARGEST_LIVE_TENSORS` largest tensors ONNX shape inference finds at these shapes. An
    estimate of the order of magnitude, for refusing shapes a machine cannot hold (a text
    recognizer at width 2,000,000 grew a daemon to 19 GB); None where shape inference cannot
    size the graph (the trial's memory guard still holds, `workers.MemoryGuard`)."""
    try:
        model = onnx.load(str(info.path))
        for value in model.graph.input:
            if value.name in shapes:
                dims = value.type.tensor_type.shape.dim
                for dim, size in zip(dims, shapes[value.name], strict=True):
                    dim.Clear()
                    dim.dim_value = int(size)
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception:  # noqa: BLE001 - a graph shape inference cannot follow (custom ops, > 2 GiB protos)
        return None
    weights = sum(init.ByteSize() for init in model.graph.initializer)
    sizes = []
    for value in [*inferred.graph.value_info, *inferred.graph.output]:
        tensor = value.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else 0 for d in tensor.shape.dim]
        if dims and all(dims) and tensor.elem_type:
            itemsize = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type)).itemsize
            sizes.append(math.prod(dims) * itemsize)
    live = sum(sorted(sizes, reverse=True)[:LARGEST_LIVE_TENSORS])
    return SESSION_COPIES * weights + 2 * live


_CONVERTIBLE_KINDS = "biuf"  # bool, signed and unsigned integers, floats


def converted_to_input_dtype(array: np.ndarray, spec: InputSpec, where: str) -> np.ndarray:
    """`array` in `spec`'s dtype, where the conversion keeps every value (floats up to rounding:
    float64 -> float32 is what a user means); UsageError naming `where`, the input and the first
    value that would change otherwise: a fraction or a value out of range for an integer input,
    an integer a float cannot hold exactly (int64 above 2**24 -> float32), a float beyond the
    narrower float's range, anything but 0 and 1 for a bool input, strings or complex numbers."""

    source, target = array.dtype, spec.dtype
    name = repr(spec.name)
    if source.kind not in _CONVERTIBLE_KINDS or target.kind not in _CONVERTIBLE_KINDS:
        raise UsageError(f"{where}: {name} has dtype {source}, the model expects {target}")
    if array.size == 0 or source.kind == "b":
        return array.astype(target)

    def refuse(why: str, bad: np.ndarray) -> UsageError:
        index = tuple(int(i) for i in np.argwhere(bad)[0])
        value = array[index].item()
        return UsageError(
            f"{where}: {name} is {source} and holds {value!r} at index {index}, which {why}; "
            f"the model's input is {target}, so convert it yourself"
        )

    if source.kind == "f" and target.kind != "f" and not np.isfinite(array).all():
        raise refuse(f"an input of {target} cannot hold", ~np.isfinite(array))
    if target.kind == "b":
        bad = (array != 0) & (array != 1)
        if bad.any():
            raise refuse("is not 0 or 1 (a bool input)", bad)
        return array.astype(target)
    if target.kind in "iu":
        if source.kind == "f":
            bad = array != np.round(array)
            if bad.any():
                raise refuse(f"is not a whole number ({target} holds integers)", bad)
        limits = np.iinfo(target)
        bad = (array < limits.min) | (array > limits.max)
        if bad.any():
            raise refuse(f"is outside {target}'s range {limits.min} to {limits.max}", bad)
        return array.astype(target)
    largest = float(np.finfo(target).max)
    bad = np.isfinite(array) & (np.abs(array.astype(np.float64)) > largest)
    if bad.any():
        raise refuse(f"is beyond {target}'s largest value {largest:.4g}", bad)
    converted = array.astype(target)
    if source.kind in "iu":
        bad = converted.astype(source) != array
        if bad.any():
            raise refuse(f"{target} cannot hold exactly", bad)
    return converted


def load_input_pool(path: Path, info: ModelInfo, notes: list[str] | None = None) -> dict[str, np.ndarray]:
    """Loads `--inputs FILE.npz` and checks names, dtypes and shapes against the model.

    An array of another dtype than its input's is converted where no value changes beyond
    float rounding (`converted_to_input_dtype`), with a line appended to `notes` saying so;
    refused (UsageError) where a value would change. Default `notes`: None (lines dropped)."""
    if not path.is_file():
        raise UsageError(f"--inputs {path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except Exception as exc:  # noqa: BLE001 - any error of the library here is reported as this one line
        raise UsageError(f"--inputs {path}: not a readable .npz file ({first_line(exc)})") from None
    expected = {spec.name: spec for spec in info.inputs}
    missing = sorted(set(expected) - set(arrays))
    extra = sorted(set(arrays) - set(expected))
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing)}")
        if extra:
            parts.append(f"unknown {', '.join(extra)}")
        raise UsageError(f"--inputs {path}: names do not match the model's inputs ({'; '.join(parts)})")
    batches = set()
    for name, array in arrays.items():
        spec = expected[name]
        if array.ndim != len(spec.shape):
            raise UsageError(
                f"--inputs {path}: {name!r} has rank {array.ndim}, the model expects {len(spec.shape)} {list(spec.shape)}"
            )
        for i, (dim, got) in enumerate(zip(spec.shape, array.shape, strict=True)):
            if isinstance(dim, int) and dim != got:
                raise UsageError(
                    f"--inputs {path}: {name!r} has shape {list(array.shape)}, the model expects {list(spec.shape)} "
                    f"(dim {i})"
                )
        if array.dtype != spec.dtype:
            arrays[name] = converted_to_input_dtype(array, spec, f"--inputs {path}")
            if notes is not None:
                notes.append(f"--inputs {path}: {name!r} is {array.dtype}, converted to the model's {spec.dtype}")
        if np.issubdtype(arrays[name].dtype, np.floating):
            nans = int(np.isnan(arrays[name]).sum())
            if nans:
                first = tuple(int(i) for i in np.argwhere(np.isnan(arrays[name]))[0])
                raise UsageError(
                    f"--inputs {path}: {name!r} holds {nans} NaN value(s) (first at index {first}); "
                    "every candidate's output would fail the accuracy gate"
                )
        batches.add(array.shape[0] if array.ndim else 1)
    if info.dynamic_batch and len(batches) > 1:
        raise UsageError(f"--inputs {path}: inputs disagree on the batch dimension ({sorted(batches)})")
    return arrays


def check_inputs_match_shapes(
    pool: Mapping[str, np.ndarray], overrides: Mapping[str, Sequence[int]], info: ModelInfo, where: Path
) -> None:
    """UsageError when `--shape` names a shape the `--inputs` arrays do not have (dim 0 of a
    dynamic-batch input is the sample count, not a shape, and is not compared)."""
    specs = {spec.name: spec for spec in info.inputs}
    for name, dims in overrides.items():
        array = pool.get(name)
        if array is None:
            continue
        skip = 1 if info.dynamic_batch and specs[name].shape and not isinstance(specs[name].shape[0], int) else 0
        if tuple(array.shape[skip:]) != tuple(dims)[skip:]:
            wanted = ",".join(str(d) for d in dims)
            raise UsageError(
                f"--shape {name}:{wanted}: conflicts with --inputs {where}, where {name!r} has shape "
                f"{list(array.shape)}; drop --shape (the inputs fix the shape) or give inputs of that shape"
            )


def verification_feeds(
    pool: Mapping[str, np.ndarray], batch_size: int, dynamic_batch: bool
) -> list[dict[str, np.ndarray]]:
    """Every sample of the held-out pool once, in feeds of `batch_size` (the last one topped up
    from the pool's start, as `feeds_at_batch` tops up a pool smaller than the batch); the pool
    itself, one feed, where the batch is static. `join_outputs` makes their outputs one."""
    if not dynamic_batch:
        return [dict(pool)]
    count = next(iter(pool.values())).shape[0]
    feeds = []
    for start in range(0, count, batch_size):
        index = np.arange(start, start + batch_size) % count
        feeds.append({name: np.ascontiguousarray(array[index]) for name, array in pool.items()})
    return feeds


def output_batch_axes(run: Any, pool: Mapping[str, np.ndarray]) -> tuple[dict[str, int | None], bool]:
    """Which axis of each output holds the samples (ddddocr's recognizer writes [steps, batch,
    classes]): the one axis whose size changes between one sample and two, run through `run`
    (feeds -> outputs by name); None for an output of the same shape at both (no batch axis).
    Also whether every such axis holds exactly the batch (1, then 2): False where an output's
    size depends on the data (detections after NMS), whose batch-relative contents depend on
    how the samples were batched."""
    one, two = (run(feeds_at_batch(pool, batch, True)) for batch in (1, 2))
    axes: dict[str, int | None] = {}
    proportional = True
    for name, value in one.items():
        changed = [axis for axis, (a, b) in enumerate(zip(value.shape, two[name].shape, strict=False)) if a != b]
        axes[name] = changed[0] if changed else None
        if changed and (len(changed) > 1 or (value.shape[changed[0]], two[name].shape[changed[0]]) != (1, 2)):
            proportional = False
    return axes, proportional


def join_outputs(
    parts: Sequence[Mapping[str, np.ndarray]], count: int, axes: Mapping[str, int | None], batch: int
) -> dict[str, np.ndarray]:
    """The outputs of `verification_feeds`' feeds of `batch` samples as the pool's `count`:
    each output concatenated along its batch axis (`axes`), the samples that topped up the last
    feed dropped; an output without a batch axis is the first feed's. An output whose size on
    that axis is not `batch` (a data-dependent one: detections after NMS) is concatenated whole."""
    topped_up = batch * len(parts) - count
    joined = {}
    for name, first in parts[0].items():
        axis = axes.get(name)
        if axis is None:
            joined[name] = first
            continue
        pieces = [part[name] for part in parts]
        if 0 < topped_up < batch and pieces[-1].shape[axis] == batch:
            pieces[-1] = np.take(pieces[-1], np.arange(batch - topped_up), axis=axis)
        joined[name] = pieces[0] if len(pieces) == 1 else np.concatenate(pieces, axis=axis)
    return joined


def axes_like(parts: Sequence[Mapping[str, np.ndarray]], reference: Mapping[str, np.ndarray]) -> dict[str, int | None]:
    """The batch axes of `join_outputs` read off a joined reference: the one axis on which a
    feed's output and the reference differ (None where they do not: no batch axis, or the feed
    is the whole pool). A second differing axis means the outputs cannot be matched."""
    axes: dict[str, int | None] = {}
    for name, value in parts[0].items():
        if name not in reference:
            continue
        target = reference[name].shape
        changed = [axis for axis, (a, b) in enumerate(zip(value.shape, target, strict=False)) if a != b]
        if len(changed) > 1 or value.ndim != len(target):
            raise ValueError(
                f"output {name!r}: shape {list(value.shape)} per batch cannot make the reference's {list(target)}"
            )
        axes[name] = changed[0] if changed else None
    if len(parts) > 1 and axes and all(axis is None for axis in axes.values()):
        # several feeds, yet every output of one feed has the reference's shape: the reference
        # covers one feed's samples, not the pool's (only the first feed would be judged)
        raise ValueError(f"the reference holds one feed's samples, not the {len(parts)} feeds' of the pool")
    return axes


def pool_sha256(pool: Mapping[str, np.ndarray]) -> str:
    """A digest of the input pool (names, dtypes, shapes and bytes): what a study verifies on."""
    digest = hashlib.sha256()
    for name in sorted(pool):
        array = np.ascontiguousarray(pool[name])
        digest.update(f"{name}|{array.dtype.str}|{array.shape}|".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def feeds_at_batch(pool: Mapping[str, np.ndarray], batch_size: int, dynamic_batch: bool) -> dict[str, np.ndarray]:
    """Feeds of `batch_size` samples drawn cyclically from the pool (the pool itself if static)."""
    if not dynamic_batch:
        return dict(pool)
    feeds = {}
    for name, array in pool.items():
        index = np.arange(batch_size) % array.shape[0]
        feeds[name] = np.ascontiguousarray(array[index])
    return feeds
