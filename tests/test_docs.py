"""The README and docs/ stay true: every figure written from a committed output is the file's
(`docs/figures.py`, through cog), and every command, param key, metric key, module and path
they name exists."""

from __future__ import annotations

import fnmatch
import importlib
import json
import os
import re
import shutil
import sys
from itertools import product
from pathlib import Path

import pytest
import yaml
from cogapp import Cog

from videolm.config import ConfigError, Params, load_params

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FILE_NAME = re.compile(r".*\.(py|pt|json|yaml|lock|md|h5|txt|png|gif|mp4|avi|html)$")
PLACEHOLDER = re.compile(r"<[^>]*>|\$\{[^}]*\}|\.\.\.|\bkey=value\b|/X\.py")


def code_spans() -> list[tuple[str, str]]:
    """(page, text) of every inline code span and every line of every fenced block."""
    spans = []
    for page in PAGES:
        text = page.read_text()
        for block in re.findall(r"```[^\n]*\n(.*?)```", text, re.S):
            spans += [(page.name, line) for line in block.splitlines()]
        prose = re.sub(r"```[^\n]*\n.*?```", "", text, flags=re.S)
        spans += [(page.name, span) for span in re.findall(r"`([^`\n]+)`", prose)]
    return spans


def cog_check(root: Path) -> int:
    """cog's --check over the README and docs of `root`, run there: 0 when every generated figure
    is what its file says."""
    pages = [str(p.relative_to(ROOT)) for p in PAGES]
    cwd = Path.cwd()
    sys.modules.pop("figures", None)  # imported afresh from root's docs/, its files read anew
    try:
        os.chdir(root)
        return Cog().main(["cog", "--check", "-I", "docs", *pages])
    finally:
        os.chdir(cwd)
        sys.modules.pop("figures", None)


def test_every_generated_figure_is_its_files():
    assert cog_check(ROOT) == 0, "a figure differs from its file: run `cog -r -I docs README.md docs/*.md`"


def test_a_changed_metric_is_caught(tmp_path):
    for name in ["README.md", "docs", "metrics", "plots/horizon", "benchmarks/RESULTS-heldout.md",
                 "benchmarks/RESULTS-models.md", "benchmarks/RESULTS-models.json"]:
        source, target = ROOT / name, tmp_path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if source.is_dir() else shutil.copy)(source, target)
    assert cog_check(tmp_path) == 0
    metrics = json.loads((tmp_path / "metrics/eval.json").read_text())
    metrics["model_perplexity"] += 0.01
    (tmp_path / "metrics/eval.json").write_text(json.dumps(metrics))
    assert cog_check(tmp_path) != 0


def override_sets(command: str) -> list[list[str]]:
    """The `key=value` arguments of a stage or `dvc exp run -S` command, placeholders left out, as
    the sets a run would apply: one per value of a comma sweep (`-S key=a,b`), the rest as given."""
    args = [arg for arg in command.split("#")[0].split()
            if "=" in arg and not arg.startswith("-") and not PLACEHOLDER.search(arg)]
    values = [(arg.split("=", 1)[0], arg.split("=", 1)[1].split(",") if "-S" in command and "[" not in arg
               else [arg.split("=", 1)[1]]) for arg in args]
    base = [f"{key}={choices[0]}" for key, choices in values]
    return [base] + [base[:i] + [f"{key}={choice}"] + base[i + 1:]
                     for i, (key, choices) in enumerate(values) for choice in choices[1:]]


COMMANDS = sorted({m.group(0).strip() for _, span in code_spans()
                   for m in re.finditer(r"(python3? stages/\S+\.py|dvc exp run)[^#]*", span)})


@pytest.mark.parametrize("command", COMMANDS)
def test_every_documented_command_names_what_exists(command):
    stage = re.match(r"python3? (stages/\S+\.py)", command)
    if stage and not PLACEHOLDER.search(stage.group(1)):
        assert (ROOT / stage.group(1)).is_file(), command
    for overrides in override_sets(command):
        try:
            load_params(ROOT, overrides)
        except ConfigError as err:
            pytest.fail(f"{command!r}: {err}")


def param_keys(model=Params, prefix="") -> set[str]:
    keys = set()
    for name, field in model.model_fields.items():
        keys.add(prefix + name)
        if isinstance(field.annotation, type) and hasattr(field.annotation, "model_fields"):
            keys |= param_keys(field.annotation, f"{prefix}{name}.")
    return keys


