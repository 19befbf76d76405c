"""The benchmark commands run end to end at their smallest size and write their tables (timings
are not asserted: they live in benchmarks/RESULTS.md): `run.py`, and the scale drill `drill.py`
with its corpus and its section of the results file."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import corpus  # noqa: E402 (benchmarks/ is not a package: found through the path above)
import report  # noqa: E402

OLD_DRILL = f"{report.MARK_START}\nan earlier drill's section\n{report.MARK_END}\n"


@pytest.mark.slow  # about a minute: it starts a dozen processes that import torch
def test_benchmarks_run_at_the_smallest_size(tmp_path):
    out = tmp_path / "RESULTS.md"
    out.write_text("# an earlier table\n\n" + OLD_DRILL)
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks/run.py"), "--smallest", "--repeats", "1",
                          "--out", str(out)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    table = out.read_text()
    assert "| decode to gray, 128x96, 8 frames |" in table and "ffmpeg CLI -pix_fmt gray" in table
    assert "frames differ by at most 0 gray levels" in table  # the same frames as ffmpeg's
    assert "| encode, 2,000 patches, k=64, d=64 |" in table and "identical codes: 100.0000%" in table
    for stage in ("extract_frames", "encode"):  # each stage's peak memory, on a video 4x longer than another
        assert f"| {stage} peak RSS, 64x48, 80 frames |" in table
    assert table.count("same stage, the 1x video (20 frames)") == 2
    for method in ("minibatch", "lloyd"):  # each k-means against faiss given the same time
        assert f"| codebook fit ({method}), 5,000 patches, k=64 |" in table
    assert "| train step, k=64, cpu fp32 |" in table and "before: plain F.cross_entropy" in table
    for policy in ("shipped (OMP_WAIT_POLICY=PASSIVE)", "OpenMP default (spinning)"):
        assert f"| train k=64 beside a busy process, {policy} |" in table
        assert f"| two trainings k=64 side by side, {policy} |" in table
    assert "| extract_video (decode + gzip HDF5), 320x240, 8 frames |" in table
    assert "| encode_video, k=64 (patches, search, error, HDF5), 320x240, 8 frames |" in table
    assert "| extract_frames, 2 clips of 8 frames at 320x240, 2 workers |" in table or "1 workers |" in table
    assert "| scoring, 3 videos of 6 frames, grid 30x40, k=64 |" in table
    assert "the same scores to the bit: yes" in table  # batched scoring gives one-at-a-time's scores
    assert "CPU cores (affinity):" in table
    assert "an earlier table" not in table and table.endswith("\n" + OLD_DRILL)  # the drill's section is kept


def test_a_run_of_some_pairs_prints_and_keeps_the_committed_table():
    committed = ROOT / "benchmarks/RESULTS.md"
    before = committed.read_bytes()
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks/run.py"), "--smallest", "--repeats", "1",
                          "--only", "encode"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "| encode, 2,000 patches, k=64, d=64 |" in run.stdout
    assert committed.read_bytes() == before


def test_drill_section_replaces_its_own_and_keeps_the_rest(tmp_path):
    out = tmp_path / "RESULTS.md"
    report.write_section(out, "first")  # a new file: the section alone
    assert out.read_text() == f"{report.MARK_START}\nfirst\n{report.MARK_END}\n"
    out.write_text("# Benchmarks\n\n| a table |\n")
    report.write_section(out, "first")  # appended after a blank line
    report.write_section(out, "second\n")  # replaced in place
    assert out.read_text() == f"# Benchmarks\n\n| a table |\n\n{report.MARK_START}\nsecond\n{report.MARK_END}\n"
    out.write_text(f"head\n{report.MARK_START}\nold\n{report.MARK_END}\ntail\n")
    report.write_section(out, "new")
    assert out.read_text() == f"head\n{report.MARK_START}\nnew\n{report.MARK_END}\ntail\n"
    assert report.kept_section(out) == f"\n{report.MARK_START}\nnew\n{report.MARK_END}\n"
    assert report.kept_section(tmp_path / "none.md") == ""


@pytest.mark.slow  # a few seconds: it decodes the sample videos twice
def test_drill_corpus_is_deterministic_and_moves(tmp_path):
    # Two corpora made one after the other in one process: x264's macroblock-tree rate control
    # (off in `write_clip`) gave other bytes for the second in most runs of this test.
    facts = corpus.make_corpus(tmp_path / "a", 4, 0.4, seed=0)
    corpus.make_corpus(tmp_path / "b", 4, 0.4, seed=0)
    assert facts["clips"] == 4 and facts["frames"] == 4 * 10
    for i in range(4):
        a, b = (tmp_path / side / f"clip{i:03d}.mp4" for side in "ab")
        assert hashlib.md5(a.read_bytes()).digest() == hashlib.md5(b.read_bytes()).digest()  # same bytes
        with av.open(str(a)) as container:
            stream = container.streams.video[0]
            assert (stream.codec_context.name, stream.width, stream.height) == ("h264", 320, 240)
            frames = np.stack([f.to_ndarray(format="gray").astype(np.int16) for f in container.decode(stream)])
        assert len(frames) == 10
        assert all(np.abs(frames[t + 1] - frames[t]).mean() > 1 for t in range(9))  # every frame moves
    assert corpus.make_corpus(tmp_path / "c", 1, 0.4, seed=1)  # another seed, another camera
    assert (tmp_path / "c/clip000.mp4").read_bytes() != (tmp_path / "a/clip000.mp4").read_bytes()


@pytest.mark.slow  # about a minute: every stage runs, the data stages three ways
def test_drill_runs_at_a_tiny_size(tmp_path):
    out = tmp_path / "RESULTS.md"
    out.write_text("# Benchmarks\n\nthe other benchmarks' table\n\n" + OLD_DRILL)
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks/drill.py"), "--clips", "6", "--seconds", "1",
                          "--k", "64", "--steps", "2", "--out", str(out)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    text = out.read_text()
    assert text.startswith("# Benchmarks\n\nthe other benchmarks' table\n\n")  # the rest of the file is kept
    assert "an earlier drill's section" not in text and text.count(report.MARK_START) == 1
    assert text.rstrip().endswith(report.MARK_END)
    assert "## Scale drill: 6 clips of 320x240, 1 s, k=64" in text
    assert "`python benchmarks/drill.py --clips 6 --seconds 1 --k 64 --steps 2 --out " in text
    assert "Corpus: 6 h264 clips of 320x240 at 25 fps, 25 frames each (150 frames" in text
    for stage in ("extract_frames", "sample_patches", "encode"):
        for setting in ("2 workers", "1 worker, 1 thread", "1 worker, default threads"):
            assert f"| {stage} | {setting} |" in text
        assert text.count(f"| {stage} | ") == 4  # three settings and the ratios' row
    assert "704 patches (training + held-out) and the std, in one read" in text
    assert "| fit_codebook | as shipped (no workers) |" in text and "Lloyd, k=64, 10 iterations over 640" in text
    assert "| train | as shipped (torch's default threads) |" in text and "16,384 positions" in text
    for unit in ("frames/s", "patches/s", "positions/s"):
        assert unit in text
    assert text.count("| yes |") == 3  # each data stage's outputs: the same bytes in every setting
    assert "CPU:" in text and "load average" in text
