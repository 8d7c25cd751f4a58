"""The tensor engine: lazy checkpoint sources, tensor-by-tensor merging and checkpoint writing.

This subpackage needs torch and safetensors (``pip install fusionbench-core[torch]``); the rest of
core does not import it unless a merge actually runs.
"""
