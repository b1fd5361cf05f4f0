"""TensorRT builder knobs, each declared once: one object per knob (Polygraphy's `TrtConfigArgs` shape).

A knob object holds everything autotune knows about one builder knob:

| what | method | used by |
| --- | --- | --- |
| its space name (a family ends in "."; `tactic.`) | `name` | the target's `knob_names` / `knob_prefixes`, space validation |
| what it needs from the module | `needs` ("Class.attribute", "Enum.MEMBER", "Enum") | `offered`, `KNOB_API`, docs/tensorrt-versions.md |
| which choices this TensorRT can take | `offered(knob, choices, caps, target)` | `TensorRTTarget.supported_choices` |
| configuration -> builder settings (JSON) | `settings(config, flavor=)`, declared `settings_keys` | `tensorrt.builder_settings` |
| settings -> Polygraphy's CreateConfig / NetworkFromOnnxPath | `loader_kwargs`, `network_kwargs` | `_tensorrt_build._config_loader` |
| settings -> the IBuilderConfig after CreateConfig | `apply(trt, config, settings, module_name=)` | the same, in its postprocess step |
| what the IBuilderConfig holds afterwards | `read_back(trt, config)` | `_tensorrt_build.read_back_config` |
| its trtexec flags | `trtexec(settings, weak_typing=)` | `_tensorrt_commands.trtexec_args` |
| its `polygraphy convert` flags | `polygraphy(settings, read_back, module_name=)` | `_tensorrt_commands.polygraphy_args` |
| its lines in the config postprocess script (where Polygraphy has no flag) | `script(settings, read_back, module_name=)` | `_tensorrt_commands.postprocess_script` |
| its row in the knob table | `summary` | `knob_table`, the tensorrt module's docstring |

Capability detection, never version strings: `offered` keeps a knob where the probed module
(`_tensorrt_build.capabilities_of`) has every name in `needs`.

To add a knob: write one class here, decorated with `@register` (its place in `KNOBS` is the
order of its flags in the commands), and give it a line in `search_spaces/tensorrt.yaml` (with
a default that is TensorRT's own, so trial 0 stays the all-defaults build). Nothing else
changes: the target's knob names, the build process, the read-back, both exported commands, the
postprocess script, `KNOB_API` and the generated docs all iterate over `KNOBS`. A test that
builds with the knob through TensorRT-RTX (or shows `offered` dropping it there) goes in
tests/test_tensorrt_knobs.py.

This module imports only the standard library: the build process (`_tensorrt_build.py`, which
must not import autotune) loads it as a sibling file.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, TypeVar

TILING_LEVELS = ("NONE", "FAST", "MODERATE", "FULL")
ANY_BUILD_ROUTE = "*"  # in a space file: "every build route this TensorRT offers"
DEFAULT_BUILD_ROUTE = "default"
# TensorRT 10.x weak-typing builder flags, offered as extra precision choices where they exist.
FLAG_PRECISIONS = {"fp16_flag": "FP16", "bf16_flag": "BF16"}
# The DataType a graph precision needs in the installed module.
PRECISION_DATATYPE = {"fp16": "HALF", "bf16": "BF16", "int8": "INT8", "fp8": "FP8"}

# Builder settings no knob owns: the optimization profile (batch_size), the profiling verbosity
# (fixed: the layer table needs DETAILED) and TensorRT-RTX's compile-for-this-GPU switch.
FIXED_SETTINGS = ("profile", "profiling_verbosity", "use_gpu")

# capabilities_of's list that holds each enum's member names.
ENUM_CAPABILITIES = {
    "BuilderFlag": "builder_flags",
    "TacticSource": "tactic_sources",
    "TilingOptimizationLevel": "tiling_levels",
    "DataType": "datatypes",
    "MemoryPoolType": "memory_pools",
}


def has_capability(caps: Mapping[str, Any], need: str) -> bool:
    """Whether probed capabilities (`_tensorrt_build.capabilities_of`) include `need`:
    "IBuilderConfig.attribute", "Enum.MEMBER" or an enum's name alone (it has members)."""
    owner, _, attr = need.partition(".")
    if owner == "IBuilderConfig":
        return attr in caps.get("config_attributes", [])
    key = ENUM_CAPABILITIES.get(owner)
    if key is None:
        return False
    members = caps.get(key, [])
    return attr in members if attr else bool(members)


