"""The TensorRT build that runs in its own process, one per engine.

Run as ``python _tensorrt_build.py MODE REQUEST.json`` where MODE is ``build``, ``describe``
or ``capabilities``. It imports only Polygraphy, TensorRT and the knob declarations beside it
(``_tensorrt_knobs.py``, standard library only), not autotune, so a builder
crash or hang takes down this process and nothing else, and Polygraphy binds to the right
TensorRT flavor: Polygraphy chooses ``tensorrt`` or ``tensorrt_rtx`` once, at import, from
``POLYGRAPHY_USE_TENSORRT_RTX``, so the flavor must be set before the first import.

Everything TensorRT prints goes to stdout, which the parent sends to the trial's build log;
the parent reads the layer table and the first real error from it. The result is written as
JSON to the request's ``result_path``.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__:
    from autotune.targets import _tensorrt_knobs as knobs
else:  # the build process: the sibling file, so that autotune is not imported here
    knobs = importlib.import_module("_tensorrt_knobs")

# Kept here for the code and tests that read them from the build module.
has_capability = knobs.has_capability
set_build_route = knobs.set_build_route
tactic_bitmask = knobs.tactic_bitmask
tactic_names = knobs.tactic_names
KNOB_API = knobs.KNOB_API

MODULE_OF_FLAVOR = {"tensorrt": "tensorrt", "tensorrt-rtx": "tensorrt_rtx"}


def _polygraphy() -> Any:
    """Polygraphy with its TensorRT backend, imported on first use: Polygraphy binds to tensorrt
    or tensorrt_rtx once, at its first import, from POLYGRAPHY_USE_TENSORRT_RTX, which `main`
    sets (`_select_flavor`) from the request before anything here runs. That is why Polygraphy is
    imported inside this function (with `CreateConfigRTX`'s, the build process's only imports
    inside a function), and not at the top of the module."""
    import polygraphy.backend.trt  # loads polygraphy.util, .logger and .mod.trt_importer too

    return polygraphy


def _select_flavor(flavor: str) -> None:
    if flavor == "tensorrt-rtx":
        os.environ["POLYGRAPHY_USE_TENSORRT_RTX"] = "1"
    else:
        os.environ.pop("POLYGRAPHY_USE_TENSORRT_RTX", None)


def capabilities_of(trt: Any, builder_config: Any = None) -> dict[str, Any]:
    """What an installed TensorRT module offers, found by attribute and enum membership.

    Args:
        trt (module): `tensorrt` or `tensorrt_rtx` (or any object with the same attributes).
        builder_config (trt.IBuilderConfig | None): an instance, to read `all_build_routes`
            (a per-instance property). Default: None (no build routes).

    Returns:
        dict: version, tactic_sources, builder_flags, tiling_levels, datatypes, memory_pools,
        config_attributes (of IBuilderConfig) and build_routes, all lists of names.
    """

    def members(enum_name: str) -> list[str]:
        enum = getattr(trt, enum_name, None)
        return list(getattr(enum, "__members__", {}) or {})

    config_cls = getattr(trt, "IBuilderConfig", None)
    attributes = [name for name in dir(config_cls) if not name.startswith("_")] if config_cls else []
    routes: list[str] = []
    if builder_config is not None:
        try:
            routes = one_off_build_routes(parse_build_routes(builder_config.all_build_routes))
        except Exception:  # noqa: BLE001 - attribute absent or not readable on this version
            routes = []
    return {
        "version": str(getattr(trt, "__version__", "")),
        "tactic_sources": members("TacticSource"),
        "builder_flags": members("BuilderFlag"),
        "tiling_levels": members("TilingOptimizationLevel"),
        "datatypes": members("DataType"),
        "memory_pools": members("MemoryPoolType"),
        "config_attributes": attributes,
        "build_routes": routes,
    }


def parse_build_routes(all_build_routes: Any) -> dict[str, dict[str, Any]]:
    """The build-route knobs of `IBuilderConfig.all_build_routes` (TensorRT 11.x).

    The attribute is a JSON document (NvInfer.h, the 11.4 docstring; trtexec's
    `BuildRouteKnobDatabase` reads it): ``{"tuner_version": ..., "tuner_options": [{"option":
    "-kgen:tiling", "allowed_values": "-kgen:tiling=[0|1|2]", "default_value": "1", "help":
    ...}]}``. Empty on RTX/Windows, where the tuner is compiled out.

    Returns:
        dict: knob name ("-kgen:tiling") -> {"values": [allowed values] (empty when the knob
        takes any value), "default": its default value}, in the document's order.
    """
    if not all_build_routes or not str(all_build_routes).strip():
        return {}
    try:
        root = json.loads(str(all_build_routes))
    except json.JSONDecodeError:
        return {}
    knobs: dict[str, dict[str, Any]] = {}
    for item in root.get("tuner_options", []) if isinstance(root, dict) else []:
        if not isinstance(item, dict) or not item.get("option"):
            continue
        option = str(item["option"])
        allowed = str(item.get("allowed_values", "") or "")
        # "-knob=[a|b|c]" is a closed set; anything else (e.g. "-knob=<int>") is unbounded.
        _, _, rhs = allowed.partition("=")
        values = (
            [v.strip() for v in rhs[1:-1].split("|") if v.strip()] if rhs.startswith("[") and rhs.endswith("]") else []
        )
        knobs[option] = {"values": values, "default": str(item.get("default_value", ""))}
    return knobs


def one_off_build_routes(knobs: dict[str, dict[str, Any]]) -> list[str]:
    """trtexec's "fast" tuning set: every bounded knob at each of its non-default values.

    Each route is one ``-knob=value`` token (a `build_route` string); the other knobs keep
    their defaults. The all-defaults route is the "default" choice, not listed here.
    """
    routes = []
    for option, knob in knobs.items():
        routes += [f"{option}={value}" for value in knob["values"] if value != knob["default"]]
    return routes


def has_api(trt: Any, name: str) -> bool:
    """Whether `trt` has "Class.attribute", "Enum.MEMBER" or a top-level name."""
    owner, _, attr = name.partition(".")
    obj = getattr(trt, owner, None)
    if obj is None or not attr:
        return obj is not None
    return attr in (getattr(obj, "__members__", None) or {}) or hasattr(obj, attr)


def read_back_config(trt: Any, config: Any) -> dict[str, Any]:
    """The settings an IBuilderConfig really holds, as plain JSON values.

    This is what tests and deploy commands rely on: not what was asked for, but what the
    config object reports after Polygraphy and autotune configured it. Each knob reads its own
    back (`BuilderKnob.read_back`); the flags, profiling verbosity, compute capabilities and
    profile count are read for every build.
    """
    out: dict[str, Any] = {}
    flags = [name for name, flag in trt.BuilderFlag.__members__.items() if config.get_flag(flag)]
    out["flags"] = flags
    for knob in knobs.KNOBS:
        out.update(knob.read_back(trt, config))
    if hasattr(config, "profiling_verbosity"):
        out["profiling_verbosity"] = config.profiling_verbosity.name
    if hasattr(config, "num_compute_capabilities"):
        out["compute_capabilities"] = [
            config.get_compute_capability(i).name for i in range(config.num_compute_capabilities)
        ]
    if hasattr(config, "num_optimization_profiles"):
        out["num_optimization_profiles"] = int(config.num_optimization_profiles)
    return out


def _atomic_write(path: Path, data: bytes) -> None:
    # A build killed by its time limit must never leave a half-written cache behind, so the
    # new cache goes to a temporary file that replaces the old one in one rename.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_timing_cache(config: Any, path: Path) -> None:
    """Loads the shared timing cache into `config` (empty when absent or unreadable)."""
    pg = _polygraphy()
    data = b""
    if path.exists():
        with pg.util.LockFile(str(path)):  # the same `<path>.lock` protocol as Polygraphy's CLI
            data = path.read_bytes()
    cache = None
    if data:
        try:
            cache = config.create_timing_cache(data)
        except Exception as exc:  # noqa: BLE001
            pg.logger.G_LOGGER.warning(f"autotune: timing cache {path} is unreadable ({exc}); starting empty")
    if cache is None:
        cache = config.create_timing_cache(b"")
    config.set_timing_cache(cache, ignore_mismatch=True)


def merge_timing_cache(config: Any, path: Path) -> int:
    """Combines this build's timing cache with the file's current content; returns its size.

    Several processes build at once: each takes the `<path>.lock` lock, re-reads the file
    (another build may have merged into it since this one started), combines, and replaces
    the file atomically.
    """
    pg = _polygraphy()
    cache = config.get_timing_cache()
    if cache is None:
        return 0
    with pg.util.LockFile(str(path)):
        if path.exists():
            data = path.read_bytes()
            if data:
                try:
                    previous = config.create_timing_cache(data)
                    if not cache.combine(previous, ignore_mismatch=True):
                        pg.logger.G_LOGGER.warning("autotune: could not combine the shared timing cache")
                except Exception as exc:  # noqa: BLE001
                    pg.logger.G_LOGGER.warning(f"autotune: ignoring unreadable timing cache {path} ({exc})")
        blob = bytes(memoryview(cache.serialize()))
        _atomic_write(path, blob)
    return len(blob)


def _network_loader(request: dict[str, Any]):
    kwargs: dict[str, Any] = {}
    for knob in knobs.KNOBS:
        kwargs.update(knob.network_kwargs(request["settings"]))
    return _polygraphy().backend.trt.NetworkFromOnnxPath(request["model_path"], **kwargs)


def _config_loader(request: dict[str, Any], record: dict[str, Any]):
    """Composes Polygraphy's CreateConfig(RTX) with each knob's arguments and settings."""
    backend = _polygraphy().backend.trt
    trt = _polygraphy().mod.trt_importer.lazy_import_trt()
    settings = request["settings"]
    knobs.check_settings(settings)
    module_name = MODULE_OF_FLAVOR[request["flavor"]]

    profiles = None
    if settings.get("profile"):
        profile = backend.Profile()
        for name, (lo, opt, hi) in settings["profile"].items():
            profile.add(name, min=tuple(lo), opt=tuple(opt), max=tuple(hi))
        profiles = [profile]

    kwargs: dict[str, Any] = {
        "profiles": profiles,
        # DETAILED: the layer table needs it (the parent's BUILD_PROFILING_VERBOSITY)
        "profiling_verbosity": getattr(trt.ProfilingVerbosity, settings.get("profiling_verbosity", "DETAILED")),
    }
    for knob in knobs.KNOBS:
        kwargs.update(knob.loader_kwargs(trt, settings, module_name=module_name))

    if module_name == "tensorrt_rtx":
        from polygraphy.backend.tensorrt_rtx import CreateConfigRTX  # RTX flavor only (see `_polygraphy`)

        base = CreateConfigRTX(use_gpu=bool(settings.get("use_gpu", False)), **kwargs)
    else:
        base = backend.CreateConfig(**kwargs)

    def postprocess(builder: Any, network: Any, config: Any) -> None:
        for knob in knobs.KNOBS:
            knob.apply(trt, config, settings, module_name=module_name)
        if request.get("timing_cache_path"):
            load_timing_cache(config, Path(request["timing_cache_path"]))
        record["builder_config"] = read_back_config(trt, config)

    return backend.PostprocessConfig(base, postprocess)


def _inspect_layers(engine_bytes: Any) -> list[dict[str, Any]] | None:
    """The engine inspector's layer list (JSON); needs a GPU to deserialize, else None."""
    pg = _polygraphy()
    trt = pg.mod.trt_importer.lazy_import_trt()
    try:
        runtime = trt.Runtime(pg.backend.trt.util.get_trt_logger())
        engine = runtime.deserialize_cuda_engine(engine_bytes)
        if engine is None:
            return None
        inspector = engine.create_engine_inspector()
        info = json.loads(inspector.get_engine_information(trt.LayerInformationFormat.JSON))
        layers = info.get("Layers", [])
        return [layer if isinstance(layer, dict) else {"Name": str(layer)} for layer in layers]
    except Exception:  # noqa: BLE001
        return None


