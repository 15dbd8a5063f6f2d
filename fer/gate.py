"""The gate between a retrained candidate and the served model: compare on one held-out set, then promote or reject.

    python -m fer.gate models/vgg_small-20260101-120000.keras --data ../shared/data/fer2013
    python -m fer.gate models/NAME.keras --current models/vgg_small_reg.keras --data photos/held_out --dry-run

Both models are scored by `fer.evaluate.evaluate` on the same folder (a dataset root means its validation split):
against the annotators' consensus (fer.votes) whenever either model was trained on votes (the votes file its JSON
names, or `--votes`), so that a correction that fixes a label can show as a gain; otherwise against the folders.
The rule (`GateRule`): the candidate is promoted only if its macro-F1 is at most `max_macro_f1_drop` (0.005) below
the current model's, and the F1 of each watched class (sad and neutral, the pair reviewers correct) is at most
`max_class_f1_drop` (0.01) below. Improvements are not required: corrections may fix labels the held-out set still
gets wrong, so the gate guards against regressions rather than demanding a gain. Promoted: the candidate's JSON gets
`"status": "promoted"` and the gate results, `models/current.json` moves and `models/history.json` records it.
Rejected: the candidate moves to `models/candidates/` with `"status": "rejected"` and the reason; current stays.
The command exits 0 when the candidate passes, 1 when the gate rejects it, 2 on an error.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import shutil
import sys
from pathlib import Path

from fer.config import CLASS_NAMES
from fer.data import find_split
from fer.errors import FerError, ModelError
from fer.models import CANDIDATES_DIR, move_pointer, now_utc, record_event, resolve_model
from fer.registry import read_metadata, write_json_atomic

logger = logging.getLogger(__name__)

_SLACK = 1e-9  # float noise: a drop of exactly the tolerance passes


@dataclasses.dataclass(frozen=True)
class GateRule:
    """Largest allowed drops (candidate below current) before a candidate is rejected."""

    max_macro_f1_drop: float = 0.005
    max_class_f1_drop: float = 0.01
    watched_classes: tuple[str, ...] = ("sad", "neutral")  # the classes reviewers correct; shown first

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class GateResult:
    """Both reports, each checked limit, and the decision; `status` becomes promoted or rejected once applied."""

    candidate: Path
    current: Path
    data_dir: Path
    rule: GateRule
    candidate_report: dict
    current_report: dict
    checks: list[dict]
    passed: bool
    reason: str
    status: str = "undecided"  # "promoted" or "rejected" after `apply_decision`
    votes: str | None = None  # the votes file whose consensus both were judged against; None: the folder labels
    time: str = dataclasses.field(default_factory=now_utc)

    @property
    def promoted(self) -> bool:
        return self.status == "promoted"

    def to_dict(self) -> dict:
        """JSON-ready summary (without the confusion matrices) for the candidate's JSON."""
        def brief(report: dict) -> dict:
            return {"accuracy": report["accuracy"], "macro_f1": report["macro_f1"], "n_images": report.get("n_images"),
                    "per_class_f1": {name: scores["f1"] for name, scores in report["per_class"].items()}}

        return {
            "time": self.time, "status": self.status, "passed": self.passed, "reason": self.reason,
            "candidate": self.candidate.stem, "current": self.current.stem, "data_dir": str(self.data_dir),
            "labels": "folder" if self.votes is None else "consensus", "votes": self.votes,
            "rule": self.rule.to_dict(), "checks": self.checks,
            "candidate_report": brief(self.candidate_report), "current_report": brief(self.current_report),
        }

    def format(self) -> str:
        return format_comparison(self)


def held_out_dir(data_dir: str | Path) -> Path:
    """`data_dir` itself when it holds class folders, else its validation split."""
    data_dir = Path(data_dir)
    if data_dir.is_dir() and any((data_dir / name).is_dir() for name in CLASS_NAMES):
        return data_dir
    return find_split(data_dir, "validation")


