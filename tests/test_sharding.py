"""Sharding the data stages across machines (docs/scale-out.md: "Across machines"): the `shard` params,
which videos a shard takes, shards writing the unsharded run's bytes, the split they agree on,
the readers taking every shard together (and refusing an incomplete set), and, slow, the
the `foreach` snippet of docs/scale-out.md and commands run with two clones and a local DVC remote."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
import shutil
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from conftest import moving_frames, write_video

from videolm.codes.encoding import shard_videos
from videolm.codes.grids import load_code_grids
from videolm.config import (
    ConfigError,
    DataConfig,
    Params,
    PatchesConfig,
    PathsConfig,
    ShardConfig,
    load_params,
    shard_of,
)
from videolm.data.extract import extract_frames
from videolm.data.frames import list_frames
from videolm.data.video import find_videos
from videolm.errors import VideoError, VideoLMError
from videolm.io import OutputError, ShardRecord, guard_outputs, read_shard_record, write_shard_record

ROOT = Path(__file__).resolve().parents[1]
EXTS = DataConfig().extensions
N_SHARDS = 3


def digests(folder: Path, pattern: str = "*.h5") -> dict[str, str]:
    """md5 of every `pattern` file under `folder` (shard folders included), by file name."""
    return {path.name: hashlib.md5(path.read_bytes()).hexdigest() for path in sorted(folder.rglob(pattern))}


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    """Six short real videos; with 3 shards, shard 0 takes v1 and v4, 1 v0, v2 and v5, 2 v3."""
    src = tmp_path_factory.mktemp("videos")
    for i in range(6):
        write_video(src / f"v{i}.mp4", moving_frames(seed=i, n_frames=4))
    return src


def data_config(src: Path, split: str = "video", **cfg) -> DataConfig:
    return DataConfig(dir=str(src), scale=0.5, split=split, val_fraction=0.2, test_fraction=0.2, **cfg)


def extract_shards(src: Path, out: Path, cfg: DataConfig, count: int = N_SHARDS):
    """Every shard of `count`, each to `out/shard-<i>` as the stages of docs/scale-out.md do; their results."""
    listed = find_videos(src, EXTS)
    return [extract_frames(listed, out / f"shard-{i}", cfg, seed=0, shard=ShardConfig(index=i, count=count))
            for i in range(count)]


@pytest.fixture(scope="module")
def runs(videos, tmp_path_factory) -> Path:
    """An unsharded extraction (`all`) and a sharded one (`sharded/shard-<i>`), split by video."""
    out = tmp_path_factory.mktemp("runs")
    cfg = data_config(videos)
    extract_frames(find_videos(videos, EXTS), out / "all", cfg, seed=0)
    extract_shards(videos, out / "sharded", cfg)
    return out


# ---------------------------------------------------------------- the params


@pytest.mark.parametrize("overrides, message", [
    (["shard.index=2", "shard.count=2"], "shard.index=2 is not allowed: must be < shard.count (2)"),
    (["shard.index=1"], "shard.index=1 is not allowed: must be < shard.count (1)"),
    (["shard.count=0"], "shard.count=0 is not allowed: Input should be greater than or equal to 1"),
    (["shard.index=-1"], "shard.index=-1 is not allowed: Input should be greater than or equal to 0"),
    (["shard.count=2.0"], "shard.count=2.0 is not allowed: Input should be a valid integer"),
    (["shard.size=2"], "shard.size: no such key (a typo?)"),
])
def test_shard_params_are_checked_naming_the_key(overrides, message):
    with pytest.raises(ConfigError) as err:
        load_params(ROOT, overrides)
    assert str(err.value) == message


def test_the_default_is_one_shard_of_everything():
    params = load_params(ROOT, [])
    assert (params.shard.index, params.shard.count) == (0, 1)
    assert params.shard.takes("any/video.mp4")
    assert load_params(ROOT, ["shard.index=3", "shard.count=4"]).shard == ShardConfig(index=3, count=4)


# ---------------------------------------------------------------- which videos a shard takes


@pytest.mark.parametrize("count", [1, 2, 3, 7])
def test_each_video_is_in_exactly_one_shard(count):
    sources = [f"class{c}/v_{c}_g{g:02d}_c{i}.avi" for c in range(100) for g in range(20) for i in range(3)]
    taken = [[s for s in sources if ShardConfig(index=i, count=count).takes(s)] for i in range(count)]
    assert sorted(s for shard in taken for s in shard) == sorted(sources)
    expected = len(sources) / count
    assert all(0.9 * expected <= len(shard) <= 1.1 * expected for shard in taken), [len(s) for s in taken]


def test_a_videos_shard_is_a_hash_of_its_path_alone():
    """SHA-1, not Python's salted `hash`: the same on every machine, and pinned here."""
    assert [shard_of(f"v{i}.mp4", 3) for i in range(8)] == [1, 0, 1, 2, 0, 1, 2, 1]
    assert shard_of("v0.mp4", 3) == int(hashlib.sha1(b"v0.mp4").hexdigest()[:16], 16) % 3


