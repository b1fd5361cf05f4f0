"""The real TensorRT Python bindings of several versions, importable on a machine without
TensorRT's libraries or a GPU.

`tensorrt-cu12-bindings` (10.x) and `tensorrt-cu13-bindings` (11.x) are plain PyPI wheels
(about 1 MB each); their extension module links libnvinfer / libnvonnxparser /
libnvinfer_plugin, which `stub_nvinfer.c` (a STUB, compiled here with gcc) satisfies. Wheels
and the stub are cached under $AUTOTUNE_TRT_BINDINGS_CACHE (default
~/.cache/autotune/trt-bindings), so only the first run downloads.

Each version is imported in its own subprocess (`probe.py`), never in the test process.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent

# version -> PyPI distribution. Exact versions the audit used; all four exist on PyPI.
VERSIONS = {
    "10.0.1": "tensorrt-cu12-bindings",
    "10.8.0.43": "tensorrt-cu12-bindings",
    "10.16.1.11": "tensorrt-cu12-bindings",
    "11.4.0.106": "tensorrt-cu13-bindings",
}
POLYGRAPHY_BEFORE_FIX = "0.49.20"  # the last release that reads config.int8_calibrator unguarded
_SONAMES = ("libnvinfer.so", "libnvonnxparser.so", "libnvinfer_plugin.so")


def cache_dir() -> Path:
    default = Path.home() / ".cache" / "autotune" / "trt-bindings"
    path = Path(os.environ.get("AUTOTUNE_TRT_BINDINGS_CACHE", default))
    path.mkdir(parents=True, exist_ok=True)
    return path


def _pip_target(requirement: str, target: Path) -> Path:
    """`pip install --no-deps --target`, into a temporary name renamed at the end, so an
    interrupted download never leaves a half-installed cache entry."""
    if target.exists():
        return target
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--disable-pip-version-check",
            "--target",
            str(partial),
            requirement,
        ],
        check=True,
    )
    partial.rename(target)
    return target


def install_bindings(version: str) -> Path:
    """The directory holding `tensorrt_bindings` of `version`."""
    return _pip_target(f"{VERSIONS[version]}=={version}", cache_dir() / f"tensorrt-{version}")


def install_polygraphy(version: str) -> Path:
    return _pip_target(f"polygraphy=={version}", cache_dir() / f"polygraphy-{version}")


def stub_libraries() -> Path:
    """Compiles the stub once per source content into every soname the bindings need."""
    source = HERE / "stub_nvinfer.c"
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:12]
    out = cache_dir() / f"stub-{digest}"
    if (out / "ok").exists():
        return out
    out.mkdir(exist_ok=True)
    for major in (10, 11):
        for name in _SONAMES:
            soname = f"{name}.{major}"
            subprocess.run(
                ["gcc", "-shared", "-fPIC", "-o", str(out / soname), f"-Wl,-soname,{soname}", str(source)],
                check=True,
            )
    (out / "ok").write_text("")
    return out


def run_probe(version: str, mode: str = "report", *extra_paths: Path) -> dict:
    """Runs probe.py MODE with the bindings of `version` importable as `tensorrt`."""
    env = dict(os.environ)
    paths = [str(p) for p in extra_paths] + [str(install_bindings(version)), str(REPO)]
    env["PYTHONPATH"] = os.pathsep.join(paths + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [str(stub_libraries()), env.get("LD_LIBRARY_PATH")]))
    proc = subprocess.run(
        [sys.executable, str(HERE / "probe.py"), mode], capture_output=True, text=True, env=env, timeout=300
    )
    if proc.returncode != 0:
        raise RuntimeError(f"probe.py {mode} with TensorRT {version} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])