def tactic_bitmask(trt: Any, current: int, toggles: Mapping[str, bool]) -> int:
    """`current` with each TacticSource in `toggles` switched on or off; the bit of a source is
    its enum value, which differs between versions (CUDNN is 2 on 10.x; 11.x has only
    EDGE_MASK_CONVOLUTIONS = 0 and JIT_CONVOLUTIONS = 1)."""
    for name, enabled in toggles.items():
        bit = 1 << int(getattr(trt.TacticSource, name))
        current = current | bit if enabled else current & ~bit
    return current


def tactic_names(trt: Any, bitmask: int) -> list[str]:
    """The TacticSource names set in `bitmask`."""
    return [name for name, source in trt.TacticSource.__members__.items() if bitmask & (1 << int(source))]


def set_build_route(config: Any, route: str) -> None:
    """Sets `config.build_route` and checks that TensorRT kept it.

    The setter reports a knob it does not know only in the log and keeps the old route, which
    would time the default engine under this trial's name.

    Raises:
        RuntimeError: the config does not hold `route` afterwards.
    """
    config.build_route = route
    held = str(getattr(config, "build_route", ""))
    if held != route:
        raise RuntimeError(f"TensorRT did not accept build_route {route!r} (the config holds {held!r})")


def _non_negative(value: Any) -> int | None:
    # -1 in a space file means "TensorRT's own default", which is not setting it (11.x rejects
    # negative values for some of these).
    return None if value is None or int(value) < 0 else int(value)


class BuilderKnob:
    """One TensorRT builder knob: every way autotune sets, reads and exports it.

    Subclasses set the class attributes and override the hooks they need; every hook's default
    does nothing (returns {} or []). See the module docstring for who calls what.
    """

    name: ClassVar[str]  # the space knob; a family of knobs ends in "." ("tactic.")
    needs: ClassVar[tuple[str, ...]] = ()  # what the module must have, see `has_capability`
    settings_keys: ClassVar[tuple[str, ...]] = ()  # the builder settings it owns; default (name,)
    summary: ClassVar[tuple[str, str, str]] = ("", "", "")  # IBuilderConfig | trtexec | polygraphy

    def keys(self) -> tuple[str, ...]:
        return self.settings_keys or (self.name,)

    def api_rows(self) -> dict[str, tuple[str, ...]]:
        """Rows of `KNOB_API`: label -> the names it needs."""
        return {self.name + ("<SOURCE>" if self.name.endswith(".") else ""): self.needs}

    def matches(self, knob: str) -> bool:
        return knob.startswith(self.name) if self.name.endswith(".") else knob == self.name

    # -- in the autotune process -------------------------------------------------------

    def offered(self, knob: str, choices: Sequence[Any], caps: Mapping[str, Any], target: Any) -> list[Any]:
        """The choices this TensorRT can take; [] drops the knob. Default: all of them where
        the module has every name in `needs`."""
        return list(choices) if all(has_capability(caps, need) for need in self.needs) else []

    def settings(self, config: Mapping[str, Any], *, flavor: str) -> dict[str, Any]:
        """The builder settings for a configuration (JSON values; None: not set)."""
        return {self.name: config.get(self.name)}

    # -- in the build process ----------------------------------------------------------

    def loader_kwargs(self, trt: Any, settings: Mapping[str, Any], *, module_name: str) -> dict[str, Any]:
        """Arguments to Polygraphy's CreateConfig (CreateConfigRTX under TensorRT-RTX)."""
        return {}

    def network_kwargs(self, settings: Mapping[str, Any]) -> dict[str, Any]:
        """Arguments to Polygraphy's NetworkFromOnnxPath."""
        return {}

    def apply(self, trt: Any, config: Any, settings: Mapping[str, Any], *, module_name: str) -> None:
        """Sets what CreateConfig has no argument for on the IBuilderConfig."""

    def read_back(self, trt: Any, config: Any) -> dict[str, Any]:
        """What the IBuilderConfig holds for this knob (JSON values), where the version has it."""
        return {}

    # -- in the exported commands ------------------------------------------------------

    def trtexec(self, settings: Mapping[str, Any], *, weak_typing: bool) -> list[str]:
        return []

    def polygraphy(self, settings: Mapping[str, Any], read_back: Mapping[str, Any], *, module_name: str) -> list[str]:
        return []

    def script(self, settings: Mapping[str, Any], read_back: Mapping[str, Any], *, module_name: str) -> list[str]:
        """Body lines (indented 4) of `postprocess_config(builder, network, config)`; a line
        that uses `trt.` gets the module imported as `trt` first."""
        return []


