"""`load_params`: composing params.yaml, type checks and value checks, all naming the key."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from videolm.config import ConfigError, Params, as_dict, load_params

PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"


@pytest.fixture
def root(tmp_path) -> Path:
    shutil.copy(PARAMS, tmp_path / "params.yaml")
    return tmp_path


def edit(root: Path, old: str, new: str) -> None:
    path = root / "params.yaml"
    text = path.read_text()
    assert old in text, f"{old!r} not in params.yaml (the test needs updating)"
    path.write_text(text.replace(old, new, 1))


def test_defaults_load(root):
    params = load_params(root)
    assert isinstance(params, Params)
    assert params.patches.size == 8 and params.patches.stride == 8
    assert isinstance(params.codebook.k, int) and params.codebook.k >= 2
    assert "mp4" in params.data.extensions
    assert params.model.head in ("independent", "tied", "atom")
    assert as_dict(params)["train"]["lr"] == params.train.lr


def test_override_applies(root):
    params = load_params(root, ["codebook.k=16", "train.lr=0.5", "data.split=time", "patches.n_train=100"])
    assert params.codebook.k == 16
    assert params.train.lr == 0.5
    assert params.data.split == "time"


def test_missing_params_file(tmp_path):
    with pytest.raises(ConfigError, match="params.yaml"):
        load_params(tmp_path)


@pytest.mark.parametrize("old, new, key", [
    ("  lr: 0.002", "  lrr: 0.002", r"train\.lrr"),  # a typo'd key
    ("seed: 0", "seed: 0\nsed: 1", "sed"),  # an unknown top-level key
    ("  k: 1024", "  k: abc", r"codebook\.k"),  # a wrong type
])
def test_bad_file_names_key(root, old, new, key):
    edit(root, old, new)
    with pytest.raises(ConfigError, match=key):
        load_params(root)


@pytest.mark.parametrize("override, key", [
    ("train.lrr=0.1", r"train\.lrr"),  # Hydra refuses a key that is not in the file
    ("+train.lrr=0.1", r"train\.lrr"),  # added with +: the schema refuses it
    ("codebook.k=abc", r"codebook\.k"),
    ("data.scale=big", r"data\.scale"),
    ("codebook.k=0", r"codebook\.k"),
    ("codebook.k=70000", r"codebook\.k"),
    ("patches.stride=9", r"patches\.stride"),
    ("patches.stride=0", r"patches\.stride"),
    ("data.split=bogus", r"data\.split"),
    ("model.kernel_size=2", r"model\.kernel_size"),
    ("model.head=softmax", r"model\.head"),
    ("train.lr=0", r"train\.lr"),
    ("data.test_fraction=0", r"data\.test_fraction"),
    ("codebook.init=kmeans", r"codebook\.init"),
])
def test_bad_override_names_key(root, override, key):
    with pytest.raises(ConfigError, match=key):
        load_params(root, [override])


def test_fractions_must_leave_training(root):
    with pytest.raises(ConfigError, match=r"data\.test_fraction"):
        load_params(root, ["data.val_fraction=0.5", "data.test_fraction=0.5"])


def test_n_train_must_cover_k(root):
    with pytest.raises(ConfigError, match=r"patches\.n_train"):
        load_params(root, ["codebook.k=64", "patches.n_train=10"])


def test_impossible_value_in_file_names_key(root):
    edit(root, "  stride: 8", "  stride: 16")
    with pytest.raises(ConfigError, match=r"patches\.stride=16"):
        load_params(root)
