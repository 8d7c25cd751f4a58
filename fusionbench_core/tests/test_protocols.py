"""Protocol helpers: hyperparameter parsing, reports, BaseAlgorithm settings."""

import pytest

from fusionbench_core import BaseAlgorithm, EvaluationReport, Hyperparameter
from fusionbench_core.errors import ConfigError, UnknownComponentError


def test_hyperparameter_parses_strings_to_declared_types():
    assert Hyperparameter("x", float, 0.3, "").parse("0.25") == 0.25
    assert Hyperparameter("n", int, 1, "").parse("7") == 7
    assert Hyperparameter("b", bool, False, "").parse("yes") is True
    assert Hyperparameter("b", bool, False, "").parse("off") is False
    assert Hyperparameter("l", list, [], "").parse("0.1,0.2,x") == [0.1, 0.2, "x"]
    assert Hyperparameter("l", list, [], "").parse("[1, 2]") == [1, 2]


@pytest.mark.parametrize(("kind", "value"), [(float, "abc"), (int, "1.5"), (bool, "maybe"), (float, "nan")])
def test_hyperparameter_rejects_bad_values_naming_the_key(kind, value):
    with pytest.raises(ConfigError, match=r"'ties\.x' expects"):
        Hyperparameter("x", kind, None, "").parse(value, "ties")


def test_hyperparameter_choices_are_enforced():
    hp = Hyperparameter("mode", str, "sum", "", choices=("sum", "mean"))
    assert hp.parse("mean") == "mean"
    with pytest.raises(ConfigError, match="must be one of sum, mean"):
        hp.parse("max")


def test_evaluation_report_average_is_mean_over_tasks_per_metric():
    report = EvaluationReport({"a": {"accuracy": 0.5, "loss": 2.0}, "b": {"accuracy": 1.0, "loss": 1.0}})
    assert report.average == {"accuracy": 0.75, "loss": 1.5}
    assert report.to_dict()["average"]["accuracy"] == 0.75


class _Scaled(BaseAlgorithm):
    name = "scaled"
    hyperparameters = (
        Hyperparameter("scaling_factor", float, 0.3, "λ"),
        Hyperparameter("steps", int, 10, "steps"),
    )


def test_base_algorithm_sets_typed_attributes_with_defaults():
    algo = _Scaled(scaling_factor="0.5")
    assert algo.scaling_factor == 0.5
    assert algo.steps == 10
    assert algo.settings == {"scaling_factor": 0.5, "steps": 10}


def test_base_algorithm_unknown_key_suggests_the_close_one():
    with pytest.raises(UnknownComponentError) as info:
        _Scaled(scalng_factor=1)
    assert "unknown hyperparameter 'scalng_factor' of method 'scaled'" in str(info.value)
    assert "Did you mean: scaling_factor?" in str(info.value)


def test_ranges_are_checked_and_shown_in_interval_notation():
    hp = Hyperparameter("density", float, 0.2, "", minimum=0, maximum=1, minimum_exclusive=True)
    assert hp.range_text() == "(0, 1]" and hp.describe()["range"] == "(0, 1]"
    assert hp.parse("1") == 1.0
    with pytest.raises(ConfigError, match=r"^hyperparameter 'ties\.density' must be in \(0, 1\], got '0'$"):
        hp.parse("0", "ties")
    assert Hyperparameter("n", int, 1, "", minimum=1).range_text() == ">= 1"
    assert "range" not in Hyperparameter("x", float, 0.0, "").describe()


def test_option_errors_say_option_and_the_program_can_name_role_and_pool():
    from fusionbench_core import Option

    opt = Option("n_models", int, 3, "", minimum=1)
    with pytest.raises(ConfigError, match=r"^option 'tiny\.n_models' expects int, got 'abc'$"):
        opt.parse("abc", "tiny")
    with pytest.raises(ConfigError, match=r"^option 'modelpool\.n_models' of model pool 'tiny' must be in >= 1, got 0$"):
        opt.parse(0, subject="option 'modelpool.n_models' of model pool 'tiny'")
    assert isinstance(opt, Hyperparameter) and opt.describe()["range"] == ">= 1"


class _Spread(BaseAlgorithm):
    name = "spread"
    hyperparameters = (
        Hyperparameter("density", float, 0.5, "", minimum=0, maximum=1),
        Hyperparameter("epsilon", float, 0.1, "", minimum=0, maximum=1),
    )

    def validate(self):
        if not (0 <= self.density - self.epsilon and self.density + self.epsilon <= 1):
            raise ConfigError(f"method 'spread': density ± epsilon must lie in [0, 1], got {self.density} ± {self.epsilon}")


def test_validate_runs_on_construction_after_each_value_is_parsed():
    assert _Spread(density="0.5", epsilon="0.5").settings == {"density": 0.5, "epsilon": 0.5}
    with pytest.raises(ConfigError, match=r"^method 'spread': density ± epsilon must lie in \[0, 1\], got 0\.9 ± 0\.2$"):
        _Spread(density="0.9", epsilon="0.2")
    assert _Scaled().settings == {"scaling_factor": 0.3, "steps": 10}  # the default validate() accepts anything


def test_bind_taskpool_calls_bind_only_where_a_task_pool_offers_it():
    from fusionbench_core import BaseTaskPool
    from fusionbench_core.protocols import BindsModelPool, bind_taskpool

    class Recording(BaseTaskPool):
        def bind(self, modelpool):
            self.bound = modelpool

    class Plain:
        name = "plain"

    pool = object()
    recording = Recording()
    bind_taskpool(recording, pool)
    assert recording.bound is pool
    bind_taskpool(Plain(), pool)  # no bind(): nothing to call, no error
    assert isinstance(BaseTaskPool(), BindsModelPool) and not isinstance(Plain(), BindsModelPool)
    assert BaseTaskPool().bind(pool) is None
