"""Shrink a trained VGG network into a narrower architecture, keeping each layer's strongest channels.

    python -m fer.prune models/NAME.keras --arch vgg_base_slim --out runs/prune/vgg_base_slim_start
    python -m fer.train --data ../shared/data/fer2013 --init-from runs/prune/vgg_base_slim_start.keras \
        --teacher models/NAME.keras --online-teacher ... --out runs/prune/vgg_base_slim

The two architectures must have the same layers in the same order, the target no wider anywhere (vgg_base ->
vgg_base_slim, vgg_small -> vgg_tiny). Each conv or dense layer followed by batch norm keeps the output channels
whose batch-norm scale |gamma| is largest ("network slimming", Liu et al. 2017): after normalisation a channel's
spread is |gamma|, so those channels carry the most signal. The next layer keeps the matching input channels (for a
flatten head, at every position of the map). The result is a starting point, not a model to serve: it scores well
below its source until trained, which is why the second command trains it with the source as teacher.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import sys
from pathlib import Path

import numpy as np

from fer.errors import FerError, ModelError


def _strongest(scores: np.ndarray, count: int) -> np.ndarray:
    """Indices of the `count` largest scores, in their original order (so channel order is kept)."""
    return np.sort(np.argsort(-scores, kind="stable")[:count])


def prune_into(source, target):
    """Copy `source`'s weights into the narrower `target` (both built, same layer sequence); return `target`.

    Raises ModelError when the two do not have the same sequence of weighted layers, or the target is wider.
    """
    from keras import layers

    weighted = (layers.Conv2D, layers.Dense, layers.BatchNormalization)
    source_layers = [layer for layer in source.layers if layer.weights]
    target_layers = [layer for layer in target.layers if layer.weights]
    kinds = [[type(layer).__name__ for layer in found] for found in (source_layers, target_layers)]
    if kinds[0] != kinds[1] or not all(isinstance(layer, weighted) for layer in source_layers):
        raise ModelError(f"Cannot prune {source.name} into {target.name}: their layers differ "
                         f"({' '.join(kinds[0])} against {' '.join(kinds[1])}). Prune within one family "
                         "(vgg_base -> vgg_base_slim, vgg_small -> vgg_tiny).")
    kept_inputs = None  # the previous layer's kept output channels; None: all of them (the input image)
    for number, (from_layer, to_layer) in enumerate(zip(source_layers, target_layers)):
        weights = from_layer.get_weights()
        if isinstance(from_layer, layers.BatchNormalization):  # gamma, beta, mean, variance: one value a channel
            to_layer.set_weights(weights if kept_inputs is None else [weight[kept_inputs] for weight in weights])
            continue
        kernel = weights[0]  # (kh, kw, in, out) or (in, out)
        if kept_inputs is not None:
            if kernel.ndim == 4:
                kernel = kernel[:, :, kept_inputs, :]
            else:  # a dense layer after Flatten reads every position of the map: keep the channels at each
                positions = kernel.shape[0] // previous_channels
                rows = (np.arange(positions)[:, None] * previous_channels + kept_inputs[None, :]).ravel()
                kernel = kernel[rows]
        target_shape = to_layer.get_weights()[0].shape
        if kernel.shape[:-1] != target_shape[:-1]:
            raise ModelError(f"Cannot prune {source.name} into {target.name}: {to_layer.name} reads "
                             f"{target_shape[:-1]} inputs where the pruned source gives {kernel.shape[:-1]} "
                             "(a different head or input size).")
        wanted, available = target_shape[-1], kernel.shape[-1]
        if wanted > available:
            raise ModelError(f"Cannot prune {source.name} into {target.name}: its layer {to_layer.name} has {wanted} "
                             f"channels, more than the source's {available}.")
        following = source_layers[number + 1] if number + 1 < len(source_layers) else None
        if wanted == available:
            kept = np.arange(available)
        elif isinstance(following, layers.BatchNormalization):
            kept = _strongest(np.abs(following.get_weights()[0]), wanted)
        else:
            raise ModelError(f"Cannot prune {from_layer.name} of {source.name} from {available} to {wanted} "
                             "channels: only a layer followed by batch norm has scales to choose by.")
        to_layer.set_weights([kernel[..., kept], *[weight[kept] for weight in weights[1:]]])  # + bias, if any
        kept_inputs, previous_channels = kept, available
    return target


def prune(source_path: str | Path, arch: str):
    """Load the model at `source_path` and return (its weights pruned into a new `arch` network, its metadata)."""
    from fer.model import build_model
    from fer.registry import load_model

    source, metadata = load_model(source_path)
    target = build_model(arch, num_classes=len(metadata["classes"]), image_size=int(metadata["image_size"]))
    return prune_into(source, target), metadata


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fer.prune", description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="the trained .keras file to shrink (a version name in models/ works too)")
    parser.add_argument("--arch", required=True, help="the narrower architecture (fer.model), e.g. vgg_base_slim")
    parser.add_argument("--out", required=True, help="path stem for OUT.keras and OUT.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from fer.model import ARCHITECTURES

    if args.arch not in ARCHITECTURES:
        parser.error(f"unknown --arch {args.arch!r}; choose one of {', '.join(sorted(ARCHITECTURES))}")
    from fer.registry import beside, save_weights_only_model, write_json_atomic

    out = Path(args.out)
    out = out.with_name(out.name.removesuffix(".keras"))
    if beside(out, ".keras").exists() or beside(out, ".json").exists():
        print(f"error: {out}.keras or .json already exists; choose a new --out.", file=sys.stderr)
        return 1
    try:
        from fer.models import resolve_model

        source_path = resolve_model(args.model)
        model, source = prune(source_path, args.arch)
    except FerError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    # What serving and `fer.train --init-from` read (classes, size, preprocessing), not the source's scores or
    # LiteRT copy: those describe another network. Its temperature is 1 until it is trained and calibrated.
    metadata = {
        "name": out.name,
        "classes": source["classes"],
        "image_size": source["image_size"],
        "preprocess": source["preprocess"],
        "inference": {**source.get("inference", {}), "temperature": 1.0},
        "arch": args.arch,
        "parameters": int(model.count_params()),
        "pruned_from": source_path.stem,
        "command": "python -m fer.prune " + " ".join(argv if argv is not None else sys.argv[1:]),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    save_weights_only_model(model, beside(out, ".keras"))
    write_json_atomic(beside(out, ".json"), metadata)
    print(f"wrote {out}.keras: {args.arch}, {metadata['parameters']:,} parameters, from {source_path.name}. "
          f"Train it before serving: python -m fer.train --init-from {out}.keras "
          f"--teacher {source_path} --online-teacher ...")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
