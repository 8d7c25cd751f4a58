"""A tiny stand-in for the hub: every NLP suite's models and GLUE, random and small, in the real formats.

:func:`build_tiny_hub` writes, under ``root/models`` and ``root/data``, directories named by the
real hub ids (``gpt2``, ``tanganke/gpt2_cola``, ``google/flan-t5-base``,
``tanganke/flan-t5-base_glue-cola_lora-16``, ``glue/mnli``, …) holding the same kinds of files the
hub has: ``config.json`` + ``model.safetensors`` (+ ``generation_config.json`` for T5) and a
tokenizer; PEFT ``adapter_config.json`` + ``adapter_model.safetensors``; GLUE splits with the real
columns and label names. With ``FUSIONBENCH_MODEL_ROOT=root/models`` and
``FUSIONBENCH_DATA_ROOT=root/data`` every suite runs end to end offline in seconds (tests, CI, a
quick look). The models are random, so the scores mean nothing; the plumbing is the real one.

The tiny ``google/flan-t5-large`` is stored as the real Flan-T5 files are (every tied name written,
``lm_head.weight`` a tensor of its own); the tiny ``google/flan-t5-base`` as transformers now saves T5
(only ``shared.weight``), so both checkpoint conventions are exercised.

The GLUE copies use all three local layouts :mod:`.glue` accepts: ``<split>.parquet`` files (most
tasks), hub-style ``<split>-00000-of-00001.parquet`` shards (QQP) and a ``save_to_disk``
``DatasetDict`` (RTE).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from .glue import GLUE_TASKS
from .prompts import GLUE_PROMPTS
from .suites import SUITES

WORDS = ("the a cat dog sat on mat red blue big small runs fast slow good bad movie film book was is not very "
         "really quite man woman child house car tree sky water fire").split()
"""The vocabulary of the synthetic GLUE sentences."""

GPT2_SPECIALS = ("<|endoftext|>", "<unk>")
T5_SPECIALS = ("<pad>", "</s>", "<unk>")

TRAIN_ROWS = 12
EVAL_ROWS = 10
CONTEXT = 96


@dataclass(frozen=True)
class TinyHub:
    """Where :func:`build_tiny_hub` put things."""

    model_root: Path
    data_root: Path

    def env(self) -> dict[str, str]:
        """The environment variables that point FusionBench at this hub."""
        return {"FUSIONBENCH_MODEL_ROOT": str(self.model_root), "FUSIONBENCH_DATA_ROOT": str(self.data_root)}


def _sentence(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 8)))


def glue_rows(task: str, n: int, rng: random.Random) -> dict[str, list]:
    """``n`` synthetic rows of ``task`` with GLUE's columns: text columns, ``label`` and ``idx``."""
    facts = GLUE_TASKS[task]
    columns: dict[str, list] = {c: [_sentence(rng) for _ in range(n)] for c in facts.text_columns}
    if facts.label_names:
        columns["label"] = [i % len(facts.label_names) for i in range(n)]
        rng.shuffle(columns["label"])
    else:
        columns["label"] = [round(rng.uniform(0, 5), 3) for _ in range(n)]
    columns["idx"] = list(range(n))
    return columns


def write_glue(data_root: Path, seed: int = 0) -> None:
    """Tiny GLUE (train + evaluation split, and an unlabelled test split) for every suite task."""
    import datasets

    for index, (task, facts) in enumerate(sorted(GLUE_TASKS.items())):
        rng = random.Random(seed * 1000 + index)
        features = {c: datasets.Value("string") for c in facts.text_columns}
        features["label"] = (datasets.ClassLabel(names=list(facts.label_names)) if facts.label_names
                             else datasets.Value("float32"))
        features["idx"] = datasets.Value("int32")
        splits = {"train": glue_rows(task, TRAIN_ROWS, rng), facts.eval_split: glue_rows(task, EVAL_ROWS, rng)}
        test = glue_rows(task, 4, rng)
        test["label"] = [-1 if facts.label_names else -1.0] * 4
        splits["test_matched" if task == "mnli" else "test"] = test
        directory = data_root / "glue" / facts.config
        directory.mkdir(parents=True, exist_ok=True)
        tables = {split: datasets.Dataset.from_dict(rows, features=datasets.Features(features))
                  for split, rows in splits.items()}
        if task == "rte":
            datasets.DatasetDict(tables).save_to_disk(str(directory))
        else:
            for split, table in tables.items():
                name = f"{split}-00000-of-00001.parquet" if task == "qqp" else f"{split}.parquet"
                table.to_parquet(str(directory / name))