# ---------------------------------------------------------------- shards write the unsharded bytes


@pytest.mark.parametrize("split", ["video", "time"])
def test_shards_write_the_unsharded_files_byte_for_byte(videos, tmp_path, split):
    cfg = data_config(videos, split=split)
    whole = extract_frames(find_videos(videos, EXTS), tmp_path / "all", cfg, seed=0)
    shards = extract_shards(videos, tmp_path / "sharded", cfg)
    assert [sorted(v.source for v in shard.kept) for shard in shards] == [
        ["v1.mp4", "v4.mp4"], ["v0.mp4", "v2.mp4", "v5.mp4"], ["v3.mp4"]]
    assert {shard.split_rule for shard in shards} == {whole.split_rule} == {split}
    assert digests(tmp_path / "sharded") == digests(tmp_path / "all") and len(digests(tmp_path / "all")) == 6
    if split == "video":  # the parts really are the whole folder's: one test, one validation video
        bounds = sorted((v.train_end, v.val_end) for shard in shards for v in shard.kept)
        assert bounds == [(0, 0), (0, 4)] + [(4, 4)] * 4
    records = [read_shard_record(tmp_path / "sharded" / f"shard-{i}") for i in range(N_SHARDS)]
    assert [(r.index, r.count) for r in records] == [(0, 3), (1, 3), (2, 3)] and len({r.of for r in records}) == 1
    assert read_shard_record(tmp_path / "all") is None


def test_the_readers_take_every_shard_in_the_unsharded_order(runs):
    """`list_frames` of the folder holding the shards gives what it gives for the unsharded
    folder: the same videos, splits and order (so patch sampling and training read the same)."""
    whole = list_frames(runs / "all")
    gathered = list_frames(runs / "sharded")
    assert [v.video_id for v in gathered] == [f"v{i}" for i in range(6)]
    assert [(v.video_id, v.source, v.n_frames, v.train_end, v.val_end) for v in gathered] == \
           [(v.video_id, v.source, v.n_frames, v.train_end, v.val_end) for v in whole]
    assert {v.path.parent.name for v in gathered} == {"shard-0", "shard-1", "shard-2"}


def test_encode_takes_the_same_videos_as_extraction(runs):
    """Reading one frames shard, encode is that shard; with `shard.*` over the unsharded folder
    it takes the same videos by the same hash."""
    for i in range(N_SHARDS):
        folder = runs / "sharded" / f"shard-{i}"
        own = [v.video_id for v in list_frames(folder)]
        taken, record = shard_videos(list_frames(folder), folder, ShardConfig())
        assert [v.video_id for v in taken] == own and record == read_shard_record(folder)
        assert shard_videos(list_frames(folder), folder, ShardConfig(index=i, count=N_SHARDS))[1] == record
        picked, picked_record = shard_videos(list_frames(runs / "all"), runs / "all", ShardConfig(index=i, count=3))
        assert [v.video_id for v in picked] == own and (picked_record.index, picked_record.count) == (i, 3)
    assert shard_videos(list_frames(runs / "all"), runs / "all", ShardConfig()) == (list_frames(runs / "all"), None)
    with pytest.raises(VideoLMError, match=r"shard.index=0, shard.count=3: paths.frames='.*shard-1' is shard 1 of 3"):
        shard_videos(list_frames(runs / "sharded/shard-1"), runs / "sharded/shard-1", ShardConfig(index=0, count=3))


def run_stage_here(script: str, **paths) -> None:
    """A stage's `main` in this process, with `paths.*` set and otherwise the default params."""
    spec = importlib.util.spec_from_file_location(script, ROOT / "stages" / f"{script}.py")
    stage = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stage)
    stage.main(Params(paths=PathsConfig(**{key: str(value) for key, value in paths.items()}),
                      patches=PatchesConfig(stride=4)))


