"""Fisher merging (Matena and Raffel 2022): θ = Σ λ_i F_i ⊙ θ_i / Σ λ_i F_i with diagonal Fishers."""

from __future__ import annotations

from fusionbench_core import BaseAlgorithm, DataRequest, Hyperparameter, Requirement, hookimpl

from ._params import CACHE, batch_size, examples


class FisherMerging(BaseAlgorithm):
    """Parameter-wise weighted average, each model weighted by its diagonal Fisher information.

    ``F_i = mean over examples x of (∇_θ log p_θi(y|x))²``, one example per backward pass, on model
    ``i``'s own task: with ``fisher_type=empirical`` ``y`` is the gold label, with ``true`` it is drawn
    from the model's own predictive distribution (seeded by the run's seed and the model's name).
    Fishers are cached on disk by model content and data. Where ``Σ λ_i F_i`` is exactly zero (a
    parameter no example moves) the plain weighted average is used instead of dividing by zero (git-theta
    returns 0 there). ``normalize`` divides each model's Fisher by its global L2 norm (plus ``min_fisher``)
    first (FusionBench's option; it makes the models' overall Fisher scales equal); ``min_fisher`` is
    added to every Fisher entry. Parameters without a Fisher (buffers) are averaged with the same λ_i. Needs no pretrained model.

    Upstream FusionBench computes another statistic (MergeLM's batched ``√p·log p`` term, see
    :mod:`.fisher_statistics`) with ``normalize`` on and a 1e-6 floor: ``fisher_statistic=upstream
    normalize=true min_fisher=1e-6`` (and ``batch_size=32``, its default) reproduces it.
    """

    name = "fisher_merging"
    requirement = Requirement.TRAIN_STATISTICS
    data = DataRequest(split="train", examples=256, labelled=True)
    hyperparameters = (
        examples(256, "Training examples per task for the Fisher (one backward pass each)"),
        Hyperparameter("fisher_type", str, "empirical", "empirical: gold labels; true: labels sampled from the model",
                       choices=("empirical", "true")),
        Hyperparameter("fisher_statistic", str, "exact",
                       "exact: per-example squared gradients of log p(y|x) (the paper's); upstream: FusionBench's "
                       "batched √p·log p term (labels unused; batches of batch_size)", choices=("exact", "upstream")),
        batch_size(32, "Examples per backward pass of fisher_statistic=upstream (the exact Fisher takes 1)"),
        Hyperparameter("model_weights", list, None, "λ_i per model (default: equal)"),
        Hyperparameter("normalize", bool, False, "Divide each model's Fisher by its global L2 norm (upstream: true)"),
        Hyperparameter("min_fisher", float, 0.0, "Added to every Fisher entry before merging (upstream: 1e-6)",
                       minimum=0.0),
        CACHE,
    )

    def validate(self):
        """``fisher_type=true`` samples labels for the exact statistic; the upstream term uses none."""
        from fusionbench_core.errors import ConfigError

        if self.fisher_statistic == "upstream" and self.fisher_type == "true":
            raise ConfigError("method 'fisher_merging': fisher_type=true applies to fisher_statistic=exact only "
                              "(the upstream statistic weights every class by its probability)")

    def run(self, modelpool):
        """Fisher per model (cached), then the Fisher-weighted average of every parameter."""
        from fusionbench_core.progress import track
        from fusionbench_core.protocols import check_same_keys

        from .data_access import CostMeter, batch_length, request_with, require_data_pool
        from .fisher_statistics import diagonal_fisher, fisher_weighted_state, merge_weights
        from .linear_statistics import draw_batches
        from .statistics_cache import StatisticsCache, data_fingerprint, model_fingerprint

        pool = require_data_pool(modelpool, self.name)
        names = list(pool.model_names)
        weights = merge_weights(self.model_weights, len(names), self.name)
        upstream = self.fisher_statistic == "upstream"
        empirical = self.fisher_type == "empirical"
        request = request_with(self.data, examples=self.examples, labelled=empirical and not upstream)
        sources = [pool.tensors(name) for name in names]
        keys = check_same_keys(dict(zip(names, sources, strict=True)))
        meter = CostMeter()
        cache = StatisticsCache("fisher", enabled=self.cache)
        per_pass = self.batch_size if upstream else 1
        settings = ({"fisher_statistic": "upstream", "batch_size": per_pass} if upstream else
                    {"fisher_type": self.fisher_type, "seed": None if empirical else self.seed})
        fishers = []
        for name, source in track(list(zip(names, sources, strict=True)), f"{self.name}: Fisher information"):
            batches = draw_batches(pool, name, request, per_pass)
            meter.examples += sum(batch_length(inputs) for inputs, _ in batches)
            data_key = data_fingerprint(batches)
            key = None if data_key is None else cache.key(
                statistic="diagonal-fisher", model=model_fingerprint(source), data=data_key, **settings)
            fishers.append(cache.get_or_compute(
                key, lambda name=name, batches=batches: diagonal_fisher(
                    pool, name, batches, empirical=empirical, seed=self.seed, meter=meter, method=self.name,
                    statistic=self.fisher_statistic, keys=keys)))
        state = fisher_weighted_state(sources, keys, fishers, weights, normalize=self.normalize,
                                      min_fisher=self.min_fisher)
        meter.extra["statistics_cache_hits"] = cache.hits
        self.cost = meter.as_dict()
        return pool.build_model(state)


@hookimpl
def register_methods(register):
    """Register ``fisher_merging``."""
    register("fisher_merging", "fusionbench_data_methods.fisher_merging:FisherMerging",
             summary="Fisher merging: diagonal-Fisher-weighted average (empirical or true Fisher)",
             requirement="train-statistics")
