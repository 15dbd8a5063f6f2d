"""Every architecture: output shape, probabilities, save/load round trip."""

import numpy as np
import pytest

from fer.model import ARCHITECTURES, build_model


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_output_is_a_probability_distribution(arch):
    model = build_model(arch, num_classes=4, image_size=48)
    x = np.random.default_rng(0).uniform(0, 255, size=(3, 48, 48, 1)).astype(np.float32)
    y = np.asarray(model(x, training=False))
    assert y.shape == (3, 4)
    assert np.all(np.isfinite(y)) and np.all(y >= 0)
    np.testing.assert_allclose(y.sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_save_load_round_trip(arch, tmp_path):
    import keras

    model = build_model(arch)
    path = tmp_path / f"{arch}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, compile=False)
    x = np.random.default_rng(1).uniform(0, 255, size=(2, 48, 48, 1)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(model(x, training=False)), np.asarray(loaded(x, training=False)), rtol=1e-5, atol=1e-6)


def test_seed_cnn_matches_the_study():
    """Five kernel-2 conv blocks (64, 128, 512, 512, 128), dense 256 and 512, softmax over 4."""
    from keras import layers

    model = build_model("seed_cnn")
    convs = [layer for layer in model.layers if isinstance(layer, layers.Conv2D)]
    assert [layer.filters for layer in convs] == [64, 128, 512, 512, 128]
    assert all(layer.kernel_size == (2, 2) for layer in convs)
    dense = [layer.units for layer in model.layers if isinstance(layer, layers.Dense)]
    assert dense == [256, 512, 4]
    assert sum(isinstance(layer, layers.LeakyReLU) for layer in model.layers) == 7
    assert sum(isinstance(layer, layers.MaxPooling2D) for layer in model.layers) == 3


def test_unknown_architecture_is_rejected():
    with pytest.raises(ValueError, match="Unknown architecture"):
        build_model("resnet9000")


def test_vgg_base_is_the_reference_size():
    """The reference network's size: eight 3x3 convs of 64-512 filters, a flatten head, about 7M parameters."""
    from keras import layers

    model = build_model("vgg_base")
    convs = [layer for layer in model.layers if isinstance(layer, layers.Conv2D)]
    assert [layer.filters for layer in convs] == [64, 64, 128, 128, 256, 256, 512, 512]
    assert all(layer.kernel_size == (3, 3) for layer in convs)
    assert any(isinstance(layer, layers.Flatten) for layer in model.layers)
    assert 6.5e6 < model.count_params() < 7.5e6
