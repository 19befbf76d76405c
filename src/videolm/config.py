"""The schema of `params.yaml`, and `load_params`, which every stage calls first.

One source of truth: each key's type, default, allowed range and meaning are declared once,
on the pydantic fields below. `params.yaml` holds the values of the tracked runs (equal to
these defaults; a test checks it), and its comments are a summary of the descriptions here.

`python stages/X.py train.lr=0.01` overrides are parsed with Hydra's override grammar, through
its public parser: the grammar `dvc exp run -S train.lr=0.01` uses, so an override means the
same in both. It types values (`0.01` a float, `true` a bool, `null` None), reads lists
(`data.extensions=[mp4,avi]`) and quoting (`data.dir='my videos'`, `data.dir="2024"` a string).
`OmegaConf.from_dotlist` reads values as YAML 1.1 instead, which differs from `-S` (`yes` is a
bool there, `inf` a string), and it takes `train.lr` (no `=`) as null and `train.lr=0.1,0.2` as
a string, where the grammar refuses them. Only the parser is used: no config composition,
nothing written to disk (no `outputs/`, no `.hydra/`).

Every value, from the file or an override, is then checked by the schema: an unknown key
(a typo), a wrong type or a value out of range stops the stage before any work, with one
line naming the key, the value and what is allowed.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from videolm.errors import VideoLMError

if TYPE_CHECKING:
    from hydra.core.override_parser.types import Override

FLOAT32_MAX = 3.4e38  # the optimizer keeps lr and weight decay in float32: larger values cannot be used


class ConfigError(VideoLMError):
    """A parameter has a value the pipeline cannot use; the message names the key."""


def _not_allowed(given: str, rule: str) -> PydanticCustomError:
    """A cross-field rule's error: `given` names the key(s) and value(s) in full."""
    return PydanticCustomError("not_allowed", "{given} is not allowed: {rule}", {"given": given, "rule": rule})


class _Section(BaseModel):
    # strict: no silent conversions (a bool is not an int, "0.1" is not a float; an int is a float).
    model_config = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)


class PathsConfig(_Section):
    """Where each stage writes; `dvc.yaml` reads the same keys (`${paths.frames}`)."""

    samples: str = Field("data/samples", description="folder the sample clips are copied to from the installed `samples` extra")
    frames: str = Field("data/frames", description="decoded gray frames, one file per video")
    patches: str = Field("data/patches.h5", description="patches sampled to fit the codebook")
    codebook: str = Field("data/codebook.h5", description="the k-means centroids")
    codes: str = Field("data/codes", description="every frame encoded as a grid of codes")
    model: str = Field("models/model.pt", description="the trained model's checkpoint")
    decoder: str = Field("models/decoder.pt", description="the trained pixel decoder")
    decoder_without_model: str = Field("models/decoder_without_model.pt",
                                       description="the pixel decoder trained the same way without the model's "
                                                   "inputs (what the model's share is measured against)")
    live: str = Field("dvclive", description="DVCLive's folder (training curves)")
    resume: str = Field("models/.resume/train.pt", description="the train stage's resume state while a run is "
                                                               "under way; not a DVC output (removed when the "
                                                               "run ends)")
    metrics: str = Field("metrics", description="the stages' JSON metrics")
    plots: str = Field("plots", description="pictures and plot data")