KNOBS: list[BuilderKnob] = []
K = TypeVar("K", bound=type[BuilderKnob])


def register(cls: K) -> K:
    """Adds a knob to `KNOBS` (class decorator); a second knob of one name is an error."""
    knob = cls()
    if any(other.name == knob.name for other in KNOBS):
        raise ValueError(f"TensorRT knob {knob.name!r} is declared twice")
    KNOBS.append(knob)
    return cls


# --------------------------------------------------------------------------- the knobs


@register
class Precision(BuilderKnob):
    """fp32 clears TF32; fp16_flag / bf16_flag (10.x) set the weak-typing flag; a graph precision
    (casts, Q/DQ) builds the network strongly typed so TensorRT obeys it."""

    name = "precision"
    needs = ("BuilderFlag.TF32",)
    settings_keys = ("tf32", "legacy_flags", "strongly_typed")
    summary = (
        "TF32 flag off (fp32) / on; FP16/BF16 flag (10.x *_flag); strongly typed network (graph precisions)",
        "--noTF32; --fp16, --bf16; --stronglyTyped (10.x; 11.x always)",
        "--tf32 (absent: off); --fp16, --bf16; --strongly-typed",
    )

    def api_rows(self) -> dict[str, tuple[str, ...]]:
        return {
            "precision (tf32/fp32)": ("BuilderFlag.TF32",),
            "precision fp16_flag (10.x)": ("BuilderFlag.FP16",),
            "precision bf16_flag (10.x)": ("BuilderFlag.BF16",),
            "precision graph-typed": ("NetworkDefinitionCreationFlag.STRONGLY_TYPED",),
        }

    def offered(self, knob: str, choices: Sequence[Any], caps: Mapping[str, Any], target: Any) -> list[Any]:
        """Graph precisions the target runs whose DataType exists, plus the 10.x flag precisions
        where BuilderFlag has them (int8_flag / fp8_flag never: see MISLEADING_FLAG_PRECISIONS)."""
        datatypes = set(caps.get("datatypes", []))
        flags = set(caps.get("builder_flags", []))
        kept = []
        for choice in choices:
            graph = choice in target.precisions and (
                choice in ("fp32", "tf32") or PRECISION_DATATYPE.get(choice) in datatypes
            )
            flag = choice in FLAG_PRECISIONS and FLAG_PRECISIONS[choice] in flags
            if graph or flag:
                kept.append(choice)
        return kept

    def settings(self, config: Mapping[str, Any], *, flavor: str) -> dict[str, Any]:
        precision = str(config.get("precision", "tf32"))
        legacy_flags = [FLAG_PRECISIONS[precision]] if precision in FLAG_PRECISIONS else []
        return {
            "tf32": precision != "fp32",
            "legacy_flags": legacy_flags,
            # Graph-expressed precision (casts, Q/DQ) must be obeyed: strongly typed. The 10.x
            # flags only work on a weakly typed network. RTX networks are always strongly typed.
            "strongly_typed": flavor == "tensorrt" and not legacy_flags and precision not in ("fp32", "tf32"),
        }

    def loader_kwargs(self, trt: Any, settings: Mapping[str, Any], *, module_name: str) -> dict[str, Any]:
        if module_name == "tensorrt_rtx":
            return {}  # CreateConfigRTX has no tf32 (it leaves TensorRT's default on) nor weak typing
        # Polygraphy's tf32 defaults to False and clears TensorRT's default: always pass it.
        legacy = {flag.lower(): True for flag in settings.get("legacy_flags", [])}
        return {"tf32": bool(settings.get("tf32", True)), **legacy}

    def network_kwargs(self, settings: Mapping[str, Any]) -> dict[str, Any]:
        return {"strongly_typed": True} if settings.get("strongly_typed") else {}

    def apply(self, trt: Any, config: Any, settings: Mapping[str, Any], *, module_name: str) -> None:
        if module_name == "tensorrt_rtx" and not settings.get("tf32", True):
            config.clear_flag(trt.BuilderFlag.TF32)  # CreateConfigRTX has no tf32 argument

    def trtexec(self, settings: Mapping[str, Any], *, weak_typing: bool) -> list[str]:
        args = [] if settings.get("tf32", True) else ["--noTF32"]
        args += [f"--{flag.lower()}" for flag in settings.get("legacy_flags", [])]
        if settings.get("strongly_typed") and weak_typing:
            args.append("--stronglyTyped")  # 11.x: every network is strongly typed, the flag a no-op
        return args

    def polygraphy(self, settings: Mapping[str, Any], read_back: Mapping[str, Any], *, module_name: str) -> list[str]:
        # CreateConfigRTX leaves TF32 on and has no --tf32; clearing it needs the script.
        args = ["--tf32"] if module_name == "tensorrt" and settings.get("tf32", True) else []
        args += [f"--{flag.lower()}" for flag in settings.get("legacy_flags", [])]
        if settings.get("strongly_typed"):
            args.append("--strongly-typed")
        return args

    def script(self, settings: Mapping[str, Any], read_back: Mapping[str, Any], *, module_name: str) -> list[str]:
        if module_name == "tensorrt_rtx" and not settings.get("tf32", True):
            return ["    config.clear_flag(trt.BuilderFlag.TF32)"]
        return []


