"""Real inputs for the PP-OCR classifier and recognizer: text-line crops of the rendered pages in
bench/models/ppocr_v4_det_inputs.npz, found by the PP-OCRv4 detector itself.

The detector's probability map (> 0.3) is cut into text lines: rows of the map with text form
bands, and each band's text columns give a box. Each box is cropped from the page (the
detector's ImageNet normalization undone), resized to height 48, padded right to the model's
width (192 for the classifier, 320 for the recognizer) and normalized as PaddleOCR does,
(x / 255 - 0.5) / 0.5. Writes ppocr_cls_inputs.npz and ppocr_v4_rec_inputs.npz (16 crops each).

    .venv/bin/python bench/precision_inputs.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image

MODELS = Path(__file__).resolve().parent / "models"
MEAN, STD = np.array([0.485, 0.456, 0.406], np.float32), np.array([0.229, 0.224, 0.225], np.float32)
CROPS = 16


def text_boxes(probability: np.ndarray, threshold: float = 0.3) -> list[tuple[int, int, int, int]]:
    """(top, bottom, left, right) of text lines in a probability map."""
    mask = probability > threshold
    rows = mask.any(axis=1)
    boxes = []
    top = None
    for y, on in enumerate([*rows, False]):
        if on and top is None:
            top = y
        elif not on and top is not None:
            if y - top >= 8:
                columns = np.flatnonzero(mask[top:y].any(axis=0))
                if columns.size and columns[-1] - columns[0] >= 16:
                    pad = max(2, (y - top) // 3)
                    boxes.append((max(0, top - pad), min(mask.shape[0], y + pad), max(0, columns[0] - pad),
                                  min(mask.shape[1], columns[-1] + pad)))  # fmt: skip
            top = None
    return boxes


def crop_tensor(page: np.ndarray, box: tuple[int, int, int, int], width: int) -> np.ndarray:
    top, bottom, left, right = box
    pixels = np.clip((page[:, top:bottom, left:right].transpose(1, 2, 0) * STD + MEAN) * 255, 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels)
    resized_width = min(width, max(1, round(image.width * 48 / image.height)))
    image = image.resize((resized_width, 48), Image.Resampling.BILINEAR)
    tensor = np.zeros((3, 48, width), np.float32)
    tensor[:, :, :resized_width] = (np.asarray(image, np.float32).transpose(2, 0, 1) / 255 - 0.5) / 0.5
    return tensor


def main() -> None:
    with np.load(MODELS / "ppocr_v4_det_inputs.npz") as data:
        pages = data["x"]
    session = ort.InferenceSession(str(MODELS / "ppocr_v4_det.onnx"), providers=["CPUExecutionProvider"])
    boxes = []
    for index in range(pages.shape[0]):
        probability = session.run(None, {"x": pages[index : index + 1]})[0][0, 0]
        boxes += [(index, box) for box in text_boxes(probability)]
    # Spread the crops over the pages: every page contributes in turn.
    rank = {
        id(item): sum(1 for other in boxes[:position] if other[0] == item[0]) for position, item in enumerate(boxes)
    }
    chosen = sorted(boxes, key=lambda item: rank[id(item)])[:CROPS]
    for name, width in (("ppocr_cls", 192), ("ppocr_v4_rec", 320)):
        crops = np.stack([crop_tensor(pages[index], box, width) for index, box in chosen])
        np.savez(MODELS / f"{name}_inputs.npz", x=crops)
        print(f"{name}_inputs.npz: {crops.shape} from {len({i for i, _ in chosen})} pages ({len(boxes)} lines found)")


if __name__ == "__main__":
    main()