class DataConfig(_Section):
    """Which videos, how they are decoded, and how they are split into train/validation/test."""

    dir: str = Field("data/samples", min_length=1, description="folder of videos, searched recursively")
    extensions: list[str] = Field(
        default_factory=lambda: ["mp4", "avi", "mkv", "webm", "mpg", "mpeg", "ogv", "mov", "m4v"],
        description="file extensions taken as videos")
    scale: float = Field(0.5, gt=0, le=4, description="resize factor applied while decoding")
    frame_stride: int = Field(1, ge=1, description="keep every n-th frame")
    max_frames: int = Field(0, ge=0, description="frames per video, after the stride; 0 = all")
    min_size: int = Field(16, ge=11, description="smallest usable frame side in pixels, after scale; smaller videos "
                                                 "are skipped (>= 11: the evaluation's SSIM window)")
    on_error: Literal["skip", "fail"] = Field(
        "skip", description="a video that cannot be used (damaged, truncated, too small, ...): skip = warn, list it "
                            "in metrics/frames.json and go on; fail = stop the stage, naming it")
    split: Literal["auto", "time", "video", "ucf101"] = Field(
        "auto", description="time: the end of each video is validation/test; video: whole videos are; "
                            "ucf101: the official lists; auto: video from min_videos_for_video_split videos on, "
                            "else time")
    ucf101_list: int = Field(1, ge=1, le=3, description="which trainlist0X/testlist0X pair when split=ucf101")
    min_videos_for_video_split: int = Field(10, ge=1, description="split=auto: split by video from this many "
                                                                  "videos on")
    val_fraction: float = Field(0.1, gt=0, lt=1, description="validation share of the frames (time split), "
                                                             "videos (video split) or training groups (ucf101)")
    test_fraction: float = Field(0.2, gt=0, lt=1, description="test share, as val_fraction")

    @model_validator(mode="after")
    def _leaves_training_data(self) -> DataConfig:
        if self.val_fraction + self.test_fraction >= 1:
            raise _not_allowed(f"data.val_fraction={self.val_fraction} + data.test_fraction={self.test_fraction}",
                               "the sum must be < 1 (training data must be left)")
        return self


class PatchesConfig(_Section):
    """The patches the codebook is made of."""

    size: int = Field(8, ge=2, le=64, description="patch side in pixels (paper: 8)")
    stride: int = Field(8, ge=1, description="step between encoded patches, <= size; < size overlaps "
                                             "(averaged on reconstruction)")
    n_train: int = Field(200_000, ge=1, description="patches sampled from training frames to fit the codebook; "
                                                    ">= codebook.k")
    n_heldout: int = Field(20_000, ge=1, description="patches from validation frames for the codebook's PSNR")

    @model_validator(mode="after")
    def _stride_within_patch(self) -> PatchesConfig:
        if self.stride > self.size:
            raise _not_allowed(f"patches.stride={self.stride}", f"must be <= patches.size ({self.size})")
        return self


class CodebookConfig(_Section):
    """k-means over the patches: MiniBatchKMeans (scikit-learn) or full-batch Lloyd (torch)."""

    method: Literal["minibatch", "lloyd"] = Field(
        "minibatch", description="minibatch: scikit-learn's MiniBatchKMeans; lloyd: full-batch Lloyd iterations "
                                 "with the encoder's nearest-centroid search (faster per pass at large k)")
    k: int = Field(1024, ge=2, le=65535, description="centroids (paper: 10000); <= 65535: codes are stored "
                                                     "as uint16")
    batch_size: int = Field(4096, ge=1, description="patches per k-means mini-batch (minibatch only)")
    max_iter: int = Field(20, ge=1, description="passes over the sampled patches (early stopping is off); "
                                                "lloyd: iterations")
    init: Literal["random", "k-means++"] = Field("random", description="centroid initialisation (k-means++ on "
                                                                        "3k points is slow at large k)")
    init_size: int = Field(0, ge=0, description="points used for the init; 0 = 3 * k, else >= k")

    @model_validator(mode="after")
    def _init_size_covers_k(self) -> CodebookConfig:
        if self.init_size != 0 and self.init_size < self.k:
            raise _not_allowed(f"codebook.init_size={self.init_size}", f"must be 0 or >= codebook.k ({self.k})")
        return self


class EncodeConfig(_Section):
    """Encoding every frame as codes."""

    chunk_frames: int = Field(32, ge=1, description="frames encoded at once (bounds memory)")


