"""A comparison page for people: params, metrics, training curves and prediction grids of the
workspace or of DVC experiments, as one Markdown file.

    python -m videolm.report                        # the workspace -> report.md
    python -m videolm.report --exps lo hi           # experiments by name or Git rev
    python -m videolm.report --all --out cmp.md     # every experiment of the current commit

Charts (SVG, drawn here by hand) and copied pictures go to a folder beside the page,
`<out stem>_files/`, and are linked from it, since Markdown renderers do not reliably show
inline `<svg>`. The output is deterministic: sorted keys, no timestamps.

Experiment data come from DVC: params and metrics from `Repo.experiments.show()` (the
structured data behind `dvc exp show --json` and `dvc.api.exp_show`, kept per file and with
its types: `dvc.api.exp_show` flattens every value to a string or float and names a column by
file only when two files share a key), and files through `DVCFileSystem` at the
experiment's revision: committed files (metrics, curves) and cached outputs (the pictures) alike.
The workspace is read from disk.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote
from xml.sax.saxutils import escape

from dvc.api import DVCFileSystem

from videolm.errors import VideoLMError
from videolm.io import atomic_path

WORKSPACE = "workspace"
MISSING = "—"
# (metrics file, key) shown first, in this order, as the columns of the metrics table.
KEY_METRICS = [
    ("metrics/eval.json", "model_perplexity"),
    ("metrics/eval.json", "model_vs_copy_previous_perplexity"),
    ("metrics/eval.json", "model_bits_per_patch"),
    ("metrics/eval.json", "copy_previous_perplexity"),
    ("metrics/eval.json", "unigram_perplexity"),
    ("metrics/eval.json", "psnr_1step_model"),
    ("metrics/eval.json", "psnr_1step_copy_last"),
    ("metrics/codebook.json", "heldout_psnr"),
    ("metrics/train.json", "val_perplexity"),
    ("metrics/train.json", "train_seconds"),
]
# Params listed when the page shows a single run (with several, the differing ones are).
KEY_PARAMS = [
    "seed", "data.dir", "data.split", "data.scale", "patches.size", "patches.stride",
    "codebook.k", "model.name", "model.hidden", "model.head", "train.epochs",
    "train.steps_per_epoch", "train.batch_size", "train.lr", "eval.context", "eval.horizon",
]
CURVES = ["train_perplexity", "val_perplexity"]  # dvclive/plots/metrics/<name>.tsv
PREDICTIONS = "predictions.png"  # in the `paths.plots` folder
# Line colours, one per run (matplotlib's 'tab10').
COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
           "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]


@dataclass
class Run:
    """One compared run: its label, Git commit (None for the workspace), flat params and
    metrics (`{file: {dotted.key: value}}`), and a reader of its files."""

    label: str
    rev: str | None
    params: dict[str, object] = field(default_factory=dict)
    metrics: dict[str, dict[str, object]] = field(default_factory=dict)
    read: object = None  # callable: path relative to the repo root -> bytes or None

    @property
    def short_rev(self) -> str:
        return self.rev[:7] if self.rev else WORKSPACE


# ---------------------------------------------------------------- reading runs with DVC


def flatten(data, prefix: str = "") -> dict[str, object]:
    """Nested dicts -> one dict with dotted keys (lists and scalars are values)."""
    if not isinstance(data, dict):
        return {prefix: data} if prefix else {}
    flat = {}
    for key, value in data.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict):
            flat.update(flatten(value, name))
        else:
            flat[name] = value
    return flat


def flat_params(files: dict) -> dict[str, object]:
    """DVC's `{file: {"data": {...}}}` params -> `{key: value}`; keys of files other than
    `params.yaml` are prefixed `file:` as in `dvc exp show`. Unreadable files are skipped."""
    params = {}
    for path, result in sorted(files.items()):
        for key, value in flatten(result.get("data") or {}).items():
            params[key if path == "params.yaml" else f"{path}:{key}"] = value
    return params


def flat_metrics(files: dict) -> dict[str, dict[str, object]]:
    """DVC's `{file: {"data": {...}}}` metrics -> `{file: {dotted.key: value}}`, skipping
    files that could not be read (e.g. not yet written at a baseline commit)."""
    return {path: flatten(result["data"]) for path, result in sorted(files.items())
            if isinstance(result.get("data"), dict)}


def disk_reader(root: Path):
    """A reader of files in the workspace."""
    def read(path: str) -> bytes | None:
        file = root / path
        return file.read_bytes() if file.is_file() else None
    return read


def git_reader(repo, rev: str):
    """A reader of files as they were at `rev` (paths relative to the DVC repo root): files
    committed to Git and outputs in the DVC cache (the pictures are cached, not committed)."""
    fs = DVCFileSystem(repo.root_dir, rev=rev)

    def read(path: str) -> bytes | None:
        try:
            return fs.read_bytes(path) if fs.isfile(path) else None
        except (FileNotFoundError, NotADirectoryError):
            return None
    return read


def workspace_run(repo) -> Run:
    """The workspace: params and metrics of the files DVC knows, as they are on disk."""
    params = next(iter(repo.params.show().values()), {}).get("data", {})
    metrics = next(iter(repo.metrics.show().values()), {}).get("data", {})
    return Run(WORKSPACE, None, flat_params(params), flat_metrics(metrics),
               disk_reader(Path(repo.root_dir)))


def exp_run(repo, state, label: str | None = None) -> Run:
    """A Run from one of `repo.experiments.show()`'s ExpState objects."""
    data = state.data.dumpd() if state.data else {}
    return Run(label or state.name or state.rev[:7], state.rev,
               flat_params(data.get("params", {})), flat_metrics(data.get("metrics", {})),
               git_reader(repo, state.rev))