def test_encode_shards_are_read_together_by_training_and_evaluation(runs, tmp_path, codebook):
    """The encode stage on each frames shard writes the unsharded stage's code files; the code
    grids reader (training, evaluation) takes the shard folders together, in the same order."""
    codebook.save(tmp_path / "codebook.h5")
    run_stage_here("encode", frames=runs / "all", codes=tmp_path / "all", codebook=tmp_path / "codebook.h5",
                   metrics=tmp_path / "metrics")
    for i in range(N_SHARDS):
        run_stage_here("encode", frames=runs / f"sharded/shard-{i}", codes=tmp_path / f"codes/shard-{i}",
                       codebook=tmp_path / "codebook.h5", metrics=tmp_path / f"metrics/shard-{i}")
        assert read_shard_record(tmp_path / f"codes/shard-{i}") == read_shard_record(runs / f"sharded/shard-{i}")
        metrics = json.loads((tmp_path / f"metrics/shard-{i}/encode.json").read_text())
        assert metrics["shard"] == {"index": i, "count": N_SHARDS}
    assert "shard" not in json.loads((tmp_path / "metrics/encode.json").read_text())
    assert digests(tmp_path / "codes") == digests(tmp_path / "all") and len(digests(tmp_path / "all")) == 6
    whole, gathered = load_code_grids(tmp_path / "all", codebook), load_code_grids(tmp_path / "codes", codebook)
    assert [g.video_id for g in gathered] == [g.video_id for g in whole] == [f"v{i}" for i in range(6)]
    assert all((a.codes[:] == b.codes[:]).all() and (a.train_end, a.val_end) == (b.train_end, b.val_end)
               for a, b in zip(whole, gathered))


def test_a_shard_with_no_video_is_refused(videos, tmp_path):
    count = 50
    empty = next(i for i in range(count) if all(shard_of(f"v{j}.mp4", count) != i for j in range(6)))
    with pytest.raises(VideoError, match=rf"shard.index={empty}: none of the 6 videos of data.dir=.* is in this "
                                         rf"shard of shard.count=50 .*: use fewer shards"):
        extract_frames(find_videos(videos, EXTS), tmp_path / "f", data_config(videos), seed=0,
                       shard=ShardConfig(index=empty, count=count))
    assert not (tmp_path / "f").exists()


# ---------------------------------------------------------------- a video that turns out unusable


@pytest.fixture
def with_broken(videos, tmp_path) -> Path:
    """The six videos and an empty `v6.mp4` (shard 2 of 3), found unusable only when decoded."""
    src = tmp_path / "videos"
    shutil.copytree(videos, src)
    (src / "v6.mp4").write_bytes(b"")
    return src


def test_an_unusable_video_stops_its_shard_under_a_split_by_video(with_broken, tmp_path):
    """The other shards counted it in the split: skipping it would give another split than the
    unsharded run's (which decides without it), so its shard stops, naming it, even with
    on_error=skip; the shards without it are unaffected."""
    cfg = data_config(with_broken, on_error="skip")
    listed = find_videos(with_broken, EXTS)
    for i in (0, 1):
        extract_frames(listed, tmp_path / f"shard-{i}", cfg, seed=0, shard=ShardConfig(index=i, count=3))
    with pytest.raises(VideoError) as err:
        extract_frames(listed, tmp_path / "shard-2", cfg, seed=0, shard=ShardConfig(index=2, count=3))
    assert str(err.value) == (
        "v6.mp4: an empty file (0 bytes); every shard of shard.count=3 counted it in the split by video "
        "(data.split=video), so skipping it would not give an unsharded run's split: move it out of data.dir "
        "(or give it a leading '.'), then rerun every shard")
    assert not (tmp_path / "shard-2").exists()


def test_an_unusable_video_is_skipped_under_a_split_by_time(with_broken, tmp_path):
    """Split by time, each video's part is its own: the shard skips it as an unsharded run does,
    and every file is the unsharded run's."""
    cfg = data_config(with_broken, split="time")
    whole = extract_frames(find_videos(with_broken, EXTS), tmp_path / "all", cfg, seed=0)
    shards = extract_shards(with_broken, tmp_path / "sharded", cfg)
    assert [s.video for s in whole.skipped] == [s.video for s in shards[2].skipped] == ["v6.mp4"]
    assert digests(tmp_path / "sharded") == digests(tmp_path / "all")


# ---------------------------------------------------------------- the readers refuse an incomplete set


@pytest.fixture
def sharded(runs, tmp_path) -> Path:
    """A copy of the sharded run's folder, to break."""
    shutil.copytree(runs / "sharded", tmp_path / "frames")
    return tmp_path / "frames"


def set_record(folder: Path, **changes) -> None:
    record = read_shard_record(folder)
    (folder / "shard.json").unlink()
    write_shard_record(folder, ShardRecord(**{**record.__dict__, **changes}), "extract_frames")


