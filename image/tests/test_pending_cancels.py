"""The record of cancels a node has not heard yet (app/pending_cancels.py), on a real file."""

from __future__ import annotations

import json
import logging
import os

from app.pending_cancels import PendingCancels


def test_a_pending_cancel_survives_a_restart_until_it_is_carried_out(tmp_path):
    path = tmp_path / "pending-cancels.json"
    first = PendingCancels(path)
    first.add("spark1", "dl-abc")
    first.add("spark2", "pull-x")
    first.add("spark1", "dl-abc")  # the kill is retried every 2 s: one record
    restarted = PendingCancels(path)
    assert ("spark1", "dl-abc") in restarted and ("spark2", "pull-x") in restarted
    assert ("spark2", "dl-abc") not in restarted  # a job id is a job on one node
    restarted.discard("spark1", "dl-abc")
    assert ("spark1", "dl-abc") not in PendingCancels(path)
    assert json.loads(path.read_text()) == [{"node": "spark2", "job": "pull-x"}]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pending-cancels.json"], "no temporary file left"


def test_records_of_jobs_no_longer_on_their_node_are_forgotten(tmp_path):
    path = tmp_path / "pending-cancels.json"
    pending = PendingCancels(path)
    for node, job in [("spark1", "a"), ("spark1", "b"), ("spark2", "a")]:
        pending.add(node, job)
    pending.keep_only("spark1", {"b", "c"})  # spark1 still has b (and c, never cancelled)
    again = PendingCancels(path)
    assert ("spark1", "a") not in again and ("spark1", "b") in again and ("spark2", "a") in again


def test_an_unreadable_file_is_named_in_the_log_and_costs_only_the_record(tmp_path, caplog):
    path = tmp_path / "pending-cancels.json"
    path.write_text("{not json")
    with caplog.at_level(logging.WARNING):
        pending = PendingCancels(path)
    assert str(path) in caplog.text and "forgotten" in caplog.text
    pending.add("spark1", "dl-1")  # and the file is whole again
    assert ("spark1", "dl-1") in PendingCancels(path)


def test_a_data_directory_that_cannot_be_written_keeps_the_record_in_memory(tmp_path, caplog):
    read_only = tmp_path / "ro"
    read_only.mkdir()
    os.chmod(read_only, 0o500)
    try:
        pending = PendingCancels(read_only / "pending-cancels.json")
        if os.access(read_only, os.W_OK):  # root ignores the mode: point at a path under a file instead
            pending = PendingCancels(tmp_path / "a-file" / "pending-cancels.json")
            (tmp_path / "a-file").write_text("")
        with caplog.at_level(logging.WARNING):
            pending.add("spark1", "dl-1")
        assert ("spark1", "dl-1") in pending
        assert "cannot write" in caplog.text and "a restart would forget" in caplog.text
    finally:
        os.chmod(read_only, 0o700)


def test_records_of_nodes_no_longer_configured_are_forgotten_with_a_warning(tmp_path, caplog):
    path = tmp_path / "pending-cancels.json"
    pending = PendingCancels(path)
    pending.add("spark1", "a")
    pending.add("old-spark", "b")
    with caplog.at_level(logging.WARNING):
        PendingCancels(path).keep_nodes({"spark1", "spark2"})
    assert "old-spark" in caplog.text
    again = PendingCancels(path)
    assert ("spark1", "a") in again and ("old-spark", "b") not in again


def test_a_data_path_that_cannot_be_read_is_logged_not_raised(tmp_path, caplog):
    (tmp_path / "a-file").write_text("")
    with caplog.at_level(logging.WARNING):
        pending = PendingCancels(tmp_path / "a-file" / "pending-cancels.json")  # a directory that is a file
    assert "cannot read" in caplog.text
    assert ("spark1", "x") not in pending
