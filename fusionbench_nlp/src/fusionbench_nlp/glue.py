"""GLUE as the suites use it: columns, label names, evaluation splits, and where the data comes from.

Data source, one rule for every suite (through :func:`fusionbench_core.hub.resolve_dataset`):

- If ``$FUSIONBENCH_DATA_ROOT/glue`` exists, the task ``<config>`` is read from
  ``$FUSIONBENCH_DATA_ROOT/glue/<config>/`` in one of two layouts:

  1. parquet files per split: ``<split>.parquet``, or shards ``<split>-*.parquet`` (the layout of the
     hub's GLUE dataset repository, so a clone of it works as it is);
  2. a ``datasets`` ``save_to_disk`` directory of a ``DatasetDict`` (``dataset_dict.json`` inside).

- Otherwise ``datasets.load_dataset("glue", <config>, split=<split>)``, as upstream does.

Only the columns below are read; ``label`` is an integer class index (a float 0–5 for STS-B).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fusionbench_core.errors import ModelLoadError
from fusionbench_core.hub import resolve_dataset

if TYPE_CHECKING:
    import datasets

GLUE_DATASET_ID = "glue"
"""The dataset id passed to ``load_dataset`` (and looked up under ``$FUSIONBENCH_DATA_ROOT``)."""


@dataclass(frozen=True)
class GlueTask:
    """Facts of one GLUE task."""

    config: str
    text_columns: tuple[str, ...]
    """Text columns, in the order GPT-2's tokenizer receives them as a (first, second) pair."""
    label_names: tuple[str, ...]
    """GLUE's class names by label index (empty for the STS-B regression task)."""
    eval_split: str = "validation"


GLUE_TASKS: dict[str, GlueTask] = {
    "cola": GlueTask("cola", ("sentence",), ("unacceptable", "acceptable")),
    "mnli": GlueTask("mnli", ("premise", "hypothesis"), ("entailment", "neutral", "contradiction"),
                     eval_split="validation_matched"),
    "mrpc": GlueTask("mrpc", ("sentence1", "sentence2"), ("not_equivalent", "equivalent")),
    "qnli": GlueTask("qnli", ("question", "sentence"), ("entailment", "not_entailment")),
    "qqp": GlueTask("qqp", ("question1", "question2"), ("not_duplicate", "duplicate")),
    "rte": GlueTask("rte", ("sentence1", "sentence2"), ("entailment", "not_entailment")),
    "sst2": GlueTask("sst2", ("sentence",), ("negative", "positive")),
    "stsb": GlueTask("stsb", ("sentence1", "sentence2"), ()),
}
"""The eight GLUE tasks of the suites (WNLI is in no suite)."""


def split_for(task: str, split: str) -> str:
    """The GLUE split a request means: ``train`` is train; ``validation`` and ``test`` are the eval split.

    GLUE's test labels are hidden, so upstream (and we) evaluate on validation; test-time methods that
    ask for unlabelled ``test`` inputs therefore see the evaluation inputs, as in FusionBench.
    """
    return "train" if split == "train" else GLUE_TASKS[task].eval_split


def _local_files(directory: Path, split: str) -> list[Path]:
    single = directory / f"{split}.parquet"
    if single.exists():
        return [single]
    return sorted(directory.glob(f"{split}-*.parquet"))


def source_of(task: str, split: str) -> dict[str, Any]:
    """Where ``task``/``split`` is read from, as a JSON-able fingerprint (paths, sizes, mtimes, or the hub id)."""
    config = GLUE_TASKS[task].config
    root = Path(resolve_dataset(GLUE_DATASET_ID))
    if not root.is_dir():
        return {"hub": GLUE_DATASET_ID, "config": config, "split": split}
    directory = root / config
    if (directory / "dataset_dict.json").exists():
        files = sorted(p for p in (directory / split).glob("*") if p.is_file())
    else:
        files = _local_files(directory, split)
    if not files:
        raise ModelLoadError(
            f"GLUE '{config}' split '{split}': no '{directory / (split + '.parquet')}', "
            f"'{split}-*.parquet' shards or save_to_disk DatasetDict under '{directory}'"
        )
    return {"files": [[str(p), p.stat().st_size, p.stat().st_mtime_ns] for p in files]}


def load_split(task: str, split: str) -> datasets.Dataset:
    """The raw rows of ``task``'s ``split`` (a GLUE split name such as ``validation_matched``)."""
    import datasets

    config = GLUE_TASKS[task].config
    root = Path(resolve_dataset(GLUE_DATASET_ID))
    if not root.is_dir():
        try:
            return datasets.load_dataset(GLUE_DATASET_ID, config, split=split)
        except Exception as exc:  # noqa: BLE001 - hub and cache failures become one line
            raise ModelLoadError(
                f"GLUE '{config}' split '{split}' could not be loaded from the hub ({type(exc).__name__}: {exc}); "
                "put a local copy under $FUSIONBENCH_DATA_ROOT/glue"
            ) from exc
    directory = root / config
    try:
        if (directory / "dataset_dict.json").exists():
            dataset = datasets.load_from_disk(str(directory))[split]
        else:
            files = _local_files(directory, split)
            if not files:
                source_of(task, split)  # raises the one-line error naming the expected files
            dataset = datasets.Dataset.from_parquet([str(f) for f in files])
    except ModelLoadError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise ModelLoadError(
            f"GLUE '{config}' split '{split}' under '{directory}': {type(exc).__name__}: {exc}"
        ) from exc
    missing = [c for c in (*GLUE_TASKS[task].text_columns, "label") if c not in dataset.column_names]
    if missing:
        raise ModelLoadError(f"GLUE '{config}' split '{split}' under '{directory}' lacks column '{missing[0]}'")
    return dataset
