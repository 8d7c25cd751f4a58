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
