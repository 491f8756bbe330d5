"""What the suite's W&B runs are (job_type) and the artifacts that link them in W&B's lineage graph: the data
set each training run used, the checkpoint each segment left and the next one continued from, the runs a
report summarises. The runner, the benchmark, the node check and the report name them from here.

Offline, W&B has no way to "use" an artifact by name (run.use_artifact raises in offline mode): a use is an
artifact record marked use_after_commit, which `wandb sync` turns into the version (made if no run logged
that content yet, else the existing one, as W&B versions by content digest) and its use by the run.
"""

from __future__ import annotations

# job_type of each kind of run, so the W&B UI can tell them apart (filter, group by job type).
TRAIN = "train"
BENCHMARK = "benchmark"  # a point of `python -m train.benchmark` (the runner, paced by the benchmark's turns)
NODE_CHECK = "node-check"  # train/nodecheck: wandb.init(job_type=lineage.NODE_CHECK, ...)
REPORT = "report"  # `python -m report --publish`
JOB_TYPES = (TRAIN, BENCHMARK, NODE_CHECK, REPORT)
# The suite's runs that train nothing (node check, report) also say so in their config, where a folder's reader
# sees it: the report lists them as what they are, not as runs of some other code.
JOB_TYPE_KEY = "job_type"
NOT_TRAINING = {NODE_CHECK: "python -m train.nodecheck", REPORT: "python -m report --publish"}

DATASET_TYPE = "dataset"
CIFAR10 = "cifar10"  # one artifact name for every copy of the data: its versions differ only by content
CHECKPOINT_TYPE = "checkpoint"


def checkpoint_artifact(run_id: str) -> str:
    """The checkpoint chain's artifact name: one per run, a version per segment."""
    return f"checkpoint-{run_id}"


def last_checkpoint(records) -> dict | None:
    """The last checkpoint version a run logged (not one it used), from its .wandb records as W&B's reader
    gives them (train/contract/wandb_offline.py): the artifact record, or None."""
    found = None
    for r in records:
        art = r.get("artifact") if r.get("type") == "artifact" else None
        if art and art.get("type") == CHECKPOINT_TYPE and not art.get("use_after_commit"):
            found = art
    return found


def use(run, artifact, mode: str) -> None:
    """Record `artifact` as an input of `run` (a wandb Run in `mode`): use_artifact online; offline the record
    `use_artifact` makes online for an artifact not logged yet (wandb 0.31 wandb_run.py), which `wandb sync`
    resolves (see above). Nothing in disabled mode."""
    if mode == "online":
        run.use_artifact(artifact)
    elif mode == "offline":
        run._log_artifact(artifact, is_user_created=True, use_after_commit=True)
