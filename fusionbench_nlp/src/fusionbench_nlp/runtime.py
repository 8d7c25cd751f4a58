"""Where evaluation runs: device choice, precision (fp32 unless asked), quiet transformers, tokenizer loading."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch

from fusionbench_core.engine.devices import resolve_device
from fusionbench_core.errors import ModelLoadError


def pick_device(name: str) -> torch.device:
    """The device for option ``device`` (see :func:`fusionbench_core.engine.devices.resolve_device`)."""
    return resolve_device(name)


PRECISIONS = ("fp32", "bf16")
"""Evaluation precisions: fp32 (upstream's, the default) or bfloat16 autocast on CUDA (T5 overflows in float16)."""


@contextlib.contextmanager
def inference(device: torch.device, precision: str = "fp32") -> Iterator[None]:
    """No gradients; fp32, or bfloat16 autocast on CUDA when ``precision`` is ``bf16`` (CPU stays fp32)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got '{precision}'")
    with torch.inference_mode():
        if precision == "bf16" and device.type == "cuda":
            with torch.autocast("cuda", dtype=torch.bfloat16):
                yield
        else:
            yield


def quiet_transformers() -> None:
    """Silence transformers' and datasets' reports and progress bars (our own progress goes to stderr)."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    import datasets

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()


def load_tokenizer(path: str, *, pad_with_eos: bool = False):
    """``AutoTokenizer.from_pretrained(path)``, right padding; GPT-2 style tokenizers pad with EOS."""
    quiet_transformers()
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except Exception as exc:  # noqa: BLE001 - any loader failure becomes one line
        raise ModelLoadError(f"tokenizer '{path}' could not be loaded ({type(exc).__name__}: {exc})") from exc
    if tokenizer.pad_token is None:
        if not pad_with_eos or tokenizer.eos_token is None:
            raise ModelLoadError(f"tokenizer '{path}' has no pad token")
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    return tokenizer
