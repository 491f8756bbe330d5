"""The W&B run: mode choice, step axis and summaries, checkpoint artifact. The only module of train/ importing wandb."""

from __future__ import annotations

import glob
import netrc
import os
import shutil
import socket
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
from urllib.parse import urlparse

from train.contract import lineage, wandb_offline
from train.contract.errors import first_line
from train.contract.metrics import STEP_PREFIXES

# Step metrics' summaries are the whole run's, written by the runner at the end from its training state
# (W&B's cover one process only).
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


def base_url() -> str:
    return os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").rstrip("/")


def has_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(base_url()).hostname or "api.wandb.ai"
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


# The quick check's share of --wandb-init-timeout: enough for DNS, TCP and TLS on a slow link; an answer of any
# kind counts, so a working server passes it in well under a second.
PROBE_MAX_S = 10.0


def unreachable(url: str, timeout: float) -> str | None:
    """Why the W&B server at `url` cannot be reached within `timeout` seconds, or None if it answers.

    A compute node without network fails W&B's online start only after its init timeout, and that failed
    start then breaks the offline retry in the same process (wandb/wandb#9865). One HEAD request decides
    first: DNS, TCP, TLS and an HTTP answer, through the proxy the environment names (as wandb-core's own
    requests go). It runs in a thread because a DNS lookup has no timeout of its own.
    """
    outcome: list[str | None] = []

    def probe() -> None:
        try:
            urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout).close()
            outcome.append(None)
        except urllib.error.HTTPError:
            outcome.append(None)  # any HTTP status: the server is there
        except urllib.error.URLError as e:
            if isinstance(e.reason, ssl.SSLError):
                outcome.append(None)  # a TLS handshake happened: the network works; trust is wandb-core's call
            else:
                outcome.append(_reason(e.reason))
        except (OSError, ValueError) as e:  # timeouts, resets, a malformed WANDB_BASE_URL
            outcome.append(_reason(e))

    thread = threading.Thread(target=probe, name="wandb-reachable", daemon=True)
    thread.start()
    thread.join(timeout)
    return outcome[0] if outcome else f"no answer within {timeout:.0f} s"


def _reason(e: object) -> str:
    if isinstance(e, socket.gaierror):
        return f"DNS lookup failed ({e.strerror or e})"
    if isinstance(e, (TimeoutError, socket.timeout)):
        return "no answer (timed out)"
    return first_line(getattr(e, "strerror", None) or e)