@register
class BuilderOptimizationLevel(BuilderKnob):
    name = "builder_optimization_level"
    needs = ("IBuilderConfig.builder_optimization_level",)
    summary = ("builder_optimization_level", "--builderOptimizationLevel", "--builder-optimization-level")

    def loader_kwargs(self, trt: Any, settings: Mapping[str, Any], *, module_name: str) -> dict[str, Any]:
        level = settings.get(self.name)
        return {} if level is None else {self.name: int(level)}

    def read_back(self, trt: Any, config: Any) -> dict[str, Any]:
        return {self.name: int(config.builder_optimization_level)} if hasattr(config, self.name) else {}

    def trtexec(self, settings: Mapping[str, Any], *, weak_typing: bool) -> list[str]:
        level = settings.get(self.name)
        return [] if level is None else [f"--builderOptimizationLevel={level}"]

    def polygraphy(self, settings: Mapping[str, Any], read_back: Mapping[str, Any], *, module_name: str) -> list[str]:
        level = settings.get(self.name)
        return [] if level is None else ["--builder-optimization-level", str(level)]


@register
class MaxAuxStreams(BuilderKnob):
    """-1: not set (TensorRT's heuristic; 11.x rejects negative values)."""

    name = "max_aux_streams"
    needs = ("IBuilderConfig.max_aux_streams",)
    summary = ("max_aux_streams (-1: not set, TensorRT's heuristic)", "--maxAuxStreams", "--max-aux-streams")

    def settings(self, config: Mapping[str, Any], *, flavor: str) -> dict[str, Any]:
        return {self.name: _non_negative(config.get(self.name))}

    def loader_kwargs(self, trt: Any, settings: Mapping[str, Any], *, module_name: str) -> dict[str, Any]:
        streams = _non_negative(settings.get(self.name))
        return {} if streams is None else {self.name: streams}

    def read_back(self, trt: Any, config: Any) -> dict[str, Any]:
        return {self.name: int(config.max_aux_streams)} if hasattr(config, self.name) else {}

    def trtexec(self, settings: Mapping[str, Any], *, weak_typing: bool) -> list[str]:
        streams = settings.get(self.name)
        return [] if streams is None else [f"--maxAuxStreams={streams}"]

    def polygraphy(self, settings: Mapping[str, Any], read_back: Mapping[str, Any], *, module_name: str) -> list[str]:
        streams = settings.get(self.name)
        return [] if streams is None else ["--max-aux-streams", str(streams)]


