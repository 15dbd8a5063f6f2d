"""Model versions in models/: which one is served, how it got there, and going back.

    python -m fer.models list                     # every version with its scores; * marks the current one
    python -m fer.models rollback                 # serve the model that was current before the current one
    python -m fer.models rollback seed_cnn        # serve a named earlier version
    python -m fer.models use vgg_small            # serve a model by hand (recorded like a promotion)
    python -m fer.models add runs/x/slim.keras --name vgg_base_slim_votes   # copy a trained model in, then gate it

A version is a model's file stem (`models/NAME.keras` with `models/NAME.json`). Every move of `models/current.json`
goes through `move_pointer`, which appends an event to `models/history.json`:
{"events": [{"time", "action": "promote" | "use" | "rollback", "model", "previous", ...}]}. The same file records
what did not move the pointer: the gate's rejections (`"reject"`) and `fer.calibrate` re-fitting a served model
(`"calibrate"`). Candidates the gate rejected live in `models/candidates/` with `"status": "rejected"` and the reason
in their JSON.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

from filelock import FileLock

from fer import config
from fer.errors import FerError, ModelError
from fer.registry import POINTER_NAME, current_model_path, read_metadata, set_current, write_json_atomic

HISTORY_NAME = "history.json"
CANDIDATES_DIR = "candidates"
POINTER_ACTIONS = ("promote", "use", "rollback")
_NOT_MODELS = {POINTER_NAME, HISTORY_NAME}


def _models_dir(models_dir: str | Path | None) -> Path:
    return Path(models_dir or config.models_dir())


def now_utc() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def read_history(models_dir: str | Path | None = None) -> list[dict]:
    """The events in `models_dir/history.json`, oldest first ([] when there is none yet)."""
    path = _models_dir(models_dir) / HISTORY_NAME
    if not path.is_file():
        return []
    try:
        events = json.loads(path.read_text())["events"]
    except (OSError, ValueError, KeyError, TypeError):
        raise ModelError(f"{path} is unreadable; it should look like {{\"events\": [...]}}. Restore it from git.") from None
    return list(events)


def _lock(models_dir: Path) -> FileLock:
    """Held while the pointer or the history changes, so two processes cannot interleave their moves."""
    models_dir.mkdir(parents=True, exist_ok=True)
    return FileLock(str(models_dir / f".{HISTORY_NAME}.lock"))


def _append_event(event: dict, models_dir: Path) -> dict:
    event = {"time": now_utc(), **event}
    events = read_history(models_dir)
    events.append(event)
    write_json_atomic(models_dir / HISTORY_NAME, {"events": events})
    return event


def record_event(event: dict, models_dir: str | Path | None = None) -> dict:
    """Append `event` (stamped with the time) to the history; safe when two processes record at once."""
    models_dir = _models_dir(models_dir)
    with _lock(models_dir):
        return _append_event(event, models_dir)


def current_name(models_dir: str | Path | None = None) -> str | None:
    """The version `current.json` names, or None when there is no pointer yet."""
    models_dir = _models_dir(models_dir)
    if not (models_dir / POINTER_NAME).is_file():
        return None
    return current_model_path(models_dir).stem


def move_pointer(model_path: str | Path, action: str, models_dir: str | Path | None = None, **details) -> dict:
    """Point `current.json` at `model_path` and record why (`action` is promote, use or rollback); return the event."""
    if action not in POINTER_ACTIONS:
        raise ValueError(f"action must be one of {POINTER_ACTIONS}; got {action!r}.")
    models_dir = _models_dir(models_dir)
    model_path = Path(model_path)
    if not model_path.is_file():
        raise ModelError(f"No model at {model_path}; `python -m fer.models list` shows the versions there are.")
    with _lock(models_dir):
        previous = current_name(models_dir)
        set_current(model_path, models_dir)
        return _append_event({"action": action, "model": model_path.stem, "previous": previous, **details}, models_dir)


def resolve_model(spec: str | Path, models_dir: str | Path | None = None) -> Path:
    """A `.keras` path from a path, a stem (`models/vgg_small`), a bare version name, or `current` (`models/current`)."""
    models_dir = _models_dir(models_dir)
    spec = Path(spec)
    if spec.stem == "current" and spec.suffix in ("", ".json"):
        folder = spec.parent if str(spec.parent) != "." else models_dir
        return current_model_path(folder)
    path = spec if spec.suffix == ".keras" else spec.with_name(spec.name + ".keras")
    if path.is_file():
        return path
    for folder in (models_dir, models_dir / CANDIDATES_DIR):
        if spec.parent == Path(".") and (folder / path.name).is_file():
            return folder / path.name
    raise ModelError(f"No model {spec} (looked for {path} and in {models_dir}); `python -m fer.models list` shows them.")


def list_models(models_dir: str | Path | None = None) -> list[dict]:
    """One row per model JSON in models/ and models/candidates/, oldest first: version, date, scores, status, current."""
    models_dir = _models_dir(models_dir)
    history = read_history(models_dir)
    current = current_name(models_dir)
    pointer_events = [event for event in history if event.get("action") in POINTER_ACTIONS]
    rows = []
    for folder in (models_dir, models_dir / CANDIDATES_DIR):
        if not folder.is_dir():
            continue
        for json_path in sorted(folder.glob("*.json")):
            if json_path.name in _NOT_MODELS:
                continue
            try:
                metadata = read_metadata(json_path.with_suffix(".keras"))
            except ModelError:
                continue  # not a model description (an evaluation report, say)
            name = json_path.stem
            metrics = metadata.get("metrics", {})
            report, consensus = metrics.get("validation", {}), metrics.get("validation_consensus", {})
            per_class = report.get("per_class", {})
            rows.append({
                "version": name,
                "date": str(metadata.get("created", ""))[:16].replace("T", " "),
                "accuracy": report.get("accuracy"),
                "macro_f1": report.get("macro_f1"),
                "sad_f1": per_class.get("sad", {}).get("f1"),
                "neutral_f1": per_class.get("neutral", {}).get("f1"),
                # against the annotators' consensus (fer.votes), where the JSON has it
                "consensus_accuracy": consensus.get("accuracy"),
                "consensus_sad_f1": consensus.get("per_class", {}).get("sad", {}).get("f1"),
                "consensus_neutral_f1": consensus.get("per_class", {}).get("neutral", {}).get("f1"),
                "status": _status(name, metadata, pointer_events, json_path.with_suffix(".keras").is_file()),
                "parent": metadata.get("parent"),
                "current": name == current and folder == models_dir,
                "path": str(json_path.with_suffix(".keras")),
            })
    rows.sort(key=lambda row: (row["date"], row["version"]))
    return rows


def _status(name: str, metadata: dict, pointer_events: list[dict], has_weights: bool) -> str:
    if not has_weights:
        return "missing .keras"
    if metadata.get("status") == "rejected":
        return "rejected"
    involved = [event for event in pointer_events if name in (event.get("model"), event.get("previous"))]
    if not involved:
        return str(metadata.get("status") or "trained")
    last = involved[-1]
    if last.get("action") == "rollback" and last.get("previous") == name:
        return "rolled back"
    return "promoted"


def rollback_target(models_dir: str | Path | None = None) -> str:
    """The version that was current before the current one: the `previous` of the event that made it current."""
    models_dir = _models_dir(models_dir)
    current = current_name(models_dir)
    if current is None:
        raise ModelError(f"No {models_dir / POINTER_NAME}; nothing to roll back. Use `python -m fer.models use NAME`.")
    for event in reversed(read_history(models_dir)):
        if event.get("action") in ("promote", "use") and event.get("model") == current:
            if event.get("previous") and event["previous"] != current:
                return event["previous"]
            break
    raise ModelError(f"The history records no model before {current}; name one: `python -m fer.models rollback VERSION`.")


def rollback(version: str | None = None, models_dir: str | Path | None = None) -> dict:
    """Serve `version`, or the model current before the current one; returns the recorded event."""
    models_dir = _models_dir(models_dir)
    target = version or rollback_target(models_dir)
    return move_pointer(_version_path(target, models_dir), "rollback", models_dir)


def use(version: str, models_dir: str | Path | None = None) -> dict:
    """Serve `version` by hand, bypassing the gate; returns the recorded event."""
    models_dir = _models_dir(models_dir)
    return move_pointer(_version_path(version, models_dir), "use", models_dir)


def _version_path(version: str, models_dir: Path) -> Path:
    name = Path(version).name
    name = name[: -len(".keras")] if name.endswith(".keras") else name
    path = models_dir / f"{name}.keras"
    if path.is_file():
        read_metadata(path)
        return path
    rejected = models_dir / CANDIDATES_DIR / f"{name}.keras"
    if rejected.is_file():
        reason = read_metadata(rejected).get("gate", {}).get("reason", "no reason recorded")
        raise ModelError(f"{name} was rejected by the gate ({reason}); to serve it anyway move "
                         f"{rejected.parent}/{name}.* into {models_dir} and run `use` again.")
    raise ModelError(f"No model {path}; `python -m fer.models list` shows the versions there are.")


MODEL_FILES = (".keras", ".json", ".tflite", ".history.csv", ".curves.png")  # what fer.train writes for a model


def add(source: str | Path, name: str | None = None, models_dir: str | Path | None = None) -> Path:
    """Copy a trained model's files (`MODEL_FILES`, those that exist) into the models folder as NAME (default: its
    own stem), its JSON renamed to match (`name`, the LiteRT copy's file) and recording where it came from. Serves
    nothing: gate it (`python -m fer.gate`) or `use` it. Returns the new .keras path."""
    import shutil

    from fer.registry import beside

    source = Path(source)
    stem = source.with_suffix("") if source.suffix == ".keras" else source
    if not beside(stem, ".keras").is_file():
        raise ModelError(f"No model at {beside(stem, '.keras')}.")
    metadata = read_metadata(beside(stem, ".keras"))
    name = name or stem.name
    if not name or Path(name).name != name or name.startswith("."):
        raise ModelError(f"A model name is a file stem such as vgg_base_slim_votes; got {name!r}.")
    target = _models_dir(models_dir) / name
    taken = [str(beside(target, suffix)) for suffix in MODEL_FILES if beside(target, suffix).exists()]
    if taken:
        raise ModelError(f"{', '.join(taken)} already exist; choose another --name.")
    target.parent.mkdir(parents=True, exist_ok=True)
    for suffix in MODEL_FILES[2:]:
        if beside(stem, suffix).is_file():
            shutil.copy2(beside(stem, suffix), beside(target, suffix))
    shutil.copy2(beside(stem, ".keras"), beside(target, ".keras"))
    metadata.update({"name": name, "added_from": str(beside(stem, ".keras")), "added": now_utc()})
    if isinstance(metadata.get("lite"), dict) and beside(stem, ".tflite").is_file():
        metadata["lite"]["file"] = beside(target, ".tflite").name
    write_json_atomic(beside(target, ".json"), metadata)
    return beside(target, ".keras")


def format_table(rows: list[dict]) -> str:
    def score(value) -> str:
        return f"{value:.4f}" if isinstance(value, (int, float)) else "-"

    width = max([len("version")] + [len(row["version"]) for row in rows])
    # Folder labels first, then the same against the annotators' consensus ("c." columns; fer.votes).
    lines = [f"  {'version':<{width}}  {'date (UTC)':<16}  {'accuracy':>8}  {'macro-F1':>8}  {'sad F1':>7}  "
             f"{'neut. F1':>8}  {'c.accur.':>8}  {'c.sad F1':>8}  {'c.neut.F1':>9}  status"]
    for row in rows:
        marker = "*" if row["current"] else " "
        lines.append(f"{marker} {row['version']:<{width}}  {row['date']:<16}  {score(row['accuracy']):>8}  "
                     f"{score(row['macro_f1']):>8}  {score(row['sad_f1']):>7}  {score(row['neutral_f1']):>8}  "
                     f"{score(row['consensus_accuracy']):>8}  {score(row['consensus_sad_f1']):>8}  "
                     f"{score(row['consensus_neutral_f1']):>9}  {row['status']}{'  (current)' if row['current'] else ''}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fer.models", description=__doc__.split("\n\n")[0])
    parser.add_argument("--models-dir", help="models folder (default: $FER_MODELS_DIR or models/)")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="every version with its validation scores and status")
    rollback_parser = commands.add_parser("rollback", help="serve the previous promoted model (or VERSION)")
    rollback_parser.add_argument("version", nargs="?")
    use_parser = commands.add_parser("use", help="serve the model NAME (bypasses the gate; recorded)")
    use_parser.add_argument("name")
    add_parser = commands.add_parser("add", help="copy a trained model (runs/NAME.keras and its files) in; serves "
                                                 "nothing until the gate promotes it")
    add_parser.add_argument("source", help="the .keras file fer.train wrote")
    add_parser.add_argument("--name", help="its name in the models folder (default: its file stem)")
    args = parser.parse_args(argv)
    models_dir = _models_dir(args.models_dir)
    try:
        if args.command == "list":
            rows = list_models(models_dir)
            if not rows:
                print(f"No models in {models_dir}; train one with `python -m fer.train`.")
                return 0
            print(format_table(rows))
            if not any(row["current"] for row in rows):
                print(f"\nNo current model ({models_dir / POINTER_NAME} is missing); run `python -m fer.models use NAME`.")
            return 0
        if args.command == "add":
            path = add(args.source, args.name, models_dir)
            print(f"added {path}; gate it: python -m fer.gate {path} --data DATA_ROOT")
            return 0
        if args.command == "rollback":
            event = rollback(args.version, models_dir)
        else:
            event = use(args.name, models_dir)
    except FerError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"current model: {event['model']} (was {event['previous'] or 'none'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
