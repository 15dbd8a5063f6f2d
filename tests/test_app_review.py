"""The Review and Model tabs: sign-in checked on the server for every write, the review loop through the handlers
and through gradio_client, the model overview, and a fine-tune promoted and served without a restart."""

from __future__ import annotations

import json
import socket

import gradio as gr
import numpy as np
import pytest

import app
from fer import labels, photo, review_view
from fer.config import CLASS_NAMES
from fer.serving import ServedModel
from conftest import write_face_tree, write_model_files

REVIEWERS = "alice:wonderland,bob:builder"


@pytest.fixture(autouse=True)
def environment(tmp_path, monkeypatch):
    """Labels in a temporary folder, two reviewer accounts, and a fixed session secret."""
    monkeypatch.setenv("FER_LABELS_DIR", str(tmp_path / "labels"))
    monkeypatch.setenv("FER_REVIEWERS", REVIEWERS)
    monkeypatch.setenv("FER_SESSION_SECRET", "test-secret")
    monkeypatch.delenv("FER_REVIEWERS_FILE", raising=False)
    return tmp_path / "labels"


def flag_faces(predictor, count: int = 3) -> list[str]:
    """Put `count` distinct faces in the flagged queue, as the Predict tab's "This is wrong" does."""
    shas = []
    for index in range(count):
        face = np.full((48, 48), 20 * index + 10, np.uint8)
        face[10:20, 10:38] = 200
        probabilities = predictor.predict_faces(face)[0]
        shas.append(labels.flag_for_review(face, probabilities, predictor.version, photo.FLAG_SOURCE))
    return shas


def signed_in(name: str = "alice", password: str = "wonderland") -> str:
    token, message, cleared_password = app.sign_in(name, password)
    assert "alice" in message or name in message
    assert cleared_password == ""
    return token


# ------------------------------------------------------------------------------------------------ sign-in


def test_without_accounts_the_review_tab_explains_how_to_enable_it(monkeypatch):
    monkeypatch.delenv("FER_REVIEWERS")
    with pytest.raises(gr.Error, match="FER_REVIEWERS"):
        app.sign_in("alice", "wonderland")
    with pytest.raises(gr.Error, match="FER_REVIEWERS"):
        app.signed_in_reviewer(None)


@pytest.mark.parametrize("name, password", [("alice", "wrong"), ("mallory", "wonderland"), ("", ""), ("alice", "")])
def test_a_wrong_name_or_password_is_refused(name, password):
    with pytest.raises(gr.Error, match="Wrong reviewer name or password"):
        app.sign_in(name, password)


@pytest.mark.parametrize("token", [None, "", "forged.token.value.sig", "YWxpY2U.9999999999.AAAA.forged-signature"])
def test_every_writing_handler_refuses_a_missing_or_forged_token(predictor, token):
    served = ServedModel(predictor)
    session = object()  # never looked at: the token is checked first
    for call in (lambda: app.review_action("sad", token, session),
                 lambda: app.review_action("undo", token, session),
                 lambda: app.load_review_queue(served, "flagged", token),
                 lambda: app.fine_tune(served, token),
                 lambda: app.show_agreement(token)):
        with pytest.raises(gr.Error, match="Sign in"):
            call()


def test_a_signed_out_token_no_longer_writes():
    token = signed_in()
    assert app.signed_in_reviewer(token) == "alice"
    app.sign_out(token)
    with pytest.raises(gr.Error, match="Sign in"):
        app.signed_in_reviewer(token)


# ------------------------------------------------------------------------------------------------ reviewing


def test_review_loop_labels_skips_goes_back_and_undoes(predictor, environment):
    shas = flag_faces(predictor)
    token = signed_in()
    session, face, about, probabilities, progress, note = app.load_review_queue(ServedModel(predictor), "flagged", token)
    assert "Loaded 3 faces" in note and progress.startswith("1 of 3")
    assert face.shape == (review_view.FACE_DISPLAY_SIZE, review_view.FACE_DISPLAY_SIZE)
    assert set(probabilities) == set(CLASS_NAMES) and "flagged queue" in about
    first = session.current.sha256

    session, *_, note = app.review_action("sad", token, session)
    assert note.startswith("Saved") and "sad" in note
    session, *_, note = app.review_action("skip", token, session)
    session, *_, progress, note = app.review_action("not_a_face", token, session)
    assert "done" in progress

    rows = labels.read_corrections(labels.corrections_path(environment)).rows
    assert [(row["image_sha256"], row["corrected_label"], row["reviewer"]) for row in rows] == [
        (first, "sad", "alice"), (session.items[2].sha256, "not_a_face", "alice")]
    assert {row["image_sha256"] for row in rows} <= set(shas)

    session, *_, note = app.review_action("undo", token, session)
    assert note.startswith("Undid") and session.current.sha256 == session.items[2].sha256
    session, *_ = app.review_action("back", token, session)
    assert session.current.sha256 == session.items[1].sha256
    resolved = labels.resolve_labels(labels.read_corrections(labels.corrections_path(environment)).rows)
    assert resolved == {first: "sad"}