def _pre_tokenizer():
    from tokenizers import Regex, pre_tokenizers

    # Quotes become tokens of their own, so the quoted GLUE sentences inside the prompts keep their words.
    return pre_tokenizers.Sequence([pre_tokenizers.Split(Regex("[\"']"), behavior="isolated"),
                                    pre_tokenizers.WhitespaceSplit()])


def _vocabulary(specials: tuple[str, ...]) -> dict[str, int]:
    split = _pre_tokenizer()
    words: set[str] = set(WORDS)
    for task, template in GLUE_PROMPTS.items():
        blanks = {c: "" for c in GLUE_TASKS[task].text_columns}
        words.update(piece for piece, _ in split.pre_tokenize_str(template.input_text.format(**blanks)))
        words.update(template.targets)
    words.update(f"{i / 10:.1f}" for i in range(51))
    ordered = list(specials) + sorted(words - set(specials))
    return {word: i for i, word in enumerate(ordered)}


def make_tokenizer(family: str):
    """A word-level ``PreTrainedTokenizerFast`` (whitespace and quotes split) with the family's special tokens.

    T5 style appends ``</s>`` to every input and pads with id 0; GPT-2 style adds nothing and has
    ``<|endoftext|>`` as BOS/EOS (the pool pads with it).
    """
    from tokenizers import Tokenizer, models, processors
    from transformers import PreTrainedTokenizerFast

    specials = T5_SPECIALS if family == "flan-t5" else GPT2_SPECIALS
    unk = "<unk>"
    backend = Tokenizer(models.WordLevel(_vocabulary(specials), unk_token=unk))
    backend.pre_tokenizer = _pre_tokenizer()
    if family == "flan-t5":
        backend.post_processor = processors.TemplateProcessing(
            single="$A </s>", pair="$A $B </s>", special_tokens=[("</s>", 1)])
        return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="</s>",
                                       unk_token=unk, model_max_length=CONTEXT)
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                   unk_token=unk, model_max_length=CONTEXT)


def _perturb(model, seed: int, scale: float = 0.02) -> None:
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn(param.shape, generator=gen) * scale)


def write_gpt2(model_root: Path, seed: int = 0) -> None:
    """``gpt2`` (a 2-layer ``GPT2Model``) and ``tanganke/gpt2_<task>`` classification experts."""
    import torch
    from transformers import GPT2Config, GPT2ForSequenceClassification, GPT2Model

    suite = SUITES["gpt2-glue"]
    tokenizer = make_tokenizer("gpt2")
    eos = tokenizer.eos_token_id
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=CONTEXT, n_embd=32, n_layer=2, n_head=2,
                        bos_token_id=eos, eos_token_id=eos)
    torch.manual_seed(seed)
    base = GPT2Model(config)
    base.save_pretrained(str(model_root / suite.pretrained))
    tokenizer.save_pretrained(str(model_root / suite.pretrained))
    for i, task in enumerate(suite.tasks):
        labels = len(GLUE_TASKS[task].label_names)
        expert_config = GPT2Config(**{**config.to_dict(), "num_labels": labels, "pad_token_id": eos})
        torch.manual_seed(seed + 100 + i)
        expert = GPT2ForSequenceClassification(expert_config)
        expert.transformer.load_state_dict(base.state_dict())
        _perturb(expert.transformer, seed + 200 + i)
        expert.save_pretrained(str(model_root / suite.expert_id(task)))


