"""Build local stand-ins of a CLIP suite: random CLIP models under the hub ids, small image datasets.

Used by the tests (tiny models, a few images) and by ``benchmarks/clip_eval_throughput.py``
(real-size ViT-B/32 with random weights). Point ``FUSIONBENCH_MODEL_ROOT`` and
``FUSIONBENCH_DATA_ROOT`` at the roots written here and the suites load them as if from the hub:

* ``<model_root>/<pretrained id>``: a ``CLIPModel`` (text and vision towers), a ``CLIPTokenizer``
  (byte-level vocabulary, no merges) and ``preprocessor_config.json``;
* ``<model_root>/<expert id>``: a ``CLIPVisionModel`` = the pretrained tower plus seeded noise
  (or, for LoRA suites, a PEFT LoRA-16 adapter on it);
* ``<data_root>/<dataset id>``: a ``DatasetDict`` saved with ``save_to_disk`` with the task's split
  names, image and label columns and class names (``<config>/`` below it for SVHN's ``cropped_digits``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from .suites import SuiteSpec
from .tasks import get_task

TINY_VISION = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
               "image_size": 32, "patch_size": 8}
TINY_TEXT = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
             "max_position_embeddings": 77}
B32_VISION = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
              "image_size": 224, "patch_size": 32}
B32_TEXT = {"hidden_size": 512, "intermediate_size": 2048, "num_hidden_layers": 12, "num_attention_heads": 8,
            "max_position_embeddings": 77}
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def _byte_vocab() -> dict[str, int]:
    """CLIP's byte-level alphabet (each byte as a printable character), alone and word-final, plus specials."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    codes, extra = printable[:], 0
    for byte in range(256):
        if byte not in printable:
            codes.append(256 + extra)
            extra += 1
    chars = [chr(c) for c in codes]
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return vocab


def save_pretrained_clip(path: Path, *, vision: dict[str, Any] = TINY_VISION, text: dict[str, Any] = TINY_TEXT,
                         projection_dim: int = 16, seed: int = 0) -> Any:
    """Write a random ``CLIPModel`` with tokenizer and processor config to ``path``; returns the model."""
    import torch
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    from .loading import quiet_transformers

    quiet_transformers()
    vocab = _byte_vocab()
    try:
        tokenizer = CLIPTokenizer(vocab=vocab, merges=[])
    except TypeError:  # transformers 4 reads the vocabulary and merges from files
        path.mkdir(parents=True, exist_ok=True)
        (path / "vocab.json").write_text(json.dumps(vocab))
        (path / "merges.txt").write_text("#version: 0.2\n")
        tokenizer = CLIPTokenizer(vocab_file=str(path / "vocab.json"), merges_file=str(path / "merges.txt"))
    config = CLIPConfig(
        text_config={**text, "vocab_size": len(vocab), "bos_token_id": tokenizer.bos_token_id,
                     "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id},
        vision_config=vision, projection_dim=projection_dim,
    )
    torch.manual_seed(seed)
    model = CLIPModel(config).eval()
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    size = vision["image_size"]
    (path / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "CLIPImageProcessor", "do_resize": True, "size": {"shortest_edge": size},
        "do_center_crop": True, "crop_size": {"height": size, "width": size}, "do_normalize": True,
        "image_mean": CLIP_MEAN, "image_std": CLIP_STD, "resample": 3, "do_rescale": True,
        "rescale_factor": 1 / 255, "do_convert_rgb": True,
    }))
    return model


def save_expert(path: Path, pretrained: Any, *, seed: int, noise: float = 0.02) -> None:
    """Write the pretrained vision tower plus seeded Gaussian noise as a ``CLIPVisionModel`` to ``path``."""
    import torch
    from transformers import CLIPVisionModel

    tower = CLIPVisionModel(pretrained.config.vision_config)
    getattr(tower, "vision_model", tower).load_state_dict(pretrained.vision_model.state_dict())  # 4.x nests it
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in tower.parameters():
            param.add_(torch.randn(param.shape, generator=gen) * noise)
    tower.save_pretrained(str(path))
    _upstream_names(path / "model.safetensors")


