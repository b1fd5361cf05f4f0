"""A module named at the top of the module that uses it and imported on first use.

Ray is a dependency every study uses, but importing it costs every CLI command ~0.4 s (`status`,
`list` and `report` never touch it). `ray = lazy_module("ray")` at the top of a module keeps the
dependency visible where it belongs (issue 28: no imports hidden inside functions) and defers
the cost to the first `ray.<name>`.

Not `importlib.util.LazyLoader`: it puts a half-loaded module in `sys.modules`, and a later
`import ray._common.utils` elsewhere (tests/ray_nodes.py) then found `ray._common` without its
`utils`. Here `sys.modules` is never touched: the first attribute access imports the module
the ordinary way.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any


class LazyModule:
    """Stands for the module `name` until an attribute is read, then imports it (once: the
    import system caches it) and reads the attribute from the real module."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attribute: str) -> Any:
        return getattr(self.module(), attribute)

    def module(self) -> ModuleType:
        return importlib.import_module(self._name)

    def __repr__(self) -> str:
        return f"<lazy module {self._name!r}>"


def lazy_module(name: str) -> Any:
    """A stand-in for module `name` that imports it on first attribute access.

    Example:
        >>> json = lazy_module("json")
        >>> json.dumps([1])
        '[1]'
    """
    return LazyModule(name)
