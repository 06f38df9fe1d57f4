"""``sepconv train``: train a registered model on a data set, with checkpoints, resume and logs.

The flags are derived from :class:`~sepconv.train.TrainConfig`'s fields (name, type, default, help in
the field's metadata), so a new training option is one new field, and the two cannot drift apart.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import typing
from pathlib import Path
from typing import Any

from sepconv.cli._common import UsageError, add_json, print_json
from sepconv.formatting import format_percent

_EPILOG = """\
outputs (in --out, which belongs to this run): run.json (the run id), config.json, metrics.csv (one row
per epoch), tensorboard/, checkpoints/step-N-RUNID.safetensors + .state (every --checkpoint-every steps
and every --checkpoint-every-epochs epochs, last --keep-checkpoints kept), and at the end model.safetensors
and result.json. A folder that holds another run's files is refused: --resume it, or --overwrite it.

resume: --resume OUT (or OUT/checkpoints, or one .state file) continues from the newest checkpoint of
that run that loads cleanly, skipping a truncated or corrupt newest one; run it with the same arguments as
the first run (a setting that changes the result is refused, naming each difference; so is --overwrite,
and a run that has finished, which is left as it is). Ctrl-C writes a checkpoint and stops (exit 130); a
second Ctrl-C stops at once. Everything is checked before --out is claimed; a run that fails before its
first training step leaves --out as it found it.

fine-tuning: --init-from FILE starts from the weights and architecture of a sepconv model file (a run's
model.safetensors, a checkpoint, a `sepconv convert` output) with a new optimizer and schedule, e.g.
  sepconv convert runs/std/model.safetensors --out sep.safetensors && sepconv train --init-from sep.safetensors
The model name is the file's (leave --model out; --model-arg is refused); the data set must have the
file's input channels and classes. --resume such a run with the same --init-from file, unchanged.

reproducibility: the same command with the same --seed gives the same numbers on the same machine (the
memory format, bf16 and fused-kernel choices follow a fixed rule, printed and stored in result.json);
other CPUs, thread counts or library versions can round differently.

speed: on the CPU, BatchNorm + activation pairs and some depthwise backward passes run as sepconv's C++
kernels (compiled once per machine on first use; --fused off runs the plain PyTorch modules; the results
agree to float rounding).

multi-process: --devices N starts N processes on this machine (DDP; gloo on CPU, NCCL on GPUs), at most
one per usable CPU core (CPU) or visible GPU, and only as many as fit in memory (refused otherwise);
they end when the command ends or is killed. --batch-size is the global batch, split between processes;
BatchNorm statistics and dropout masks are those of the global batch, so N processes compute what one
process computes to float rounding (when the training split divides evenly between them).
multi-node: run the same command on every node under torchrun, with --devices = processes per node and
--num-nodes = nodes; global rank 0 (on node 0) writes --out. E.g. on each of 2 nodes with 4 GPUs:
  torchrun --nnodes 2 --nproc-per-node 4 --node-rank R --master-addr HOST0 --master-port 29500 \\
      --no-python sepconv train --devices 4 --num-nodes 2 --accelerator gpu ...
with R = 0 on HOST0 and 1 on the other node (or --rdzv-backend c10d --rdzv-endpoint HOST0:29500 in place
of --node-rank/--master-*; or set MASTER_ADDR, MASTER_PORT, NODE_RANK and WORLD_SIZE yourself).
"""


def _flag(item: dataclasses.Field) -> str:
    return item.metadata.get("flag") or "--" + item.name.replace("_", "-")


class _StoreAndNoteGiven(argparse.Action):
    """Store the value, and note the flag in ``given_flags``: a default and the same value given differ
    for ``--model`` with ``--init-from`` (only a given name is checked against the file's)."""

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any, option: Any = None
    ) -> None:
        setattr(namespace, self.dest, values)
        namespace.given_flags = (*getattr(namespace, "given_flags", ()), self.dest)


def _cli_fields() -> list[dataclasses.Field]:
    from sepconv.train.config import TrainConfig

    return [item for item in dataclasses.fields(TrainConfig) if item.metadata.get("cli", True)]


