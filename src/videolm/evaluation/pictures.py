"""Pictures for people: frame grids (PNG), side-by-side animations (GIF), entropy heat maps.

Everything is drawn deterministically (no timestamps, Pillow's built-in font), so the same
frames give the same bytes.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont, PngImagePlugin

from videolm.io import MARK, atomic_path

GAP = 4  # pixels between frames
BLOCK_GAP = 12  # pixels between the blocks of different clips
LABEL_WIDTH = 84  # the column of row names
LABEL_HEIGHT = 14  # the row of column names
ROW_NAMES = {"truth": "truth", "model": "model codes", "model_pixels": "model pixels",
             "pixels_without_model": "w/o model", "copy_last": "copy last", "copy_last_codes": "copy codes",
             "flow": "flow", "codebook": "true codes"}
ANIMATED = ("model", "model_pixels", "pixels_without_model", "copy_last", "flow")  # the GIF's (all are in the PNG)
SHOWN_WIDTH = 320  # pixels: clips narrower than this are shown magnified (`magnified`)
# A few stops of matplotlib's 'inferno' (black - purple - red - orange - pale yellow), in RGB.
INFERNO = np.array([[0, 0, 4], [40, 11, 84], [101, 21, 110], [159, 42, 99], [212, 72, 66],
                    [245, 125, 21], [250, 193, 39], [252, 255, 164]], np.float64)


def _to_uint8(frame: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(frame), 0, 255).astype(np.uint8)


def frame_grid(rows: list[list[np.ndarray]]) -> np.ndarray:
    """Rows of gray frames (any float or uint8 arrays) -> one uint8 image, white gaps between."""
    height = max(f.shape[0] for row in rows for f in row)
    width = max(f.shape[1] for row in rows for f in row)
    n_cols = max(len(row) for row in rows)
    canvas = np.full((len(rows) * (height + GAP) - GAP, n_cols * (width + GAP) - GAP), 255, np.uint8)
    for r, row in enumerate(rows):
        for c, frame in enumerate(row):
            y, x = r * (height + GAP), c * (width + GAP)
            canvas[y:y + frame.shape[0], x:x + frame.shape[1]] = _to_uint8(frame)
    return canvas


def text_image(text: str, height: int, width: int) -> np.ndarray:
    """(height, width) uint8: black `text` on white, at the top left."""
    image = Image.new("L", (width, height), 255)
    ImageDraw.Draw(image).text((2, 1), text, fill=0, font=ImageFont.load_default())
    return np.asarray(image)


def stack(images: list[np.ndarray], axis: int, gap: int = GAP) -> np.ndarray:
    """Images (gray or RGB, uint8) side by side (axis 1) or one above the other (axis 0),
    padded with white to a common size, `gap` white pixels between."""
    rgb = any(i.ndim == 3 for i in images)
    images = [np.repeat(i[..., None], 3, -1) if rgb and i.ndim == 2 else i for i in images]
    other = 1 - axis
    size = max(i.shape[other] for i in images)
    parts = []
    for n, image in enumerate(images):
        pad = [(0, 0)] * image.ndim
        pad[other] = (0, size - image.shape[other])
        parts.append(np.pad(image, pad, constant_values=255))
        if n < len(images) - 1:
            shape = list(parts[-1].shape)
            shape[axis] = gap
            parts.append(np.full(shape, 255, np.uint8))
    return np.concatenate(parts, axis)


def _with_labels(grid: np.ndarray, row_names: list[str], col_names: list[str], cell: tuple[int, int]) -> np.ndarray:
    """Put a column of row names left of `grid` and a row of column names above it."""
    h, w = cell
    left = stack([text_image(name, h, LABEL_WIDTH) for name in row_names], 0)
    body = stack([left, grid], 1)
    top = stack([text_image(name, LABEL_HEIGHT, w) for name in col_names], 1)
    return stack([stack([np.full((LABEL_HEIGHT, LABEL_WIDTH), 255, np.uint8), top], 1), body], 0, 0)


def magnified(frames: np.ndarray, width: int) -> np.ndarray:
    """Frames (..., H, W) with every pixel repeated n x n times, n the whole number that brings W
    nearest to `width` (at least 1): small clips legible beside large ones, their pixels (and any
    blocks) shown as they are, not smoothed."""
    n = max(1, round(width / frames.shape[-1]))
    return np.repeat(np.repeat(frames, n, -2), n, -1)


def _shown(ex, width: int):
    """An example's truth and predictions, magnified to about `width` pixels."""
    return magnified(ex.truth, width), {m: magnified(p, width) for m, p in ex.predictions.items()}


