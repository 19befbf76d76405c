"""`python -m videolm.report` on real DVC experiments: a tiny git + DVC repository whose one
stage writes metrics, dvclive curves and a PNG computed from params, run twice with
`dvc exp run -S train.lr=...`."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from videolm.report import flatten, format_number, format_value, main, nice_ticks, svg_line_chart

ROOT = Path(__file__).resolve().parents[1]
GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
DVC = [sys.executable, "-m", "dvc"]

MAKE = '''"""Toy stage: metrics, dvclive curves and a picture computed from params.yaml."""
import json
import os

import yaml
from PIL import Image

params = yaml.safe_load(open("params.yaml"))
lr, k = params["train"]["lr"], params["codebook"]["k"]
for folder in ["metrics", "dvclive/plots/metrics", "plots"]:
    os.makedirs(folder, exist_ok=True)
json.dump({"model_perplexity": 10 + 1 / lr / 7, "unigram_perplexity": float(k),
           "extra": {"nested": lr * 3}}, open("metrics/eval.json", "w"))
json.dump({"val_perplexity": k / (1 + 100 * lr), "train_seconds": 1.5, "epochs_run": 3},
          open("metrics/train.json", "w"))
for name in ["train", "val"]:
    with open(f"dvclive/plots/metrics/{name}_perplexity.tsv", "w") as f:
        f.write(f"step\\t{name}_perplexity\\n")
        for step in range(4):
            f.write(f"{step}\\t{k / (1 + step * lr * 100)}\\n")
Image.new("L", (8, 6), int(lr * 1000)).save("plots/predictions.png")
'''

DVC_YAML = """stages:
  make:
    cmd: python make.py
    deps: [make.py]
    params: [train, codebook]
    metrics:
      - metrics/eval.json: {cache: false}
      - metrics/train.json: {cache: false}
    outs:
      - dvclive/plots: {cache: false}
    plots:
      - plots/predictions.png: {cache: false}
"""

PARAMS = """seed: 0
train:
  lr: 0.01
  epochs: 3
codebook:
  k: 16
"""


def run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """Run a command in the toy repository, importing this checkout's `src/`."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)


def check(cmd: list[str], cwd: Path) -> str:
    result = run(cmd, cwd)
    assert result.returncode == 0, f"{' '.join(cmd)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """The toy repository, committed, with experiments `lo` (lr 0.001) and `hi` (lr 0.1);
    the workspace holds `hi`'s results, as `dvc exp run` leaves it."""
    root = tmp_path_factory.mktemp("exps")
    (root / "make.py").write_text(MAKE)
    (root / "dvc.yaml").write_text(DVC_YAML)
    (root / "params.yaml").write_text(PARAMS)
    check(["git", "init", "-q"], root)
    check([*DVC, "init", "-q"], root)
    check([*GIT, "add", "-A"], root)
    check([*GIT, "commit", "-qm", "init"], root)
    check([*DVC, "exp", "run", "-q", "-n", "lo", "-S", "train.lr=0.001"], root)
    check([*DVC, "exp", "run", "-q", "-n", "hi", "-S", "train.lr=0.1"], root)
    return root


def report(repo: Path, out: Path, *args: str) -> str:
    main(["--repo", str(repo), "--out", str(out), *args])
    return out.read_text()


def row(page: str, first: str) -> list[str]:
    """The cells of the table row whose first cell is `first` (the first such row)."""
    for line in page.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0] == first:
            return cells
    raise AssertionError(f"no row {first!r} in:\n{page}")


def key_metrics(page: str, label: str) -> dict[str, str]:
    """The row of run `label` in the key metrics table, `{column: cell}`."""
    section = page.split("## Metrics", 1)[1]
    return dict(zip(row(section, "run"), row(section, label), strict=True))


def assert_png(path: Path, gray: int) -> None:
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == (8, 6)
        assert image.getpixel((0, 0)) == gray