def show(repo, rev: str | None = None) -> list:
    """`repo.experiments.show()` for one baseline commit (HEAD by default), no workspace row,
    without queued or failed experiments."""
    return repo.experiments.show(revs=[rev] if rev else None, hide_queued=True,
                                 hide_failed=True, hide_workspace=True)


def experiments_of(baseline) -> list:
    """The ExpStates of the experiments listed under a baseline, in `dvc exp show`'s order."""
    return [exp_range.revs[0] for exp_range in baseline.experiments or [] if exp_range.revs]


def resolve(repo, token: str) -> str | None:
    """An experiment name (any baseline) or a Git revision -> full commit SHA, or None."""
    from dvc.exceptions import DvcException
    from dvc.repo.experiments.utils import resolve_name
    from scmrepo.exceptions import SCMError

    try:
        ref = resolve_name(repo.scm, token).get(token)
    except DvcException as err:  # e.g. one name under several baselines
        raise VideoLMError(str(err)) from err
    if ref is not None:
        return repo.scm.get_ref(str(ref))
    try:
        return repo.scm.resolve_rev(token)
    except SCMError:
        return None


def collect_runs(repo, exps: list[str] | None = None, everything: bool = False) -> list[Run]:
    """The runs to compare: the workspace (no `exps`), experiments by name or revision
    (`workspace` names the workspace), or every experiment of HEAD (`everything`)."""
    if not exps and not everything:
        return [workspace_run(repo)]
    baselines = show(repo)
    known = {state.rev: state for baseline in baselines for state in experiments_of(baseline)}
    if everything:
        if not known:
            raise VideoLMError("no experiments of the current commit (see dvc exp show)")
        return [exp_run(repo, state) for state in known.values()]
    by_name = {state.name: state for state in known.values() if state.name}
    runs, seen = [], set()
    for token in exps:
        if token == WORKSPACE:
            if WORKSPACE not in seen:
                runs.append(workspace_run(repo))
            seen.add(WORKSPACE)
            continue
        state = by_name.get(token)
        if state is None:
            sha = resolve(repo, token)
            if sha is None:
                raise VideoLMError(f"no experiment named '{token}' (see dvc exp show)")
            state = known.get(sha) or show(repo, sha)[0]
        if state.rev not in seen:  # the same run named twice (e.g. by name and by rev)
            runs.append(exp_run(repo, state, state.name if state.rev in known else token))
        seen.add(state.rev)
    return runs


