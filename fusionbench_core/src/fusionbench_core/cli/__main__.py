"""``python -m fusionbench_core.cli``: the same as ``fb``."""

from . import main

main()
