"""`load_params`: params.yaml against the schema, overrides in Hydra's grammar, one-line errors naming the key."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from videolm.config import ConfigError, EvalConfig, ModelConfig, Params, load_params

PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"


@pytest.fixture
def root(tmp_path) -> Path:
    shutil.copy(PARAMS, tmp_path / "params.yaml")
    return tmp_path


def edit(root: Path, old: str, new: str) -> None:
    path = root / "params.yaml"
    text = path.read_text()
    assert text.count(old) == 1, f"{old!r} not once in params.yaml (the test needs updating)"
    path.write_text(text.replace(old, new))


def test_params_yaml_holds_the_schema_defaults():
    """The committed values and the schema's defaults are one and the same."""
    assert yaml.safe_load(PARAMS.read_text()) == Params().model_dump()
    assert load_params(PARAMS.parent) == Params()


def test_the_ucf101_profile_is_a_complete_valid_params_file(tmp_path):
    """`cp profiles/ucf101.yaml params.yaml` selects the paper's setting: every key is there (dvc.yaml
    interpolates some), the schema accepts it, and it differs from params.yaml on exactly the lines
    it marks `# ucf101`."""
    profile = PARAMS.parent / "profiles/ucf101.yaml"
    shutil.copy(profile, tmp_path / "params.yaml")
    params = load_params(tmp_path)
    raw = yaml.safe_load(profile.read_text())
    assert raw == params.model_dump()  # complete: nothing left to a default

    def flat(tree: dict, prefix: str = "") -> dict:
        out = {}
        for key, value in tree.items():
            out.update(flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value})
        return out

    changed = {key for key, value in flat(raw).items() if flat(Params().model_dump())[key] != value}
    marked = {line.split(":")[0].strip() for line in profile.read_text().splitlines()
              if "# ucf101" in line and not line.startswith("#")}
    assert {key.split(".")[-1] for key in changed} == marked
    assert (params.data.split, params.data.scale, params.codebook.k, params.model.hidden) == ("ucf101", 1.0, 10000, 128)


def test_good_overrides_apply(root):
    params = load_params(root, ["train.lr=0.01", "data.extensions=[mp4,avi]", "data.dir='my videos'",
                                "codebook.k=16", "train.weight_decay=1", "train.mirror=true"])
    assert params.train.lr == 0.01
    assert params.data.extensions == ["mp4", "avi"]
    assert params.data.dir == "my videos"
    assert params.codebook.k == 16
    assert params.train.weight_decay == 1.0 and isinstance(params.train.weight_decay, float)  # an int is a float
    assert params.train.mirror is True


def test_model_config_round_trips():
    """Checkpoints store `model_dump()` and rebuild with `ModelConfig(**stored)`."""
    cfg = ModelConfig(name="rnn", embed_dim=8, hidden=12, head="tied")
    assert ModelConfig(**cfg.model_dump()) == cfg