def comparison_grid(examples) -> np.ndarray:
    """One block per example (a `videolm.evaluation.generate.Example`): rows truth then each method it
    holds, columns the context frames then the predicted horizon (context repeated in every row).
    Every clip is shown at about one width: the widest clip's, at least `SHOWN_WIDTH`."""
    width = max(SHOWN_WIDTH, *(ex.truth.shape[2] for ex in examples))
    blocks = []
    for ex in examples:
        truth, predictions = _shown(ex, width)
        methods = tuple(predictions)
        context = ex.clip.t0 - ex.clip.start
        rows = [list(truth)] + [list(truth[:context]) + list(predictions[m]) for m in methods]
        cols = [f"ctx {c - context + 1}" for c in range(context)] + [f"+{h + 1}" for h in range(len(truth) - context)]
        blocks.append(_with_labels(frame_grid(rows), [ROW_NAMES[r] for r in ("truth", *methods)], cols,
                                   truth.shape[1:]))
    return stack(blocks, 0, BLOCK_GAP)


def animation(examples) -> list[np.ndarray]:
    """GIF frames: at every time step, each example's truth and the `ANIMATED` methods it holds
    side by side (one example per row, all in cells of one size, every clip magnified to about the
    widest's width); during the context every panel shows the real frame."""
    methods = tuple(m for m in ANIMATED if m in examples[0].predictions)
    context = examples[0].clip.t0 - examples[0].clip.start
    shown = [_shown(ex, max(e.truth.shape[2] for e in examples)) for ex in examples]
    width = max(truth.shape[2] for truth, _ in shown)
    header = stack([text_image(ROW_NAMES[name], LABEL_HEIGHT, width) for name in ("truth", *methods)], 1)
    frames = []
    for step in range(len(examples[0].truth)):
        rows = [[truth[step]] + [truth[step] if step < context else predictions[m][step - context]
                                 for m in methods] for truth, predictions in shown]
        when = f"context frame {step + 1} of {context}" if step < context else f"predicted +{step + 1 - context}"
        frames.append(stack([text_image(when, LABEL_HEIGHT, 200), header, frame_grid(rows)], 0, 0))
    return frames


def colormap(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] -> (..., 3) uint8 RGB (an 'inferno'-like map: dark = low)."""
    x = np.clip(np.asarray(values, np.float64), 0, 1) * (len(INFERNO) - 1)
    i = np.minimum(np.floor(x).astype(int), len(INFERNO) - 2)
    f = (x - i)[..., None]
    return np.rint(INFERNO[i] * (1 - f) + INFERNO[i + 1] * f).astype(np.uint8)


def upsample_cells(cells: np.ndarray, size: int, stride: int, shape: tuple[int, int]) -> np.ndarray:
    """(rows, cols) values per code cell -> (H, W) per pixel: each cell fills the stride x
    stride block at the centre of its patch, the border is extended."""
    blocks = np.repeat(np.repeat(cells, stride, 0), stride, 1)
    off = (size - stride) // 2
    h, w = shape
    pad = ((off, max(h - off - blocks.shape[0], 0)), (off, max(w - off - blocks.shape[1], 0)))
    return np.pad(blocks, pad, mode="edge")[:h, :w]


def entropy_heat(entropy: np.ndarray, size: int, stride: int, shape: tuple[int, int], top: float) -> np.ndarray:
    """(H, W, 3) uint8: the entropy (bits) at each code cell (rows, cols) as a colour map over the
    frame's pixels, black at 0 bits, pale yellow at `top` bits."""
    return colormap(upsample_cells(entropy, size, stride, shape) / top)


def entropy_picture(frame: np.ndarray, entropy: np.ndarray, size: int, stride: int) -> np.ndarray:
    """RGB picture: the frame, the entropy (bits) of the model's prediction at each code cell
    as a colour map, and the two blended; a colour bar with its scale underneath."""
    gray = _to_uint8(frame)
    top = max(float(entropy.max()), 1e-9)
    heat = entropy_heat(entropy, size, stride, gray.shape, top)
    blend = np.rint(0.5 * np.repeat(gray[..., None], 3, -1) + 0.5 * heat).astype(np.uint8)
    row = stack([gray, heat, blend], 1)
    bar = colormap(np.repeat(np.linspace(0, 1, 256)[None], 10, 0))
    scale = stack([text_image("0 bits", LABEL_HEIGHT, 50), bar, text_image(f"{top:.1f} bits", LABEL_HEIGHT, 70)], 1)
    title = text_image("frame | entropy of the model's predicted code distribution | overlay", LABEL_HEIGHT, row.shape[1])
    return stack([title, row, scale], 0)


