"""Model files on disk: `NAME.keras` beside `NAME.json`, and `current.json` naming the model to serve.

The JSON is the single source of truth at serving time: class names in output order, image size, preprocessing and
inference settings (flip averaging, calibration temperature), plus how the model was trained and how it scored.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from fer import config
from fer.errors import ModelError

POINTER_NAME = "current.json"


def beside(stem: Path, suffix: str) -> Path:
    """`stem` + `suffix`: the files of the model an `--out` stem names. Not Path.with_suffix, which would take the
    ".3" of `runs/blur0.3` for a suffix and write `runs/blur0.keras`."""
    return stem.with_name(stem.name + suffix)


def metadata_path(model_path: str | Path) -> Path:
    return Path(model_path).with_suffix(".json")


def write_json_atomic(path: Path, data: dict) -> None:
    """Write JSON through a temporary file and a rename, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w") as stream:
            json.dump(data, stream, indent=2)
            stream.write("\n")
        os.chmod(temporary, 0o644)  # mkstemp creates 0600; model and pointer files are meant to be shared
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def save_weights_only_model(model, path: str | Path) -> Path:
    """Save `model` as a `.keras` file without optimizer state (a third of the size; serving never needs it)."""
    import keras

    # Rebuilt from its config rather than keras.models.clone_model, which (Keras 3.15) carries a compiled model's
    # optimizer over, and with it the optimizer state into the file.
    clean = model.__class__.from_config(model.get_config())
    clean.set_weights(model.get_weights())
    path = Path(path)
    clean.save(path)
    return path


def read_metadata(model_path: str | Path) -> dict:
    """The JSON beside a `.keras` file, checked for the keys serving needs."""
    path = metadata_path(model_path)
    if not path.is_file():
        raise ModelError(f"No model description at {path}; every .keras file needs its .json (written by fer.train).")
    try:
        metadata = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ModelError(f"{path} is not valid JSON ({error}); restore it or retrain with `python -m fer.train`.") from None
    if not isinstance(metadata, dict):
        raise ModelError(f"{path} must hold a JSON object with classes, image_size and preprocess; "
                         f"it holds {type(metadata).__name__}. Restore it or retrain with `python -m fer.train`.")
    missing = [key for key in ("classes", "image_size", "preprocess") if key not in metadata]
    if missing:
        raise ModelError(f"{path} lacks {', '.join(missing)}; retrain with `python -m fer.train`.")
    return metadata


def load_model(model_path: str | Path):
    """Load a `.keras` model and its JSON; raise ModelError if either is missing, corrupt or they disagree."""
    import keras  # deferred: importing TensorFlow costs seconds, and CLIs should fail fast on bad arguments

    path = Path(model_path)
    if not path.is_file():
        raise ModelError(f"No model at {path}; train one with `python -m fer.train --out models/NAME`.")
    metadata = read_metadata(path)
    try:
        model = keras.saving.load_model(path, compile=False)
    except Exception as error:  # Keras raises many types for a corrupt archive
        raise ModelError(f"Could not load {path} ({type(error).__name__}: {error}); the file may be corrupt.") from None
    outputs = model.output_shape[-1]
    if outputs != len(metadata["classes"]):
        raise ModelError(
            f"{path} outputs {outputs} classes but {metadata_path(path).name} lists {len(metadata['classes'])} "
            f"({', '.join(metadata['classes'])}); the two files do not belong together."
        )
    input_shape = tuple(model.input_shape[1:3])
    size = int(metadata["image_size"])
    if input_shape != (size, size):
        raise ModelError(f"{path} takes {input_shape} inputs but its JSON says image_size {size}.")
    return model, metadata


def current_model_path(models_dir: str | Path | None = None) -> Path:
    """The `.keras` file that `models_dir/current.json` points to."""
    models_dir = Path(models_dir or config.models_dir())
    pointer = models_dir / POINTER_NAME
    if not pointer.is_file():
        raise ModelError(f"No {pointer}; train a model or run `python -m fer.models use NAME`.")
    try:
        name = json.loads(pointer.read_text())["model"]
    except (OSError, ValueError, KeyError, TypeError):
        raise ModelError(f"{pointer} is unreadable; it should look like {{\"model\": \"NAME.keras\"}}.") from None
    if Path(name).name != name:
        raise ModelError(f"{pointer} must name a file inside {models_dir}, not {name!r}.")
    return models_dir / name


def set_current(model_path: str | Path, models_dir: str | Path | None = None) -> Path:
    """Point `models_dir/current.json` at `model_path` (which must live in `models_dir`)."""
    models_dir = Path(models_dir or config.models_dir())
    model_path = Path(model_path)
    if model_path.resolve().parent != models_dir.resolve():
        raise ModelError(f"{model_path} is not inside {models_dir}; only models there can be made current.")
    read_metadata(model_path)
    pointer = models_dir / POINTER_NAME
    write_json_atomic(pointer, {"model": model_path.name})
    return pointer
