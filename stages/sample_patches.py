"""Stage `sample_patches`: random patches of training frames, divided by the training std; one
read of each video, in `workers` processes (the same bytes whatever their number)."""

import videolm  # noqa: F401 (first: it sets how OpenMP threads wait, before torch loads)

# isort: split

from videolm.codes.sampling import sample_training_patches
from videolm.data.frames import check_patch_fits, list_frames
from videolm.io import guard_outputs
from videolm.stage import run_stage


def main(params) -> str:
    p = params.patches
    guard_outputs("sample_patches", {"paths.frames": params.paths.frames}, {"paths.patches": params.paths.patches})
    videos = list_frames(params.paths.frames)
    check_patch_fits(videos, p.size)
    sample = sample_training_patches(videos, p.n_train, p.n_heldout, p.size, params.seed, params.workers)
    sample.save(params.paths.patches)
    return (f"{len(sample.train)} training and {len(sample.heldout)} held-out {p.size}x{p.size} patches, "
            f"std {sample.std:.2f}")


if __name__ == "__main__":
    run_stage(main)