def test_workspace_report(repo, tmp_path) -> None:
    page = report(repo, tmp_path / "report.md")
    assert page.startswith("# Run report\n")
    assert row(page, "train.lr") == ["train.lr", "0.1"]  # one run: its key params
    assert row(page, "codebook.k") == ["codebook.k", "16"]
    metrics = key_metrics(page, "workspace")
    assert list(metrics)[:2] == ["run", "model_perplexity"]  # the fixed order
    assert metrics["model_perplexity"] == "11.43"  # 10 + 1 / 0.1 / 7, 4 significant digits
    assert metrics["val_perplexity"] == "1.455" and metrics["train_seconds"] == "1.5"
    assert row(page, "extra.nested") == ["extra.nested", "0.3"]  # other metrics, dotted names
    assert row(page, "epochs_run") == ["epochs_run", "3"]
    svg = (tmp_path / "report_files/val_perplexity.svg").read_text()
    assert svg.count("<polyline") == 1 and ">workspace</text>" in svg
    assert "![val_perplexity](report_files/val_perplexity.svg)" in page
    assert "![predictions of workspace](report_files/predictions_workspace.png)" in page
    assert_png(tmp_path / "report_files/predictions_workspace.png", 100)


def test_experiments_report(repo, tmp_path) -> None:
    page = report(repo, tmp_path / "cmp.md", "--exps", "lo", "hi")
    assert page.startswith("# Comparison of 2 runs\n")
    assert row(page, "train.lr") == ["train.lr", "0.001", "0.1"]
    with pytest.raises(AssertionError):  # same in both: not listed
        row(page, "codebook.k")
    lo, hi = key_metrics(page, "lo"), key_metrics(page, "hi")
    assert (lo["model_perplexity"], hi["model_perplexity"]) == ("152.9", "11.43")
    assert (lo["val_perplexity"], hi["val_perplexity"]) == ("14.55", "1.455")
    assert lo["unigram_perplexity"] == hi["unigram_perplexity"] == "16"
    for name in ["train_perplexity", "val_perplexity"]:
        svg = (tmp_path / f"cmp_files/{name}.svg").read_text()
        assert svg.startswith("<svg") and svg.count("<polyline") == 2
        assert ">lo</text>" in svg and ">hi</text>" in svg
        assert f"![{name}](cmp_files/{name}.svg)" in page
    assert_png(tmp_path / "cmp_files/predictions_lo.png", 1)
    assert_png(tmp_path / "cmp_files/predictions_hi.png", 100)
    assert sorted(p.name for p in (tmp_path / "cmp_files").iterdir()) == [
        "predictions_hi.png", "predictions_lo.png", "train_perplexity.svg", "val_perplexity.svg"]


def test_all_revs_and_determinism(repo, tmp_path) -> None:
    page = report(repo, tmp_path / "all.md", "--all")
    assert {row(page, "lo")[0], row(page, "hi")[0]} == {"lo", "hi"}
    assert report(repo, tmp_path / "all.md", "--all") == page  # same page twice
    # a Git rev and the workspace, named twice: two runs, labelled as given
    lo_sha = next(line.split()[0] for line in check(["git", "show-ref"], repo).splitlines()
                  if line.endswith("/lo"))
    page = report(repo, tmp_path / "revs.md", "--exps", lo_sha[:7], "workspace", "lo")
    assert page.startswith("# Comparison of 2 runs\n")
    assert row(page, "train.lr") == ["train.lr", "0.001", "0.1"]
    assert row(page, "lo")[:2] == ["lo", lo_sha[:7]]  # a named experiment keeps its name
    assert_png(tmp_path / "revs_files/predictions_workspace.png", 100)


def test_bad_name_is_one_error_line(repo, tmp_path) -> None:
    result = run([sys.executable, "-m", "videolm.report", "--exps", "lo", "foo",
                  "--out", str(tmp_path / "bad.md")], repo)
    assert result.returncode == 2
    assert result.stderr == "error: no experiment named 'foo' (see dvc exp show)\n"
    assert not (tmp_path / "bad.md").exists()


def test_formatting_and_chart() -> None:
    assert format_number(5.024388867229707) == "5.024" and format_number(79126) == "79126"
    assert format_value(["mp4", "avi"]) == '["mp4", "avi"]' and format_value(False) == "false"
    assert flatten({"a": {"b": 1, "c": {"d": 2}}, "e": [1]}) == {"a.b": 1, "a.c.d": 2, "e": [1]}
    assert nice_ticks(1.3, 39.3) == [0, 10, 20, 30, 40]
    assert nice_ticks(2.0, 2.0)[0] <= 2.0 <= nice_ticks(2.0, 2.0)[-1]
    svg = svg_line_chart({"a": [(0, 1), (1, 2)], "b|<c>": [(0, 3)]}, "t", "step", "y")
    assert svg.count("<polyline") == 2 and svg.count("<circle") == 1 and "b|&lt;c&gt;" in svg
    assert re.fullmatch(r"<svg .*</svg>\n", svg, re.S)
