"""Peer tuners the benchmark compares autotune against.

Olive (`olive-ai`) is the tool an ONNX Runtime user would pick instead: its
`OrtSessionParamsTuning` pass searches session options (threads, execution mode, graph
optimization level) with its own Optuna-backed search strategy. Its one-line CLI
(`olive tune-session-params`) feeds rank-2 dummy data of shape (1, 1) unless told otherwise,
which fails on every model here (images, token ids, dynamic dims); so it is driven by a
workflow config that states the input shapes, names and types.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

# Olive's ORT values -> autotune knob values (so Olive's choice is re-measured by the same code).
OLIVE_OPT_LEVELS = {0: "disable", 1: "basic", 2: "extended", 99: "all"}
OLIVE_EXECUTION_MODES = {0: "sequential", 1: "parallel"}


def olive_workflow(
    model_path: Path,
    feeds: Mapping[str, np.ndarray],
    *,
    max_samples: int,
    seed: int,
    workdir: Path,
    cpus: int,
) -> dict[str, Any]:
    """The Olive workflow config: session-parameter tuning at the feeds' shapes.

    Args:
        model_path (Path): the ONNX model.
        feeds (Mapping): one input batch (names, shapes and dtypes are what Olive needs).
        max_samples (int): search budget (Olive search points, each one session configuration).
        seed (int): Olive's sampler seed.
        workdir (Path): Olive's cache and output directory.
        cpus (int): cores on this machine (the thread-count choices go up to it).
    """
    threads = list(range(1, cpus + 1))
    return {
        "input_model": {"type": "ONNXModel", "model_path": str(model_path)},
        "systems": {
            "local_system": {
                "type": "LocalSystem",
                "accelerators": [{"device": "cpu", "execution_providers": ["CPUExecutionProvider"]}],
            }
        },
        "data_configs": [
            {
                "name": "tuning_data",
                "type": "DummyDataContainer",
                "load_dataset_config": {
                    "input_shapes": [list(a.shape) for a in feeds.values()],
                    "input_names": list(feeds),
                    "input_types": [str(a.dtype) for a in feeds.values()],
                    "max_samples": 1,
                },
            }
        ],
        "evaluators": {
            # "type" set explicitly: Olive 0.13 mistakes an evaluator with type None for a resource path.
            "latency": {
                "type": "OnnxEvaluator",
                "metrics": [
                    {
                        "name": "latency",
                        "type": "latency",
                        "sub_types": [
                            {"name": "avg", "priority": 1, "metric_config": {"warmup_num": 3, "repeat_test_num": 10}}
                        ],
                        "data_config": "tuning_data",
                    }
                ],
            }
        },
        "passes": {
            "session_params_tuning": {
                "type": "OrtSessionParamsTuning",
                "data_config": "tuning_data",
                "cpu_cores": cpus,
                "execution_mode_list": [0, 1],
                "opt_level_list": [0, 1, 2, 99],
                "intra_thread_num_list": threads,
                "inter_thread_num_list": threads,
            }
        },
        "search_strategy": {
            "execution_order": "joint",
            "sampler": "tpe",
            "sampler_config": {"max_samples": max_samples, "seed": seed},
            # Olive 0.13's sampler ignores `max_samples` here (it walks the whole space); the
            # strategy-level `max_iter` is what stops it at the budget.
            # It checks after each step, so max_iter = n - 1 runs n search points.
            "max_iter": max(max_samples - 1, 1),
        },
        "evaluator": "latency",
        "host": "local_system",
        "target": "local_system",
        "cache_dir": str(workdir / "cache"),
        "output_dir": str(workdir / "output"),
        "log_severity_level": 3,
    }


def run_olive(
    model_path: Path,
    feeds: Mapping[str, np.ndarray],
    *,
    max_samples: int,
    workdir: Path,
    seed: int = 0,
    cpus: int = 2,
) -> dict[str, Any]:
    """Runs Olive's session-parameter tuning; returns its choice as an autotune configuration.

    Returns:
        dict with `config` (autotune knob values, or None when Olive found nothing), `wall_s`,
        `samples` (search points Olive evaluated), `olive_latency_ms` (Olive's own measurement)
        and `inference_settings` (Olive's raw output).
    """
    from olive.workflows import run as olive_run

    workdir.mkdir(parents=True, exist_ok=True)
    config = olive_workflow(model_path, feeds, max_samples=max_samples, seed=seed, workdir=workdir, cpus=cpus)
    (workdir / "olive_config.json").write_text(json.dumps(config, indent=2))
    logging.getLogger("olive").setLevel(logging.ERROR)
    started = time.monotonic()
    output = olive_run(config)
    wall_s = time.monotonic() - started
    best = output.get_best_candidate() if output is not None else None
    samples = _count_search_points(workdir)
    if best is None:
        return {
            "config": None,
            "wall_s": wall_s,
            "samples": samples,
            "olive_latency_ms": None,
            "inference_settings": None,
        }
    settings = best.get_inference_config() or {}
    metrics = best.metrics_value or {}
    latency = next((_number(v) for k, v in metrics.items() if "latency" in k), None)
    return {
        "config": autotune_config(settings.get("session_options") or {}),
        "wall_s": wall_s,
        "samples": samples,
        "olive_latency_ms": latency,
        "inference_settings": json.loads(json.dumps(settings, default=str)),
    }


def autotune_config(session_options: Mapping[str, Any]) -> dict[str, Any]:
    """Olive's session options as an autotune onnxruntime configuration (batch 1, FP32)."""
    mode = OLIVE_EXECUTION_MODES.get(_int(session_options.get("execution_mode"), 0), "sequential")
    config: dict[str, Any] = {
        "graph_optimization_level": OLIVE_OPT_LEVELS.get(
            _int(session_options.get("graph_optimization_level"), 99), "all"
        ),
        "execution_mode": mode,
        "intra_op_threads": _int(session_options.get("intra_op_num_threads"), 0),
        "batch_size": 1,
        "precision": "fp32",
    }
    if mode == "parallel":
        config["inter_op_threads"] = _int(session_options.get("inter_op_num_threads"), 0)
    return config


def _number(value: Any) -> float | None:
    if isinstance(value, Mapping):
        value = value.get("value")
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _int(value: Any, default: int) -> int:
    if value is None:
        return default
    if hasattr(value, "value"):  # an ORT enum
        return int(value.value)
    try:
        return int(value)
    except (TypeError, ValueError):
        text = str(value).upper()
        for number, name in (
            (0, "DISABLE"),
            (1, "BASIC"),
            (2, "EXTENDED"),
            (99, "ALL"),
            (0, "SEQUENTIAL"),
            (1, "PARALLEL"),
        ):
            if name in text:
                return number
        return default


def _count_search_points(workdir: Path) -> int:
    """Search points Olive ran, from its footprints (one node per evaluated pass configuration)."""
    count = 0
    for path in (workdir / "output").rglob("footprint*.json"):
        try:
            data = json.loads(path.read_text())
            nodes = data.get("nodes", data)
        except (OSError, ValueError, AttributeError):
            continue
        count = max(count, sum(1 for n in nodes.values() if n.get("from_pass")))
    return count
