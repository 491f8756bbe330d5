"""Each segment's code in the training state: a checkpoint from before the list was kept still loads, and the
resume line appears only when the code differs (or has local changes)."""

from train.runner.state import Progress
from train.runner.wandb_config import add_segment


def _code(commit, dirty=False):
    return {"git_commit": commit, "git_dirty": dirty, "started_at": "2026-12-01T10:00:00+00:00"}


def test_a_checkpoint_without_the_list_loads_and_the_resumed_segment_starts_it():
    progress = Progress()
    progress.load_state_dict({"step": 5, "segments": 1, "curve": []})  # an older runner's Progress
    assert progress.provenance == []
    assert add_segment(progress, _code("c" * 40)) is None  # nothing earlier to compare with
    assert progress.provenance == [{"segment": 2, **_code("c" * 40)}]


def test_the_line_appears_only_when_the_code_differs_or_has_local_changes():
    progress = Progress()
    assert add_segment(progress, _code("a" * 40)) is None
    progress.segments = 1
    saved = progress.state_dict()
    again = Progress()
    again.load_state_dict(saved)
    assert add_segment(again, _code("a" * 40)) is None  # the same clean commit: nothing to say
    again = Progress()
    again.load_state_dict(saved)
    line = add_segment(again, _code("b" * 40))
    assert line.startswith("resumed with commit bbbbbbbbbbbb; segment 1 ran aaaaaaaaaaaa")
    again = Progress()
    again.load_state_dict(saved)
    assert add_segment(again, _code("a" * 40, dirty=True)).startswith("resumed with commit aaaaaaaaaaaa (dirty)")