def decide(current_report: dict, candidate_report: dict, rule: GateRule = GateRule()) -> tuple[bool, list[dict], str]:
    """Apply `rule` to two evaluation reports; return (passed, checks, reason)."""
    limits = [(f"{name} F1", _class_f1(current_report, name), _class_f1(candidate_report, name), rule.max_class_f1_drop)
              for name in rule.watched_classes]
    limits.append(("macro-F1", current_report["macro_f1"], candidate_report["macro_f1"], rule.max_macro_f1_drop))
    checks, failures = [], []
    for metric, current, candidate, allowed in limits:
        passed = current - candidate <= allowed + _SLACK
        checks.append({"metric": metric, "current": current, "candidate": candidate,
                       "change": candidate - current, "allowed_drop": allowed, "passed": passed})
        if not passed:
            failures.append(f"{metric} dropped {current - candidate:.4f} (allowed {allowed:.4f})")
    if failures:
        return False, checks, "; ".join(failures)
    return True, checks, "macro-F1 and watched-class F1 all within their allowed drops"


def _class_f1(report: dict, name: str) -> float:
    if name not in report["per_class"]:
        raise ModelError(f"The gate watches {name!r}, which this model does not predict; set GateRule.watched_classes.")
    return float(report["per_class"][name]["f1"])


def gate(candidate_path: str | Path, current_path: str | Path, data_dir: str | Path, rule: GateRule = GateRule(),
         votes_path: str | Path | None = None) -> GateResult:
    """Evaluate both models on the same held-out folder and decide; changes nothing on disk.

    Labels: the consensus of `votes_path` if given, else of the votes file either model was trained on (the
    current model's first), else the folders.
    """
    from fer import votes as fer_votes
    from fer.evaluate import evaluate
    from fer.predict import load_predictor

    candidate_path, current_path = Path(candidate_path), Path(current_path)
    folder = held_out_dir(data_dir)
    candidate_predictor, current_predictor = load_predictor(candidate_path), load_predictor(current_path)
    if candidate_predictor.classes != current_predictor.classes:
        raise ModelError(f"{candidate_path.name} and {current_path.name} predict different classes; they cannot be compared.")
    votes_path = (votes_path or fer_votes.default_for(current_predictor.metadata)
                  or fer_votes.default_for(candidate_predictor.metadata))
    votes = fer_votes.read(votes_path) if votes_path else None
    current_report = evaluate(current_predictor, folder, votes=votes)
    candidate_report = evaluate(candidate_predictor, folder, votes=votes)
    passed, checks, reason = decide(current_report, candidate_report, rule)
    return GateResult(candidate_path, current_path, folder, rule, candidate_report, current_report, checks, passed,
                      reason, votes=None if votes is None else str(votes.path))


def apply_decision(result: GateResult, models_dir: str | Path | None = None) -> GateResult:
    """Promote a passing candidate (pointer + history) or set a failing one aside in candidates/; record either way."""
    models_dir = Path(models_dir) if models_dir is not None else result.candidate.parent
    summary = {check["metric"]: round(check["candidate"], 4) for check in result.checks}
    if result.passed:
        move_pointer(result.candidate, "promote", models_dir, reason=result.reason, scores=summary,
                     data_dir=str(result.data_dir))
    result.status = "promoted" if result.passed else "rejected"
    metadata = read_metadata(result.candidate)
    metadata["status"] = result.status
    metadata["gate"] = result.to_dict()
    write_json_atomic(result.candidate.with_suffix(".json"), metadata)
    if result.passed:
        return result
    destination = models_dir / CANDIDATES_DIR
    destination.mkdir(parents=True, exist_ok=True)
    for path in result.candidate.parent.glob(f"{result.candidate.stem}.*"):
        shutil.move(str(path), destination / path.name)
    result.candidate = destination / result.candidate.name
    record_event({"action": "reject", "model": result.candidate.stem, "current": result.current.stem,
                  "reason": result.reason, "scores": summary}, models_dir)
    return result


