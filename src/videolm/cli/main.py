"""The `videolm` command: `videolm predict VIDEO`, `videolm info`; `videolm COMMAND --help` for each."""

from __future__ import annotations

import argparse

from videolm.cli import info, predict
from videolm.stage import user_errors


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="videolm", description="Video language modeling over k-means patch codes: "
                                     "the pipeline runs with `dvc repro`; this command uses what it made.")
    commands = parser.add_subparsers(dest="command", required=True)
    predict.add_parser(commands)
    info.add_parser(commands)
    args = parser.parse_args(argv)
    with user_errors(f"videolm {args.command}"):
        args.run(args)


if __name__ == "__main__":
    main()