def test_other_reviewers_labels_are_shown_and_agreement_is_reported(predictor):
    flag_faces(predictor, count=2)
    served = ServedModel(predictor)
    bob = signed_in("bob", "builder")
    session, *_ = app.load_review_queue(served, "flagged", bob)
    session, *_ = app.review_action("neutral", bob, session)
    session, *_ = app.review_action("sad", bob, session)

    alice = signed_in()
    session, face, about, *_ = app.load_review_queue(served, "flagged", alice)
    assert "bob: neutral" in about
    session, *_ = app.review_action("neutral", alice, session)
    session, *_ = app.review_action("happy", alice, session)
    report = app.show_agreement(alice)
    assert "2 faces labelled by two or more reviewers" in report and "Cohen's κ" in report


def test_a_queue_belongs_to_the_reviewer_who_loaded_it(predictor):
    flag_faces(predictor, count=1)
    session, *_ = app.load_review_queue(ServedModel(predictor), "flagged", signed_in())
    with pytest.raises(gr.Error, match="another sign-in"):
        app.review_action("sad", signed_in("bob", "builder"), session)


def test_a_full_disk_is_a_clear_error_for_the_reviewer_and_keeps_what_was_written(predictor, environment, monkeypatch):
    import errno
    import os

    flag_faces(predictor, count=2)
    token = signed_in()
    session, *_ = app.load_review_queue(ServedModel(predictor), "flagged", token)
    session, *_ = app.review_action("sad", token, session)
    before = labels.corrections_path(environment).read_bytes()

    def half_then_full(fd, data):  # the disk fills up in the middle of the row
        os.write(fd, bytes(data[: len(data) // 2]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(labels, "_write_all", half_then_full)
    with pytest.raises(gr.Error, match="is full"):
        app.review_action("neutral", token, session)
    assert labels.corrections_path(environment).read_bytes() == before
    assert session.current is not None and session.progress()["labelled"] == 1  # the face is still to be labelled


def test_unknown_queue_and_unconfigured_unlabelled_folder_are_clear_errors(predictor, monkeypatch):
    monkeypatch.delenv("FER_UNLABELLED_DIR", raising=False)
    token = signed_in()
    with pytest.raises(gr.Error, match="FER_UNLABELLED_DIR"):
        app.load_review_queue(ServedModel(predictor), "unlabelled", token)
    with pytest.raises(gr.Error, match="Unknown queue"):
        app.load_review_queue(ServedModel(predictor), "../../etc", token)


def test_shortcuts_cover_every_action_with_distinct_keys():
    keys = [key for key, _ in review_view.SHORTCUTS.values()]
    assert len(set(keys)) == len(keys)
    assert set(review_view.LABEL_ACTIONS) == set(labels.VALID_LABELS)
    script = review_view.shortcut_script()
    for action in review_view.SHORTCUTS:
        assert review_view.button_id(action) in script


# ------------------------------------------------------------------------------------------------ model tab


def test_model_overview_describes_the_current_model(model_dir, monkeypatch):
    monkeypatch.setenv("FER_MODELS_DIR", str(model_dir))
    summary, per_class, confusion, history = app.show_model()
    assert "Serving `tiny`" in summary
    assert "tiny (current)" in list(history["version"])


def test_model_overview_of_a_shipped_style_json(tmp_path, monkeypatch):
    folder = tmp_path / "models"
    path = write_model_files(folder, name="scored")
    metadata = json.loads(path.with_suffix(".json").read_text())
    metadata["metrics"] = {"validation": {
        "accuracy": 0.75, "macro_f1": 0.7, "n_images": 10, "classes": list(CLASS_NAMES),
        "per_class": {name: {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 3} for name in CLASS_NAMES},
        "confusion": np.eye(4, dtype=int).tolist(), "ece_before_calibration": 0.05, "ece_after_calibration": 0.02}}
    path.with_suffix(".json").write_text(json.dumps(metadata))
    monkeypatch.setenv("FER_MODELS_DIR", str(folder))
    summary, per_class, confusion, history = app.show_model()
    assert "75.0%" in summary and "0.050 before, 0.020 after" in summary
    assert list(per_class["class"]) == list(CLASS_NAMES)
    assert confusion.shape == (4, 5) and confusion.iloc[1, 2] == 1


def test_model_overview_without_a_model_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("FER_MODELS_DIR", str(tmp_path / "empty"))
    summary, *tables = app.show_model()
    assert summary.startswith("Cannot describe the model") and tables == [None, None, None]


def test_fine_tune_from_the_model_tab_is_gated_and_served_without_restart(tmp_path, monkeypatch, environment):
    from test_retrain import write_probe_model

    data_root = tmp_path / "data"
    write_face_tree(data_root / "train", per_class=4, seed=1)
    write_face_tree(data_root / "validation", per_class=3, seed=2)
    models = tmp_path / "models"
    write_probe_model(models, "probe", data_root, make_current=True)
    monkeypatch.setenv("FER_MODELS_DIR", str(models))
    monkeypatch.setenv("FER_DATA_DIR", str(data_root))
    from fer.predict import load_predictor

    served = ServedModel(load_predictor(models / "probe.keras"))
    token = signed_in()
    with pytest.raises(gr.Error, match="No corrections yet"):
        app.fine_tune(served, token)
    labels.add_correction(np.full((48, 48), 9, np.uint8), "happy", "alice", labels_dir=environment)

    verdict, summary, *_ = app.fine_tune(served, token, progress=lambda *args, **kwargs: None)
    current = json.loads((models / "current.json").read_text())["model"]
    if "Promoted" in verdict:
        assert current != "probe.keras" and served.version == current.removesuffix(".keras")
        assert f"Serving `{served.version}`" in summary
    else:
        assert "Rejected" in verdict and current == "probe.keras" and served.version == "probe"
    assert "gate: candidate" in verdict


def test_served_model_reload_swaps_in_the_new_current_model(tmp_path):
    folder = tmp_path / "models"
    first = write_model_files(folder, name="first")
    write_model_files(folder, name="second", make_current=False)
    from fer.predict import load_predictor

    served = ServedModel(load_predictor(first))
    assert served.version == "first" and served.classes == CLASS_NAMES
    from fer.models import use

    use("second", folder)
    served.reload(folder)
    assert served.version == "second"
    assert served.predict_faces(np.zeros((2, 48, 48), np.uint8)).shape == (2, 4)


# ------------------------------------------------------------------------------------------------ through the API


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def client(predictor):
    from gradio_client import Client

    demo = app.build_demo(predictor)
    _, url, _ = app.launch(demo, prevent_thread_lock=True, server_name="127.0.0.1", server_port=_free_port(),
                           quiet=True)
    yield lambda: Client(url, verbose=False)
    demo.close()


def test_sessions_cannot_be_forged_through_the_api(client, predictor, environment):
    flag_faces(predictor, count=2)
    visitor = client()
    forged = "YWxpY2U.9999999999.AAAA.forged-signature"
    for arguments, endpoint in [((None,), "/review_sad"), (("flagged", None), "/review_load"),
                                (("flagged", forged), "/review_load"), ((forged,), "/review_sad")]:
        with pytest.raises(Exception, match="Sign in"):
            visitor.predict(*arguments, api_name=endpoint)
    with pytest.raises(Exception, match="missing arguments"):
        visitor.predict(api_name="/review_sad")
    with pytest.raises(Exception, match="Wrong reviewer name or password"):
        visitor.predict("alice", "guess", api_name="/review_sign_in")
    assert not labels.corrections_path(environment).exists()

    reviewer = client()
    token, who, password = reviewer.predict("alice", "wonderland", api_name="/review_sign_in")
    assert "Signed in as **alice**" in who and password == ""
    reviewer.predict("flagged", token, api_name="/review_load")
    reviewer.predict(token, api_name="/review_sad")
    rows = labels.read_corrections(labels.corrections_path(environment)).rows
    assert [(row["reviewer"], row["corrected_label"]) for row in rows] == [("alice", "sad")]

    with pytest.raises(Exception, match="Sign in"):  # the sign-in belongs to whoever holds the token, not to everyone
        visitor.predict(None, api_name="/review_neutral")
    with pytest.raises(Exception, match="Load a queue first"):  # the queue belongs to the reviewer's session
        visitor.predict(token, api_name="/review_neutral")
    assert len(labels.read_corrections(labels.corrections_path(environment)).rows) == 1