def test_a_missing_shard_is_refused(sharded):
    shutil.rmtree(sharded / "shard-1")
    with pytest.raises(VideoLMError, match=r"frames: shard 1 of 3 missing \(found shard-0: shard 0 of 3, shard-2: "
                                           r"shard 2 of 3\): run or pull extract_frames@1 first"):
        list_frames(sharded)


def test_shards_of_different_runs_are_refused(sharded):
    set_record(sharded / "shard-2", of="another listing")
    with pytest.raises(VideoLMError, match="its shards were cut from different videos or params"):
        list_frames(sharded)
    set_record(sharded / "shard-2", count=4)
    with pytest.raises(VideoLMError, match="its shards were made with different shard.count"):
        list_frames(sharded)


def test_a_shard_twice_is_refused(sharded):
    shutil.copytree(sharded / "shard-1", sharded / "shard-1-again")
    with pytest.raises(VideoLMError, match="a shard is there twice"):
        list_frames(sharded)


def test_a_video_in_two_shards_is_refused(sharded):
    shutil.copy(sharded / "shard-1/v0.h5", sharded / "shard-0/v0.h5")
    with pytest.raises(VideoLMError, match="frames: v0.h5 is in more than one shard folder"):
        list_frames(sharded)


def test_files_beside_shard_folders_are_refused(sharded):
    shutil.copy(sharded / "shard-1/v0.h5", sharded / "v0.h5")
    with pytest.raises(VideoLMError, match=r"frames: holds both frames files and shard folders of the "
                                           r"extract_frames stage \(shard-0, shard-1, shard-2\)"):
        list_frames(sharded)


def test_temporaries_and_other_folders_are_not_read(sharded, runs):
    """A shard's temporary (`.shard-1.tmp<pid>`, a run under way) and a folder the stage did
    not make are not read: in a sharded folder, nor in an unsharded one (as before)."""
    shutil.copytree(sharded / "shard-1", sharded / ".shard-1.tmp123")
    (sharded / "notes").mkdir()
    shutil.copy(sharded / "shard-1/v0.h5", sharded / "notes/extra.h5")
    assert [v.video_id for v in list_frames(sharded)] == [f"v{i}" for i in range(6)]
    whole = sharded.parent / "all"
    shutil.copytree(runs / "all", whole)
    shutil.copytree(sharded / "notes", whole / "notes")
    assert [v.path for v in list_frames(whole)] == sorted(whole.glob("*.h5"))


def test_a_shard_is_not_written_into_an_unsharded_output(runs, tmp_path):
    """Switching a workspace to shards: `data/frames/shard-0` inside the unsharded run's
    `data/frames` is refused before any work (that folder is replaced whole by its stage, and
    the readers would refuse the mix), and nothing is changed."""
    shutil.copytree(runs / "all", tmp_path / "frames")
    before = digests(tmp_path / "frames", "*")
    with pytest.raises(OutputError, match=r"paths.frames: '.*frames/shard-0' lies inside '.*frames', the "
                                          r"extract_frames stage's output, which it replaces whole"):
        guard_outputs("extract_frames", {"data.dir": tmp_path / "videos"},
                      {"paths.frames": tmp_path / "frames/shard-0"})
    assert digests(tmp_path / "frames", "*") == before


# ---------------------------------------------------------------- the snippet and commands of docs/scale-out.md, end to end


