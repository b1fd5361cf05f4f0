"""The search spaces shipped with autotune: one YAML file per target, data rather than code.

A package only so that `importlib.resources` finds the files in every kind of install (wheel,
editable, zip); the repository's top-level `search_spaces/` links here. `--space FILE` replaces one.
"""
