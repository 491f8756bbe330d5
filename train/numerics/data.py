"""CIFAR-10 from its official python layout, synthetic data, and the two input paths.

`DeviceLoader` (the default, after KellerJordan/cifar10-airbench's CifarLoader): the whole uint8 training
set sits on the training device, padded once; each batch is shuffled, randomly cropped, flipped and
normalised there with a handful of whole-batch tensor ops, so no per-sample Python runs per step.
`torch_loader` keeps the classic torchvision-transforms DataLoader with worker processes, for comparison.
"""

from __future__ import annotations

import io
import os
import pickle
from dataclasses import dataclass

import numpy as np
import torch

from train.contract.errors import UsageError

MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)
PAD = 4
FOLDER = "cifar-10-batches-py"
TRAIN_FILES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_FILE = "test_batch"
META_FILE = "batches.meta"
HOW_TO_GET = ("pass --download to fetch it with torchvision, or unpack "
              "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz into --data-dir")


@dataclass
class Split:
    images: torch.Tensor  # uint8, N x 3 x 32 x 32
    labels: torch.Tensor  # int64, N

    def __len__(self) -> int:
        return len(self.labels)


class _ArraysOnly(pickle.Unpickler):
    """The CIFAR batches are pickled dicts of numpy arrays; refuse anything else a file could smuggle in."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("_codecs", "encode"),  # how protocol-2 pickles written by Python 3 store bytes
    }

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"unexpected object {module}.{name}")


def _read_batch(path: str) -> dict:
    try:
        with open(path, "rb") as f:
            return _ArraysOnly(io.BytesIO(f.read()), encoding="bytes").load()
    except FileNotFoundError:
        raise UsageError(f"CIFAR-10 file missing: {path}; {HOW_TO_GET}") from None
    except (OSError, pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as e:
        raise UsageError(f"CIFAR-10 file {path} is not a CIFAR-10 python batch ({type(e).__name__}: {e}); "
                         f"delete it and {HOW_TO_GET}") from None


def _split_from(paths: list[str]) -> Split:
    images, labels = [], []
    for path in paths:
        batch = _read_batch(path)
        if not isinstance(batch, dict) or b"data" not in batch or not ({b"labels", b"fine_labels"} & batch.keys()):
            raise UsageError(f"CIFAR-10 file {path} lacks the 'data' and 'labels' entries; {HOW_TO_GET}")
        data = np.asarray(batch[b"data"])
        lab = np.asarray(batch.get(b"labels", batch.get(b"fine_labels")))
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(lab) != len(data):
            raise UsageError(f"CIFAR-10 file {path} holds data of shape {data.shape} ({data.dtype}) and "
                             f"{len(lab)} labels, expected N x 3072 uint8 with N labels; {HOW_TO_GET}")
        if len(lab) and (lab.ndim != 1 or not np.issubdtype(lab.dtype, np.integer)):  # floats, NaN, strings
            raise UsageError(f"CIFAR-10 file {path} has labels of type {lab.dtype} (shape {lab.shape}), expected "
                             f"whole numbers 0..9; {HOW_TO_GET}")
        if len(lab) and (lab.min() < 0 or lab.max() > 9):
            raise UsageError(f"CIFAR-10 file {path} has labels outside 0..9; {HOW_TO_GET}")
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(lab.astype(np.int64))
    return Split(torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels)))


def cifar10_files(data_dir: str) -> list[str]:
    """The files of the official layout a run reads: what its W&B data set artifact references."""
    return [os.path.join(data_dir, FOLDER, f) for f in (*TRAIN_FILES, TEST_FILE, META_FILE)]


def load_cifar10(data_dir: str, download: bool) -> tuple[Split, Split]:
    root = os.path.join(data_dir, FOLDER)
    if download:
        _download(data_dir)
    if not os.path.isdir(root):
        raise UsageError(f"CIFAR-10 not found: {root} does not exist; {HOW_TO_GET}")
    _read_batch(os.path.join(root, META_FILE))  # present and readable, as in the official layout
    train = _split_from([os.path.join(root, f) for f in TRAIN_FILES])
    test = _split_from([os.path.join(root, TEST_FILE)])
    return train, test


def _download(data_dir: str) -> None:
    from torchvision.datasets import CIFAR10

    try:
        CIFAR10(root=data_dir, train=True, download=True)
    except Exception as e:  # noqa: BLE001 - network and disk failures alike end in one line
        raise UsageError(f"downloading CIFAR-10 into {data_dir} failed: {e}") from None


def synthetic(seed: int, n_train: int = 50_000) -> Split:
    """Random images and labels of CIFAR-10's shape and label range: measures throughput, learns nothing."""
    g = torch.Generator().manual_seed(seed)
    return Split(torch.randint(0, 256, (n_train, 3, 32, 32), dtype=torch.uint8, generator=g),
                 torch.randint(0, 10, (n_train,), generator=g))


