"""Targets: one module per deployment runtime, all with the interface in `base`.

Adding a target means adding a module (a subclass of `base.Target`) and one line to
`_REGISTRY`; nothing else changes. A target outside autotune is named "package.module:Class"
on the command line instead (a plugin): it runs like a registered one, but `--target auto`
never sees it (nothing lists it), and no command imports it from a study's database (see
`autotune.study`): `report` re-renders without it, `export` copies the `best/` its finalize
wrote, and `export --trial N`, which needs the target, is refused.

`--target auto` (`resolve_target`) tries the registered targets whose `auto_rank` is above 0,
highest first, and picks the first that `unavailable_reason` (for measuring, not build-only)
says can run here: TensorRT where it and a GPU are present, else ONNX Runtime. TensorRT-RTX
has rank 0: only picked when named.
"""

from __future__ import annotations

import importlib
import inspect

from autotune.errors import TargetUnavailable, UsageError
from autotune.targets.base import Built, Session, Target, TargetOptions

# name -> "module:Class", imported lazily so an absent runtime costs nothing.
_REGISTRY = {
    "onnxruntime": "autotune.targets.onnxruntime:OnnxRuntimeTarget",
    "tensorrt": "autotune.targets.tensorrt:TensorRTTarget",
    "tensorrt-rtx": "autotune.targets.tensorrt:TensorRTRTXTarget",
}


def unavailable_reason(cls: type[Target], build_only: bool) -> str | None:
    """`cls.unavailable_reason`, also for a plugin that declares it without `build_only`."""

    try:
        accepts = "build_only" in inspect.signature(cls.unavailable_reason).parameters
    except (TypeError, ValueError):
        accepts = True
    return cls.unavailable_reason(build_only=build_only) if accepts else cls.unavailable_reason()


def target_names() -> list[str]:
    """The names `--target` accepts, besides "auto"."""
    return list(_REGISTRY)


def target_class(name: str) -> type[Target]:
    """Returns the class registered under `name`, or a plugin named "package.module:Class".

    Raises:
        UsageError: an unknown name, or a plugin that does not import.
    """
    if name in _REGISTRY:
        module_name, class_name = _REGISTRY[name].split(":")
        return getattr(importlib.import_module(module_name), class_name)
    if ":" in name:
        module_name, _, class_name = name.partition(":")
        try:
            cls = getattr(importlib.import_module(module_name), class_name)
        except (ImportError, AttributeError) as exc:
            raise UsageError(f"--target {name}: cannot import this target ({exc})") from None
        if not (isinstance(cls, type) and issubclass(cls, Target)):
            raise UsageError(f"--target {name}: not a subclass of autotune.targets.base.Target")
        return cls
    raise UsageError(f"--target: unknown target {name!r} (choose from auto, {', '.join(_REGISTRY)}, or module:Class)")


def resolve_target(name: str, options: TargetOptions | None = None) -> tuple[Target, str]:
    """Instantiates the target named `name` ("auto" picks one) and says why it was picked.

    Args:
        name (str): a registered target name or "auto".
        options (TargetOptions | None): settings for the target. Default: TargetOptions().

    Returns:
        (target, message): message is a one-line explanation for the user.

    Raises:
        TargetUnavailable: the named target cannot run here; the message names the fix.
    """

    options = options or TargetOptions()
    if name == "auto":
        return _resolve_auto(options)
    cls = target_class(name)
    reason = unavailable_reason(cls, options.build_only)
    if reason is not None:
        raise TargetUnavailable(f"--target {name}: {reason}")
    target = cls(options)
    return target, f"target: {name} ({target.describe()})"


def _resolve_auto(options: TargetOptions) -> tuple[Target, str]:
    """The usable registered target of highest `auto_rank`, with what was passed over and why."""

    candidates = sorted((target_class(n) for n in _REGISTRY), key=lambda c: -c.auto_rank)
    passed_over: list[str] = []
    for cls in (c for c in candidates if c.auto_rank > 0):
        reason = unavailable_reason(cls, build_only=False)
        if reason is not None:
            passed_over.append(f"{cls.name} not usable: {reason.split(';')[0].split(' (')[0]}")
            continue
        target = cls(options)
        if not passed_over:
            return target, f"target auto: picked {cls.name} ({target.describe()})"
        return target, f"target auto: picked {cls.name} ({target.describe()}); {'; '.join(passed_over)}"
    raise TargetUnavailable(f"--target auto: no target can run here ({'; '.join(passed_over)})")


__all__ = ["Built", "Session", "Target", "resolve_target", "target_class", "target_names", "unavailable_reason"]