def python_path_exists(dotted: str) -> bool:
    """Whether `videolm.<dotted>` names a module or something in one."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module("videolm." + ".".join(parts[:cut]))
        except ImportError:
            continue
        try:
            for name in parts[cut:]:
                obj = getattr(obj, name)
        except AttributeError:
            return False
        return True
    return False


def test_every_param_key_the_docs_name_exists():
    keys, sections = param_keys(), set(Params.model_fields)
    wrong = []
    for page, span in code_spans():
        if span.startswith("error:"):  # a quoted message about a wrong key
            continue
        for token in re.findall(r"(?<![\w./$-])([a-z_]+(?:\.[a-z_0-9]+)+)(?:=(\S+))?", span):
            key, value = token
            if key.split(".")[0] not in sections or FILE_NAME.match(key):
                continue
            if key not in keys and not python_path_exists(key):
                wrong.append(f"{page}: {key}")
    assert not wrong, "no such param key (or videolm module): " + ", ".join(sorted(set(wrong)))


def expansions(pattern: str) -> list[str]:
    """`a_{x,y}_<measure>` -> ['a_x_*', 'a_y_*']: braces expanded, placeholders as wildcards."""
    pattern = re.sub(r"<[^>]*>", "*", pattern)
    parts = re.split(r"\{([^}]*)\}", pattern)
    choices = [[p] if i % 2 == 0 else p.split(",") for i, p in enumerate(parts)]
    return ["".join(c) for c in product(*choices)]


def test_every_metric_key_the_docs_name_exists():
    keys = set()
    for path in [*sorted((ROOT / "metrics").glob("*.json")), ROOT / "dvclive/metrics.json"]:
        keys |= set(json.loads(path.read_text()))
    table = (ROOT / "docs/results.md").read_text().split("## Metrics", 1)[1]
    names = [name for row in re.findall(r"^\| (.*?) \|", table, re.M) for name in re.findall(r"`([^`]+)`", row)]
    names += [span for _, span in code_spans() if re.fullmatch(r"(val_(extrapolate|fill)|gen_<?\w+>?|fill_(psnr|ssim|sharpness)|best_step)_[\w{},<>*]+", span)]
    assert len(names) > 30
    missing = [name for name in names for pattern in expansions(name) if not fnmatch.filter(keys, pattern)]
    assert not missing, f"no such metric key: {sorted(set(missing))}"


def dvc_outputs() -> list[str]:
    """Every output path of dvc.yaml, its `${paths.x}` filled from params.yaml."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    text = re.sub(r"\$\{paths\.(\w+)\}", lambda m: params["paths"][m.group(1)], (ROOT / "dvc.yaml").read_text())
    out = []
    for stage in yaml.safe_load(text)["stages"].values():
        for entry in stage.get("outs", []) + stage.get("metrics", []) + stage.get("plots", []):
            out.append(next(iter(entry)) if isinstance(entry, dict) else entry)
    return out


TRACKED = ("src/", "stages/", "tests/", "benchmarks/", "docs/", "profiles/", "metrics/", "plots/", ".ci/")
MODULES = ("cli/", "codes/", "evaluation/", "model/", "training/")


def test_every_path_the_docs_name_exists():
    outputs = dvc_outputs()
    wrong = []
    for page, span in code_spans():
        for token in re.findall(r"(?<![\w./-])((?:\.ci|[a-z_]+)/[\w./*<>-]*)", span):
            base = ROOT if token.startswith(TRACKED) else ROOT / "src/videolm" if token.startswith(MODULES) else None
            if base is None:
                continue
            if PLACEHOLDER.search(token):  # a file a user's run makes (a shard's, say): its folder exists
                token = re.sub(r"/X\.py", "/<X>.py", token)
                token = token[:token.index("<")].rsplit("/", 1)[0] + "/"
            pattern = token.rstrip("/.")
            if (list(base.glob(pattern)) or any(fnmatch.fnmatch(out, pattern) or out.startswith(pattern + "/")
                                                or pattern.startswith(out + "/") for out in outputs)):
                continue
            wrong.append(f"{page}: {token}")
    assert not wrong, "no such file: " + ", ".join(sorted(set(wrong)))


def test_the_quoted_params_errors_are_the_schemas():
    """Each params error that docs/reliability.md quotes is what the schema says for that value."""
    quoted = re.findall(r"`error: ((\w+\.\w+)(?:=('?)([^' ]*)\3 is not allowed|: no such key)[^`]*)`",
                        (ROOT / "docs/reliability.md").read_text())
    assert len(quoted) >= 5
    for message, key, _, value in quoted:
        with pytest.raises(ConfigError) as err:
            load_params(ROOT, [f"{key}={value or 1}"])
        assert str(err.value) == message
