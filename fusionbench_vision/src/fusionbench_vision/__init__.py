"""FusionBench's CLIP vision suites: ViT-B/32, B/16 and L/14 on TA8, TALL14, TALL20 and robustness.

Importing this package imports neither torch nor transformers; the model and task pools
(:mod:`fusionbench_vision.modelpool`, :mod:`fusionbench_vision.taskpool`) do.
"""

__version__ = "0.1.0"