# ---------------------------------------------------------------- Markdown


def format_number(value) -> str:
    """A metric for a table: floats to 4 significant digits, other values as they are."""
    if isinstance(value, float):
        return f"{value:.4g}"
    return format_value(value)


def format_value(value) -> str:
    """A param for a table: exactly as in the params file (lists and dicts as JSON)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, dict)):
        return json.dumps(value, sort_keys=True)
    return str(value)


def cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def table(header: list[str], rows: list[list[str]], numbers: bool = False) -> list[str]:
    """Markdown table lines, left-aligned (with `numbers`, all but the first column right)."""
    align = "---:" if numbers else ":---"
    lines = ["| " + " | ".join(cell(h) for h in header) + " |",
             "|" + "|".join([":---"] + [align] * (len(header) - 1)) + "|"]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return lines


def runs_section(runs: list[Run]) -> list[str]:
    """The compared runs and their commits."""
    return table(["run", "rev"], [[run.label, run.short_rev] for run in runs])


def params_section(runs: list[Run]) -> list[str]:
    """Params that differ between runs (one row per key), or a single run's key params."""
    lines = ["## Params", ""]
    labels = [run.label for run in runs]
    if len(runs) == 1:
        params = runs[0].params
        keys = [key for key in KEY_PARAMS if key in params] or sorted(params)
        if not keys:
            return lines + ["No params found.", ""]
        return lines + table(["param", *labels], [[k, format_value(params[k])] for k in keys]) + [""]
    keys = sorted({key for run in runs for key in run.params})
    absent = object()
    differ = [key for key in keys
              if len({json.dumps(run.params.get(key, absent), sort_keys=True, default=repr)
                      for run in runs}) > 1]
    if not differ:
        return lines + ["The compared runs have the same params.", ""]
    rows = [[key, *(format_value(run.params[key]) if key in run.params else MISSING
                    for run in runs)] for key in differ]
    return lines + ["Params that differ between the runs:", ""] + table(["param", *labels], rows) + [""]


def metrics_section(runs: list[Run]) -> list[str]:
    """Key metrics (one row per run), then every other metric, one table per metrics file
    (one row per metric, one column per run: a row per run would be far too wide)."""
    lines = ["## Metrics", ""]
    key_metrics = [(path, key) for path, key in KEY_METRICS
                   if any(key in run.metrics.get(path, {}) for run in runs)]
    if key_metrics:
        rows = [[run.label, *(format_number(run.metrics[path][key])
                              if key in run.metrics.get(path, {}) else MISSING
                              for path, key in key_metrics)] for run in runs]
        lines += table(["run", *(key for _, key in key_metrics)], rows, numbers=True) + [""]
    shown = set(key_metrics)
    files = sorted({path for run in runs for path in run.metrics})
    others = {path: sorted({key for run in runs for key in run.metrics.get(path, {})
                            if (path, key) not in shown}) for path in files}
    if not key_metrics and not any(others.values()):
        return lines + ["No metrics found.", ""]
    if any(others.values()):
        lines += ["### Other metrics", ""]
    for path, keys in others.items():
        if not keys:
            continue
        rows = [[key, *(format_number(run.metrics[path][key])
                        if key in run.metrics.get(path, {}) else MISSING for run in runs)]
                for key in keys]
        lines += [f"<details><summary><code>{escape(path)}</code> ({len(keys)})</summary>", ""]
        lines += table(["metric", *(run.label for run in runs)], rows, numbers=True)
        lines += ["", "</details>", ""]
    return lines


# ---------------------------------------------------------------- SVG charts


