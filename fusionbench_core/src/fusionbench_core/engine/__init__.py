"""The tensor engine: lazy checkpoint sources, tensor-by-tensor merging and checkpoint writing.

- :mod:`.sources` — ``open_source(path, base=None)`` for HF directories, ``.safetensors`` files,
  sharded indexes, weights-only pickles and PEFT LoRA adapter directories; ``StateDictSource``,
  ``SafetensorsSource`` (memory-mapped, with zero-copy ``view_rows``).
- :mod:`.lora` — ``LoraSource(base, adapter_dir)``: base + scale·B·A per tensor, never materialised.
- :mod:`.tensorwise` — ``TensorwiseAlgorithm`` (the base class of merge methods) and
  ``merge_sources`` (the streaming loop: row blocks, a background reader, CUDA transfer overlap).
- :mod:`.selection` — exact top-k without sorting (``top_k_mask``, ``StreamingTopK``).
- :mod:`.writer` — ``SafetensorsWriter`` (sharded safetensors written tensor by tensor with
  ``pwrite``), ``StateDictSink``.

This subpackage needs torch and safetensors (``pip install fusionbench-core[torch]``); importing
:mod:`.tensorwise` alone does not import torch, so method plugins stay cheap to list.
"""
