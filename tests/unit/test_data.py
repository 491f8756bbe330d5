import os
import pickle

import pytest
import torch
from conftest import write_cifar

from train.contract.errors import UsageError
from train.numerics import data


def test_reads_the_official_layout(cifar_dir):
    train, test = data.load_cifar10(cifar_dir, download=False)
    assert train.images.shape == (5 * 16, 3, 32, 32) and train.images.dtype == torch.uint8
    assert test.images.shape == (32, 3, 32, 32)
    assert train.labels.dtype == torch.int64 and 0 <= int(train.labels.min()) and int(train.labels.max()) <= 9


def test_missing_dataset_names_the_path_and_how_to_get_it(tmp_path):
    with pytest.raises(UsageError) as e:
        data.load_cifar10(str(tmp_path / "nowhere"), download=False)
    assert str(tmp_path / "nowhere" / "cifar-10-batches-py") in str(e.value) and "--download" in str(e.value)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "shape", "labels", "missing"])
def test_malformed_files_are_refused_naming_the_file(cifar_dir, damage):
    path = os.path.join(cifar_dir, "cifar-10-batches-py", "data_batch_3")
    if damage == "truncate":
        blob = open(path, "rb").read()
        open(path, "wb").write(blob[: len(blob) // 2])
    elif damage == "garbage":
        open(path, "wb").write(b"not a pickle at all")
    elif damage == "shape":
        batch = pickle.load(open(path, "rb"), encoding="bytes")
        batch[b"data"] = batch[b"data"][:, :100]
        pickle.dump(batch, open(path, "wb"))
    elif damage == "labels":
        batch = pickle.load(open(path, "rb"), encoding="bytes")
        batch[b"labels"][0] = 11
        pickle.dump(batch, open(path, "wb"))
    else:
        os.unlink(path)
    with pytest.raises(UsageError) as e:
        data.load_cifar10(cifar_dir, download=False)
    assert path in str(e.value)


def test_a_pickle_carrying_code_is_refused_not_run(cifar_dir, tmp_path):
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = os.path.join(cifar_dir, "cifar-10-batches-py", "test_batch")
    pickle.dump({b"data": Evil(), b"labels": []}, open(path, "wb"))
    with pytest.raises(UsageError):
        data.load_cifar10(cifar_dir, download=False)
    assert not marker.exists()


def _position_coded(n: int) -> data.Split:
    """Image i has pixel (c, y, x) = distinct values, so any crop/flip can be located in the original."""
    img = torch.zeros(n, 3, 32, 32, dtype=torch.uint8)
    img[:, 0] = torch.arange(32, dtype=torch.uint8)[None, :, None] + 1  # row code 1..32
    img[:, 1] = torch.arange(32, dtype=torch.uint8)[None, None, :] + 1  # column code 1..32
    img[:, 2] = torch.arange(n, dtype=torch.uint8)[:, None, None]  # which image
    return data.Split(img, torch.arange(n) % 10)


def test_device_loader_crops_flips_and_normalises_whole_batches():
    split = _position_coded(64)
    loader = data.DeviceLoader(split, batch_size=64, device=torch.device("cpu"), dtype=torch.float32, seed=1)
    loader.normalise = lambda x: x  # look at raw uint8 crops
    (x, y), = list(loader)
    assert x.shape == (64, 3, 32, 32)
    flips = 0
    for img, label in zip(x, y):
        index = int(img[2].max())
        assert label == split.labels[index]
        rows, cols = img[0].int(), img[1].int()
        # A crop of the zero-padded image: inside the image the codes run consecutively, padding is zero.
        inside_rows = rows[:, 16][rows[:, 16] > 0]
        assert torch.equal(inside_rows, torch.arange(int(inside_rows[0]), int(inside_rows[0]) + len(inside_rows)))
        inside = cols[16][cols[16] > 0]
        step = int(inside[1] - inside[0])
        assert step in (1, -1) and torch.equal(torch.diff(inside), torch.full_like(torch.diff(inside), step))
        flips += step == -1
        assert 32 - 4 <= len(inside_rows) <= 32 and 32 - 4 <= len(inside) <= 32
    assert 10 < flips < 54  # about half are mirrored


def test_device_loader_normalises_to_the_policy_dtype():
    split = data.Split(torch.full((8, 3, 32, 32), 255, dtype=torch.uint8), torch.zeros(8, dtype=torch.long))
    loader = data.DeviceLoader(split, batch_size=8, device=torch.device("cpu"), dtype=torch.bfloat16, train=False)
    (x, _), = list(loader)
    assert x.dtype == torch.bfloat16
    expected = torch.tensor([(1 - m) / s for m, s in zip(data.MEAN, data.STD)])
    assert torch.allclose(x[0, :, 5, 5].float(), expected, atol=2e-2)


def test_ranks_get_disjoint_shards_covering_the_epoch():
    split = _position_coded(48)
    seen = []
    for rank in range(3):
        loader = data.DeviceLoader(split, batch_size=4, device=torch.device("cpu"), dtype=torch.float32,
                                   seed=5, rank=rank, world_size=3)
        seen.append(torch.cat(list(_indices(loader))))
    everything = torch.cat(seen)
    assert len(everything) == 48 and len(set(everything.tolist())) == 48


def _indices(loader):
    loader.normalise = lambda x: x
    for x, _ in loader:
        yield x[:, 2].amax(dim=(1, 2)).long()


def test_resuming_mid_epoch_continues_with_the_same_batches():
    split = _position_coded(40)
    args = dict(batch_size=4, device=torch.device("cpu"), dtype=torch.float32, seed=3)
    whole = data.DeviceLoader(split, **args)
    whole.normalise = lambda x: x
    reference = [x for x, _ in whole] + [x for x, _ in whole]  # two epochs
    first = data.DeviceLoader(split, **args)
    first.normalise = lambda x: x
    it = iter(first)
    head = [next(it) for _ in range(3)][-1][0]
    state = first.state_dict()
    second = data.DeviceLoader(split, **args)
    second.normalise = lambda x: x
    second.load_state_dict(state)
    rest = [x for x, _ in second] + [x for x, _ in second]
    assert torch.equal(head, reference[2])
    assert len(rest) == len(reference) - 3
    assert all(torch.equal(a, b) for a, b in zip(rest, reference[3:]))


def test_batch_larger_than_the_training_set_is_a_usage_error():
    with pytest.raises(UsageError, match="--batch-size 64"):
        data.DeviceLoader(_position_coded(32), batch_size=64, device=torch.device("cpu"), dtype=torch.float32)


def test_torch_loader_yields_the_same_shapes_and_dtype(tmp_path):
    train, _ = data.load_cifar10(write_cifar(str(tmp_path)), download=False)
    loader = data.TorchLoader(train, batch_size=8, device=torch.device("cpu"), dtype=torch.bfloat16, num_workers=0)
    batches = list(loader)
    assert len(batches) == len(loader) == 10
    x, y = batches[0]
    assert x.shape == (8, 3, 32, 32) and x.dtype == torch.bfloat16 and y.dtype == torch.int64