def read_curve(data: bytes | None, name: str) -> list[tuple[float, float]]:
    """(step, value) points of a dvclive TSV (columns `step` and `name`); bad rows skipped."""
    if not data:
        return []
    points = []
    for row in csv.DictReader(io.StringIO(data.decode()), delimiter="\t"):
        try:
            points.append((float(row["step"]), float(row[name])))
        except (KeyError, TypeError, ValueError):
            continue
    return [(x, y) for x, y in points if math.isfinite(x) and math.isfinite(y)]


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About `count` round tick values (1, 2 or 5 times a power of ten apart) covering
    [low, high]."""
    if high <= low:
        low, high = low - 0.5, high + 0.5
    rough = (high - low) / count
    power = 10 ** math.floor(math.log10(rough))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= rough)
    first = math.floor(low / step) * step
    ticks = []
    tick = first
    while tick <= high + step * 1e-9:
        ticks.append(round(tick, 12))
        tick += step
    if ticks[-1] < high:
        ticks.append(round(tick, 12))
    return ticks


def svg_line_chart(series: dict[str, list[tuple[float, float]]], title: str,
                   x_label: str, y_label: str, width: int = 640, height: int = 360) -> str:
    """A line chart as a standalone SVG document: one polyline per series, one colour per
    series (in order), axes with round ticks, and a legend. `series` must not be empty."""
    left, right, top, bottom = 64, 150, 32, 48
    xs = [x for points in series.values() for x, _ in points]
    ys = [y for points in series.values() for _, y in points]
    x_ticks, y_ticks = nice_ticks(min(xs), max(xs)), nice_ticks(min(ys), max(ys))
    x0, x1, y0, y1 = x_ticks[0], x_ticks[-1], y_ticks[0], y_ticks[-1]
    plot_w, plot_h = width - left - right, height - top - bottom

    def px(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * plot_w

    def py(y: float) -> float:
        return top + plot_h - (y - y0) / (y1 - y0) * plot_h

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{left + plot_w / 2:.1f}" y="18" text-anchor="middle" font-size="13">'
           f'{escape(title)}</text>']
    for tick in x_ticks:
        out.append(f'<line x1="{px(tick):.1f}" y1="{top}" x2="{px(tick):.1f}" '
                   f'y2="{top + plot_h}" stroke="#e0e0e0"/>')
        out.append(f'<text x="{px(tick):.1f}" y="{top + plot_h + 14}" text-anchor="middle">'
                   f'{tick:g}</text>')
    for tick in y_ticks:
        out.append(f'<line x1="{left}" y1="{py(tick):.1f}" x2="{left + plot_w}" '
                   f'y2="{py(tick):.1f}" stroke="#e0e0e0"/>')
        out.append(f'<text x="{left - 6}" y="{py(tick) + 4:.1f}" text-anchor="end">{tick:g}</text>')
    out.append(f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" '
               f'stroke="black"/>')
    out.append(f'<text x="{left + plot_w / 2:.1f}" y="{height - 10}" text-anchor="middle">'
               f'{escape(x_label)}</text>')
    out.append(f'<text x="14" y="{top + plot_h / 2:.1f}" text-anchor="middle" '
               f'transform="rotate(-90 14 {top + plot_h / 2:.1f})">{escape(y_label)}</text>')
    for i, (label, points) in enumerate(series.items()):
        colour = COLOURS[i % len(COLOURS)]
        coords = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in sorted(points))
        out.append(f'<polyline points="{coords}" fill="none" stroke="{colour}" '
                   f'stroke-width="2"/>')
        if len(points) == 1:  # a lone point draws no line: mark it
            x, y = points[0]
            out.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3" fill="{colour}"/>')
        y_legend = top + 8 + 16 * i
        out.append(f'<line x1="{left + plot_w + 12}" y1="{y_legend}" x2="{left + plot_w + 32}" '
                   f'y2="{y_legend}" stroke="{colour}" stroke-width="2"/>')
        short = label if len(label) <= 18 else label[:17] + "…"
        out.append(f'<text x="{left + plot_w + 38}" y="{y_legend + 4}">{escape(short)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------- the page


def slug(text: str) -> str:
    """A file-name-safe version of a run label."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "run"


def link(files_dir: Path, name: str) -> str:
    """The relative link from the page to a file in its files folder."""
    return quote(f"{files_dir.name}/{name}")


