"""The typed schema of `params.yaml`.

Every stage loads `params.yaml` through `load_params`, which composes it with Hydra (so
`python stages/X.py train.lr=0.01` overrides work), merges it into the dataclasses below
(so a typo'd key or a wrong type in the file or in an override fails with the key named),
and then checks the values against what the pipeline can do (`Params.validate`).
A stage therefore stops before any work with one line naming the key, the value and
what is allowed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from videolm.errors import VideoLMError


class ConfigError(VideoLMError):
    """A parameter has a value the pipeline cannot use; the message names the key."""


@dataclass
class PathsConfig:
    """Where each stage writes; `dvc.yaml` reads the same keys (`${paths.frames}`)."""

    samples: str = "data/samples"
    frames: str = "data/frames"
    patches: str = "data/patches.h5"
    codebook: str = "data/codebook.h5"
    codes: str = "data/codes"
    model: str = "models/model.pt"
    live: str = "dvclive"
    metrics: str = "metrics"
    plots: str = "plots"


@dataclass
class DataConfig:
    dir: str = "data/samples"  # folder of videos (searched recursively)
    extensions: list[str] = field(
        default_factory=lambda: ["mp4", "avi", "mkv", "webm", "mpg", "mpeg", "ogv", "mov", "m4v"]
    )
    scale: float = 0.5  # resize factor applied while decoding
    frame_stride: int = 1  # keep every n-th frame
    max_frames: int = 0  # per video, after the stride; 0 = all
    split: str = "auto"  # auto | time | video | ucf101
    ucf101_list: int = 1  # which trainlist0X/testlist0X pair when split=ucf101
    min_videos_for_video_split: int = 10  # auto: split by video from this many videos on
    val_fraction: float = 0.1
    test_fraction: float = 0.2


@dataclass
class PatchesConfig:
    size: int = 8  # patch side in pixels
    stride: int = 8  # step between patch positions when encoding; < size overlaps
    n_train: int = 200_000  # patches sampled from training frames to fit the codebook
    n_heldout: int = 20_000  # held-out patches (other frames) for the codebook's PSNR


@dataclass
class CodebookConfig:
    k: int = 1024
    batch_size: int = 4096
    max_iter: int = 20  # passes over the sampled patches
    init: str = "random"  # random | k-means++
    init_size: int = 0  # points used for the init; 0 = 3 * k


@dataclass
class EncodeConfig:
    chunk_frames: int = 32  # frames encoded at once (bounds memory)


@dataclass
class ModelConfig:
    name: str = "rcnn"  # rcnn | rnn (rnn: no spatial context, 1x1 everywhere)
    embed_dim: int = 64
    hidden: int = 128  # feature maps of the recurrent state
    kernel_size: int = 3  # rcnn: spatial neighbourhood of each input conv
    input_layers: int = 1  # rcnn: input convolutions before the recurrence
    nonlinearity: str = "tanh"  # tanh | relu | sigmoid
    head: str = "atom"  # independent | tied | atom
    dropout: float = 0.0


@dataclass
class TrainConfig:
    epochs: int = 20
    steps_per_epoch: int = 100
    batch_size: int = 16
    crop: int = 8  # side of the random spatial crop, in code cells
    bptt: int = 8  # time steps per crop (truncated back-propagation through time)
    reverse_time: bool = False  # augmentation: play half the crops backwards
    mirror: bool = False  # augmentation: mirror half the crops left-right (codes remapped)
    optimizer: str = "adam"  # adam | adamw | sgd
    lr: float = 2e-3
    schedule: str = "cosine"  # cosine | constant
    weight_decay: float = 0.0
    grad_clip: float = 1.0  # 0 = off
    patience: int = 0  # stop after this many epochs without a better validation loss; 0 = off
    threads: int = 0  # torch CPU threads; 0 = torch's default


@dataclass
class EvalConfig:
    context: int = 2  # real frames given before the predicted one (pictures)
    horizon: int = 1
    n_pictures: int = 3  # test clips shown in the picture strip


@dataclass
class Params:
    seed: int = 0
    paths: PathsConfig = field(default_factory=PathsConfig)
    data: DataConfig = field(default_factory=DataConfig)
    patches: PatchesConfig = field(default_factory=PatchesConfig)
    codebook: CodebookConfig = field(default_factory=CodebookConfig)
    encode: EncodeConfig = field(default_factory=EncodeConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def validate(self) -> "Params":
        """Check values against what the pipeline can do; raise ConfigError naming the key."""
        d, p, c, m, t, e = self.data, self.patches, self.codebook, self.model, self.train, self.eval
        _check("data.dir", d.dir, bool(d.dir), "a folder of videos")
        _check("data.scale", d.scale, 0 < d.scale <= 4, "a factor in (0, 4]")
        _check("data.frame_stride", d.frame_stride, d.frame_stride >= 1, ">= 1")
        _check("data.max_frames", d.max_frames, d.max_frames >= 0, ">= 0 (0 = all)")
        _one_of("data.split", d.split, ["auto", "time", "video", "ucf101"])
        _check("data.ucf101_list", d.ucf101_list, d.ucf101_list in (1, 2, 3), "1, 2 or 3")
        for key, value in [("data.val_fraction", d.val_fraction), ("data.test_fraction", d.test_fraction)]:
            _check(key, value, 0 < value < 1, "a fraction in (0, 1)")
        _check("data.test_fraction", d.test_fraction, d.val_fraction + d.test_fraction < 1,
               "val_fraction + test_fraction < 1")
        _check("patches.size", p.size, 2 <= p.size <= 64, "2..64 pixels")
        _check("patches.stride", p.stride, 1 <= p.stride <= p.size, f"1..patches.size ({p.size})")
        _check("codebook.k", c.k, 2 <= c.k <= 65535, "2..65535 (codes are stored as uint16)")
        _check("patches.n_train", p.n_train, p.n_train >= c.k, f">= codebook.k ({c.k})")
        _check("patches.n_heldout", p.n_heldout, p.n_heldout >= 1, ">= 1")
        _check("codebook.batch_size", c.batch_size, c.batch_size >= 1, ">= 1")
        _check("codebook.max_iter", c.max_iter, c.max_iter >= 1, ">= 1")
        _one_of("codebook.init", c.init, ["random", "k-means++"])
        _check("codebook.init_size", c.init_size, c.init_size == 0 or c.init_size >= c.k, f"0 or >= codebook.k ({c.k})")
        _check("encode.chunk_frames", self.encode.chunk_frames, self.encode.chunk_frames >= 1, ">= 1")
        _one_of("model.name", m.name, ["rcnn", "rnn"])
        _one_of("model.nonlinearity", m.nonlinearity, ["tanh", "relu", "sigmoid"])
        _one_of("model.head", m.head, ["independent", "tied", "atom"])
        for key, value in [("model.embed_dim", m.embed_dim), ("model.hidden", m.hidden),
                           ("model.input_layers", m.input_layers)]:
            _check(key, value, value >= 1, ">= 1")
        _check("model.kernel_size", m.kernel_size, m.kernel_size >= 1 and m.kernel_size % 2 == 1, "an odd size >= 1")
        _check("model.dropout", m.dropout, 0 <= m.dropout < 1, "in [0, 1)")
        for key, value in [("train.epochs", t.epochs), ("train.steps_per_epoch", t.steps_per_epoch),
                           ("train.batch_size", t.batch_size), ("train.crop", t.crop), ("train.bptt", t.bptt)]:
            _check(key, value, value >= 1, ">= 1")
        _one_of("train.optimizer", t.optimizer, ["adam", "adamw", "sgd"])
        _one_of("train.schedule", t.schedule, ["cosine", "constant"])
        _check("train.lr", t.lr, t.lr > 0, "> 0")
        for key, value in [("train.weight_decay", t.weight_decay), ("train.grad_clip", t.grad_clip),
                           ("train.patience", t.patience), ("train.threads", t.threads)]:
            _check(key, value, value >= 0, ">= 0")
        _check("eval.context", e.context, e.context >= 1, ">= 1")
        _check("eval.horizon", e.horizon, e.horizon >= 1, ">= 1")
        _check("eval.n_pictures", e.n_pictures, e.n_pictures >= 1, ">= 1")
        return self


def _check(key: str, value, ok: bool, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value!r} is not allowed: expected {allowed}")


def _one_of(key: str, value, choices: list[str]) -> None:
    _check(key, value, value in choices, "one of " + ", ".join(choices))


def load_params(root: str | Path = ".", overrides: list[str] | None = None) -> Params:
    """Compose `<root>/params.yaml` with Hydra overrides, type-check it and validate it."""
    root = Path(root).resolve()
    if not (root / "params.yaml").is_file():
        raise ConfigError(f"params.yaml not found in {root}")
    try:
        with initialize_config_dir(config_dir=str(root), version_base=None):
            raw = compose(config_name="params", overrides=list(overrides or []))
        merged = OmegaConf.merge(OmegaConf.structured(Params), raw)
        params = OmegaConf.to_object(merged)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None)
        message = str(err).splitlines()[0]
        raise ConfigError(f"params.yaml: {key}: {message}" if key else f"params.yaml: {message}") from None
    except HydraException as err:
        raise ConfigError(f"params.yaml: {str(err).splitlines()[0]}") from None
    return params.validate()


def as_dict(params) -> dict:
    """Plain nested dict of a config dataclass (for checkpoints and reports)."""
    return dataclasses.asdict(params)