def _add_field(
    parser: argparse.ArgumentParser, item: dataclasses.Field, annotation: Any, default: Any
) -> None:
    """One flag for one ``TrainConfig`` field: its type from the annotation, its help from the metadata."""
    flag = _flag(item)
    extra = dict(item.metadata.get("argparse", {}))
    help_text = item.metadata.get("help", "")
    if annotation is bool:
        negative = flag.startswith("--no-")
        parser.add_argument(
            flag, dest=item.name, action="store_false" if negative else "store_true", help=help_text
        )
        return
    if extra.get("action") == "append":
        parser.add_argument(flag, dest=item.name, default=[], help=help_text, **extra)
        return
    base = next(
        (kind for kind in typing.get_args(annotation) or (annotation,) if kind is not type(None)), str
    )
    shown = "" if default in (None, "") else f" (default {default})"
    parser.add_argument(
        flag,
        dest=item.name,
        type=base,
        default=default,
        help=f"{help_text}{shown}",
        action=_StoreAndNoteGiven,
        **extra,
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    from sepconv.train.config import TrainConfig

    parser = subparsers.add_parser(
        "train",
        help="train a model on a data set (checkpoints, --resume, CSV/TensorBoard/visdom logs, DDP)",
        description=(
            "Train MODEL (a registered name, see sepconv.models.list_models()) on a data set with Lightning: "
            "AdamW or SGD, one-cycle or cosine schedule, label smoothing, weight decay on weights only (not on "
            "biases and norm parameters), channels_last, bf16 and fused C++ kernels by a fixed rule, deterministic seeding, early "
            "stopping, safe checkpoints (safetensors + weights-only state; nothing loaded can run code)."
        ),
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    hints = typing.get_type_hints(TrainConfig)
    defaults = TrainConfig()
    for item in _cli_fields():
        default = getattr(defaults, item.name)
        if item.name == "out_dir":
            default = None  # so that --resume can tell whether --out was given; TrainConfig's default applies
        _add_field(parser, item, hints[item.name], default)
    parser.add_argument(
        "--resume", metavar="PATH", help="resume from a checkpoint, or the newest good one of the run in PATH"
    )
    add_json(parser, help="print one JSON document; no progress bar")
    parser.set_defaults(handler=run, given_flags=())


def _model_kwargs(pairs: list[str]) -> dict[str, Any]:
    kwargs = {}
    for pair in pairs:
        key, separator, text = pair.partition("=")
        if not separator or not key.isidentifier():
            raise UsageError(f"--model-arg must be KEY=VALUE, got {pair!r}")
        try:
            kwargs[key] = json.loads(text)
        except json.JSONDecodeError:
            kwargs[key] = text  # a bare word, e.g. act_layer=relu6
    return kwargs


def config_from_args(args: argparse.Namespace) -> Any:
    """The validated :class:`TrainConfig` of parsed ``sepconv train`` arguments."""
    from sepconv.train.config import TrainConfig
    from sepconv.train.trainer import find_resume_run_folder

    if args.overwrite and args.resume:
        raise UsageError(
            "--overwrite clears --out and --resume continues the run in it: give one of them, not both"
        )
    values = {item.name: getattr(args, item.name) for item in _cli_fields()}
    values["model_kwargs"] = _model_kwargs(values["model_kwargs"])
    values["progress_bar"] = not args.json
    if values["out_dir"] is None:
        values["out_dir"] = str(find_resume_run_folder(args.resume)) if args.resume else TrainConfig.out_dir
    # A bad field is a ParameterError naming it; `sepconv` (cli/main.py) leads it with the field's flag.
    config = TrainConfig(**values).validate()
    if config.init_from is not None:
        config = _with_init_model(config, model_given="model" in args.given_flags)
    return config


def _with_init_model(config: Any, *, model_given: bool) -> Any:
    """``config`` naming the model of its ``--init-from`` file; a given ``--model`` must be that one."""
    from sepconv.io import CheckpointError
    from sepconv.train.run_folder import model_file_path
    from sepconv.train.trainer import read_initial_model

    try:
        initial = read_initial_model(config.init_from)
    except FileNotFoundError:
        raise UsageError(f"--init-from: model file not found: {model_file_path(config.init_from)}") from None
    except CheckpointError as error:
        raise UsageError(f"--init-from: {error}") from None
    if model_given and config.model != initial.model_name:
        raise UsageError(
            f"--model {config.model} differs from the model in --init-from {initial.path} "
            f"({initial.describe()}); leave --model out, the file fixes the architecture"
        )
    return dataclasses.replace(config, model=initial.model_name)


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    from sepconv.train.trainer import fit

    def warn(message: str) -> None:
        print(f"sepconv train: warning: {message}", file=sys.stderr, flush=True)

    try:
        result = fit(config, resume=args.resume, warn=warn)
    except KeyboardInterrupt as stop:
        if not str(stop):
            raise
        # The library says where the run stopped; how to resume it is this command's to say.
        raise KeyboardInterrupt(f"{stop} (the same command with --resume {config.out_dir})") from None
    if result.rank != 0:
        return 0
    if args.json:
        print_json(result.to_dict())
        return 0
    last = result.history[-1] if result.history else {}
    summary = ", ".join(
        f"{key} {last[key]:.4f}" for key in ("train_loss", "val_loss", "val_accuracy") if key in last
    )
    test = "" if result.test_accuracy is None else f", test accuracy {format_percent(result.test_accuracy)}"
    print(
        f"trained {result.model_name} for {len(result.history)} epoch(s) in {result.train_seconds:.1f} s: {summary}{test}"
    )
    from sepconv.train.precision import execution_line

    print(
        f"execution: {execution_line(result.channels_last, result.bf16, result.fused)} "
        f"({result.precision_reason})"
    )
    print(
        f"run {result.run_id}; model: {result.model_path}; metrics: {Path(result.out_dir) / 'metrics.csv'}; "
        f"checkpoint: {result.last_checkpoint}"
    )
    return 0
