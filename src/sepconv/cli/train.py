"""``sepconv train``: train a registered model on a data set, with checkpoints, resume and logs."""

from __future__ import annotations

import argparse
import sys

from sepconv.cli._common import print_json
from sepconv.cli.main import UsageError

_EPILOG = """\
outputs (in --out): config.json, metrics.csv (one row per epoch), tensorboard/, checkpoints/step-N.safetensors
+ step-N.state (every --checkpoint-every steps and every --checkpoint-every-epochs epochs, last
--keep-checkpoints kept), and at the end model.safetensors and result.json.

resume: --resume OUT (or OUT/checkpoints, or one .state file) continues from the newest checkpoint that
loads cleanly, skipping a truncated or corrupt newest one; run it with the same arguments as the first run.

multi-process: --devices N starts N processes on this machine (DDP; gloo on CPU, NCCL on GPUs); --batch-size
is the global batch, split between processes. Multi-node: start the same command on every node under
torchrun, e.g. on each of 2 nodes with 4 GPUs:
  torchrun --nnodes 2 --nproc-per-node 4 --rdzv-backend c10d --rdzv-endpoint HOST0:29500 \\
      --no-python sepconv train --devices 4 --num-nodes 2 --accelerator gpu ...
(or set MASTER_ADDR, MASTER_PORT, NODE_RANK and WORLD_SIZE yourself and run the command on every node).
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    from sepconv.train.config import OPTIMIZERS, SCHEDULES, TrainConfig

    defaults = TrainConfig()
    parser = subparsers.add_parser(
        "train",
        help="train a model on a data set (checkpoints, --resume, CSV/TensorBoard/visdom logs, DDP)",
        description=(
            "Train MODEL (a registered name, see sepconv.models.list_models()) on a data set with Lightning: "
            "AdamW or SGD, one-cycle or cosine schedule, label smoothing, weight decay on weights only (not on "
            "biases and norm parameters), channels_last when measured faster, deterministic seeding, early "
            "stopping, safe checkpoints (safetensors + weights-only state; nothing loaded can run code)."
        ),
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", default=defaults.model, help=f"model name (default {defaults.model})")
    parser.add_argument(
        "--model-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="keyword argument of the model builder, VALUE as JSON (e.g. widths=[16,32,64,128]); repeatable",
    )
    parser.add_argument(
        "--dataset",
        default=defaults.dataset,
        help="mnist5k (default, embedded), synthetic, mnist, fashion_mnist, cifar10 or imagefolder:PATH",
    )
    parser.add_argument("--data-root", help="where torchvision data sets live (with --download)")
    parser.add_argument("--download", action="store_true", help="allow downloading torchvision data sets")
    parser.add_argument("--augment", action="store_true", help="light random augmentation of training images")
    parser.add_argument(
        "--skip-bad-images", action="store_true", help="skip unreadable images in an image folder (counted)"
    )
    parser.add_argument("--epochs", type=int, default=defaults.epochs, help=f"default {defaults.epochs}")
    parser.add_argument("--max-steps", type=int, help="stop after this many optimizer steps")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=defaults.batch_size,
        help=f"global batch size (default {defaults.batch_size})",
    )
    parser.add_argument(
        "--lr", type=float, default=defaults.lr, help=f"peak learning rate (default {defaults.lr})"
    )
    parser.add_argument("--optimizer", choices=OPTIMIZERS, default=defaults.optimizer)
    parser.add_argument("--momentum", type=float, default=defaults.momentum, help="SGD momentum (Nesterov)")
    parser.add_argument(
        "--weight-decay", type=float, default=defaults.weight_decay, help="on conv/linear weights only"
    )
    parser.add_argument(
        "--schedule", choices=SCHEDULES, default=defaults.schedule, help="per-step lr schedule"
    )
    parser.add_argument("--label-smoothing", type=float, default=defaults.label_smoothing)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--deterministic", action="store_true", help="deterministic algorithms only (slower)")
    parser.add_argument(
        "--devices", type=int, default=1, help="processes (CPU) or GPUs on this node (default 1)"
    )
    parser.add_argument("--num-nodes", type=int, default=1, help="nodes taking part (see below)")
    parser.add_argument("--accelerator", choices=("auto", "cpu", "gpu"), default="auto")
    parser.add_argument(
        "--channels-last",
        choices=("auto", "on", "off"),
        default="auto",
        help="auto: measure, keep the faster",
    )
    parser.add_argument(
        "--bf16",
        choices=("auto", "on", "off"),
        default="auto",
        help="bf16 autocast (auto: measure, keep if faster)",
    )
    parser.add_argument("--out", default=defaults.out_dir, help=f"output folder (default {defaults.out_dir})")
    parser.add_argument(
        "--checkpoint-every", type=int, metavar="STEPS", help="also checkpoint every STEPS steps"
    )
    parser.add_argument(
        "--checkpoint-every-epochs",
        type=int,
        default=1,
        metavar="EPOCHS",
        help="default 1; 0 = only at the end",
    )
    parser.add_argument("--keep-checkpoints", type=int, default=defaults.keep_checkpoints, metavar="K")
    parser.add_argument(
        "--resume", metavar="PATH", help="resume from a checkpoint, or the newest good one in PATH"
    )
    parser.add_argument(
        "--early-stopping", type=int, metavar="EPOCHS", help="stop after EPOCHS without val gain"
    )
    parser.add_argument("--no-tensorboard", action="store_true", help="do not write TensorBoard logs")
    parser.add_argument(
        "--visdom",
        nargs="?",
        const="http://localhost:8097",
        metavar="URL",
        help="also plot to a visdom server (default URL http://localhost:8097); never stops training",
    )
    parser.add_argument("--num-workers", type=int, default=0, help="data loader worker processes (default 0)")
    parser.add_argument("--json", action="store_true", help="print one JSON document; no progress bar")
    parser.set_defaults(handler=run)


def _model_kwargs(pairs: list[str]) -> dict:
    import json

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


def run(args: argparse.Namespace) -> int:
    from sepconv.train import TrainConfig

    config = TrainConfig(
        model=args.model,
        model_kwargs=_model_kwargs(args.model_arg),
        dataset=args.dataset,
        data_root=args.data_root,
        download=args.download,
        augment=args.augment,
        skip_bad_images=args.skip_bad_images,
        epochs=args.epochs,
        max_steps=args.max_steps,
        batch_size=args.batch_size,
        lr=args.lr,
        optimizer=args.optimizer,
        momentum=args.momentum,
        weight_decay=args.weight_decay,
        schedule=args.schedule,
        label_smoothing=args.label_smoothing,
        seed=args.seed,
        deterministic=args.deterministic,
        devices=args.devices,
        num_nodes=args.num_nodes,
        accelerator=args.accelerator,
        channels_last=args.channels_last,
        bf16=args.bf16,
        out_dir=args.out,
        checkpoint_every_steps=args.checkpoint_every,
        checkpoint_every_epochs=args.checkpoint_every_epochs or None,
        keep_checkpoints=args.keep_checkpoints,
        early_stopping_patience=args.early_stopping,
        progress_bar=not args.json,
        tensorboard=not args.no_tensorboard,
        visdom=args.visdom,
        num_workers=args.num_workers,
    )
    try:
        config.validate()
    except ValueError as error:
        raise UsageError(str(error)) from None
    from sepconv.train.trainer import fit

    def warn(message: str) -> None:
        print(f"sepconv train: warning: {message}", file=sys.stderr, flush=True)

    result = fit(config, resume=args.resume, warn=warn)
    if result.rank != 0:
        return 0
    if args.json:
        print_json(result.to_dict())
        return 0
    last = result.history[-1] if result.history else {}
    summary = ", ".join(
        f"{key} {last[key]:.4f}" for key in ("train_loss", "val_loss", "val_accuracy") if key in last
    )
    test = "" if result.test_accuracy is None else f", test accuracy {result.test_accuracy:.2%}"
    print(
        f"trained {config.model} for {len(result.history)} epoch(s) in {result.train_seconds:.1f} s: {summary}{test}"
    )
    print(
        f"model: {result.model_path}; metrics: {result.out_dir / 'metrics.csv'}; checkpoint: {result.last_checkpoint}"
    )
    return 0
