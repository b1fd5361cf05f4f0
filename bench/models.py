"""Realistic benchmark models, exported once to ONNX into bench/models/ (a cache; not in git).

Each function returns the path of an ONNX file with a dynamic batch dim. The torchvision and
transformers models carry random weights (no hub download); the trained model is the text
detector shipped inside the `rapidocr-onnxruntime` wheel.

Needs (bench only, not the package): torch, torchvision, transformers, rapidocr-onnxruntime.
"""

from __future__ import annotations

import importlib.util
import shutil
from collections.abc import Callable
from pathlib import Path

CACHE_DIR = Path(__file__).resolve().parent / "models"
OPSET = 17


def _export_torch(
    name: str, build: Callable, example_inputs: tuple, input_names: list[str], dynamic_axes: dict
) -> Path:
    path = CACHE_DIR / f"{name}.onnx"
    if path.exists():
        return path
    import torch

    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    torch.backends.mha.set_fastpath_enabled(False)  # the fused MHA kernel has no ONNX export
    module = build().eval()
    with torch.no_grad():
        torch.onnx.export(
            module,
            example_inputs,
            str(path),
            input_names=input_names,
            output_names=["output"],
            dynamic_axes=dynamic_axes | {"output": {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )
    return path


def _image_model(name: str, build: Callable) -> Path:
    import torch

    return _export_torch(name, build, (torch.randn(1, 3, 224, 224),), ["images"], {"images": {0: "batch"}})


def resnet50() -> Path:
    from torchvision.models import resnet50 as build

    return _image_model("resnet50", lambda: build(weights=None))


def mobilenet_v3_large() -> Path:
    from torchvision.models import mobilenet_v3_large as build

    return _image_model("mobilenet_v3_large", lambda: build(weights=None))


def vit_b_16() -> Path:
    from torchvision.models import vit_b_16 as build

    return _image_model("vit_b_16", lambda: build(weights=None))


def bert_base() -> Path:
    import torch
    from transformers import BertConfig, BertModel

    class LastHiddenState(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = BertModel(BertConfig(), add_pooling_layer=False)

        def forward(self, input_ids, attention_mask):
            return self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    sequence = 128
    return _export_torch(
        "bert_base",
        LastHiddenState,
        (torch.randint(0, 30522, (1, sequence)), torch.ones(1, sequence, dtype=torch.int64)),
        ["input_ids", "attention_mask"],
        {"input_ids": {0: "batch"}, "attention_mask": {0: "batch"}},
    )


def ppocr_v4_det() -> Path:
    """PP-OCRv4 text detector, trained, from the rapidocr-onnxruntime wheel."""
    path = CACHE_DIR / "ppocr_v4_det.onnx"
    if not path.exists():
        spec = importlib.util.find_spec("rapidocr_onnxruntime")
        if spec is None or spec.origin is None:
            raise RuntimeError("install rapidocr-onnxruntime for the trained benchmark model")
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        shutil.copy(Path(spec.origin).parent / "models" / "ch_PP-OCRv4_det_infer.onnx", path)
    return path


def _rapidocr_model(file_name: str, cache_name: str) -> Path:
    path = CACHE_DIR / cache_name
    if not path.exists():
        spec = importlib.util.find_spec("rapidocr_onnxruntime")
        if spec is None or spec.origin is None:
            raise RuntimeError("install rapidocr-onnxruntime (pip install --no-deps) for the trained models")
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        shutil.copy(Path(spec.origin).parent / "models" / file_name, path)
    return path


def ppocr_v4_rec() -> Path:
    """PP-OCRv4 text recognizer, trained (dynamic H and W; 1x3x48x320 is a text line)."""
    return _rapidocr_model("ch_PP-OCRv4_rec_infer.onnx", "ppocr_v4_rec.onnx")


def ppocr_cls() -> Path:
    """PP-OCR mobile v2 text direction classifier, trained (1x3x48x192 is its input size)."""
    return _rapidocr_model("ch_ppocr_mobile_v2.0_cls_infer.onnx", "ppocr_cls.onnx")


MODELS: dict[str, Callable[[], Path]] = {
    "resnet50": resnet50,
    "mobilenet_v3_large": mobilenet_v3_large,
    "vit_b_16": vit_b_16,
    "bert_base": bert_base,
    "ppocr_v4_det (trained)": ppocr_v4_det,
}


def ddddocr_file(member: str) -> bytes:
    """A file of ddddocr 1.6.1's wheel (its trained models ship in it), by pip download."""
    import subprocess
    import sys
    import tempfile
    import zipfile

    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "ddddocr==1.6.1", "-d", tmp], check=True
        )
        with zipfile.ZipFile(next(Path(tmp).glob("ddddocr-*.whl"))) as archive:
            return archive.read(member)


def ddddocr_charset() -> list[str]:
    """The 8210 characters of ddddocr_rec's output classes (its wheel's `CHARSET_BETA`, which
    ddddocr pairs with `common.onnx`; class 0 is the CTC blank ""), cached as JSON."""
    import ast
    import json

    path = CACHE_DIR / "ddddocr_charset.json"
    if not path.exists():
        tree = ast.parse(ddddocr_file("ddddocr/charsets.py"))
        values = {
            target.id: node.value
            for node in tree.body
            if isinstance(node, ast.Assign)
            for target in node.targets
            if isinstance(target, ast.Name)
        }
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(ast.literal_eval(values["CHARSET_BETA"]), ensure_ascii=False))
    return json.loads(path.read_text())


def ddddocr_rec() -> Path:
    """ddddocr 1.6.1's text recognizer (`common.onnx`: convolutions, an LSTM and a CTC classifier
    over 8210 characters, trained), from its PyPI wheel; the batch dimension made dynamic (it is
    declared 1; the graph computes with any). Input [batch, 1, 64, W] grayscale in [0, 1]; output
    [steps, batch, 8210] (steps first)."""
    import onnx

    path = CACHE_DIR / "ddddocr_rec.onnx"
    if not path.exists():
        model = onnx.load_from_string(ddddocr_file("ddddocr/common.onnx"))
        model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"
        for output in model.graph.output:  # declared [1, seqlen]; it is [steps, batch, classes]
            dims = output.type.tensor_type.shape.dim
            del dims[:]
            for name in ("steps", "batch", "classes"):
                dims.add().dim_param = name
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        onnx.save(model, str(path))
    return path