@register
class TacticSources(BuilderKnob):
    """`tactic.<SOURCE>: bool` toggles one TacticSource bit (the version's own enum value)."""

    name = "tactic."
    needs = ("TacticSource", "IBuilderConfig.set_tactic_sources", "IBuilderConfig.get_tactic_sources")
    settings_keys = ("tactic_sources",)
    summary = (
        "set_tactic_sources bit (the version's enum value)",
        "--tacticSources=+S,-T",
        "--tactic-sources (read-back list) or script",
    )

    def offered(self, knob: str, choices: Sequence[Any], caps: Mapping[str, Any], target: Any) -> list[Any]:
        return list(choices) if knob.split(".", 1)[1] in caps.get("tactic_sources", []) else []

    def settings(self, config: Mapping[str, Any], *, flavor: str) -> dict[str, Any]:
        toggles = {key.split(".", 1)[1]: bool(value) for key, value in config.items() if key.startswith(self.name)}
        return {"tactic_sources": toggles}

    def apply(self, trt: Any, config: Any, settings: Mapping[str, Any], *, module_name: str) -> None:
        toggles = settings.get("tactic_sources") or {}
        if toggles:
            config.set_tactic_sources(tactic_bitmask(trt, int(config.get_tactic_sources()), toggles))

    def read_back(self, trt: Any, config: Any) -> dict[str, Any]:
        return {"tactic_sources": tactic_names(trt, int(config.get_tactic_sources()))}

    def trtexec(self, settings: Mapping[str, Any], *, weak_typing: bool) -> list[str]:
        toggles = settings.get("tactic_sources") or {}
        if not toggles:
            return []
        return ["--tacticSources=" + ",".join(("+" if on else "-") + name for name, on in toggles.items())]

    def polygraphy(self, settings: Mapping[str, Any], read_back: Mapping[str, Any], *, module_name: str) -> list[str]:
        # Polygraphy takes the full list of enabled sources: the read-back is exact. Without
        # one, the postprocess script toggles them (the defaults differ between versions).
        if settings.get("tactic_sources") and read_back.get("tactic_sources") is not None:
            return ["--tactic-sources", *read_back["tactic_sources"]]
        return []

    def script(self, settings: Mapping[str, Any], read_back: Mapping[str, Any], *, module_name: str) -> list[str]:
        toggles = settings.get("tactic_sources") or {}
        if not toggles or read_back.get("tactic_sources") is not None:
            return []
        lines = ["    sources = config.get_tactic_sources()"]
        for name, enabled in toggles.items():
            bit = f"(1 << int(trt.TacticSource.{name}))"
            lines.append(f"    sources = sources | {bit}" if enabled else f"    sources = sources & ~{bit}")
        return [*lines, "    config.set_tactic_sources(sources)"]


@register
class TilingOptimizationLevel(BuilderKnob):
    name = "tiling_optimization_level"
    needs = ("TilingOptimizationLevel", "IBuilderConfig.tiling_optimization_level")
    summary = ("tiling_optimization_level", "--tilingOptimizationLevel", "--tiling-optimization-level")

    def offered(self, knob: str, choices: Sequence[Any], caps: Mapping[str, Any], target: Any) -> list[Any]:
        if not has_capability(caps, "IBuilderConfig.tiling_optimization_level"):
            return []
        return [c for c in choices if c in caps.get("tiling_levels", [])]

    def loader_kwargs(self, trt: Any, settings: Mapping[str, Any], *, module_name: str) -> dict[str, Any]:
        level = settings.get(self.name)
        return {} if level is None else {self.name: getattr(trt.TilingOptimizationLevel, level)}

    def read_back(self, trt: Any, config: Any) -> dict[str, Any]:
        return {self.name: config.tiling_optimization_level.name} if hasattr(config, self.name) else {}

    def trtexec(self, settings: Mapping[str, Any], *, weak_typing: bool) -> list[str]:
        level = settings.get(self.name)
        return [] if level is None else [f"--tilingOptimizationLevel={TILING_LEVELS.index(level)}"]

    def polygraphy(self, settings: Mapping[str, Any], read_back: Mapping[str, Any], *, module_name: str) -> list[str]:
        level = settings.get(self.name)
        return [] if level is None else ["--tiling-optimization-level", level.lower()]