def build(request: dict[str, Any]) -> dict[str, Any]:
    """Builds one engine as the request says; returns facts for the result file."""
    record: dict[str, Any] = {}
    create_config = _config_loader(request, record)
    configs: list[Any] = []

    def keep_config(builder: Any, network: Any) -> Any:
        # EngineBytesFromNetwork does not hand its config back; the timing cache lives in it.
        config = create_config(builder, network)
        configs.append(config)
        return config

    start = time.perf_counter()
    engine_bytes = _polygraphy().backend.trt.EngineBytesFromNetwork(_network_loader(request), keep_config)()
    build_time_s = time.perf_counter() - start
    data = bytes(memoryview(engine_bytes))
    Path(request["engine_path"]).write_bytes(data)
    if request.get("timing_cache_path") and configs:
        # Not EngineBytesFromNetwork(save_timing_cache=...): it rewrites the file in place,
        # and a build killed mid-write would leave a truncated cache for every later build.
        record["timing_cache_bytes"] = merge_timing_cache(configs[0], Path(request["timing_cache_path"]))
    record.update(
        build_time_s=build_time_s,
        engine_size_bytes=len(data),
        engine_sha256=hashlib.sha256(data).hexdigest(),
    )
    if request.get("inspect"):
        layers = _inspect_layers(data)
        if layers is not None:
            record["inspector_layers"] = layers
    return record


