"""Stage `sample_patches`: random patches of training frames, divided by the training std."""

from videolm.cli import run_stage
from videolm.frames import check_patch_fits, list_frames
from videolm.io import atomic_path, create_h5, h5_dataset, write_attrs
from videolm.patches import sample_training_patches


def main(params) -> None:
    p = params.patches
    videos = list_frames(params.paths.frames)
    check_patch_fits(videos, p.size)
    train, heldout, std = sample_training_patches(videos, p.n_train, p.n_heldout, p.size, params.seed)
    with atomic_path(params.paths.patches) as tmp, create_h5(tmp) as f:
        h5_dataset(f, "train", train)
        h5_dataset(f, "heldout", heldout)
        write_attrs(f, {"std": std, "patch_size": p.size})
    print(f"{len(train)} training and {len(heldout)} held-out {p.size}x{p.size} patches, std {std:.2f}")


if __name__ == "__main__":
    run_stage(main)
