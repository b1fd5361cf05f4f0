"""Real inputs for bench/precision.py: `--pages` rendered text pages for the detectors
(`gpu_grid.text_page_inputs`: bench/models/yolox_det_inputs.npz, ppocr_v4_det_inputs.npz), and for
the PP-OCR classifier and recognizer, text-line crops of those pages found by the PP-OCRv4
detector itself.

The detector's probability map (> 0.3) is cut into text lines: rows of the map with text form
bands, and each band's text columns give a box. Each box is cropped from the page (the
detector's ImageNet normalization undone), resized to height 48, padded right to the model's
width (192 for the classifier, 320 for the recognizer) and normalized as PaddleOCR does,
(x / 255 - 0.5) / 0.5. Writes ppocr_cls_inputs.npz and ppocr_v4_rec_inputs.npz (two crops per
page, spread over the pages), and ddddocr_rec_inputs.npz (8 captcha-like lines per page,
`captcha_lines`).

    .venv/bin/python bench/precision_inputs.py --pages 16     # the third pass of bench/PRECISION.md
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image

MODELS = Path(__file__).resolve().parent / "models"
MEAN, STD = np.array([0.485, 0.456, 0.406], np.float32), np.array([0.229, 0.224, 0.225], np.float32)


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


def captcha_lines(count: int, width: int = 200) -> None:
    """ddddocr_rec_inputs.npz: `count` captcha-like lines (seeded): 4-7 random letters and digits,
    a DejaVu font at 30-40 px, each character a little rotated and offset, dark on a light random
    background with two noise lines; grayscale 64 x `width` in [0, 1], as ddddocr feeds its
    recognizer (height 64, /255). The text of each line goes to ddddocr_rec_texts.json: FP32
    ddddocr reads 97% of the characters right with case folded, 89% with case (it cannot tell
    c from C on these glyphs), so the gates compare with FP32 and the bench also reports the
    error against the true text."""
    from PIL import ImageDraw, ImageFont

    rng = np.random.default_rng(1)
    alphabet = "abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"
    fonts = [f"/usr/share/fonts/truetype/dejavu/{n}.ttf" for n in ("DejaVuSans", "DejaVuSerif-Bold", "DejaVuSansMono")]
    lines, texts = [], []
    for _ in range(count):
        text = ""

        image = Image.new("L", (width, 64), int(rng.integers(170, 256)))
        draw = ImageDraw.Draw(image)
        x = int(rng.integers(4, 20))
        for char in rng.choice(list(alphabet), int(rng.integers(4, 8))):
            font = ImageFont.truetype(fonts[int(rng.integers(0, 3))], int(rng.integers(30, 41)))
            glyph = Image.new("L", (48, 56), 0)
            ImageDraw.Draw(glyph).text((4, 2), str(char), fill=255, font=font)
            glyph = glyph.rotate(float(rng.uniform(-15, 15)), resample=Image.Resampling.BILINEAR)
            image.paste(int(rng.integers(0, 80)), (x, int(rng.integers(0, 10))), glyph)
            text += str(char)
            x += int(rng.integers(20, 28))
            if x > width - 30:
                break
        for _ in range(2):
            draw.line([tuple(int(v) for v in rng.integers(0, [width, 64])) for _ in range(2)],
                      fill=int(rng.integers(60, 140)), width=1)  # fmt: skip
        lines.append(np.asarray(image, np.float32)[None] / 255.0)
        texts.append(text)
    np.savez(MODELS / "ddddocr_rec_inputs.npz", input1=np.stack(lines))
    (MODELS / "ddddocr_rec_texts.json").write_text(json.dumps(texts))
    print(f"ddddocr_rec_inputs.npz: {len(lines)} lines")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pages", type=int, default=16, help="rendered pages (seeded); two crops per page")
    parser.add_argument("--lines", type=int, help="captcha lines for ddddocr_rec (seeded); default 8 per page")
    args = parser.parse_args()
    from gpu_grid import text_page_inputs

    text_page_inputs(count=args.pages)
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
    chosen = sorted(boxes, key=lambda item: rank[id(item)])[: 2 * args.pages]
    captcha_lines(args.lines or 8 * args.pages)  # small and fast: enough lines that 1% is a few characters
    for name, width in (("ppocr_cls", 192), ("ppocr_v4_rec", 320)):
        crops = np.stack([crop_tensor(pages[index], box, width) for index, box in chosen])
        np.savez(MODELS / f"{name}_inputs.npz", x=crops)
        print(f"{name}_inputs.npz: {crops.shape} from {len({i for i, _ in chosen})} pages ({len(boxes)} lines found)")


if __name__ == "__main__":
    main()