def readme_snippet() -> str:
    """The `foreach` stages of docs/scale-out.md's "Across machines" section, as written there."""
    text = (ROOT / "docs/scale-out.md").read_text()
    section = text.split("## Across machines: sharding the data stages", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```yaml\n(.*?)```", section, re.S).group(1)


def paste_snippet(dvc_yaml: str) -> str:
    """`dvc_yaml` with its extract_frames and encode stages replaced by the snippet's, as a user
    pastes them."""
    extract, encode = readme_snippet().split("\n  encode:")
    stages = [("extract_frames", extract, "sample_patches"), ("encode", "  encode:" + encode, "train")]
    for name, stage, after in stages:
        dvc_yaml, n = re.subn(rf"  {name}:\n.*?\n(?=  {after}:)", lambda _: stage.rstrip() + "\n\n", dvc_yaml,
                              flags=re.S)
        assert n == 1, name
    return dvc_yaml


def test_the_readme_snippet_declares_what_the_default_stages_do():
    """Its stages read the code the default stages read (tests/test_dvc_yaml.py checks those)."""
    default = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    pasted = yaml.safe_load(paste_snippet((ROOT / "dvc.yaml").read_text()))["stages"]
    assert list(pasted) == list(default)
    assert {name for name in default if pasted[name] != default[name]} == {"extract_frames", "encode"}
    snippet = yaml.safe_load(textwrap.dedent(readme_snippet()))
    assert pasted["extract_frames"] == snippet["extract_frames"] and pasted["encode"] == snippet["encode"]
    for name, stage in snippet.items():
        assert stage["foreach"] == [0, 1]
        assert ("shard.index=${item} shard.count=2" in stage["do"]["cmd"]) == (name == "extract_frames")
        code = [d for d in stage["do"]["deps"] if not d.startswith("${")]
        assert code == [d for d in default[name]["deps"] if not d.startswith("${")]
        assert set(stage["do"]["params"]) == set(default[name]["params"]) - {"shard", "paths.frames"}


@pytest.mark.slow
def test_two_machines_and_the_readme_commands_give_the_unsharded_bytes(tmp_path):
    """An unsharded `dvc repro encode`, against the workflow of docs/scale-out.md with its snippet: two clones
    each extract their shard and push it to the run cache; the first restores the other's shard
    with `dvc repro --pull` (not running it) and fits the codebook over all shards; each encodes
    its shard; the first restores the other's codes. Every frames and codes file, the patches
    and the codebook are the unsharded run's bytes."""
    from test_pipeline import deep_update, new_project, run, write_clip

    def project(repo: Path) -> Path:
        new_project(repo)
        params = deep_update(yaml.safe_load((repo / "params.yaml").read_text()), {"data": {"split": "video"}})
        (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        for name in ["slide.mp4", "slow.mp4"]:
            (repo / "data/synth" / name).unlink()
        for i in range(6):  # 2 shards: v4, v5 in shard 0, v0 .. v3 in shard 1
            write_clip(repo / f"data/synth/v{i}.mp4", n_frames=12, shift=1 + i % 3, seed=i)
        return repo

    dvc = [sys.executable, "-m", "dvc"]
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]

    reference = project(tmp_path / "reference")
    run(dvc + ["repro", "encode"], reference)

    work = project(tmp_path / "work")
    (work / "dvc.yaml").write_text(paste_snippet((work / "dvc.yaml").read_text()))
    run(dvc + ["remote", "add", "-d", "shared", str(tmp_path / "remote")], work)
    run(git + ["add", "-A"], work)
    run(git + ["commit", "-qm", "sharded, with a shared remote"], work)
    run(["git", "clone", "-q", "--bare", str(work), str(tmp_path / "origin.git")], tmp_path)
    machines = [tmp_path / "machine0", tmp_path / "machine1"]
    for machine in machines:
        run(["git", "clone", "-q", str(tmp_path / "origin.git"), str(machine)], tmp_path)
    first, second = machines

    def ran(out: str) -> set[str]:
        return set(re.findall(r"Running stage '([\w@-]+)'", out))

    for i, machine in enumerate(machines):
        assert ran(run(dvc + ["repro", f"extract_frames@{i}"], machine)) == {f"extract_frames@{i}"}
        run(dvc + ["push", "--run-cache"], machine)
    out = run(dvc + ["repro", "--pull", "fit_codebook"], first)
    assert ran(out) == {"sample_patches", "fit_codebook"} and "'extract_frames@1' is cached" in out, out
    run(git + ["add", "-A"], first)
    run(git + ["commit", "-qm", "codebook"], first)
    run(dvc + ["push"], first)
    run(git + ["push", "-q"], first)

    run(["git", "fetch", "-q"], second)
    run(["git", "reset", "-q", "--hard", "@{u}"], second)
    run(dvc + ["pull", "extract_frames@1", "fit_codebook"], second)
    assert ran(run(dvc + ["repro", "-s", "encode@1"], second)) == {"encode@1"}
    run(dvc + ["push", "--run-cache"], second)

    out = run(dvc + ["repro", "--pull", "encode@0", "encode@1"], first)
    assert ran(out) == {"encode@0"} and "'encode@1' is cached" in out, out

    for data in ["frames", "codes"]:
        want = digests(reference / "data" / data)
        assert len(want) == 6 and digests(first / "data" / data) == want, data
        assert {p.name for p in (first / "data" / data).iterdir() if p.is_dir()} == {"shard-0", "shard-1"}
    for path in ["data/patches.h5", "data/codebook.h5"]:  # sample_patches read both frames shards
        assert (first / path).read_bytes() == (reference / path).read_bytes(), path
    metrics = [json.loads((first / f"metrics/shard-{i}/frames.json").read_text()) for i in range(2)]
    assert [(m["videos"], m["shard"]) for m in metrics] == [(2, {"index": 0, "count": 2}),
                                                            (4, {"index": 1, "count": 2})]
    assert json.loads((reference / "metrics/frames.json").read_text())["videos"] == 6
