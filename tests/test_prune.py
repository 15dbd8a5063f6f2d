"""fer.prune: a narrower copy of a trained network keeps its strongest channels, and with them its function."""

import json

import numpy as np
import pytest

from fer import prune
from fer.errors import ModelError
from fer.model import build_model
from fer.predict import load_predictor
from conftest import write_model_files


def _with_idle_channels(source, target, seed: int = 0):
    """Give `source` random batch-norm statistics, and switch off (gamma 0, beta -1: ReLU gives exactly 0) as many
    channels of each narrowed layer as the target lacks; the rest get |gamma| >= 0.5, so they are the ones kept."""
    from keras import layers

    rng = np.random.default_rng(seed)
    targets = [layer for layer in target.layers if isinstance(layer, layers.BatchNormalization)]
    sources = [layer for layer in source.layers if isinstance(layer, layers.BatchNormalization)]
    for from_layer, to_layer in zip(sources, targets):
        channels, wanted = from_layer.get_weights()[0].shape[0], to_layer.get_weights()[0].shape[0]
        gamma = rng.uniform(0.5, 1.5, channels) * rng.choice([-1, 1], channels)
        beta = rng.uniform(-0.2, 0.2, channels)
        idle = rng.choice(channels, channels - wanted, replace=False)
        gamma[idle], beta[idle] = 0.0, -1.0
        from_layer.set_weights([gamma, beta, rng.normal(0, 0.1, channels), rng.uniform(0.5, 2.0, channels)])


@pytest.mark.parametrize("source_arch, target_arch", [("vgg_small", "vgg_tiny"), ("vgg_base", "vgg_base_slim")])
def test_dropping_idle_channels_keeps_the_function(source_arch, target_arch):
    source, target = build_model(source_arch), build_model(target_arch)
    _with_idle_channels(source, target)
    faces = np.random.default_rng(1).uniform(0, 255, (4, 48, 48, 1)).astype(np.float32)
    pruned = prune.prune_into(source, target)
    assert pruned.count_params() < source.count_params()
    np.testing.assert_allclose(pruned.predict(faces, verbose=0), source.predict(faces, verbose=0), atol=1e-5)


def test_strongest_keeps_the_largest_scores_in_order():
    np.testing.assert_array_equal(prune._strongest(np.array([0.1, 3.0, 0.5, 2.0, 0.0]), 3), [1, 2, 3])


@pytest.mark.parametrize("source_arch, target_arch", [("vgg_tiny", "vgg_small"), ("vgg_base", "vgg_small"),
                                                      ("seed_cnn", "vgg_tiny")])
def test_a_wider_or_different_target_is_refused(source_arch, target_arch):
    with pytest.raises(ModelError, match="Cannot prune"):
        prune.prune_into(build_model(source_arch), build_model(target_arch))


def test_cli_writes_a_servable_model_and_refuses_to_overwrite(tmp_path, capsys):
    source = write_model_files(tmp_path, "source", arch="vgg_small", make_current=False)
    out = tmp_path / "pruned" / "start_0.5"  # a dot in the name is part of it, not a suffix to replace
    assert prune.main([str(source), "--arch", "vgg_tiny", "--out", str(out)]) == 0
    model_file = out.with_name(out.name + ".keras")
    metadata = json.loads(model_file.with_suffix(".json").read_text())
    assert metadata["arch"] == "vgg_tiny" and metadata["pruned_from"] == "source"
    assert metadata["inference"]["temperature"] == 1.0 and "metrics" not in metadata
    probabilities = load_predictor(model_file).predict_faces(np.full((2, 48, 48), 128, np.uint8))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert "Train it before serving" in capsys.readouterr().out
    assert prune.main([str(source), "--arch", "vgg_tiny", "--out", str(out)]) == 1
    assert "already exists" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        prune.main([str(source), "--arch", "vgg_huge", "--out", str(tmp_path / "other")])