def format_comparison(result: GateResult) -> str:
    """Side by side: watched classes first (marked *), then macro-F1, accuracy and the other classes."""
    current, candidate = result.current_report, result.candidate_report
    labels = "folder labels" if result.votes is None else f"the annotators' consensus ({result.votes})"
    lines = [f"gate: candidate {result.candidate.stem} vs current {result.current.stem} on {result.data_dir} "
             f"({candidate.get('n_images', '?')} faces), against {labels}", "",
             f"  {'metric':<14}{'current':>9}{'candidate':>11}{'change':>9}{'limit':>9}"
             f"   (* watched: {', '.join(result.rule.watched_classes)})"]
    for check in result.checks:
        watched = "*" if check["metric"] != "macro-F1" else " "
        lines.append(f"{watched} {check['metric']:<14}{check['current']:>9.4f}{check['candidate']:>11.4f}"
                     f"{check['change']:>+9.4f}{-check['allowed_drop']:>+9.4f}  {'ok' if check['passed'] else 'FAIL'}")
    lines.append(f"  {'accuracy':<14}{current['accuracy']:>9.4f}{candidate['accuracy']:>11.4f}"
                 f"{candidate['accuracy'] - current['accuracy']:>+9.4f}")
    for name in current["per_class"]:
        if name in result.rule.watched_classes:
            continue
        before, after = current["per_class"][name]["f1"], candidate["per_class"][name]["f1"]
        lines.append(f"  {name + ' F1':<14}{before:>9.4f}{after:>11.4f}{after - before:>+9.4f}")
    verdict = {"promoted": "PROMOTED", "rejected": "REJECTED"}.get(result.status, "PASSES" if result.passed else "FAILS")
    lines += ["", f"decision: {verdict}: {result.reason}"]
    if result.status == "rejected":
        lines.append(f"kept as {result.candidate}; current stays {result.current.stem}")
    return "\n".join(lines)


def add_rule_arguments(parser: argparse.ArgumentParser) -> None:
    """The rule's knobs as CLI flags, shared by `fer.gate` and `fer.train --gate`."""
    rule = GateRule()
    parser.add_argument("--max-macro-f1-drop", type=float, default=rule.max_macro_f1_drop,
                        help="largest allowed macro-F1 drop (default %(default)s)")
    parser.add_argument("--max-class-f1-drop", type=float, default=rule.max_class_f1_drop,
                        help="largest allowed F1 drop of each watched class (default %(default)s)")
    parser.add_argument("--watch", nargs="+", default=list(rule.watched_classes), metavar="CLASS",
                        help="classes whose F1 may not drop (default: %(default)s)")


def rule_from_args(args: argparse.Namespace) -> GateRule:
    return GateRule(args.max_macro_f1_drop, args.max_class_f1_drop, tuple(args.watch))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fer.gate", description=__doc__.split("\n\n")[0])
    parser.add_argument("candidate", help="the candidate: a .keras path or a version name in models/")
    parser.add_argument("--current", default="current",
                        help="the model to beat (default: the one current.json beside the candidate names)")
    parser.add_argument("--data", required=True, help="dataset root (its validation split is used) or any class-folder tree")
    parser.add_argument("--votes", help="judge against the consensus of this votes file (default: the one either "
                                        "model was trained on, if any; else the folder labels)")
    add_rule_arguments(parser)
    parser.add_argument("--dry-run", action="store_true", help="compare and print only; move nothing")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    rule = rule_from_args(args)
    try:
        candidate = resolve_model(args.candidate)
        current = resolve_model(args.current, candidate.parent)  # `current`: the pointer beside the candidate
        if candidate.resolve() == current.resolve():
            raise ModelError(f"{candidate.name} is already the current model; nothing to compare.")
        result = gate(candidate, current, args.data, rule, args.votes)
        if not args.dry_run:
            apply_decision(result, current.parent)
    except FerError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(result.format())
    return 0 if result.passed else 1


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.exit(main())
