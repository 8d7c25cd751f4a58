"""Model mixing for FusionBench: methods whose fused model has more parts than one dense model.

SMILE (training-free low-rank experts per linear layer), WEMoE and sparse WEMoE (MLPs whose weights are
routed per input over the task vectors, routers trained at test time), RankOne-MoE (rank-one experts
from the task vectors' SVD), depth up-scaling (SOLAR: stacked layer ranges) and MoE up-cycling
(Mixtral-style experts from the MLPs, meant for continued training).

Each ``<method>.py`` module is its own plugin entry point and imports torch only inside the method.
The shared machinery: :mod:`.modules` (the mixture layers, each able to describe and rebuild itself),
:mod:`.backbone` (finding the pool's layers, MLPs and linears from its
:class:`~fusionbench_core.protocols.ArchitectureSpec`), :mod:`.structure` (save and load: safetensors
plus ``structure.json``), :mod:`.router_training` (test-time entropy minimisation of routers) and
:mod:`.mixing_base` (the base class: save/load capability and the cost report).
"""
