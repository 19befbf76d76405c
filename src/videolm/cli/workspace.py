"""A workspace: the folder where `dvc repro` ran, holding `params.yaml` and the pipeline's outputs."""

from __future__ import annotations

from pathlib import Path

from videolm.config import Params, load_params
from videolm.errors import VideoLMError


def load_workspace_params(workspace: Path) -> Params:
    """The workspace's params, or one line saying what a workspace is and how to name one."""
    if not (workspace / "params.yaml").is_file():
        raise VideoLMError(f"{workspace.resolve()}: not a videolm workspace (no params.yaml): run the command in "
                           f"the folder where `dvc repro` ran, or name that folder with --workspace DIR")
    return load_params(workspace, [])