def _normaliser(device, dtype):
    scale = torch.tensor([1 / (255 * s) for s in STD], device=device).view(1, 3, 1, 1)
    shift = torch.tensor([-m / s for m, s in zip(MEAN, STD)], device=device).view(1, 3, 1, 1)

    def normalise(x_u8: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(shift, x_u8.float(), scale).to(dtype)

    return normalise


class DeviceLoader:
    """Batches of a dataset that lives on the training device.

    Each epoch's order is a permutation drawn from a generator seeded by (seed, epoch), so every rank draws
    the same one and takes its own disjoint shard. Each batch's crops and flips come from a generator seeded
    by (seed, epoch, step, rank): ranks augment differently, and a resumed run needs only (epoch, step) to
    continue with exactly the batches an unbroken run would have seen.
    """

    def __init__(self, split: Split, batch_size: int, device: torch.device, dtype: torch.dtype,
                 memory_format=torch.contiguous_format, train: bool = True, seed: int = 0,
                 rank: int = 0, world_size: int = 1):
        self.train, self.batch_size, self.device, self.seed = train, batch_size, device, seed
        self.rank, self.world_size = rank, world_size
        self.memory_format = memory_format
        self.labels = split.labels.to(device)
        images = split.images.to(device)
        # Zero padding, once, as torchvision's RandomCrop(32, padding=4) pads each sample.
        self.images = torch.nn.functional.pad(images, (PAD,) * 4) if train else images
        self.normalise = _normaliser(device, dtype)
        # Training: equal whole shards (DDP steps in lockstep). Evaluation: every image, shards may differ by one.
        self.per_rank = len(split) // world_size if train else len(range(rank, len(split), world_size))
        self.generator = torch.Generator(device=device)
        self.epoch, self.step = 0, 0  # position of the next batch
        if train and self.per_rank < batch_size:
            raise UsageError(f"--batch-size {batch_size} is larger than the {self.per_rank} training images "
                             f"each of the {world_size} process(es) gets; lower it")

    def __len__(self) -> int:
        if self.train:
            return self.per_rank // self.batch_size  # whole batches only: equal step work for timing
        return -(-self.per_rank // self.batch_size)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "step": self.step}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.step = state["epoch"], state["step"]

    def _seed(self, *parts: int) -> int:
        value = self.seed
        for part in parts:
            value = (value * 1_000_003 + part) % (2**63 - 1)
        return value

    def __iter__(self):
        if self.train:
            self.generator.manual_seed(self._seed(self.epoch))
            order = torch.randperm(len(self.labels), device=self.device, generator=self.generator)
            shard = order[:self.per_rank * self.world_size][self.rank::self.world_size]
        else:
            shard = torch.arange(self.rank, len(self.labels), self.world_size, device=self.device)
        for i in range(self.step if self.train else 0, len(self)):
            idx = shard[i * self.batch_size:(i + 1) * self.batch_size]
            if self.train:
                self.generator.manual_seed(self._seed(self.epoch, i, self.rank))
                x = self._augment(idx)
                self.step = i + 1
            else:
                x = self.images[idx]
            yield self.normalise(x).contiguous(memory_format=self.memory_format), self.labels[idx]
        if self.train:
            self.epoch, self.step = self.epoch + 1, 0

    def _augment(self, idx: torch.Tensor) -> torch.Tensor:
        """Random 32x32 crop of the padded images and a random horizontal flip, as one gather."""
        b = len(idx)
        dy, dx = torch.randint(0, 2 * PAD + 1, (2, b, 1), device=self.device, generator=self.generator)
        flip = torch.rand(b, 1, device=self.device, generator=self.generator) < 0.5
        ar = torch.arange(32, device=self.device)
        rows = dy + ar  # b x 32
        cols = dx + torch.where(flip, 31 - ar, ar)  # b x 32, reversed where flipped
        return self.images[idx[:, None, None, None], torch.arange(3, device=self.device)[None, :, None, None],
                           rows[:, None, :, None], cols[:, None, None, :]]


class TorchLoader:
    """The classic input path: torchvision transforms per sample in DataLoader workers, copied to the device."""

    def __init__(self, split: Split, batch_size: int, device: torch.device, dtype: torch.dtype,
                 memory_format=torch.contiguous_format, train: bool = True, seed: int = 0,
                 rank: int = 0, world_size: int = 1, num_workers: int = 2):
        from torch.utils.data import DataLoader, TensorDataset
        from torch.utils.data.distributed import DistributedSampler
        from torchvision.transforms import v2

        self.device, self.dtype, self.memory_format, self.train = device, dtype, memory_format, train
        steps = [v2.RandomCrop(32, padding=PAD), v2.RandomHorizontalFlip()] if train else []
        transform = v2.Compose([*steps, v2.ToDtype(torch.float32, scale=True), v2.Normalize(MEAN, STD)])
        dataset = _Transformed(TensorDataset(split.images, split.labels), transform)
        # Training: DistributedSampler's equal shuffled shards. Evaluation: every image once, in rank stripes.
        self.sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed,
                                          drop_last=True) if train else list(range(rank, len(dataset), world_size))
        if train and len(self.sampler) < batch_size:
            raise UsageError(f"--batch-size {batch_size} is larger than the {len(self.sampler)} training images "
                             f"each of the {world_size} process(es) gets; lower it")
        self.loader = DataLoader(dataset, batch_size=batch_size, sampler=self.sampler, num_workers=num_workers,
                                 pin_memory=device.type == "cuda", drop_last=train,
                                 persistent_workers=num_workers > 0)
        self.epoch, self.step = 0, 0  # position of the next batch

    def __len__(self) -> int:
        return len(self.loader)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "step": self.step}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.step = state["epoch"], state["step"]

    def __iter__(self):
        if self.train:
            self.sampler.set_epoch(self.epoch)
        skip = self.step if self.train else 0  # resumes at the same batch; augmentation draws are not replayed
        for i, (x, y) in enumerate(self.loader):
            if i < skip:
                continue
            if self.train:
                self.step = i + 1
            x = x.to(self.device, non_blocking=True).to(self.dtype).contiguous(memory_format=self.memory_format)
            yield x, y.to(self.device, non_blocking=True)
        if self.train:
            self.epoch, self.step = self.epoch + 1, 0


class _Transformed(torch.utils.data.Dataset):
    def __init__(self, base, transform):
        self.base, self.transform = base, transform

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        x, y = self.base[i]
        return self.transform(x), y
