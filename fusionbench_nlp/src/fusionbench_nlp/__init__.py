"""FusionBench NLP: text model pools, task pools and their data.

Suites: ``gpt2-glue`` (GPT-2 backbone, seven GLUE classification experts), ``flan-t5-base-glue``
(Flan-T5-base, eight full GLUE fine-tunes, text to text) and ``flan-t5-{base,large}-glue-lora16``
(LoRA-16 adapters merged per tensor). Importing this package imports no torch.
"""

__version__ = "0.1.0"
