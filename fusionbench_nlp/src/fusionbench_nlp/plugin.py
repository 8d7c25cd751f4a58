"""Registers the NLP suites with FusionBench (lazily: importing this imports neither torch nor transformers).

Every suite is registered under its name with its family's pool classes; the classes look the suite
up by that name in :data:`fusionbench_nlp.suites.SUITES`.
"""

from __future__ import annotations

from fusionbench_core import hookimpl

from .suites import SUITES

POOLS = {
    "gpt2": ("fusionbench_nlp.gpt2_glue:GPT2GlueModelPool", "fusionbench_nlp.gpt2_glue:GPT2GlueTaskPool"),
    "flan-t5": ("fusionbench_nlp.flan_t5_glue:FlanT5GlueModelPool", "fusionbench_nlp.flan_t5_glue:FlanT5GlueTaskPool"),
}
"""Suite family → (model pool class, task pool class)."""
PROVIDES = {
    "gpt2": (["data", "pretrained", "architecture", "layer-stack"], ["class-logits"]),
    "flan-t5": (["data", "pretrained", "architecture", "linear-modules"], []),
}
"""Suite family → what its (model pool, task pool) offer methods (``fusionbench_core.needs``)."""
LACKS = {
    "gpt2": ({"linear-modules": "its linear layers are transformers' input-major Conv1D, not nn.Linear"}, {}),
    "flan-t5": ({"layer-stack": "T5 has two layer stacks, the encoder's and the decoder's"},
                {"class-logits": "it scores generated text"}),
}
"""Suite family → why its (model pool, task pool) lack what they do not provide (for the messages)."""


def _metadata(suite) -> dict:
    return {"tasks": list(suite.tasks), "lora": suite.lora, **suite.describe()}


@hookimpl
def register_modelpools(register):
    """Register ``gpt2-glue``, ``flan-t5-base-glue``, ``flan-t5-base-glue-lora16``, ``flan-t5-large-glue-lora16``."""
    for name, suite in SUITES.items():
        register(name, POOLS[suite.family][0], summary=suite.summary, provides=PROVIDES[suite.family][0],
                 lacks=LACKS[suite.family][0], **_metadata(suite))


@hookimpl
def register_taskpools(register):
    """Register the task pools of the same four suites."""
    for name, suite in SUITES.items():
        register(name, POOLS[suite.family][1], summary=suite.summary, provides=PROVIDES[suite.family][1],
                 lacks=LACKS[suite.family][1], **_metadata(suite))