@register
class L2LimitForTiling(BuilderKnob):
    """Bytes; -1 keeps TensorRT's default (the device's L2 size). Offered where tiling is."""

    name = "l2_limit_for_tiling"
    needs = ("TilingOptimizationLevel", "IBuilderConfig.l2_limit_for_tiling")
    summary = ("l2_limit_for_tiling", "--l2LimitForTiling", "config postprocess script")

    def settings(self, config: Mapping[str, Any], *, flavor: str) -> dict[str, Any]:
        return {self.name: _non_negative(config.get(self.name))}

    def apply(self, trt: Any, config: Any, settings: Mapping[str, Any], *, module_name: str) -> None:
        if settings.get(self.name) is not None:
            config.l2_limit_for_tiling = int(settings[self.name])

    def read_back(self, trt: Any, config: Any) -> dict[str, Any]:
        return {self.name: int(config.l2_limit_for_tiling)} if hasattr(config, self.name) else {}

    def trtexec(self, settings: Mapping[str, Any], *, weak_typing: bool) -> list[str]:
        limit = settings.get(self.name)
        return [] if limit is None else [f"--l2LimitForTiling={limit}"]

    def script(self, settings: Mapping[str, Any], read_back: Mapping[str, Any], *, module_name: str) -> list[str]:
        limit = settings.get(self.name)
        return [] if limit is None else [f"    config.l2_limit_for_tiling = {int(limit)}"]


@register
class SparseWeights(BuilderKnob):
    name = "sparse_weights"
    needs = ("BuilderFlag.SPARSE_WEIGHTS",)
    summary = ("SPARSE_WEIGHTS flag", "--sparsity=enable", "--sparse-weights")

    def settings(self, config: Mapping[str, Any], *, flavor: str) -> dict[str, Any]:
        return {self.name: bool(config.get(self.name, False))}

    def loader_kwargs(self, trt: Any, settings: Mapping[str, Any], *, module_name: str) -> dict[str, Any]:
        return {self.name: bool(settings.get(self.name, False))}  # read back in "flags"

    def trtexec(self, settings: Mapping[str, Any], *, weak_typing: bool) -> list[str]:
        return ["--sparsity=enable"] if settings.get(self.name) else []

    def polygraphy(self, settings: Mapping[str, Any], read_back: Mapping[str, Any], *, module_name: str) -> list[str]:
        return ["--sparse-weights"] if settings.get(self.name) else []


@register
class BuildRoute(BuilderKnob):
    """11.x: one `-knob=value` of `all_build_routes`' JSON; "default" sets none, "*" in a space
    file expands to every route this TensorRT offers."""

    name = "build_route"
    needs = ("IBuilderConfig.build_route", "IBuilderConfig.all_build_routes")
    summary = ("build_route, read back", "--setBuildRoute (11.x)", "config postprocess script")

    def offered(self, knob: str, choices: Sequence[Any], caps: Mapping[str, Any], target: Any) -> list[Any]:
        routes = list(caps.get("build_routes", []))
        if not routes or not has_capability(caps, "IBuilderConfig.build_route"):
            return []
        kept = [c for c in choices if c == DEFAULT_BUILD_ROUTE or c in routes]
        if ANY_BUILD_ROUTE in choices:
            kept += [r for r in routes if r not in kept]
        return kept

    def settings(self, config: Mapping[str, Any], *, flavor: str) -> dict[str, Any]:
        route = config.get(self.name)
        return {self.name: None if route in (None, DEFAULT_BUILD_ROUTE) else str(route)}

    def apply(self, trt: Any, config: Any, settings: Mapping[str, Any], *, module_name: str) -> None:
        if settings.get(self.name):
            set_build_route(config, settings[self.name])

    def read_back(self, trt: Any, config: Any) -> dict[str, Any]:
        return {self.name: str(config.build_route)} if hasattr(config, self.name) else {}

    def trtexec(self, settings: Mapping[str, Any], *, weak_typing: bool) -> list[str]:
        return [f"--setBuildRoute={settings[self.name]}"] if settings.get(self.name) else []

    def script(self, settings: Mapping[str, Any], read_back: Mapping[str, Any], *, module_name: str) -> list[str]:
        return [f"    config.build_route = {settings[self.name]!r}"] if settings.get(self.name) else []