class ShardConfig(_Section):
    """One machine's part of the videos, for running the data stages on several machines
    (docs/scale-out.md: "Across machines"). A video's shard is a hash of its path relative to `data.dir`:
    it depends on nothing else, so `extract_frames` and `encode` agree on it, and adding a
    video moves no other video to another shard."""

    index: int = Field(0, ge=0, description="which shard this run takes, 0 .. count - 1")
    count: int = Field(1, ge=1, description="number of shards; 1 = all videos (no sharding)")

    @model_validator(mode="after")
    def _index_below_count(self) -> ShardConfig:
        if self.index >= self.count:
            raise _not_allowed(f"shard.index={self.index}", f"must be < shard.count ({self.count})")
        return self

    def takes(self, source: str) -> bool:
        """Whether the video at `source` (its path relative to `data.dir`) is in this shard."""
        return self.count == 1 or shard_of(source, self.count) == self.index


def shard_of(source: str, count: int) -> int:
    """The shard of `count` a video's relative path falls in: the first 8 bytes of its SHA-1,
    modulo `count` (stable across machines and Python versions, unlike `hash`)."""
    return int.from_bytes(hashlib.sha1(source.encode()).digest()[:8], "big") % count


class ModelConfig(_Section):
    """The recurrent network over code grids; checkpoints store it (`ModelConfig(**stored)`)."""

    name: Literal["rcnn", "rnn", "transformer"] = Field(
        "rcnn", description="rcnn: recurrent convolutional network; rnn: no spatial context (1x1 everywhere); "
                            "transformer: local space-time attention (model/transformer.py)")
    embed_dim: int = Field(64, ge=1, description="size of each code's embedding")
    hidden: int = Field(128, ge=1, description="feature maps of the recurrent state (paper: 128)")
    kernel_size: int = Field(3, ge=1, description="odd side of the spatial neighbourhood of each rcnn input "
                                                  "convolution, or of each transformer block's attention; the rnn "
                                                  "model ignores it (always 1x1)")
    input_layers: int = Field(1, ge=1, description="input convolutions before the recurrence")
    nonlinearity: Literal["tanh", "relu", "sigmoid"] = Field("tanh", description="activation of every layer")
    head: Literal["independent", "tied", "atom"] = Field(
        "atom", description="output layer: independent weights, tied to the embedding, or from the centroids "
                            "(centroids)")
    dropout: float = Field(0.3, ge=0, lt=1, description="on the features before the output layer (transformer: "
                                                         "and on every block's attention and MLP outputs)")
    layers: int = Field(2, ge=1, description="transformer: blocks of time attention, space attention and MLP")
    heads: int = Field(4, ge=1, description="transformer: attention heads (model.hidden divisible by it)")
    context_frames: int = Field(4, ge=1, description="transformer: frames each block's time attention reads, the "
                                                     "current one included (their keys and values are kept "
                                                     "between steps)")

    @field_validator("kernel_size")
    @classmethod
    def _odd(cls, size: int) -> int:
        if size % 2 == 0:
            raise PydanticCustomError("odd", "Input should be an odd number")
        return size

    @model_validator(mode="after")
    def _heads_divide_hidden(self) -> ModelConfig:
        if self.name == "transformer" and self.hidden % self.heads:
            raise _not_allowed(f"model.hidden={self.hidden} with model.heads={self.heads}",
                               "model.hidden must be divisible by model.heads")
        return self


