"""The naming contract between a pool's tensors and its loaded modules (fusionbench_core.naming)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fusionbench_core.errors import ConfigError
from fusionbench_core.naming import RenamesTensors, tensor_naming


class Net(nn.Module):
    """A linear layer, a norm with a buffer, and a head tied to an embedding."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(5, 3)
        self.fc = nn.Linear(3, 3)
        self.norm = nn.BatchNorm1d(3)
        self.head = nn.Linear(3, 5, bias=False)
        self.head.weight = self.embed.weight


class Pool:
    name = "plain"


class PrefixedPool:
    """Checkpoint names carry ``outer.``; the loaded module's do not."""

    name = "prefixed"

    def module_name(self, key):
        return key.removeprefix("outer.")


def test_agreeing_names_map_to_themselves_and_tied_aliases_to_the_held_key():
    model = Net()
    keys = list(model.state_dict())  # holds both embed.weight and head.weight
    keys.remove("head.weight")
    naming = tensor_naming(Pool(), model, keys)
    assert naming.key("fc.weight") == "fc.weight" and naming.module("norm.running_mean") == "norm.running_mean"
    assert naming.key("head.weight") == "embed.weight"  # the alias of a tied parameter
    assert naming.parameter_keys == ["embed.weight", "fc.weight", "fc.bias", "norm.weight", "norm.bias"]
    assert "head.weight" in naming and "nothing" not in naming


def test_a_declared_mapping_is_used_and_checked():
    model = Net()
    keys = ["outer." + key for key in model.state_dict() if key != "head.weight"]
    pool = PrefixedPool()
    assert isinstance(pool, RenamesTensors) and not isinstance(Pool(), RenamesTensors)
    naming = tensor_naming(pool, model, keys)
    assert naming.key("fc.bias") == "outer.fc.bias" and naming.key("head.weight") == "outer.embed.weight"
    assert naming.module("outer.norm.num_batches_tracked") == "norm.num_batches_tracked"


@pytest.mark.parametrize("case", ["unknown tensor", "parameter without tensor"])
def test_a_breach_is_a_one_line_error_naming_pool_and_key(case):
    model = Net()
    keys = [key for key in model.state_dict() if key != "head.weight"]
    if case == "unknown tensor":
        keys = ["outer." + key for key in keys]  # a prefix the plain pool does not declare
        needle = "'outer.embed.weight'"
    else:
        keys.remove("fc.bias")
        needle = "'fc.bias'"
    with pytest.raises(ConfigError) as error:
        tensor_naming(Pool(), model, keys)
    message = str(error.value)
    assert "\n" not in message and "'plain'" in message and needle in message


def test_integer_parameters_need_no_tensor():
    model = Net()
    model.register_parameter("steps", nn.Parameter(torch.zeros(2, dtype=torch.long), requires_grad=False))
    keys = [key for key in model.state_dict() if key not in ("head.weight", "steps")]
    assert "steps" not in tensor_naming(Pool(), model, keys).parameter_keys