@register
class WorkspaceLimit(BuilderKnob):
    """The WORKSPACE memory pool's limit in MiB: a tactic that needs more scratch memory than
    this is not considered, so a small limit trades speed for memory. -1: not set (TensorRT's
    default, the device's memory). trtexec takes MiB without a suffix (every version since 8.4);
    Polygraphy takes bytes, or MiB with an "M" suffix."""

    name = "workspace_limit_mib"
    needs = ("MemoryPoolType.WORKSPACE", "IBuilderConfig.set_memory_pool_limit", "IBuilderConfig.get_memory_pool_limit")
    summary = (
        "set_memory_pool_limit(WORKSPACE, MiB << 20) (-1: not set)",
        "--memPoolSize=workspace:MiB",
        "--pool-limit workspace:<MiB>M",
    )

    def settings(self, config: Mapping[str, Any], *, flavor: str) -> dict[str, Any]:
        return {self.name: _non_negative(config.get(self.name))}

    def loader_kwargs(self, trt: Any, settings: Mapping[str, Any], *, module_name: str) -> dict[str, Any]:
        mib = settings.get(self.name)
        return {} if mib is None else {"memory_pool_limits": {trt.MemoryPoolType.WORKSPACE: int(mib) << 20}}

    def read_back(self, trt: Any, config: Any) -> dict[str, Any]:
        if not hasattr(config, "get_memory_pool_limit"):
            return {}
        return {self.name: int(config.get_memory_pool_limit(trt.MemoryPoolType.WORKSPACE)) >> 20}

    def trtexec(self, settings: Mapping[str, Any], *, weak_typing: bool) -> list[str]:
        mib = settings.get(self.name)
        return [] if mib is None else [f"--memPoolSize=workspace:{int(mib)}"]

    def polygraphy(self, settings: Mapping[str, Any], read_back: Mapping[str, Any], *, module_name: str) -> list[str]:
        mib = settings.get(self.name)
        return [] if mib is None else ["--pool-limit", f"workspace:{int(mib)}M"]


# --------------------------------------------------------------------------- the registry

# What each knob needs from the module, as "Class.attribute" or "Enum.MEMBER" (or an enum's
# name alone), plus what every build needs. The API tests check every name against the real
# bindings of each TensorRT version (docs/tensorrt-versions.md).
KNOB_API: dict[str, tuple[str, ...]] = {
    **{label: needs for knob in KNOBS for label, needs in knob.api_rows().items()},
    "batch_size (profile)": ("IBuilderConfig.add_optimization_profile",),
    "timing cache": ("IBuilderConfig.create_timing_cache", "IBuilderConfig.set_timing_cache", "ITimingCache.combine"),
}


def knob_for(name: str) -> BuilderKnob | None:
    """The knob object a space knob `name` belongs to, or None (not a builder knob)."""
    return next((knob for knob in KNOBS if knob.matches(name)), None)


def knob_names() -> frozenset[str]:
    """Space names of the single knobs (families excluded, see `knob_prefixes`)."""
    return frozenset(knob.name for knob in KNOBS if not knob.name.endswith("."))


def knob_prefixes() -> tuple[str, ...]:
    return tuple(knob.name for knob in KNOBS if knob.name.endswith("."))


def settings_keys() -> tuple[str, ...]:
    """Every key a builder settings dict may hold."""
    return (*(key for knob in KNOBS for key in knob.keys()), *FIXED_SETTINGS)


def unknown_name_message(kind: str, name: str, known: Sequence[str]) -> str:
    """ "unknown <kind> 'name' (did you mean 'x'?)" with difflib's nearest known name, if any."""
    close = difflib.get_close_matches(name, list(known), n=1)
    return f"unknown {kind} {name!r}" + (f" (did you mean {close[0]!r}?)" if close else "")


def check_settings(settings: Mapping[str, Any]) -> None:
    """Raises ValueError naming the first key no knob declares (a misspelled setting would
    otherwise be ignored, and the build run at TensorRT's default)."""
    known = settings_keys()
    for key in settings:
        if key not in known:
            raise ValueError(unknown_name_message("builder setting", key, known))


def knob_table() -> str:
    """The markdown table of every knob: space name, IBuilderConfig, trtexec, polygraphy convert."""
    rows = ["| knob | IBuilderConfig | trtexec | polygraphy convert |", "| --- | --- | --- | --- |"]
    for knob in KNOBS:
        label = next(iter(knob.api_rows())) if knob.name.endswith(".") else knob.name
        rows.append(f"| {label} | " + " | ".join(knob.summary) + " |")
    return "\n".join(rows)
