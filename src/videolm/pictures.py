"""Pictures for people: strips of gray frames saved as PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from videolm.io import atomic_path

GAP = 4  # pixels between frames


def frame_grid(rows: list[list[np.ndarray]]) -> np.ndarray:
    """Rows of gray frames (any float or uint8 arrays) -> one uint8 image, white gaps between."""
    height = max(f.shape[0] for row in rows for f in row)
    width = max(f.shape[1] for row in rows for f in row)
    n_cols = max(len(row) for row in rows)
    canvas = np.full((len(rows) * (height + GAP) - GAP, n_cols * (width + GAP) - GAP), 255, np.uint8)
    for r, row in enumerate(rows):
        for c, frame in enumerate(row):
            y, x = r * (height + GAP), c * (width + GAP)
            canvas[y:y + frame.shape[0], x:x + frame.shape[1]] = np.clip(np.rint(frame), 0, 255).astype(np.uint8)
    return canvas


def save_png(path: str | Path, image: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp, format="PNG")
