"""The retrain gate takes the job's own scores of the new split instead of scoring it twice,
only when they are scores of exactly that split, against that champion, by the gate's scorer."""

from __future__ import annotations

from monitoring.retrain import job_scores
from services.store.models import AdapterVersion

SPLIT = [{"text": f"t{i}", "label": "pos"} for i in range(3)]


def version(**changes):
    scores = {"accuracy": 0.9, "macro_f1": 0.8, "examples": 3, "scorer": "engine",
              "per_class": {}}
    metrics = {"eval": {"adapter": dict(scores),
                        "champion": {**scores, "accuracy": 0.5, "version": "s@v1"}},
               "comparison": {"champion_version": "s@v1"}}
    for path, value in changes.items():
        *parents, leaf = path.split("__")
        node = metrics
        for p in parents:
            node = node[p]
        node[leaf] = value
    return AdapterVersion(task="classification", metrics=metrics)


def test_the_job_s_scores_of_the_same_split_are_reused():
    mine, theirs = job_scores(version(), "s@v1", SPLIT, "engine")
    assert mine == {"accuracy": 0.9, "macro_f1": 0.8, "examples": 3}
    assert theirs == {"accuracy": 0.5, "macro_f1": 0.8, "examples": 3}


def test_other_scores_are_not_reused():
    assert job_scores(version(), "s@v1", SPLIT, "peft") is None  # another scorer
    assert job_scores(version(), "s@v2", SPLIT, "engine") is None  # another champion
    assert job_scores(version(), "s@v1", SPLIT[:2], "engine") is None  # another split size
    assert job_scores(version(eval__champion__scorer="peft"), "s@v1", SPLIT, "engine") is None
    assert job_scores(version(eval__champion=None), "s@v1", SPLIT, "engine") is None
    chat = version()
    chat.task = "chat"
    assert job_scores(chat, "s@v1", SPLIT, "engine") is None
