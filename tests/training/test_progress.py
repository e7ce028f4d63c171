"""Progress events under a URL (a job's workspace in the artifact store): every writing process
keeps an object of its own, readers merge them by time and see each event once."""

from __future__ import annotations

import subprocess
import sys
import time

from training import progress


def test_writers_on_other_machines_are_merged_and_each_event_read_once(tmp_path):
    url = (tmp_path / "progress").as_uri()  # file://...: the same code path as s3://
    progress.emit(url, "started", run_name="r")
    # another process (on a real cluster: Ray Train's rank-0 worker on another node)
    subprocess.run([sys.executable, "-c", (
        "from training import progress; import sys; "
        "progress.emit(sys.argv[1], 'training_started', total_steps=2); "
        "progress.emit(sys.argv[1], 'step', step=1, total_steps=2)")  # flushed at exit
        , url], check=True, cwd=progress.__file__.rsplit("/training/", 1)[0])
    reader = progress.ProgressReader(url)
    first = reader.poll()
    assert [e["event"] for e in first] == ["started", "training_started", "step"]
    assert len(list((tmp_path / "progress").glob("*.jsonl"))) == 2  # one object per writer
    assert reader.poll() == []  # nothing new: nothing returned twice
    progress.emit(url, "succeeded")
    assert [e["event"] for e in reader.poll()] == ["succeeded"]
    assert [e["event"] for e in progress.read_events(url)][-1] == "succeeded"


def test_step_events_are_written_within_a_second_without_an_explicit_flush(tmp_path):
    url = (tmp_path / "steps").as_uri()
    progress.emit(url, "training_started", total_steps=3)  # written at once
    for step in (1, 2, 3):
        progress.emit(url, "step", step=step, total_steps=3)
    deadline = time.monotonic() + 10
    while len(progress.read_events(url)) < 4:
        assert time.monotonic() < deadline, progress.read_events(url)
        time.sleep(0.1)
    assert [e.get("step") for e in progress.read_events(url)] == [None, 1, 2, 3]


def test_a_local_file_target_is_appended_as_before(tmp_path):
    path = tmp_path / "progress.jsonl"
    progress.emit(path, "started")
    progress.emit(path, "step", step=1)
    assert [e["event"] for e in progress.read_events(path)] == ["started", "step"]
    assert path.read_text().count("\n") == 2
    assert progress.latest_step(path)["step"] == 1