class Tracker:
    """One W&B run per training run, its files under the run's folder."""

    def __init__(self, *, mode: str, why: str, run_dir: str, run_id: str, name: str, project: str,
                 entity: str | None, group: str | None, tags: list[str], config: dict, say,
                 stats_interval: float | None = None, world_size: int = 1, init_timeout: float = 30.0,
                 job_type: str = lineage.TRAIN):
        self.world_size = world_size
        # A parent that uses W&B itself (a driver script, a notebook, a test process) passes its service's
        # address down in $WANDB_SERVICE. A run of its own starts its own service: in the parent's, a failed
        # online start's run id stays taken ("run ID ... is in use"), so the run could not go offline under it,
        # nor resume after a SIGKILL.
        os.environ.pop("WANDB_SERVICE", None)
        import wandb

        self._wandb = wandb
        self.mode = mode
        self.run_dir = run_dir

        def settings(init_timeout: float):
            return wandb.Settings(silent=True, init_timeout=init_timeout,
                                  **({"x_stats_sampling_interval": stats_interval} if stats_interval else {}))

        kwargs = dict(project=project, entity=entity, group=group, name=name, tags=tags, config=config,
                      id=run_id, resume="allow", dir=run_dir, job_type=job_type)
        if mode == "online":
            started = time.monotonic()
            url = base_url()
            problem = unreachable(url, min(PROBE_MAX_S, init_timeout))
            if problem:
                why = f"{why}, but {url} is unreachable: {problem}"
            else:
                left = max(1.0, init_timeout - (time.monotonic() - started))
                earlier = self._online_folders()
                try:
                    self.run = wandb.init(mode="online", settings=settings(left), **kwargs)
                except Exception as e:  # noqa: BLE001 - server down or slow, bad key: keep the run, go offline
                    first = first_line(e)
                    why = f"{why}, but the online start failed after {time.monotonic() - started:.0f} s: {first}"
                    self._abandon_online_start(earlier)
                    problem = first
            if problem:
                self.mode = "offline"
                # W&B's process-wide settings still say online: its usage analytics would try the server again
                # when the process exits (10 s more on a port that never answers).
                wandb.setup(wandb.Settings(mode="offline"))
                self.run = wandb.init(mode="offline", settings=settings(init_timeout), **kwargs)
        else:
            self.run = wandb.init(mode=mode, settings=settings(init_timeout), **kwargs)
        self._define_metrics()
        where = {
            "online": lambda: self.run.url,
            "offline": lambda: f"{self.segment} (upload later: wandb sync <that folder>)",
            "disabled": lambda: "nothing is recorded",
        }[self.mode]()
        say(f"W&B: {self.mode} ({why}): {where}")

    @property
    def segment(self) -> str:
        """This process's W&B folder (wandb/offline-run-<time>-<id>)."""
        return self.run.dir.removesuffix("/files").removesuffix("/")

    def _online_folders(self) -> set[str]:
        return set(glob.glob(os.path.join(self.run_dir, "wandb", "run-*")))

    def _abandon_online_start(self, earlier: set[str]) -> None:
        """Make way for the offline start after a failed online one.

        W&B keeps the failed run registered in its service process, so a second wandb.init in this process
        fails with "run ID ... is in use" (wandb/wandb#9865; wandb.finish() does not help). Tearing the
        library down ends that service; the next init starts a fresh one. The failed attempt's folder holds
        no record of training: removed (earlier segments' folders stay), so the run folder holds the run.
        """
        try:
            self._wandb.teardown()
        except (Exception, SystemExit):  # noqa: BLE001 - teardown exits when the service failed; go on regardless
            pass
        for folder in self._online_folders() - earlier:
            if not os.path.islink(folder):
                shutil.rmtree(folder, ignore_errors=True)

    def _define_metrics(self) -> None:
        run = self.run
        run.define_metric("train/step")
        run.define_metric("test/acc", step_metric="train/step", summary="max,last")
        for prefix in STEP_PREFIXES:
            run.define_metric(f"{prefix}/*", step_metric="train/step", summary=STEP_SUMMARY)
        run.define_metric("epoch", step_metric="train/step", summary="last")
        run.define_metric("cum/*", step_metric="train/step", summary="last")  # where each evaluation stood
        run.define_metric("prof/*", step_metric="train/step", summary="last")  # the profiled window's breakdown
        if self.world_size > 1:
            for rank in range(self.world_size):
                run.define_metric(f"rank{rank}/*", step_metric="train/step", summary=STEP_SUMMARY)

    def log(self, metrics: dict) -> None:
        self.run.log(metrics)

    def held_history(self) -> list[dict]:
        """The history records the run's earlier offline segments hold on disk, read with W&B's own reader.
        A segment the reader cannot read counts as holding nothing, as the report counts it."""
        held = []
        for folder in sorted(glob.glob(os.path.join(self.run_dir, "wandb", "offline-run-*"))):
            if os.path.realpath(folder) == os.path.realpath(self.segment) or wandb_offline.run_file(folder) is None:
                continue
            try:
                out = wandb_offline.inspect(folder)
            except (OSError, subprocess.SubprocessError):
                continue
            if out.returncode == 0:
                held += wandb_offline.history(out.stdout)
        return held

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

    def save_file(self, path: str) -> None:
        """A file of the run folder (the profiler's trace) among the W&B run's files, uploaded now when online
        and with `wandb sync` when offline; disabled runs keep it in the run folder only."""
        if self.mode != "disabled":
            self.run.save(path, base_path=self.run_dir, policy="now")

    def use_dataset(self, files: list[str], metadata: dict) -> None:
        """The data set as this run's input: a reference artifact (paths, sizes and MD5 checksums of the files,
        never their bytes). Hashing costs ~0.4 s for CIFAR-10's 180 MB (page-cached), once per segment."""
        self._use(self._reference(lineage.CIFAR10, lineage.DATASET_TYPE, files, metadata))

    def use_checkpoint(self, path: str) -> None:
        """On a resume, before training: the checkpoint this segment continues from as its input. It is the
        version the previous segment logged at its end (same content, same digest, so `wandb sync` links
        that version), or, after a SIGKILL, a periodic checkpoint no segment logged: then a version of its own."""
        self._use(self._reference(lineage.checkpoint_artifact(self.run.id), lineage.CHECKPOINT_TYPE, [path], {}))

    def log_segment_checkpoint(self, path: str, size: int, step: int, segment: int) -> None:
        """The checkpoint this segment leaves (stopped or ended) as a version of the run's checkpoint chain. A
        reference (path and checksum): nothing copied or uploaded; the next segment overwrites the file, so an
        earlier version records what was there, and only the last one's file still exists."""
        art = self._reference(lineage.checkpoint_artifact(self.run.id), lineage.CHECKPOINT_TYPE, [path],
                              {"bytes": size, "step": step, "segment": segment})
        if self.mode != "disabled":
            self.run.log_artifact(art, aliases=[f"segment-{segment}", f"step-{step}"])

    def _reference(self, name: str, kind: str, files: list[str], metadata: dict):
        art = self._wandb.Artifact(name, type=kind, metadata=metadata)
        if self.mode == "disabled":
            return art  # nothing is recorded: no hashing
        for path in files:  # one reference a file: W&B prints a line for each folder it walks
            art.add_reference("file://" + os.path.abspath(path), name=os.path.basename(path), checksum=True)
        return art

    def _use(self, art) -> None:
        lineage.use(self.run, art, self.mode)

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

    def save_file(self, path: str) -> None:
        pass

    def use_dataset(self, files: list[str], metadata: dict) -> None:
        pass

    def use_checkpoint(self, path: str) -> None:
        pass

    def log_segment_checkpoint(self, path: str, size: int, step: int, segment: int) -> None:
        pass

    def preempting(self) -> None:
        pass

    def finish(self, exit_code: int) -> None:
        pass
