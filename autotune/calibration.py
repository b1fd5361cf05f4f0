"""Real samples in, split in two: what INT8/FP8 calibrate on, and what every trial is verified on.

`--inputs` takes a `.npz` file (names = the model's input names), or a directory of samples:
`.npy` files (a one-input model), `.npz` files (one or more samples each), or images
(`.png`, `.jpg`, `.jpeg`, `.bmp`) turned into the model's one image input by a `Preprocess`
spec. Samples are then split (`split_samples`): calibration never sees a sample that
verification compares, so an accuracy gate passed by a quantized model is passed on data the
quantizer did not fit its scales to. Every problem is a `UsageError` naming the file and value.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from autotune.errors import UsageError
from autotune.model import POOL_BATCH, ModelInfo, load_input_pool, synthetic_pool

SAMPLE_SUFFIXES = (".npy", ".npz")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
LAYOUTS = ("NCHW", "NHWC")
CHANNEL_ORDERS = ("RGB", "BGR")
VERIFY_EVERY = 2  # every second sample is held out for verification (half, interleaved)


@dataclass(frozen=True)
class Preprocess:
    """How an image file becomes an input tensor: resize, scale, normalize, lay out.

    `x = (pixels[channel_order] * scale - mean) / std`, pixels resized to `size` (H, W) with
    bilinear filtering, then laid out as `layout` with a batch dimension of 1.

    Args:
        size (tuple | None): (height, width); None takes it from the model's input shape.
        layout (str): "NCHW" (default) or "NHWC".
        mean (tuple): per-channel mean, after scaling. Default: (0, 0, 0).
        std (tuple): per-channel standard deviation, after scaling. Default: (1, 1, 1).
        scale (float): multiplies the 0-255 pixel values first. Default: 1/255.
        channel_order (str): "RGB" (default) or "BGR".
    """

    size: tuple[int, int] | None = None
    layout: str = "NCHW"
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)
    scale: float = 1.0 / 255.0
    channel_order: str = "RGB"


def parse_preprocess(options: Mapping[str, Any], where: str) -> Preprocess:
    """A `Preprocess` from a mapping (a YAML file's or the command line's `key: value` pairs);
    `where` names the source in error messages."""
    known = {"size", "layout", "mean", "std", "scale", "channel_order"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise UsageError(
            f"{where}: unknown preprocessing key(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})"
        )
    spec: dict[str, Any] = {}
    if options.get("size") is not None:
        spec["size"] = _ints(options["size"], "size", where, count=2)
    for key in ("mean", "std"):
        if options.get(key) is not None:
            spec[key] = _floats(options[key], key, where)
            if key == "std" and any(value <= 0 for value in spec[key]):
                raise UsageError(f"{where}: std {options[key]!r} must be positive")
    if options.get("scale") is not None:
        spec["scale"] = _floats(options["scale"], "scale", where, count=1)[0]
    for key, allowed in (("layout", LAYOUTS), ("channel_order", CHANNEL_ORDERS)):
        if options.get(key) is not None:
            value = str(options[key]).upper()
            if value not in allowed:
                raise UsageError(f"{where}: {key} {options[key]!r}: expected {' or '.join(allowed)}")
            spec[key] = value
    return Preprocess(**spec)


def parse_preprocess_flags(values: Sequence[str]) -> dict[str, str]:
    """`--preprocess key=value` flags as a mapping (values split later by `parse_preprocess`)."""
    options = {}
    for value in values:
        key, sep, text = value.partition("=")
        if not sep or not key:
            raise UsageError(f"--preprocess {value!r}: expected KEY=VALUE, e.g. size=224,224 or mean=0.485,0.456,0.406")
        options[key.strip()] = text.strip()
    return options


def load_preprocess_file(path: Path) -> dict[str, Any]:
    """The mapping of a `--preprocess-file FILE.yaml`."""

    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise UsageError(f"--preprocess-file {path}: no such file") from None
    except yaml.YAMLError as exc:
        raise UsageError(f"--preprocess-file {path}: invalid YAML ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(data, dict):
        raise UsageError(f"--preprocess-file {path}: expected a mapping of preprocessing keys")
    return data


def _numbers(value: Any, key: str, where: str, kind: type, count: int | None) -> tuple:
    parts = value if isinstance(value, list | tuple) else [p for p in str(value).replace("x", ",").split(",") if p]

    def number(part: Any) -> Any:  # a fraction such as scale=1/255 is exact, as --help writes it
        return float(Fraction(str(part).strip())) if kind is float and "/" in str(part) else kind(part)

    try:
        numbers = tuple(number(p) for p in parts)
    except (TypeError, ValueError, ZeroDivisionError):
        raise UsageError(f"{where}: {key} {value!r}: expected {kind.__name__} values separated by ','") from None
    if not numbers or (count is not None and len(numbers) != count):
        raise UsageError(f"{where}: {key} {value!r}: expected {count or 'some'} value(s)")
    return numbers


def _ints(value: Any, key: str, where: str, count: int | None = None) -> tuple[int, ...]:
    numbers = _numbers(value, key, where, int, count)
    if any(n <= 0 for n in numbers):
        raise UsageError(f"{where}: {key} {value!r}: must be positive")
    return numbers


def _floats(value: Any, key: str, where: str, count: int | None = None) -> tuple[float, ...]:
    return _numbers(value, key, where, float, count)


def preprocess_image(path: Path, spec: Preprocess) -> np.ndarray:
    """The image at `path` as a float32 tensor of shape (1, C, H, W) or (1, H, W, C)."""
    try:
        from PIL import Image  # lazy: only image-directory inputs need Pillow
    except ImportError:
        raise UsageError(f"--inputs {path}: reading images needs Pillow (pip install pillow)") from None
    try:
        with Image.open(path) as image:
            rgb = image.convert("RGB")
            if spec.size is not None:
                height, width = spec.size
                rgb = rgb.resize((width, height), Image.Resampling.BILINEAR)
            pixels = np.asarray(rgb, dtype=np.float32)
    except OSError as exc:
        raise UsageError(f"--inputs {path}: not a readable image ({exc})") from None
    if spec.channel_order == "BGR":
        pixels = pixels[..., ::-1]
    channels = pixels.shape[-1]
    mean, std = np.asarray(spec.mean, np.float32), np.asarray(spec.std, np.float32)
    for name, values in (("mean", mean), ("std", std)):
        if values.size not in (1, channels):
            raise UsageError(f"--preprocess {name}: {values.size} values for an image of {channels} channels")
    tensor = (pixels * np.float32(spec.scale) - mean) / std
    if spec.layout == "NCHW":
        tensor = tensor.transpose(2, 0, 1)
    return np.ascontiguousarray(tensor[None].astype(np.float32))


def load_inputs(
    path: Path, info: ModelInfo, preprocess: Preprocess | None = None, notes: list[str] | None = None
) -> dict[str, np.ndarray]:
    """`--inputs PATH`: a `.npz` file, or a directory of `.npy`/`.npz` samples or images, as one
    pool (samples stacked along dim 0), checked against the model like a `.npz` file. A dtype
    converted to the model's is said in `notes` (one line per input, not per file). Default
    `notes`: None (lines dropped)."""
    if not path.is_dir():
        return load_input_pool(path, info, notes)
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in SAMPLE_SUFFIXES + IMAGE_SUFFIXES)
    if not files:
        raise UsageError(
            f"--inputs {path}: the directory holds no sample (.npy, .npz) or image ({', '.join(IMAGE_SUFFIXES)}) file"
        )
    kinds = {"image" if p.suffix.lower() in IMAGE_SUFFIXES else "array" for p in files}
    if len(kinds) > 1:
        raise UsageError(f"--inputs {path}: the directory mixes images and .npy/.npz samples; keep one kind")
    float_inputs = [spec for spec in info.inputs if np.issubdtype(spec.dtype, np.floating)]
    if kinds == {"image"}:
        if len(info.inputs) != 1 or len(info.inputs[0].shape) != 4 or not float_inputs:
            raise UsageError(f"--inputs {path}: images feed a model with one 4-D float input; give .npy/.npz samples")
        if preprocess is None:  # nothing is assumed about how the model was trained to see images
            shape = info.inputs[0].shape
            size = ",".join(str(d) if isinstance(d, int) else axis for d, axis in zip(shape[2:4], "HW", strict=False))
            raise UsageError(
                f"--inputs {path}: images need --preprocess saying how this model expects them (nothing is assumed), "
                f"e.g. --preprocess size={size} layout=NCHW scale=1/255 mean=0,0,0 std=1,1,1 channel_order=RGB"
            )
        preprocess = _with_model_size(preprocess, info)
        samples = [{info.inputs[0].name: preprocess_image(p, preprocess)} for p in files]
    else:
        per_file: list[str] = []
        samples = [_array_sample(p, info, per_file) for p in files]
        if notes is not None:  # "--inputs DIR/a.npy: 'x' is float64, ..." once for the directory
            said = []
            for file in files:
                prefix = f"--inputs {file}:"
                said += [f"--inputs {path}:{line[len(prefix) :]}" for line in per_file if line.startswith(prefix)]
            notes += list(dict.fromkeys(said))
    names = [spec.name for spec in info.inputs]
    stacked = {name: np.concatenate([sample[name] for sample in samples]) for name in names}
    # The same checks (names, ranks, fixed dims, dtypes) as for a .npz file, on the whole pool.
    return _checked(stacked, info, path, notes)


def _with_model_size(preprocess: Preprocess, info: ModelInfo) -> Preprocess:
    if preprocess.size is not None:
        return preprocess
    shape = info.inputs[0].shape
    spatial = shape[2:4] if preprocess.layout == "NCHW" else shape[1:3]
    if not all(isinstance(d, int) for d in spatial):
        raise UsageError(
            f"--preprocess size: the model's input {info.inputs[0].name!r} has dynamic spatial dims {list(shape)}; "
            "give size=H,W"
        )
    return Preprocess(**{**preprocess.__dict__, "size": (int(spatial[0]), int(spatial[1]))})


def _array_sample(path: Path, info: ModelInfo, notes: list[str] | None = None) -> dict[str, np.ndarray]:
    try:
        if path.suffix.lower() == ".npy":
            if len(info.inputs) != 1:
                raise UsageError(
                    f"--inputs {path}: a .npy sample feeds a one-input model; this one has inputs "
                    f"{', '.join(s.name for s in info.inputs)}: use .npz files keyed by input name"
                )
            arrays = {info.inputs[0].name: np.load(path, allow_pickle=False)}
        else:
            with np.load(path, allow_pickle=False) as data:
                arrays = {name: data[name] for name in data.files}
    except UsageError:
        raise
    except Exception as exc:  # noqa: BLE001 - any error of the library here is reported as this one line
        raise UsageError(f"--inputs {path}: not a readable {path.suffix} file ({str(exc).strip()[:200]})") from None
    for spec in info.inputs:
        array = arrays.get(spec.name)
        if array is not None and array.ndim == len(spec.shape) - 1:
            arrays[spec.name] = array[None]  # one sample without its batch dimension
    return _checked(arrays, info, path, notes)


def _checked(
    arrays: dict[str, np.ndarray], info: ModelInfo, path: Path, notes: list[str] | None = None
) -> dict[str, np.ndarray]:

    # load_input_pool is the one place that knows the checks; it reads a file.
    with tempfile.TemporaryDirectory(prefix="autotune-inputs-") as directory:
        staged = Path(directory) / "inputs.npz"
        np.savez(staged, **arrays)  # type: ignore[arg-type]  # numpy's stub checks **arrays against allow_pickle
        said: list[str] = []
        try:
            pool = load_input_pool(staged, _relaxed_batch(info), said)
        except UsageError as exc:
            raise UsageError(str(exc).replace(str(staged), str(path))) from None
        if notes is not None:
            notes += [line.replace(str(staged), str(path)) for line in said]
        return pool


def _relaxed_batch(info: ModelInfo) -> ModelInfo:
    """`info` with dim 0 of every input symbolic, so a directory may stack more samples than a
    static batch holds (`split_samples` cuts them back to the model's batch)."""

    inputs = tuple(replace(s, shape=("samples", *s.shape[1:])) if s.shape else s for s in info.inputs)
    return replace(info, inputs=inputs)


def sample_count(pool: Mapping[str, np.ndarray]) -> int:
    first = next(iter(pool.values()))
    return int(first.shape[0]) if first.ndim else 1


def model_batch(info: ModelInfo) -> int | None:
    """The model's fixed batch size (dim 0 of its inputs), or None when the batch is dynamic."""
    if info.dynamic_batch:
        return None
    first = info.inputs[0].shape
    return int(first[0]) if first and isinstance(first[0], int) else 1


@dataclass(frozen=True)
class SplitSamples:
    """The calibration feeds (one per batch) and the verification pool, with their sizes."""

    calibration_feeds: list[dict[str, np.ndarray]]
    verification_pool: dict[str, np.ndarray]
    calibration_samples: int
    verification_samples: int
    note: str = ""

    def sizes(self) -> dict[str, int]:
        return {"calibration_samples": self.calibration_samples, "verification_samples": self.verification_samples}


def split_samples(pool: Mapping[str, np.ndarray], info: ModelInfo) -> SplitSamples:
    """Split user samples: every `VERIFY_EVERY`-th sample (from the second on) is held out for
    verification, the rest calibrate. A static-batch model verifies on exactly one batch (its
    dim 0, the second batch); every other batch calibrates. With too few samples to split, the
    calibration set is empty and `note` says why (the study then offers no int8/fp8)."""
    count = sample_count(pool)
    batch = model_batch(info)
    if batch is not None and count % batch:
        raise UsageError(f"--inputs: {count} samples do not make whole batches of the model's fixed batch {batch}")
    if count < 2 or (batch is not None and count < 2 * batch):
        unit = f"batches of {batch}" if batch is not None and batch > 1 else "samples"
        verification = {name: np.ascontiguousarray(array) for name, array in pool.items()}
        if batch is not None:
            verification = {name: array[:batch] for name, array in verification.items()}
        note = (
            f"--inputs holds {count // (batch or 1)} {unit}: int8/fp8 need at least 2 (one to calibrate on, one held "
            "out for verification)"
        )
        return SplitSamples([], verification, 0, sample_count(verification), note)
    if batch is None:
        held = np.arange(count) % VERIFY_EVERY == 1
        verification = {name: np.ascontiguousarray(array[held]) for name, array in pool.items()}
        calibration = [{name: array[i : i + 1] for name, array in pool.items()} for i in np.flatnonzero(~held)]
        return SplitSamples(calibration, verification, len(calibration), int(held.sum()))
    batches = [{name: array[i : i + batch] for name, array in pool.items()} for i in range(0, count, batch)]
    verification = batches[1]  # the model verifies on one batch; every other batch calibrates
    calibration = [b for i, b in enumerate(batches) if i != 1]
    return SplitSamples(calibration, dict(verification), len(calibration) * batch, batch)


def synthetic_split(
    info: ModelInfo, overrides: Mapping[str, Sequence[int]], seed: int, samples: int = POOL_BATCH
) -> SplitSamples:
    """Synthetic data: the verification pool of `seed` (as before), calibration on other
    samples of the same distribution (seed + 1); `samples` per pool for a dynamic-batch model."""
    verification = synthetic_pool(info, overrides, seed, samples)
    calibration_pool = synthetic_pool(info, overrides, seed + 1, samples)
    if info.dynamic_batch:
        feeds = [
            {name: array[i : i + 1] for name, array in calibration_pool.items()}
            for i in range(sample_count(calibration_pool))
        ]
    else:
        feeds = [calibration_pool]
    return SplitSamples(feeds, verification, sample_count(calibration_pool), sample_count(verification))


__all__ = [
    "Preprocess",
    "SplitSamples",
    "load_inputs",
    "parse_preprocess",
    "preprocess_image",
    "split_samples",
    "synthetic_split",
]
