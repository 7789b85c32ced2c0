"""`python -m core.cli` (and `torchrun ... -m core.cli`): the `digit-lab` command line."""
import sys

from core.cli import main

sys.exit(main())