def _t5_config(vocab: int, d_model: int):
    from transformers import T5Config

    return T5Config(vocab_size=vocab, d_model=d_model, d_kv=8, d_ff=2 * d_model, num_layers=2, num_decoder_layers=2,
                    num_heads=2, relative_attention_num_buckets=8, feed_forward_proj="gated-gelu",
                    decoder_start_token_id=0, pad_token_id=0, eos_token_id=1, tie_word_embeddings=False)


def _untie_lm_head(model_dir: Path, seed: int) -> None:
    """Rewrite a T5 checkpoint as the real Flan-T5 files are: every tied name stored, ``lm_head`` its own."""
    import torch
    from safetensors.torch import load_file, save_file

    path = model_dir / "model.safetensors"
    state = load_file(str(path))
    shared = state["shared.weight"]
    state["encoder.embed_tokens.weight"] = shared.clone()
    state["decoder.embed_tokens.weight"] = shared.clone()
    state["lm_head.weight"] = torch.randn(shared.shape, generator=torch.Generator().manual_seed(seed + 7)) * 0.05
    state["lm_head.weight"][:2] = 0  # keep <pad> and </s> unlikely, as for the tied model
    save_file(state, str(path), metadata={"format": "pt"})


def write_flan_t5(model_root: Path, seed: int = 0, lora_rank: int = 2) -> None:
    """Tiny ``google/flan-t5-{base,large}``, full experts of the base, LoRA adapters of both."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import GenerationConfig, T5ForConditionalGeneration

    tokenizer = make_tokenizer("flan-t5")
    built: dict[str, Path] = {}
    for name, suite in SUITES.items():
        if suite.family != "flan-t5":
            continue
        base_dir = model_root / suite.pretrained
        if suite.pretrained not in built:
            torch.manual_seed(seed + len(built))
            base = T5ForConditionalGeneration(_t5_config(len(tokenizer), 32 if "base" in suite.pretrained else 48))
            with torch.no_grad():
                # A random T5 tends to emit <pad> or </s> at once; zero logits for both let it generate
                # words, so batched and unbatched generation have something to disagree on.
                base.shared.weight[:2].zero_()
            base.generation_config = GenerationConfig(decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
            base.save_pretrained(str(base_dir))
            tokenizer.save_pretrained(str(base_dir))
            if "large" in suite.pretrained:
                _untie_lm_head(base_dir, seed)
            built[suite.pretrained] = base_dir
        for i, task in enumerate(suite.tasks):
            model = T5ForConditionalGeneration.from_pretrained(str(base_dir))
            target = model_root / suite.expert_id(task)
            if not suite.lora:
                _perturb(model, seed + 300 + i)
                model.save_pretrained(str(target))
                continue
            config = LoraConfig(r=lora_rank, lora_alpha=4 * lora_rank, target_modules=["q", "v"], lora_dropout=0.0,
                                task_type="SEQ_2_SEQ_LM")
            model.name_or_path = suite.pretrained  # recorded as base_model_name_or_path, as on the hub
            torch.manual_seed(seed + 500 + i + (50 if "large" in name else 0))  # peft draws A from the global RNG
            peft_model = get_peft_model(model, config)
            gen = torch.Generator().manual_seed(seed + 400 + i + (50 if "large" in name else 0))
            with torch.no_grad():
                for param_name, param in peft_model.named_parameters():
                    if "lora_B" in param_name:  # peft starts B at zero; a zero ΔW would test nothing
                        param.copy_(torch.randn(param.shape, generator=gen) * 0.1)
            peft_model.save_pretrained(str(target), save_embedding_layers=False)


def build_tiny_hub(root: Path, seed: int = 0) -> TinyHub:
    """Write the tiny models and GLUE under ``root`` and return where they are."""
    from .runtime import quiet_transformers

    quiet_transformers()
    hub = TinyHub(Path(root) / "models", Path(root) / "data")
    write_glue(hub.data_root, seed)
    write_gpt2(hub.model_root, seed)
    write_flan_t5(hub.model_root, seed)
    return hub