def curves_section(runs: list[Run], files: dict[str, bytes], files_dir: Path) -> list[str]:
    """One SVG chart per dvclive curve (all runs on it); adds the SVGs to `files`."""
    lines = ["## Training curves", ""]
    for name in CURVES:
        series = {}
        for run in runs:
            live = run.params.get("paths.live", "dvclive")
            points = read_curve(run.read(f"{live}/plots/metrics/{name}.tsv"), name)
            if points:
                series[run.label] = points
        if not series:
            lines += [f"No `{name}` curve in any run.", ""]
            continue
        files[f"{name}.svg"] = svg_line_chart(series, f"{name} per epoch", "step", name).encode()
        lines += [f"![{name}]({link(files_dir, name + '.svg')})", ""]
    return lines


def predictions_section(runs: list[Run], files: dict[str, bytes], files_dir: Path) -> list[str]:
    """Each run's prediction grid, copied beside the page; adds the PNGs to `files`."""
    lines = ["## Predictions", ""]
    for run in runs:
        path = f"{run.params.get('paths.plots', 'plots')}/{PREDICTIONS}"
        data = run.read(path)
        lines += [f"### {run.label}", ""]
        if data is None:
            lines += [f"No `{path}` in this run.", ""]
            continue
        name, n = f"predictions_{slug(run.label)}.png", 2
        while name in files:  # two labels with the same slug
            name, n = f"predictions_{slug(run.label)}_{n}.png", n + 1
        files[name] = data
        lines += [f"![predictions of {run.label}]({link(files_dir, name)})", ""]
    return lines


def render(runs: list[Run], files_dir: Path) -> tuple[str, dict[str, bytes]]:
    """The Markdown page and the files it links (`{file name in files_dir: bytes}`)."""
    files: dict[str, bytes] = {}
    title = "Run report" if len(runs) == 1 else f"Comparison of {len(runs)} runs"
    lines = [f"# {title}", ""] + runs_section(runs) + [""]
    lines += params_section(runs) + metrics_section(runs)
    lines += curves_section(runs, files, files_dir) + predictions_section(runs, files, files_dir)
    return "\n".join(lines).rstrip("\n") + "\n", files


def write_report(runs: list[Run], out: Path) -> None:
    """Write the page to `out` and its charts and pictures to `<out stem>_files/`, removing
    charts and pictures left there by an earlier report."""
    files_dir = out.with_name(f"{out.stem}_files")
    page, files = render(runs, files_dir)
    files_dir.mkdir(parents=True, exist_ok=True)
    for old in sorted(files_dir.iterdir()):
        if old.is_file() and old.suffix in (".svg", ".png") and old.name not in files:
            old.unlink()
    for name, data in sorted(files.items()):
        with atomic_path(files_dir / name) as tmp:
            tmp.write_bytes(data)
    with atomic_path(out) as tmp:
        tmp.write_text(page)


def main(argv: list[str] | None = None) -> None:
    """Command line: `python -m videolm.report [--exps NAME ... | --all] [--out report.md]`."""
    parser = argparse.ArgumentParser(
        prog="python -m videolm.report",
        description="Write a Markdown page comparing params, metrics, training curves and "
                    "prediction grids of the workspace or of DVC experiments.")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--exps", nargs="+", metavar="EXP",
                       help="experiment names or Git revisions ('workspace': the workspace)")
    which.add_argument("--all", action="store_true",
                       help="every experiment of the current commit, as dvc exp show lists them")
    parser.add_argument("--out", type=Path, default=Path("report.md"),
                        help="the Markdown page (default: report.md); charts and pictures go "
                             "to <stem>_files/ beside it")
    parser.add_argument("--repo", default=None,
                        help="the DVC repository (default: the one holding the current folder)")
    args = parser.parse_args(argv)

    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    try:
        with Repo(args.repo) as repo:
            runs = collect_runs(repo, args.exps, args.all)
        write_report(runs, args.out)
    except (VideoLMError, DvcException) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    print(f"wrote {args.out} ({len(runs)} run{'s' if len(runs) != 1 else ''})")


if __name__ == "__main__":
    main()
