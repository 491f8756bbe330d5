"""The W&B backlog: what a resumed run logs again after a SIGKILL lost the tail of W&B's own files."""

from train.runner.backlog import Backlog


def _window(step):
    return {"train/step": step, "train/loss": 1.0 / step}


def _epoch(step):
    return {"train/step": step, "epoch": 1, "test/acc": 0.5}


def test_reconcile_logs_again_only_what_the_earlier_files_lack_in_step_order():
    backlog = Backlog()
    for record in (_window(2), _window(4), _epoch(4), _window(6), _window(8)):
        assert backlog.add(record)
    # W&B's files ended in a block boundary after step 4's window: its epoch record and the later windows are lost.
    missing = backlog.reconcile([_window(2), _window(4), {"_runtime": 3.0}], step=8)
    assert missing == [_epoch(4), _window(6), _window(8)]
    # What the files hold is on disk for good; what is logged again is kept until the next reconcile.
    assert backlog.state_dict() == {"records": [_epoch(4), _window(6), _window(8)]}


def test_a_window_and_an_epoch_record_at_one_step_are_two_records():
    backlog = Backlog()
    backlog.add(_window(4))
    backlog.add(_epoch(4))
    assert backlog.reconcile([_epoch(4)], step=4) == [_window(4)]


def test_records_a_killed_segment_wrote_past_its_checkpoint_are_not_logged_twice():
    backlog = Backlog()
    backlog.add(_window(2))
    # The checkpoint is at step 2; the killed segment went on and W&B's files hold its windows 3 and 4.
    assert backlog.reconcile([_window(2), _window(3), _window(4)], step=2) == []
    assert backlog.add(_window(3)) is False and backlog.add(_window(4)) is False  # retrained: W&B has them
    assert backlog.add(_window(5)) is True
    assert backlog.add(_window(3)) is True  # held ahead once: a third logging of step 3 is not W&B's copy
    assert [r["train/step"] for r in backlog.state_dict()["records"]] == [5, 3]


def test_the_backlog_survives_a_checkpoint_and_keeps_copies_not_the_callers_dicts():
    backlog = Backlog()
    record = _window(2)
    backlog.add(record)
    record["train/loss"] = 99.0  # the loop reuses its dict
    restored = Backlog()
    restored.load_state_dict(backlog.state_dict())
    assert restored.reconcile([], step=2) == [_window(2)]
