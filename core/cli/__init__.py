"""The `digit-lab` command line: train, resume, list and evaluate runs without the dashboard.

`digit-lab train --preset seed-cnn --epochs 1 --json`; `digit-lab runs`; `digit-lab eval RUN`;
`digit-lab robustness starter --attack pgd --eps 0.1`;
`digit-lab transfer --source mnist --target fashion-mnist --k 1,10,100 --seeds 3 --json`;
`digit-lab drawings import "Class 3B" drawings.zip`; `digit-lab eval starter --drawings "Class 3B" --json`.
Exit codes: 0 completed, 1 the run failed or diverged, 2 bad input, 130 stopped (Ctrl-C, SIGTERM, SIGHUP).
"""
from __future__ import annotations

import sys
from typing import Sequence

from core.cli.parser import build_parser
from core.cli.running import EXIT_BAD_INPUT
from core.errors import DigitLabError

# Each command imports the parts of the engine it uses inside its handler, so `digit-lab runs` does not load
# the training loop and `digit-lab train` does not load the explanation libraries.


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except DigitLabError as error:
        flag = getattr(error, "field", None)
        print(f"error: {error}" + (f" [--{flag.replace('_', '-')}]" if flag else ""), file=sys.stderr)
        return EXIT_BAD_INPUT