class TrainConfig(_Section):
    """Training on random crops of the training codes."""

    epochs: int = Field(30, ge=1, description="epochs of steps_per_epoch steps")
    steps_per_epoch: int = Field(100, ge=1, description="optimizer steps per epoch")
    batch_size: int = Field(16, ge=1, description="crops per step")
    crop: int = Field(8, ge=1, description="side of the random spatial crop, in code cells")
    bptt: int = Field(8, ge=1, description="time steps per crop (truncated back-propagation through time)")
    full_context: bool = Field(False, description="score only crop cells that see their whole neighbourhood "
                                                  "(the crop grows to fit)")
    reverse_time: bool = Field(True, description="augmentation: play half the crops backwards")
    mirror: bool = Field(False, description="augmentation: mirror half the crops left-right (codes remapped)")
    own_predictions: float = Field(
        0.0, ge=0, lt=1, description="the fraction of the input cells of every crop frame after the first replaced "
                                     "by a code drawn from the model's own prediction for it (parallel scheduled "
                                     "sampling, Duckworth et al. 2019), so that it learns to go on from its own "
                                     "output as in generation; the targets stay the true codes, and the training "
                                     "loss is that of the mixed inputs; 0 = off")
    own_passes: int = Field(1, ge=1, description="with own_predictions > 0: prediction passes, each drawing from the "
                                                 "inputs the one before mixed, so that predictions of predictions "
                                                 "(up to own_passes steps ahead) are seen")
    optimizer: Literal["adam", "adamw", "sgd"] = Field("adam", description="the optimizer")
    lr: float = Field(2e-3, gt=0, le=FLOAT32_MAX, description="learning rate (the peak, with schedule=cosine)")
    schedule: Literal["cosine", "constant"] = Field("cosine", description="learning-rate schedule")
    weight_decay: float = Field(0.0, ge=0, le=FLOAT32_MAX, description="weight decay of the optimizer")
    grad_clip: float = Field(1.0, ge=0, description="clip the gradient norm to this; 0 = off")
    patience: int = Field(0, ge=0, description="stop after this many epochs without a better validation loss; "
                                               "0 = off")
    threads: int = Field(0, ge=0, description="torch CPU threads; 0 = torch's default")
    checkpoint_every: int = Field(0, ge=0, description="also save the resume state every this many steps; "
                                                       "0 = only at epoch ends")
    precision: Literal["fp32", "bf16"] = Field(
        "fp32", description="bf16: bfloat16 autocast of the model's matmuls and convolutions, CUDA only (the loss "
                            "head stays fp32); on CPUs it is many times slower")
    compile: bool = Field(False, description="torch.compile the model (the first steps compile it)")
    processes: int = Field(1, ge=1, description="training processes on this machine, started by torchrun "
                                                "(DistributedDataParallel: gloo on the CPU, nccl on CUDA), each "
                                                "with 1/processes of every batch; 1 = one plain python process")
    loader_workers: int = Field(0, ge=0, description="DataLoader worker processes reading crops from the code "
                                                     "files; 0 = read in the training process")
    val_videos: int = Field(0, ge=0, description="validation videos scored after each epoch: a fixed subset drawn "
                                                 "with the seed; 0 = all (at UCF-101 scale a full pass costs more "
                                                 "than an epoch on a CPU)")
    val_batch_videos: int = Field(1, ge=1, description="validation videos of one grid size scored together in one "
                                                       "forward pass, as eval.batch_videos (the same loss whatever "
                                                       "the value on a CPU): 1 on a CPU, 16 or more on a GPU")

    @model_validator(mode="after")
    def _own_predictions_need_two_frames(self) -> TrainConfig:
        if self.own_predictions and self.bptt < 2:
            raise _not_allowed(f"train.own_predictions={self.own_predictions} with train.bptt={self.bptt}",
                               "only input frames after a crop's first are replaced: bptt must be >= 2")
        return self

    @model_validator(mode="after")
    def _batch_shared_by_processes(self) -> TrainConfig:
        if self.batch_size % self.processes:
            raise _not_allowed(f"train.batch_size={self.batch_size} with train.processes={self.processes}",
                               "the batch is shared equally by the processes: it must be divisible by them")
        return self