def prediction_panels(grays: list[np.ndarray], entropy: np.ndarray, size: int, stride: int,
                      top: float) -> list[np.ndarray]:
    """One predicted frame's panels: the gray (H, W) frames `grays` (the truth, then predictions),
    and the entropy of the predicted code distribution at each cell (RGB, 0 to `top` bits)."""
    return [*map(_to_uint8, grays), entropy_heat(entropy, size, stride, grays[0].shape, top)]


def prediction_animation(panels: list[list[np.ndarray]], frames: list[int], n_frames: int,
                         top: float, names: list[str]) -> list[np.ndarray]:
    """Animation frames: each predicted frame's panels side by side under their `names`, and a line
    saying which of the video's `n_frames` it is (`frames`: 0-based indices) and the colour scale."""
    width = panels[0][0].shape[1]
    header = stack([text_image(name, LABEL_HEIGHT, width) for name in names], 1)
    return [stack([text_image(f"frame {t + 1}/{n_frames}, entropy 0-{top:.1f} bits", LABEL_HEIGHT, header.shape[1]),
                   header, stack(row, 1)], 0, 0)
            for t, row in zip(frames, panels)]


def prediction_strip(panels: list[list[np.ndarray]], frames: list[int], title: str, names: list[str]) -> np.ndarray:
    """One column per predicted frame (`frames`: 0-based indices), one row per panel (`names`),
    labelled, under a `title` line."""
    body = stack([stack([row[r] for row in panels], 1) for r in range(len(names))], 0)
    grid = _with_labels(body, names, [f"frame {t + 1}" for t in frames], panels[0][0].shape)
    return stack([text_image(title, LABEL_HEIGHT, grid.shape[1]), grid], 0, 0)


def save_png(path: str | Path, image: np.ndarray, stage: str) -> None:
    """A PNG carrying `stage`'s mark in a text chunk."""
    info = PngImagePlugin.PngInfo()
    info.add_text(MARK, stage)
    with atomic_path(path, stage) as tmp:
        Image.fromarray(image).save(tmp, format="PNG", pnginfo=info)


def save_gif(path: str | Path, frames: list[np.ndarray], stage: str, duration_ms: int = 250) -> None:
    """An endlessly looping animated GIF of uint8 frames (gray or RGB) of one size, `stage`'s mark as its comment."""
    images = [Image.fromarray(f) for f in frames]
    with atomic_path(path, stage) as tmp:
        images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], duration=duration_ms,
                       loop=0, optimize=False, comment=f"{MARK}={stage}")


@contextmanager
def gif_writer(path: str | Path, stage: str, duration_ms: int):
    """Yield `add(frame)`, keeping each frame, and write them all as `save_gif` does when the
    block ends: Pillow's GIF writer needs every frame at once."""
    frames: list[np.ndarray] = []
    yield frames.append
    save_gif(path, frames, stage, duration_ms)


def save_mp4(path: str | Path, frames: list[np.ndarray], stage: str, fps: int) -> None:
    """An H.264 MP4 of uint8 frames (gray or RGB) of one size (`mp4_writer`)."""
    with mp4_writer(path, stage, fps) as add:
        for frame in frames:
            add(frame)


@contextmanager
def mp4_writer(path: str | Path, stage: str, fps: int):
    """Yield `add(frame)`, which encodes one uint8 frame (gray or RGB; every frame of one size)
    into an H.264 MP4 as it comes, so that nothing grows with the number of frames; the file is
    renamed into place when the block ends. Frames are padded with white to even sides (as
    yuv420p needs); `stage`'s mark is the comment. The same frames give the same bytes: x264 on one
    thread, without macroblock-tree rate control (benchmarks/corpus.py `write_clip` says why)."""
    import av  # only here: the stages that draw pictures read no video

    with atomic_path(path, stage) as tmp, av.open(str(tmp), "w", format="mp4") as container:
        container.metadata["comment"] = f"{MARK}={stage}"
        stream = container.add_stream("libx264", rate=fps, options={"threads": "1", "x264-params": "mbtree=0"})

        sized = []

        def add(frame: np.ndarray) -> None:
            height, width = frame.shape[:2]
            if not sized:  # the first frame's size, before anything is encoded
                stream.width, stream.height, stream.pix_fmt = width + width % 2, height + height % 2, "yuv420p"
                sized.append(True)
            even = np.pad(frame, [(0, height % 2), (0, width % 2)] + [(0, 0)] * (frame.ndim - 2), constant_values=255)
            picture = av.VideoFrame.from_ndarray(even, format="rgb24" if frame.ndim == 3 else "gray")
            container.mux(stream.encode(picture))

        yield add
        container.mux(stream.encode())
