"""The tensor engine: lazy checkpoint sources, tensor-by-tensor merging and checkpoint writing.

- :mod:`.sources` — ``open_source(path, base=None)`` for HF directories, ``.safetensors`` files,
  sharded indexes, weights-only pickles and PEFT LoRA adapter directories (checking their
  ``config.json``, ``adapter_config.json`` and shard index); re-exports the readers below.
- :mod:`.readers` — the readers of each format: ``StateDictSource``, ``SafetensorsSource``
  (memory-mapped, with zero-copy ``view_rows``), ``PickleSource``, ``RenamedSource`` (another
  source under other names, its fast read paths forwarded), ``open_sharded``, ``read_json_file``.
- :mod:`.lora` — ``LoraSource(base, adapter_dir)``: base + scale·B·A per tensor, never materialised.
- :mod:`.tensorwise` — ``TensorwiseAlgorithm`` (the base class of merge methods) and
  ``merge_sources`` (the streaming loop: row blocks, a background reader, CUDA transfer overlap).
- :mod:`.prefetch` — ``TensorReader``, the background reader that runs one step ahead.
- :mod:`.selection` — exact top-k without sorting (``top_k_mask``, ``StreamingTopK``).
- :mod:`.writer` — ``SafetensorsWriter`` (sharded safetensors written tensor by tensor with
  ``pwrite``), ``StateDictSink``.
- :mod:`.devices` — ``resolve_device`` (``auto``, ``cpu``, ``cuda[:N]``).

Imports run one way: ``sources`` → ``lora`` → ``readers``, and the engine imports nothing of the
application layer (runs, plugins, configuration), only :mod:`~fusionbench_core.protocols` and
:mod:`~fusionbench_core.errors`. This subpackage needs torch and safetensors
(``pip install fusionbench-core[torch]``); importing :mod:`.tensorwise` alone does not import torch,
so method plugins stay cheap to list.
"""
