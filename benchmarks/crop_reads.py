"""Reading training crops from the code files (`H5Codes`) against from memory: the cost of
out-of-core training data. Run from a workspace where `dvc repro` has made data/codes:

    python benchmarks/crop_reads.py
"""
import videolm  # noqa: F401 (first: it sets how OpenMP threads wait, before torch loads)

# isort: split

import time

from videolm.codes.codebook import Codebook
from videolm.codes.grids import CodeGrid, load_code_grids
from videolm.training.crops import CodeGridDataset


def main() -> None:
    codebook = Codebook.load("data/codebook.h5")
    lazy = load_code_grids("data/codes", codebook)
    held = [CodeGrid(g.video_id, g.codes[:], g.train_end, g.val_end) for g in lazy]
    for name, grids in [("from memory", held), ("from the files", lazy)] * 3:
        data = CodeGridDataset(grids, "train", 9, 8, 100_000, 0, reverse_time=True)  # the default run's crops
        start = time.perf_counter()
        for i in range(1600):
            data[i]
        print(f"{name}: {(time.perf_counter() - start) / 100 * 1000:.2f} ms per batch of 16 crops", flush=True)


if __name__ == "__main__":
    main()
