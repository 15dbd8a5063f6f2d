"""Network architectures. `build_model` only builds: compiling and fitting belong to fer.train.

Every model takes raw grayscale pixels, float32 in [0, 255] of shape (N, S, S, 1), and returns softmax
probabilities over the classes; normalisation lives inside the model so serving never repeats it.
"""

from __future__ import annotations

import keras
from keras import layers


def _seed_cnn(inputs, num_classes: int):
    """The study's network: five kernel-2 conv blocks, batch norm, LeakyReLU(0.1), dropout, a two-layer dense head.

    The study lists Conv(64), Conv(128), Conv(512) each with BatchNorm, LeakyReLU(0.1), MaxPool(2) and Dropout(0.2),
    then Conv(512) and Conv(128) (read here as the same block without pooling), Flatten, then Dense(256) and
    Dense(512) each with BatchNorm, LeakyReLU(0.1) and Dropout(0.3).
    """
    x = layers.Rescaling(1.0 / 255.0)(inputs)
    for filters, pool in ((64, True), (128, True), (512, True), (512, False), (128, False)):
        x = layers.Conv2D(filters, kernel_size=2, padding="same")(x)
        x = layers.BatchNormalization()(x)
        x = layers.LeakyReLU(negative_slope=0.1)(x)
        if pool:
            x = layers.MaxPooling2D(pool_size=2)(x)
        x = layers.Dropout(0.2)(x)
    x = layers.Flatten()(x)
    for units in (256, 512):
        x = layers.Dense(units)(x)
        x = layers.BatchNormalization()(x)
        x = layers.LeakyReLU(negative_slope=0.1)(x)
        x = layers.Dropout(0.3)(x)
    return layers.Dense(num_classes, activation="softmax", dtype="float32")(x)  # float32 under mixed precision too


def _vgg_block(x, filters: int, dropout_rate: float):
    for _ in range(2):
        x = layers.Conv2D(filters, kernel_size=3, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        x = layers.Activation("relu")(x)
    x = layers.MaxPooling2D(pool_size=2)(x)
    return layers.Dropout(dropout_rate)(x)


def _vgg(inputs, num_classes: int, widths: tuple[int, int, int, int], flatten: bool = False, dense: int = 256):
    """Four VGG blocks of the given widths, a `dense`-unit dense layer, softmax.

    Between them, global average pooling, or with `flatten` the whole 3x3 map (for 48x48 faces), so the dense layer
    knows where on the face a feature fired (mouth corners low, brows high) at the cost of more dense weights.
    """
    x = layers.Rescaling(1.0 / 255.0)(inputs)
    for filters, dropout_rate in zip(widths, (0.1, 0.2, 0.3, 0.4)):
        x = _vgg_block(x, filters, dropout_rate)
    x = layers.Flatten()(x) if flatten else layers.GlobalAveragePooling2D()(x)
    x = layers.Dense(dense, use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    x = layers.Activation("relu")(x)
    x = layers.Dropout(0.5)(x)
    return layers.Dense(num_classes, activation="softmax", dtype="float32")(x)  # float32 under mixed precision too


def _vgg_small(inputs, num_classes: int):
    """A VGG-style 3x3 network (8 conv layers, 32-256 filters) sized to train and serve on two CPU cores."""
    return _vgg(inputs, num_classes, (32, 64, 128, 256))


def _vgg_tiny(inputs, num_classes: int):
    """vgg_small at half the width (16-128 filters): a quarter of the compute, for the batch-throughput budget."""
    return _vgg(inputs, num_classes, (16, 32, 64, 128))


def _vgg_wide(inputs, num_classes: int):
    """vgg_small at 1.5 times the width (48-384 filters): 2.25 times the compute, for a teacher or a stronger model."""
    return _vgg(inputs, num_classes, (48, 96, 192, 384))


def _vgg_flat(inputs, num_classes: int):
    """vgg_small with a flatten head: the dense layer reads the 3x3x256 map instead of its average."""
    return _vgg(inputs, num_classes, (32, 64, 128, 256), flatten=True)


def _vgg_base(inputs, num_classes: int):
    """The reference's size: 64-512 filters, a flatten head and a 512-unit dense layer (about 7M parameters, 4 times
    vgg_small's compute), to train as a teacher or to see what full size buys."""
    return _vgg(inputs, num_classes, (64, 128, 256, 512), flatten=True, dense=512)


def _vgg_base_slim(inputs, num_classes: int):
    """vgg_base at 3/4 width (48-384 filters, the same head): 56% of its compute, so pruned from a trained vgg_base
    (fer.prune) and trained on with it as teacher it fits the 1,000 faces/s budget on two cores."""
    return _vgg(inputs, num_classes, (48, 96, 192, 384), flatten=True, dense=512)


def _vgg_base_trim(inputs, num_classes: int):
    """vgg_base at 7/8 width (56-448 filters, the same head): 77% of its compute, pruned less than vgg_base_slim."""
    return _vgg(inputs, num_classes, (56, 112, 224, 448), flatten=True, dense=512)


def _vgg_base_taper(inputs, num_classes: int):
    """vgg_base with its first blocks narrowed and its last kept (48, 96, 224, 512 filters, the same head): 72% of its
    compute. Pruned from a trained vgg_base (fer.prune), its last block and head keep every weight."""
    return _vgg(inputs, num_classes, (48, 96, 224, 512), flatten=True, dense=512)


ARCHITECTURES = {
    "seed_cnn": _seed_cnn,
    "vgg_small": _vgg_small,
    "vgg_tiny": _vgg_tiny,
    "vgg_wide": _vgg_wide,
    "vgg_flat": _vgg_flat,
    "vgg_base": _vgg_base,
    "vgg_base_slim": _vgg_base_slim,
    "vgg_base_trim": _vgg_base_trim,
    "vgg_base_taper": _vgg_base_taper,
}


def build_model(arch: str = "seed_cnn", num_classes: int = 4, image_size: int = 48) -> keras.Model:
    """Build (not compile) the named architecture for (image_size, image_size, 1) inputs and `num_classes` outputs."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"Unknown architecture {arch!r}; choose one of {sorted(ARCHITECTURES)}.")
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2; got {num_classes}.")
    inputs = keras.Input(shape=(image_size, image_size, 1), name="face")
    outputs = ARCHITECTURES[arch](inputs, num_classes)
    return keras.Model(inputs, outputs, name=arch)