class DecoderConfig(_Section):
    """The pixel decoder on top of the trained model (`pixel_decoder.py`), trained on the model's
    own rollouts over random crops of training frames."""

    width: int = Field(64, ge=1, description="feature maps of the decoder's convolutions")
    steps: int = Field(600, ge=1, description="optimizer steps")
    batch_size: int = Field(8, ge=1, description="crops per step (each gives `horizon` extrapolated frames and "
                                                 "`fills` filled ones)")
    crop: int = Field(12, ge=1, description="side of the random spatial crop, in code cells")
    context: int = Field(2, ge=1, description="real frames the model sees before it rolls out (as eval.context)")
    horizon: int = Field(10, ge=1, description="frames rolled out per crop (as eval.horizon)")
    fills: int = Field(4, ge=1, description="frames filled per crop, one after the other from the first predicted "
                                            "one, each between its real neighbours and predicted by the model from "
                                            "the `context` real frames before it (as evaluate fills)")
    lr: float = Field(2e-3, gt=0, le=FLOAT32_MAX, description="Adam learning rate (the peak of a cosine schedule)")
    gdl_weight: float = Field(1.0, ge=0, description="weight of the gradient difference loss beside L1; 0 = L1 only")
    motion: Literal["none", "frames", "flow"] = Field(
        "flow", description="the real frames' motion the decoder sees beside the model's prediction: none; frames = "
                            "the real frame before the last too (a warp can be learned); flow = that and the "
                            "optical-flow estimate of the frame (extrapolated; filling: interpolated, with where "
                            "its two warps disagree), which is then its starting point")
    motion_weight: float = Field(4.0, ge=0, description="L1 weight of the moving pixels (those that differ from the "
                                                        "last real frame by eval.motion_threshold), beside 1 for the "
                                                        "others: copying the still background is not the easy optimum")
    select: Literal["moving_psnr", "loss"] = Field(
        "moving_psnr", description="the validation figure each task's kept weights (extrapolating, filling) are best "
                                   "by: the PSNR of that task's frames on moving pixels (what the decoder is for), or "
                                   "the training loss")
    val_every: int = Field(100, ge=1, description="steps between validations; the best weights are kept")
    threads: int = Field(0, ge=0, description="torch CPU threads; 0 = torch's default")
    loader_workers: int = Field(0, ge=0, description="DataLoader worker processes reading the training crops and "
                                                     "computing their optical flow; 0 = in the training process. "
                                                     "The decoder is the same bytes whatever the value")


class EvalConfig(_Section):
    """Evaluation on test clips: prediction, generation and filling."""

    context: int = Field(2, ge=1, description="real frames the model sees before it generates (paper: 2)")
    horizon: int = Field(10, ge=1, description="frames generated by feeding back its own output (paper: 10)")
    temperature: float = Field(0.0, ge=0, description="0 = argmax codes; > 0 = sample at this temperature (seeded)")
    top_k: int = Field(0, ge=0, description="sampling: draw from the top_k most likely codes at each location; 0 = all")
    draws: int = Field(1, ge=1, description="sampling: rollouts of each test clip, their frames averaged (codes "
                                            "decoded, and the decoder's)")
    motion_threshold: float = Field(
        10.0, ge=0, description="gray levels: moving pixels differ this much from the last context frame")
    clip_stride: int = Field(4, ge=0, description="frames between test clip starts; 0 = context + horizon")
    fill_candidates: int = Field(
        4, ge=1, description="filling: most likely codes tried per location (plus frame t+1's code)")
    fill_sweeps: int = Field(2, ge=0, description="filling: passes of iterated conditional modes; 0 = forward only")
    clips: int = Field(0, ge=0, description="test clips of generation, filling and the flow baseline: a fixed "
                                            "subset drawn with the seed (in the clips' order); 0 = every clip "
                                            "(the perplexity always scores every test frame)")
    batch_videos: int = Field(1, ge=1, description="test videos of one grid size scored together in one forward "
                                                   "pass, 8 frames at a time, their logits held at once (the scores "
                                                   "are the same whatever the value): 1 on a CPU, 16 or more on a GPU")
    n_pictures: int = Field(3, ge=1, description="test clips shown in the pictures")
    threads: int = Field(1, ge=0, description="torch CPU threads; 0 = torch's default")

    @model_validator(mode="after")
    def _sampling_needs_a_temperature(self) -> EvalConfig:
        if (self.top_k or self.draws > 1) and self.temperature == 0:
            raise _not_allowed(f"eval.top_k={self.top_k}, eval.draws={self.draws} with eval.temperature=0",
                               "argmax rollouts are all the same: set eval.temperature > 0 to sample")
        return self


