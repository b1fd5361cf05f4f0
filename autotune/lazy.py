"""A module imported where it is named and loaded on first use (`importlib.util.LazyLoader`).

Ray is a dependency every study uses, but importing it costs every CLI command ~0.4 s (`status`,
`list` and `report` never touch it). `ray = lazy_module("ray")` at the top of a module keeps the
dependency visible where it belongs (issue 28: no imports hidden inside functions) and defers
the cost to the first `ray.<name>`.
"""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType


def lazy_module(name: str) -> ModuleType:
    """The module `name`, executed on its first attribute access (the standard library's lazy
    import recipe); the loaded module itself when something imported it already.

    Example:
        >>> json = lazy_module("json")
        >>> json.dumps([1])
        '[1]'
    """
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        raise ModuleNotFoundError(f"No module named {name!r}", name=name)
    loader = importlib.util.LazyLoader(spec.loader)
    spec.loader = loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    loader.exec_module(module)
    return module
