"""README.md and docs/model_card.md: the Space's front matter, their size, and the served model's headline figures.

Fast and data-free: they read the two documents, requirements.txt and the served model's JSON.

The README's results contract (test_readme_headline_accuracy_is_the_served_models). The served model is the one
models/current.json names; its figures are its JSON's (models/NAME.json):
  - consensus accuracy    = metrics.validation_consensus.accuracy (FER2013 validation, FERPlus consensus labels)
  - folder-label accuracy = metrics.validation.accuracy           (FER2013 validation, folder labels)
README.md must have a Markdown table (a header line, a `|---|` separator line, then rows, each line starting with
`|`) with a row whose first cell contains the model's name in bold backticks, `**`NAME`**` (e.g. **`vgg_base_swa9`**,
more text may follow in the cell). The table's header names the two columns: a header cell that contains the words
"consensus" and "accuracy" (case-insensitive; `*` and backticks ignored) and one that contains "folder" and
"accuracy". In that row, each of the two cells (bold or not) is the JSON's figure written one of two ways:
  - a fraction with four decimals, f"{accuracy:.4f}"          e.g. 0.7746
  - a percentage with one decimal, f"{100 * accuracy:.1f}%"   e.g. 77.5%
Every row of such a table that names the served model must match; at least one must exist.

The model card's contract (test_model_card_model_index_accuracy_is_the_served_models). docs/model_card.md starts with
YAML front matter (`---` lines around it) in the Hugging Face model-card shape: `license`, `tags`, `datasets` and
`metrics` (lists), and `model-index`, a list whose first entry is
    - name: NAME                       # contains the served model's name
      results:
      - task: {type: image-classification}
        dataset: {type: ..., name: ...}
        metrics:
        - {type: accuracy, name: consensus accuracy, value: 0.7746}
        - {type: accuracy, name: folder-label accuracy, value: 0.8014}   # optional
An `accuracy` metric whose `name` contains "folder" is the folder-label figure; any other `accuracy` metric is the
consensus figure, and there must be at least one. A value is a YAML number: a fraction rounded to four decimals
(round(accuracy, 4)), or, if above 1, a percentage rounded to one decimal (round(100 * accuracy, 1)).

test_the_readme_contract_* and test_the_model_card_contract_* check the parsing itself on sample text.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
MODEL_CARD = ROOT / "docs" / "model_card.md"
README_MAX_BYTES = 10 * 1024
MODEL_CARD_MAX_BYTES = 15 * 1024
SPACE_COLOURS = {"red", "yellow", "green", "blue", "indigo", "purple", "pink", "gray"}  # the Hub's thumbnail colours
FRONT_MATTER = re.compile(r"\A---\n(.*?)\n---\n", re.S)
SEPARATOR = re.compile(r"^\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?\s*$")


def front_matter(path: Path) -> dict:
    """The YAML between the `---` lines that open `path` (a dict), or a failure that says it is missing."""
    match = FRONT_MATTER.match(path.read_text(encoding="utf-8"))
    assert match, f"{path.relative_to(ROOT)} does not start with YAML front matter between two `---` lines"
    data = yaml.safe_load(match.group(1))
    assert isinstance(data, dict), f"{path.relative_to(ROOT)}'s front matter is not a YAML mapping"
    return data


def served_model() -> tuple[str, dict]:
    """(name, metrics) of the model models/current.json names, from its JSON."""
    pointer = json.loads((ROOT / "models" / "current.json").read_text())
    model_json = (ROOT / "models" / pointer["model"]).with_suffix(".json")
    metadata = json.loads(model_json.read_text())
    return metadata.get("name") or model_json.stem, metadata["metrics"]


def headline(metrics: dict) -> dict[str, float]:
    assert "validation_consensus" in metrics, (
        "the served model's JSON has no metrics.validation_consensus: record it with `python -m fer.evaluate --model "
        "models/NAME.keras --data ../shared/data/fer2013/validation --votes ../shared/data/fer2013/ferplus_votes.csv "
        "--record`")
    return {"consensus": metrics["validation_consensus"]["accuracy"], "folder": metrics["validation"]["accuracy"]}


def cells(line: str) -> list[str]:
    line = line.strip().replace(r"\|", "\N{DIVIDES}")  # an escaped pipe is text, not a cell border
    return [cell.strip() for cell in line.strip("|").split("|")]


def tables(text: str) -> list[tuple[list[str], list[list[str]]]]:
    """Every Markdown table in `text` as (header cells, rows of cells)."""
    found, block = [], []
    for line in text.splitlines() + [""]:
        if line.lstrip().startswith("|"):
            block.append(line)
            continue
        if len(block) >= 2 and SEPARATOR.match(block[1].strip()):
            found.append((cells(block[0]), [cells(row) for row in block[2:]]))
        block = []
    return found


def plain(cell: str) -> str:
    return cell.replace("*", "").replace("`", "").strip()


def shown_as(cell: str, accuracy: float) -> bool:
    """True when `cell` writes `accuracy` as the contract allows (0.xxxx, or xx.x%)."""
    value = plain(cell)
    return value in (f"{accuracy:.4f}", f"{100 * accuracy:.1f}%")


def test_readme_front_matter_is_a_valid_gradio_space():
    config = front_matter(README)
    pinned = re.search(r"^gradio==(\S+)$", (ROOT / "requirements.txt").read_text(), re.M)
    assert pinned, "requirements.txt must pin gradio (gradio==X.Y.Z) for the Space's sdk_version to match"
    assert config.get("sdk") == "gradio"
    assert config.get("sdk_version") == pinned.group(1), "sdk_version must equal the gradio pinned in requirements.txt"
    # Quoted: unquoted, YAML reads 3.11 as a number, and 3.10 would read as 3.1.
    assert config.get("python_version") == "3.11"
    assert config.get("app_file") == "app.py" and (ROOT / config["app_file"]).is_file()
    assert isinstance(config.get("title"), str) and config["title"].strip()
    for key in ("colorFrom", "colorTo"):
        assert config.get(key, "gray") in SPACE_COLOURS, f"{key} must be one of {sorted(SPACE_COLOURS)}"
    assert isinstance(config.get("pinned", False), bool)
    assert isinstance(config.get("license", ""), str)


def test_readme_is_at_most_10_kb():
    size = README.stat().st_size
    assert size <= README_MAX_BYTES, (f"README.md is {size:,} bytes; keep it to {README_MAX_BYTES:,} (issue 34): "
                                      "history belongs in docs/experiments.md")


def test_model_card_is_at_most_15_kb():
    size = MODEL_CARD.stat().st_size
    assert size <= MODEL_CARD_MAX_BYTES, (f"docs/model_card.md is {size:,} bytes; keep it to {MODEL_CARD_MAX_BYTES:,} "
                                          "(issue 34): history belongs in docs/experiments.md")


def readme_rows(text: str, name: str) -> list[dict[str, str]]:
    """The consensus and folder-label accuracy cells of every results-table row that names `name` (the contract)."""
    marker = f"**`{name}`**"
    found = []
    for header, rows in tables(text):
        titles = [plain(cell).lower() for cell in header]
        columns = {kind: next((i for i, title in enumerate(titles) if kind in title and "accuracy" in title), None)
                   for kind in ("consensus", "folder")}
        if None in columns.values():
            continue
        found += [{kind: row[column] if column < len(row) else "" for kind, column in columns.items()}
                  for row in rows if row and marker in row[0]]
    return found


def test_readme_headline_accuracy_is_the_served_models():
    name, metrics = served_model()
    figures = headline(metrics)
    rows = readme_rows(README.read_text(encoding="utf-8"), name)
    assert rows, (f"README.md has no results-table row for the served model: a row whose first cell contains "
                  f"**`{name}`**, in a table with a 'consensus accuracy' and a 'folder-label accuracy' column "
                  "(the contract is in this file's docstring)")
    for row in rows:
        for kind, cell in row.items():
            assert shown_as(cell, figures[kind]), (
                f"README.md shows {kind} accuracy {cell!r} for {name}; its JSON says {figures[kind]:.6f}, so write "
                f"{figures[kind]:.4f} or {100 * figures[kind]:.1f}%")


def test_the_readme_contract_reads_a_results_row():
    text = """| model | consensus accuracy | sad F1 | **Folder-label accuracy** |
