"""``fb merge``: merge checkpoints tensor by tensor into a new directory, without evaluating."""

from __future__ import annotations

from pathlib import Path

import click

from .groups import CONTEXT
from .render import print_json, print_mapping


@click.command(name="merge", context_settings=CONTEXT)
@click.argument("method")
@click.option("--pretrained", type=click.Path(exists=True, path_type=Path), help="The base model (directory or file).")
@click.option("--model", "models", multiple=True, type=click.Path(exists=True, path_type=Path),
              help="A fine-tuned model: HF directory, .safetensors file, sharded index, or PEFT LoRA adapter dir. Repeatable.")
@click.option("-p", "--modelpool", help="Instead of --pretrained/--model: a model pool name or a YAML file.")
@click.option("-s", "--set", "settings", multiple=True, metavar="KEY=VALUE",
              help="A method hyperparameter; `modelpool.KEY=VALUE` sets an option of the -p pool.")
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Output directory (HF format, sharded safetensors); written to a temporary path first, "
                   "refused when it exists and is not empty.")
@click.option("--overwrite", is_flag=True,
              help="Replace fb's files (weights, config, tokenizer, README.md) in an existing output directory; "
                   "other files there stay.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True,
              help="Where the arithmetic runs.")
@click.option("--dtype", type=click.Choice(["float32", "bfloat16", "float16"]),
              help="Output dtype (default: the pretrained model's).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for random methods (DARE, DELLA).")
@click.option("--shard-size", default="5GB", show_default=True, help="Largest output shard, e.g. 5GB or 500MB.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary on stdout.")
def merge_command(method: str, pretrained: Path | None, models: tuple[Path, ...], modelpool: str | None,
                  settings: tuple[str, ...], output: Path, overwrite: bool, device: str, dtype: str | None,
                  seed: int, shard_size: str, as_json: bool) -> None:
    """Merge checkpoints tensor by tensor and write the result, without evaluating it.

    \b
    Examples:
      fb merge task_arithmetic --pretrained base/ --model math/ --model code/ -s scaling_factor=0.3 -o out/
      fb merge ties -p mini-vision -o merged/ --dtype bfloat16
      fb merge ties -p mini-vision -o merged/ --overwrite          # replace an earlier merge
      fb merge ties --pretrained llama/ --model lora-math/ --model lora-code/ -o out/   # PEFT adapters
    """
    from ..config import parse_settings
    from ..merge import merge_command as run_merge

    parsed = parse_settings(settings)
    if parsed["taskpool"]:
        key = next(iter(parsed["taskpool"]))
        raise click.BadParameter(f"'taskpool.{key}': fb merge evaluates nothing, so it has no task pool",
                                 param_hint="-s/--set")
    summary = run_merge(
        method=method,
        pretrained=pretrained,
        models=list(models),
        modelpool=modelpool,
        hyperparameters=parsed["method"],
        output=output,
        overwrite=overwrite,
        device=device,
        dtype=dtype,
        seed=seed,
        shard_size=shard_size,
        modelpool_options=parsed["modelpool"],
    )
    if as_json:
        print_json(summary)
    else:
        print_mapping(f"merged with {method}", summary)