@pytest.mark.parametrize("override, message", [
    ("train.lrr=0.1", "train.lrr: no such key (a typo?)"),
    ("+train.lrr=0.1", "train.lrr: no such key (a typo?)"),
    ("tran.lr=0.1", "tran: no such key (a typo?)"),
    ("seed.x=1", "seed.x: no such key (a typo?)"),
    ("codebook.k=abc", "codebook.k='abc' is not allowed: Input should be a valid integer"),
    ("codebook.k=16.0", "codebook.k=16.0 is not allowed: Input should be a valid integer"),
    ("train.epochs=true", "train.epochs=True is not allowed: Input should be a valid integer"),
    ("train.lr=fast", "train.lr='fast' is not allowed: Input should be a valid number"),
    ("train.lr=inf", "train.lr=inf is not allowed: Input should be a finite number"),
    ("train.lr=nan", "train.lr=nan is not allowed: Input should be a finite number"),
    ("train.weight_decay=inf", "train.weight_decay=inf is not allowed: Input should be a finite number"),
    ("train.lr=0", "train.lr=0 is not allowed: Input should be greater than 0"),
    ("seed=-1", "seed=-1 is not allowed: Input should be greater than or equal to 0"),
    ("seed=4294967296", "seed=4294967296 is not allowed: Input should be less than or equal to 4294967295"),
    ("codebook.k=0", "codebook.k=0 is not allowed: Input should be greater than or equal to 2"),
    ("codebook.k=70000", "codebook.k=70000 is not allowed: Input should be less than or equal to 65535"),
    ("data.split=bogus", "data.split='bogus' is not allowed: Input should be 'auto', 'time', 'video' or 'ucf101'"),
    ("data.extensions=[mp4,5]", "data.extensions.1=5 is not allowed: Input should be a valid string"),
    ("model.kernel_size=2", "model.kernel_size=2 is not allowed: Input should be an odd number"),
    ("patches.stride=9", "patches.stride=9 is not allowed: must be <= patches.size (8)"),
    ("codebook.init_size=10", "codebook.init_size=10 is not allowed: must be 0 or >= codebook.k (1024)"),
    ("patches.n_train=10", "patches.n_train=10 is not allowed: must be >= codebook.k (1024)"),
    ("patches.size=32", "patches.size=32 is not allowed: must be <= data.min_size (16)"),
    ("data.test_fraction=0.9", "data.val_fraction=0.1 + data.test_fraction=0.9 is not allowed: the sum must be < 1"),
    ("train.lr", "override 'train.lr': expected key=value"),
    ("train.lr=0.1,0.2", "override 'train.lr=0.1,0.2': expected key=value (one value"),
    ("~train.lr", "override '~train.lr': expected key=value (one value"),
])
def test_bad_override_is_one_line_naming_it(root, override, message):
    with pytest.raises(ConfigError) as err:
        load_params(root, [override])
    assert str(err.value).startswith(message)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("old, new, message", [
    ("  lr: 0.002\n", "  lrr: 0.002\n", "train.lrr: no such key (a typo?)"),
    ("seed: 0 ", "sed: 0 ", "sed: no such key (a typo?)"),
    ("  k: 1024", "  k: abc", "codebook.k='abc' is not allowed: Input should be a valid integer"),
    ("  lr: 0.002\n", "  lr: .nan\n", "train.lr=nan is not allowed: Input should be a finite number"),
    ("  weight_decay: 0.0", "  weight_decay: .inf", "train.weight_decay=inf is not allowed: Input should be a finite"),
    ("  stride: 8", "  stride: 16", "patches.stride=16 is not allowed: must be <= patches.size (8)"),
])
def test_bad_file_is_one_line_naming_the_key(root, old, new, message):
    edit(root, old, new)
    with pytest.raises(ConfigError) as err:
        load_params(root)
    assert str(err.value).startswith(message)


def test_yaml_syntax_error_names_file_and_line(root):
    edit(root, "  lr: 0.002\n", "  lr: 0.002: oops\n")
    line = 1 + (root / "params.yaml").read_text().splitlines().index("  lr: 0.002: oops")
    with pytest.raises(ConfigError, match=rf"params\.yaml:{line}: mapping values are not allowed here$"):
        load_params(root)


def test_missing_params_file(tmp_path):
    with pytest.raises(ConfigError, match=r"params\.yaml: no such file"):
        load_params(tmp_path)


def test_learning_rate_must_fit_the_optimizer(root):
    """Adam keeps lr in float32: a larger value would crash mid-training with a traceback."""
    with pytest.raises(ConfigError, match=r"^train.lr=1e\+300 is not allowed: Input should be less than or equal to"):
        load_params(root, ["train.lr=1e300"])


def test_sampling_settings_need_a_temperature():
    with pytest.raises(ValidationError, match="set eval.temperature > 0 to sample"):
        EvalConfig(draws=2)
    with pytest.raises(ValidationError, match="eval.top_k=5"):
        EvalConfig(top_k=5)
    assert EvalConfig(temperature=1.0, top_k=5, draws=4).draws == 4
