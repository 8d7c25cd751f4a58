"""Model pool and task pool of mini-compositional (``fb run -p mini-compositional``).

The model pool serves mini-vision's pretrained encoder and one expert per held-in pair; options
choose a subset of the experts (``n_models`` of them, in a fixed seeded permutation
``permutation``, for the scaling curves) or the multitask model alone (``models=multitask``, which
any method over one model returns unchanged, e.g. ``simple_average``). The task pool scores every
pair, held in and held out, each with its category's fixed head, and declares the task groups
``held-in`` (the pairs whose experts the bound model pool serves; all held-in pairs for the
multitask model), ``held-out`` (the pairs no expert saw), and ``held-in, not merged`` when a
subset leaves some held-in experts out. ``fb run`` reports each group's average.
"""

from __future__ import annotations

import sys
from typing import Any

from fusionbench_core.errors import ConfigError
from fusionbench_core.protocols import PRETRAINED, Option
from fusionbench_core.suitekit.pools import ExpertSuiteModelPool, ExpertSuiteTaskPool

from ..mini.pool import MiniVisionModelPool
from . import build as cb
from .data import subset_order

MODEL_SETS = ("experts", cb.MULTITASK)
HELD_IN, HELD_OUT, NOT_MERGED = "held-in", "held-out", "held-in, not merged"


class CompositionalModelPool(MiniVisionModelPool):
    """mini-vision's pretrained encoder and one expert per held-in (category, artist) pair, or the multitask model."""

    suite = cb.SUITE
    builder = cb.BUILDER
    options = (
        Option("seed", int, 0, "Seed of the experts' and the multitask model's fine-tuning; "
               "default: the run's seed (fb run --seed, a sweep's seeds).", minimum=0),
        Option("quick", bool, False, "Use the quick variant (smaller, as CI builds it)."),
        Option("models", str, "experts", "Serve the held-in experts, or the multitask model alone.",
               choices=MODEL_SETS),
        Option("n_models", int, 0, "Serve the first N experts of the permutation (0: all).", minimum=0),
        Option("permutation", int, 0, "Which fixed seeded order of the experts n_models takes a prefix of "
               "(0: the suite's order).", minimum=0),
    )

    def __init__(self, name: str | None = None, seed: int = 0, quick: bool = False, models: str = "experts",
                 n_models: int = 0, permutation: int = 0, *, builder: Any = None):
        builder = builder or self.builder
        profile = builder.profile_for(quick)
        if models not in MODEL_SETS:
            raise ConfigError(f"model pool '{name or self.suite}': option 'models' must be one of "
                              f"{', '.join(MODEL_SETS)}, got '{models}'")
        if n_models > len(profile.tasks):
            raise ConfigError(f"model pool '{name or self.suite}': n_models={n_models} exceeds the "
                              f"{len(profile.tasks)} held-in experts")
        if not builder.is_built(profile, seed):
            print(f"{self.suite} ({profile.name}, seed {seed}) is not built yet: building it now "
                  f"(once; cached under {builder.store(profile).root})", file=sys.stderr)
            builder.build(profile, seed)
        super().__init__(name, seed, quick, builder=builder)
        self.models = models
        self.n_models = n_models
        self.permutation = permutation

    @classmethod
    def describe_suite(cls) -> dict[str, Any]:
        """Extra facts for ``fb suites show``: the grid, the domains and their licences, the variants."""
        from . import data as cd

        facts = {"backbone": "mini-vision's pretrained encoder (Fashion-MNIST)",
                 "held-in": cd.held_in(), "held-out": cd.held_out(),
                 "domains": {d.name: f"{d.package}, images {d.licence}" for d in cd.DOMAINS}}
        facts.update(ExpertSuiteModelPool.describe_suite.__func__(cls))
        return facts

    def fingerprint(self) -> str:
        """The variant's directory, the seed and the model set served (a sweep reruns a cell when any changes)."""
        import hashlib

        return hashlib.sha256(f"{self.store.root.name}/seed{self.seed}/{self.models}/{self.n_models}/"
                              f"{self.permutation}".encode()).hexdigest()

    @property
    def model_names(self) -> list[str]:
        """The experts served (a prefix of a fixed permutation), or ``["multitask"]``."""
        if self.models == cb.MULTITASK:
            return [cb.MULTITASK]
        order = subset_order(list(self.profile.tasks), self.permutation)
        return order[: self.n_models] if self.n_models else order

    @property
    def merged_pairs(self) -> list[str]:
        """The held-in pairs the served models were trained on, in the suite's order."""
        if self.models == cb.MULTITASK:
            return list(self.profile.tasks)
        served = set(self.model_names)
        return [t for t in self.profile.tasks if t in served]

    def _dir(self, name: str):
        if name == cb.MULTITASK and self.models == cb.MULTITASK:
            return self.store.expert_dir(self.seed, cb.MULTITASK)
        if name != PRETRAINED and name not in self.model_names:
            from fusionbench_core.errors import UnknownComponentError

            raise UnknownComponentError("model", name, [PRETRAINED, *self.model_names], owner=f"model pool '{self.name}'")
        return super()._dir(name)

    def head(self, task: str):
        """A pair's fixed head (its category's)."""
        if task not in self._heads:
            if task not in self.profile.pairs:
                self._dir(task)
            self._heads[task] = self.builder.load_head(self.store.head_path(task))
        return self._heads[task]


class CompositionalTaskPool(ExpertSuiteTaskPool):
    """Accuracy of an encoder on every (category, artist) pair, each with its category's fixed head; groups held in / out."""

    suite = cb.SUITE
    builder = cb.BUILDER
    default_batch_size = 256
    options = (
        Option("quick", bool, None, "Score with the quick variant's heads (default: the model pool's variant)."),
        Option("max_examples", int, 0, "Cap on scored images per pair (0: the whole split).", minimum=0),
        Option("batch_size", int, 256, "Evaluation batch size.", minimum=1),
        Option("split", str, "test", "The split scored: test, or validation (to choose hyperparameters).",
               choices=("test", "validation")),
    )

    @property
    def task_names(self) -> list[str]:
        """Every pair: held in first, then held out."""
        return list(self.variant()[1].pairs)

    @property
    def task_groups(self) -> dict[str, list[str]]:
        """``held-in`` (pairs of the served experts), ``held-out``, and ``held-in, not merged`` for a subset."""
        profile = self.variant()[1]
        merged = list(profile.tasks)
        if isinstance(self._bound, CompositionalModelPool):
            merged = self._bound.merged_pairs
        groups = {HELD_IN: merged, HELD_OUT: list(profile.held_out)}
        rest = [t for t in profile.tasks if t not in merged]
        if rest:
            groups[NOT_MERGED] = rest
        return groups

    def scored_tasks(self, profile: Any) -> list[str]:
        """Every pair, held in and held out (the base class scores them, with predictions, each with its head)."""
        return list(profile.pairs)