class Params(_Section):
    """All of `params.yaml`."""

    seed: int = Field(0, ge=0, le=2**32 - 1, description="seeds patch sampling, k-means, splits, crops and "
                                                         "weights (a 32-bit seed)")
    workers: int = Field(0, ge=0, description="worker processes of the extract_frames, sample_patches and encode stages, each "
                                              "working on one video at a time with one torch thread; 0 = one "
                                              "per available core (the default), 1 = none (in the "
                                              "stage's own process). The outputs are the same bytes whatever the "
                                              "value")
    device: Literal["cpu", "cuda", "auto"] = Field(
        "cpu", description="where the tensor work of fit_codebook (lloyd), encode, train, train_decoder, evaluate "
                           "and `videolm predict` runs: cpu (the default, and the tested path), cuda, or auto = CUDA "
                           "when present. encode's codes and lloyd's centroids are the same bytes on either")
    shard: ShardConfig = Field(default_factory=ShardConfig)
    paths: PathsConfig = Field(default_factory=PathsConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    patches: PatchesConfig = Field(default_factory=PatchesConfig)
    codebook: CodebookConfig = Field(default_factory=CodebookConfig)
    encode: EncodeConfig = Field(default_factory=EncodeConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    decoder: DecoderConfig = Field(default_factory=DecoderConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)

    @model_validator(mode="after")
    def _enough_patches_for_k(self) -> Params:
        if self.patches.n_train < self.codebook.k:
            raise _not_allowed(f"patches.n_train={self.patches.n_train}", f"must be >= codebook.k ({self.codebook.k})")
        return self

    @model_validator(mode="after")
    def _patches_fit_every_kept_video(self) -> Params:
        """Extraction keeps only videos of at least `data.min_size` pixels a side: then every
        kept video holds a patch, and no stage after extraction fails on a small one."""
        if self.patches.size > self.data.min_size:
            raise _not_allowed(f"patches.size={self.patches.size}", f"must be <= data.min_size ({self.data.min_size}), "
                                                                    f"the smallest frame side extraction keeps")
        return self


def load_params(root: str | Path = ".", overrides: list[str] | None = None) -> Params:
    """`<root>/params.yaml` with `key=value` overrides applied, checked against the schema."""
    path = Path(root) / "params.yaml"
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except yaml.MarkedYAMLError as err:
        raise ConfigError(f"{path}:{err.problem_mark.line + 1}: {err.problem}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected keys and values, found {type(raw).__name__}")
    for override in _parse_overrides(overrides or []):
        _apply(raw, override)
    try:
        return Params.model_validate(raw)
    except ValidationError as err:
        raise ConfigError("; ".join(_describe(error) for error in err.errors())) from None


def _parse_overrides(texts: list[str]) -> list[Override]:
    # Hydra is imported here, when there are overrides to read: the schema alone needs no Hydra
    # (benchmarks/device_check.py runs on machines without it).
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    parser = OverridesParser.create()
    parsed = []
    for text in texts:
        try:
            [override] = parser.parse_overrides([text])
        except OverrideParseException:
            raise ConfigError(f"override {text!r}: expected key=value (Hydra's override grammar, "
                              f"as dvc exp run -S)") from None
        if override.is_delete() or override.is_sweep_override() or override.package is not None:
            raise ConfigError(f"override {text!r}: expected key=value (one value: no sweep, ~ or @package)")
        parsed.append(override)
    return parsed


def _apply(raw: dict, override: Override) -> None:
    """Set the override's value at its dotted key; the schema then judges key and value."""
    *sections, name = override.key_or_group.split(".")
    node = raw
    for section in sections:
        node = node.setdefault(section, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{override.key_or_group}: no such key (a typo?)")
    node[name] = override.value()


def _describe(error) -> str:
    """One pydantic error as `key=value is not allowed: what is allowed`."""
    key = ".".join(str(part) for part in error["loc"])
    if error["type"] == "extra_forbidden":
        return f"{key}: no such key (a typo?)"
    if error["type"] == "not_allowed":  # a cross-field rule: its message names the keys
        return error["msg"]
    return f"{key}={error['input']!r} is not allowed: {error['msg']}"