|---|---:|---|---|
| **`m1`** (served) | **77.5%** | 0.54 | 0.8014 |
| `m0` | 74.3% | 0.45 | 0.7146 |

| model | accuracy |
|---|---|
| **`m1`** | 0.5 |
"""
    assert readme_rows(text, "m1") == [{"consensus": "**77.5%**", "folder": "0.8014"}]
    assert readme_rows(text, "m0") == []  # not bold: a row that merely mentions the model is not its headline
    assert shown_as("**77.5%**", 0.7746153846) and shown_as("0.8014", 0.801433389)
    assert not shown_as("77.4%", 0.7746153846) and not shown_as("0.801", 0.801433389) and not shown_as("80%", 0.8)


def test_model_card_has_hugging_face_metadata():
    card = front_matter(MODEL_CARD)
    assert isinstance(card.get("license"), str) and card["license"].strip()
    for key in ("tags", "datasets", "metrics"):
        assert isinstance(card.get(key), list) and card[key], f"model card front matter: `{key}` must be a non-empty list"
    assert "accuracy" in card["metrics"]
    index = card.get("model-index")
    assert isinstance(index, list) and index, "model card front matter: `model-index` must be a non-empty list"
    for result in index[0].get("results") or []:
        assert result.get("task", {}).get("type"), "every model-index result needs task.type"
        assert result.get("dataset", {}).get("type") and result["dataset"].get("name"), (
            "every model-index result needs dataset.type and dataset.name")
        for metric in result.get("metrics") or []:
            assert metric.get("type") and isinstance(metric.get("value"), (int, float)), (
                f"every model-index metric needs a type and a numeric value: {metric}")


def model_index_accuracies(card: dict) -> list[tuple[str, float]]:
    """(kind, value) of every `accuracy` metric in model-index[0]: kind "folder" when its name says so, else "consensus"."""
    entry = (card.get("model-index") or [{}])[0]
    metrics = [metric for result in entry.get("results") or [] for metric in result.get("metrics") or []
               if metric.get("type") == "accuracy"]
    return [("folder" if "folder" in str(metric.get("name", "")).lower() else "consensus", metric["value"])
            for metric in metrics]


def card_shows(value: float, accuracy: float) -> bool:
    """True when a model-index `value` is `accuracy` rounded as the contract allows (0.xxxx, or xx.x if above 1)."""
    expected = round(100 * accuracy, 1) if value > 1 else round(accuracy, 4)
    return value == pytest.approx(expected, abs=1e-9)


def test_model_card_model_index_accuracy_is_the_served_models():
    name, metrics = served_model()
    figures = headline(metrics)
    card = front_matter(MODEL_CARD)
    entry = (card.get("model-index") or [{}])[0]
    assert name in str(entry.get("name", "")), f"model-index[0].name should name the served model {name}"
    accuracies = model_index_accuracies(card)
    assert "consensus" in [kind for kind, _ in accuracies], (
        "model-index needs an `accuracy` metric for the consensus labels")
    for kind, value in accuracies:
        accuracy = figures[kind]
        assert card_shows(value, accuracy), (
            f"model card model-index {kind} accuracy {value} for {name}; its JSON says {accuracy:.6f}, so write "
            f"{round(accuracy, 4)} (or {round(100 * accuracy, 1)} as a percentage)")


def test_the_model_card_contract_reads_model_index():
    card = yaml.safe_load("""
model-index:
- name: m1
  results:
  - task: {type: image-classification}
    dataset: {type: fer2013, name: FER2013 validation}
    metrics:
    - {type: accuracy, name: consensus accuracy, value: 0.7746}
    - {type: f1, name: sad F1, value: 0.54}
    - {type: accuracy, name: Folder-label accuracy, value: 80.1}
""")
    assert model_index_accuracies(card) == [("consensus", 0.7746), ("folder", 80.1)]
    assert card_shows(0.7746, 0.7746153846) and card_shows(80.1, 0.801433389)
    assert not card_shows(0.7745, 0.7746153846) and not card_shows(80.2, 0.801433389) and not card_shows(0.77, 0.7746)
