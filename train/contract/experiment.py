"""What names an experiment: the precisions in their display order, the default accuracy targets, and the
identity settings added after runs had been recorded without them."""

PRECISIONS = ("fp32", "tf32", "amp_fp16", "amp_bf16", "fp16", "bf16", "fp8_tensorwise", "fp8_rowwise")
# Test accuracies whose time (and images, energy) a run records when it first reaches them: MLPerf's and
# DAWNBench's 94% for CIFAR-10, and lower milestones that every precision should pass. For real CIFAR-10 only.
DEFAULT_TARGETS = (0.80, 0.90, 0.93, 0.94)
# Settings that joined the experiment identity after runs had been recorded (and checkpointed) without them, each
# with the value those runs ran with: a run from before --compile is an eager run, one experiment with today's
# `compile: none` runs, and its checkpoint resumes as `--compile none`; a run from before --model trained a ResNet
# without warm-up. (`stop_at_acc` needs no entry: the runner
# records it only when set, so its absence means the same in old runs.)
EXPERIMENT_DEFAULTS = {"compile": "none", "arch": "resnet", "lr_warmup_epochs": 0.0}


def with_defaults(recorded: dict) -> dict:
    """A recorded experiment identity as a run would record it today (settings added since at their default)."""
    return {**EXPERIMENT_DEFAULTS, **recorded}
