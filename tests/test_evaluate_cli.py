"""``deid eval`` wiring: help, the user-study scorer on the EXAMPLE CSV, ArcFace offline error."""
from __future__ import annotations

import json

from deid_core.cli import main


def test_eval_help_lists_tables(capsys):
    assert main(["eval"]) == 2
    out = capsys.readouterr().out
    for t in ("lfw", "rank", "table3", "lambda", "attributes", "gallery", "user-study"):
        assert t in out


def test_user_study_score_example(capsys, tmp_path, monkeypatch):
    from deid_core import paths
    monkeypatch.setenv("DEID_RESULTS", str(tmp_path))
    ex = paths.REPO_ROOT / "data" / "user_study"
    rc = main(["eval", "user-study", "score", str(ex / "example_responses.csv"),
               str(ex / "example_answer_key.csv"), "--name", "ex", "--label", "EXAMPLE"])
    assert rc == 0
    res = json.loads(capsys.readouterr().out)
    assert res["video"]["observers"] == 6
    assert (tmp_path / "figures" / "ex_confusion_deid.png").is_file()


def test_arcface_without_weights_is_a_clear_error(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("DEID_CACHE", str(tmp_path))
    monkeypatch.delenv("DEID_ARCFACE_WEIGHTS", raising=False)
    monkeypatch.delenv("DEID_ARCFACE_DOWNLOAD", raising=False)
    rc = main(["eval", "lfw", "--evaluator", "arcface", "--lfw", str(tmp_path), "--no-baselines"])
    err = capsys.readouterr().err
    assert rc == 1 and "--weights" in err and "Traceback" not in err
