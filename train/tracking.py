"""The W&B run: mode choice, step axis and summaries, checkpoint artifact. The only module of train/ importing wandb."""

from __future__ import annotations

import netrc
import os
from urllib.parse import urlparse

# Step metrics share the train/step axis (the suite's metric contract, README). Their summaries are the
# whole run's, written by the runner at the end from its training state (W&B's cover one process only).
STEP_PREFIXES = ("train", "mem", "amp", "epoch", "test", "nvml", "comm", "dist", "precision")
STEP_SUMMARY = "mean,min,max,last"


def choose_mode(flag: str | None) -> tuple[str, str]:
    """(mode, why): never a login prompt, never online without credentials."""
    if flag:
        return flag, "--wandb-mode"
    env = os.environ.get("WANDB_MODE", "").strip().lower()
    if env in ("online", "offline", "disabled"):
        return env, "$WANDB_MODE"
    if env == "dryrun":
        return "offline", "$WANDB_MODE=dryrun"
    if has_credentials():
        return "online", "W&B credentials found"
    return "offline", "no W&B credentials (set WANDB_API_KEY or run `wandb login` to go online)"


def has_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


class Tracker:
    """One W&B run per training run, its files under the run's folder."""

    def __init__(self, *, mode: str, why: str, run_dir: str, run_id: str, name: str, project: str,
                 entity: str | None, group: str | None, tags: list[str], config: dict, say,
                 stats_interval: float | None = None, world_size: int = 1):
        self.world_size = world_size
        # W&B's staging copies and caches default to the home folder, which fills small HPC home quotas.
        for var in ("WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_ARTIFACT_DIR"):
            os.environ.setdefault(var, os.path.join(os.path.dirname(run_dir), ".wandb-cache"))
        import wandb

        self._wandb = wandb
        self.mode = mode
        kwargs = dict(project=project, entity=entity, group=group, name=name, tags=tags, config=config,
                      id=run_id, resume="allow", dir=run_dir,
                      settings=wandb.Settings(silent=True, init_timeout=60,
                                              **({"x_stats_sampling_interval": stats_interval}
                                                 if stats_interval else {})))
        try:
            self.run = wandb.init(mode=mode, **kwargs)
        except Exception as e:  # noqa: BLE001 - no network, server down, bad key: keep the run, go offline
            if mode != "online":
                raise
            say(f"W&B: online start failed ({str(e).splitlines()[0] if str(e) else type(e).__name__}); "
                "logging offline instead")
            self.mode, why = "offline", "online start failed"
            self.run = wandb.init(mode="offline", **kwargs)
        self._define_metrics()
        where = {
            "online": lambda: self.run.url,
            "offline": lambda: f"{self.run.dir.removesuffix('/files')} (upload later: wandb sync <that folder>)",
            "disabled": lambda: "nothing is recorded",
        }[self.mode]()
        say(f"W&B: {self.mode} ({why}): {where}")

    def _define_metrics(self) -> None:
        run = self.run
        run.define_metric("train/step")
        run.define_metric("test/acc", step_metric="train/step", summary="max,last")
        for prefix in STEP_PREFIXES:
            run.define_metric(f"{prefix}/*", step_metric="train/step", summary=STEP_SUMMARY)
        run.define_metric("epoch", step_metric="train/step", summary="last")
        run.define_metric("cum/*", step_metric="train/step", summary="last")  # where each evaluation stood
        if self.world_size > 1:
            for rank in range(self.world_size):
                run.define_metric(f"rank{rank}/*", step_metric="train/step", summary=STEP_SUMMARY)

    def log(self, metrics: dict) -> None:
        self.run.log(metrics)

    def summarise(self, values: dict) -> None:
        for key, value in values.items():
            if value is not None:
                self.run.summary[key] = value

    def log_checkpoint(self, path: str, size: int, aliases: list[str]) -> None:
        """A model artifact that points at the checkpoint file without a staging copy: the file must stay
        unchanged until the run is synced, which holds for the final checkpoint."""
        art = self._wandb.Artifact(f"model-{self.run.id}", type="model", metadata={"bytes": size})
        art.add_file(path, policy="immutable")
        self.run.log_artifact(art, aliases=aliases)

    def preempting(self) -> None:
        """Tell W&B this run stops to be continued (a sweep then hands it out again)."""
        self.run.mark_preempting()

    def finish(self, exit_code: int) -> None:
        self.run.finish(exit_code=exit_code)


class NullTracker:
    """What ranks other than 0 log to: nothing. Their figures reach rank 0 through gathers at log time."""

    mode = "disabled"

    def log(self, metrics: dict) -> None:
        pass

    def summarise(self, values: dict) -> None:
        pass

    def log_checkpoint(self, path: str, size: int, aliases: list[str]) -> None:
        pass

    def preempting(self) -> None:
        pass

    def finish(self, exit_code: int) -> None:
        pass