def describe(request: dict[str, Any]) -> dict[str, Any]:
    """Creates the network and builder config for each settings entry, without building."""
    _polygraphy()  # importing Polygraphy's TensorRT backend binds TensorRT's logger to Polygraphy's

    results = []
    for settings in request["settings_list"]:
        sub = dict(request, settings=settings, timing_cache_path=None)
        record: dict[str, Any] = {}
        builder, network, parser = _network_loader(sub)()
        with builder, network, parser:
            config = _config_loader(sub, record)(builder, network)
            with config:
                pass
        results.append(record["builder_config"])
    return {"configs": results}


def capabilities(request: dict[str, Any]) -> dict[str, Any]:
    """Capability probe of the installed flavor (see `capabilities_of`)."""

    trt = importlib.import_module(MODULE_OF_FLAVOR[request["flavor"]])
    config = None
    try:
        builder = trt.Builder(trt.Logger(trt.Logger.ERROR))
        config = builder.create_builder_config()
    except Exception:  # noqa: BLE001 - full TensorRT needs a GPU to create a builder
        config = None
    return capabilities_of(trt, config)


def main(argv: list[str]) -> int:
    mode, request_path = argv[1], Path(argv[2])
    request = json.loads(request_path.read_text())
    _select_flavor(request["flavor"])
    logger = _polygraphy().logger.G_LOGGER

    # TensorRT's VERBOSE messages reach Polygraphy's EXTRA_VERBOSE level; the layer table and
    # the fused ONNX nodes are only printed there.
    logger.module_severity = logger.EXTRA_VERBOSE if mode == "build" else logger.WARNING
    if mode == "build":
        result = build(request)
    elif mode == "describe":
        result = describe(request)
    elif mode == "capabilities":
        result = capabilities(request)
    else:
        print(f"unknown mode {mode!r}", file=sys.stderr)
        return 2
    Path(request["result_path"]).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