def _upstream_names(file: Path, prefix: str = "vision_model.") -> None:
    """Rename a vision tower's tensors to ``vision_model.*``, as upstream's experts (saved by transformers 4) are.

    transformers 5 saves ``CLIPVisionModel`` flat (``encoder.…``); without this the fixture would not be in
    upstream's layout under 5, and the pools' naming contract would go untested there.
    """
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(file), framework="pt") as handle:
        if all(key.startswith(prefix) for key in handle.keys()):
            return
        tensors = {key if key.startswith(prefix) else prefix + key: handle.get_tensor(key) for key in handle.keys()}
        metadata = handle.metadata()
    save_file(tensors, str(file), metadata=metadata)


def save_lora_expert(path: Path, pretrained: Any, *, seed: int, rank: int = 16, alpha: int = 32) -> None:
    """Write a PEFT LoRA adapter (q/v projections, non-zero B) to ``path``, in upstream's layout.

    Upstream trains with ``get_peft_model(clip_model.vision_model, LoraConfig(r=16, lora_alpha=32,
    target_modules=["q_proj", "v_proj"]))``, so its files hold
    ``base_model.model.encoder.layers.N.self_attn.{q,v}_proj.lora_{A,B}.weight`` whatever the
    transformers version; so do these.
    """
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import CLIPVisionModel

    tower = CLIPVisionModel(pretrained.config.vision_config)
    tower = getattr(tower, "vision_model", tower)  # transformers 4 nests the transformer; 5 is flat
    tower.load_state_dict(pretrained.vision_model.state_dict())
    peft_model = get_peft_model(tower, LoraConfig(r=rank, lora_alpha=alpha, target_modules=["q_proj", "v_proj"]))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.02)
    peft_model.save_pretrained(str(path))


def build_model_root(root: Path, suite: SuiteSpec, *, vision: dict[str, Any] = TINY_VISION,
                     text: dict[str, Any] = TINY_TEXT, projection_dim: int = 16, seed: int = 0) -> None:
    """The pretrained model and every expert of ``suite`` under ``root``, at their hub ids."""
    pretrained_dir = root / suite.pretrained_id
    if (pretrained_dir / "config.json").exists():
        from transformers import CLIPModel

        from .loading import quiet_transformers

        quiet_transformers()
        pretrained = CLIPModel.from_pretrained(str(pretrained_dir))
    else:
        pretrained = save_pretrained_clip(pretrained_dir, vision=vision, text=text,
                                          projection_dim=projection_dim, seed=seed)
    for i, task in enumerate(suite.expert_tasks):
        target = root / suite.expert_id(task)
        if target.exists():
            continue
        if suite.variant == "lora16":
            save_lora_expert(target, pretrained, seed=seed + 1 + i)
        else:
            save_expert(target, pretrained, seed=seed + 1 + i)


def build_data_root(root: Path, tasks: list[str], *, test_examples: int = 12, train_examples: int = 8,
                    image_size: tuple[int, int] = (40, 36), seed: int = 0, extra_splits: tuple[str, ...] = ()) -> None:
    """A small random-image dataset per task under ``root``, with the task's columns, splits and class names.

    ``extra_splits`` adds more splits of ``test_examples`` images each, e.g. the corruption names that
    upstream's robustness datasets (``tanganke/gtsrb`` …) carry as pre-corrupted test splits.
    """
    import datasets

    datasets.disable_progress_bars()
    rng = np.random.default_rng(seed)
    for task in tasks:
        spec = get_task(task)
        target = root / spec.dataset / (spec.config or "")
        if (target / "dataset_dict.json").exists():
            continue
        features = datasets.Features({spec.image_column: datasets.Image(),
                                      spec.label_column: datasets.ClassLabel(names=list(spec.classnames))})
        splits = {}
        for split, count in ((spec.split, test_examples), (spec.train_split, train_examples),
                             *((extra, test_examples) for extra in extra_splits)):
            w, h = image_size
            images = [rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8) for _ in range(count)]
            labels = rng.integers(0, len(spec.classnames), size=count).tolist()
            splits[split] = datasets.Dataset.from_dict(
                {spec.image_column: [_png(image) for image in images], spec.label_column: labels}, features=features)
        datasets.DatasetDict(splits).save_to_disk(str(target))


def _png(array: np.ndarray) -> Any:
    from PIL import Image

    return Image.fromarray(array)
