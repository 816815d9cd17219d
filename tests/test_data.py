"""fwlab.data: shard headers, the training loader (epochs, resume, ranks, micro-batches), val windows."""
import io
import shutil
from collections import Counter

import numpy as np
import pytest
import torch

from fwlab.data import (TrainLoader, load_manifest, read_shard, train_tokens, val_batches,
                        write_shard)
from fwlab.errors import FwlabError

T = 64


def all_windows(data_dir, split="train", block=T):
    """Every window of block+1 tokens, stride block, per shard: the loader's window set, built
    independently from the raw shard files."""
    out = []
    for s in load_manifest(data_dir)[split]["shards"]:
        raw = np.fromfile(data_dir / s["file"], dtype="<u2", offset=1024)
        out += [tuple(raw[i:i + block + 1].tolist()) for i in range(0, len(raw) - block, block)]
    return out


def rows(x, y):
    assert x.dtype == y.dtype == torch.int64 and x.shape == y.shape
    assert torch.equal(x[:, 1:], y[:, :-1])
    return [tuple(r) + (int(last),) for r, last in zip(x.tolist(), y[:, -1].tolist())]


# ---------------------------------------------------------------------------- shards

def test_shard_roundtrip_both_formats(tmp_path):
    small = np.array([0, 1, 50256, 65535], dtype=np.uint16)
    sha = write_shard(tmp_path / "a.bin", small)
    assert len(sha) == 64 and np.array_equal(read_shard(tmp_path / "a.bin", 4), small)
    assert np.fromfile(tmp_path / "a.bin", "<i4", 3).tolist() == [20240520, 1, 4]
    wide = np.array([3, 70_000, 100_276], dtype=np.int64)  # a vocabulary above 65,536 ids
    write_shard(tmp_path / "b.bin", wide)
    assert np.fromfile(tmp_path / "b.bin", "<i4", 3).tolist() == [20240801, 7, 3]
    assert read_shard(tmp_path / "b.bin").dtype == np.uint32
    assert read_shard(tmp_path / "b.bin").tolist() == wide.tolist()
    assert (tmp_path / "b.bin").stat().st_size == 1024 + 3 * 4
    assert not list(tmp_path.glob(".*.tmp"))


def test_bad_shard_headers_are_named(tmp_path):
    write_shard(tmp_path / "s.bin", np.arange(100, dtype=np.uint16))
    raw = (tmp_path / "s.bin").read_bytes()
    (tmp_path / "short.bin").write_bytes(raw[:1000])
    (tmp_path / "cut.bin").write_bytes(raw[:-2])
    bad_magic = bytearray(raw)
    bad_magic[:4] = np.int32(12345).tobytes()
    (tmp_path / "magic.bin").write_bytes(bytes(bad_magic))
    bad_version = bytearray(raw)
    bad_version[4:8] = np.int32(7).tobytes()
    (tmp_path / "version.bin").write_bytes(bytes(bad_version))
    for name, pattern in [("short.bin", "1000 bytes is shorter than the 1024-byte header"), ("cut.bin", "header says 100 tokens"),
                          ("magic.bin", "bad magic 12345"), ("version.bin", "magic 20240520 needs version 1, header says 7"),
                          ("missing.bin", "cannot read")]:
        with pytest.raises(FwlabError, match=f"shard .*{name}: {pattern}"):
            read_shard(tmp_path / name)
    with pytest.raises(FwlabError, match="s.bin: 100 tokens but the manifest says 99"):
        read_shard(tmp_path / "s.bin", 99)


def test_loader_refuses_a_corrupt_train_shard_and_a_non_data_dir(tiny_data, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(tiny_data, copy)
    with open(copy / "train_000001.bin", "r+b") as f:
        f.truncate(5000)
    with pytest.raises(FwlabError, match="train_000001.bin"):
        TrainLoader(copy, T)
    with pytest.raises(FwlabError, match="no manifest.json.*fwlab prepare"):
        TrainLoader(tmp_path, T)


# ---------------------------------------------------------------------------- the train loader

def test_each_epoch_is_a_fresh_permutation_of_all_windows(tiny_data):
    loader = TrainLoader(tiny_data, T, seed=7)
    expected = Counter(all_windows(tiny_data))
    W = loader.windows_per_epoch
    assert W == sum(expected.values()) and loader.tokens_per_epoch == W * T
    assert train_tokens(tiny_data) == load_manifest(tiny_data)["train"]["tokens"]
    assert W == sum((s["tokens"] - 1) // T for s in load_manifest(tiny_data)["train"]["shards"])
    epochs = []
    for e in range(2):
        got = []
        while len(got) < W:  # 37 does not divide W: calls run across the epoch boundary
            got += rows(*loader.next_batch(min(37, W - len(got))))
        assert Counter(got) == expected
        assert loader.epoch == pytest.approx(e + 1.0)
        epochs.append(got)
    assert epochs[0] != epochs[1]
    # a call crossing the boundary continues into the next epoch's permutation
    a = TrainLoader(tiny_data, T, seed=7)
    a.next_batch(W - 3)
    across = rows(*a.next_batch(8))
    assert across == epochs[0][-3:] + epochs[1][:5] and a.epoch == (W + 5) / W
    # another seed, another order
    assert rows(*TrainLoader(tiny_data, T, seed=8).next_batch(20)) != epochs[0][:20]


def test_microbatches_and_ranks_give_the_same_global_batches(tiny_data):
    def single(sizes, steps=3):
        loader = TrainLoader(tiny_data, T, seed=1)
        return [sum((rows(*loader.next_batch(n)) for n in sizes), []) for _ in range(steps)]

    full = single([8])
    assert single([4, 4]) == full and single([2, 2, 2, 2]) == full  # same windows, same order
    for world, per_call, calls in [(2, 4, 1), (2, 2, 2), (4, 1, 2)]:
        loaders = [TrainLoader(tiny_data, T, seed=1, rank=r, world_size=world) for r in range(world)]
        for step in range(3):
            per_rank = [sum((rows(*ld.next_batch(per_call)) for _ in range(calls)), []) for ld in loaders]
            assert Counter(sum(per_rank, [])) == Counter(full[step])
            assert all(ld.epoch == loaders[0].epoch for ld in loaders)
    # ranks see disjoint windows over a whole epoch
    r0, r1 = (TrainLoader(tiny_data, T, seed=1, rank=r, world_size=2) for r in range(2))
    half = r0.windows_per_epoch // 2
    ids0, ids1 = rows(*r0.next_batch(half)), rows(*r1.next_batch(half))
    assert not set(ids0) & set(ids1) and r0.epoch == r1.epoch == 2 * half / r0.windows_per_epoch


def test_resume_returns_exactly_the_same_batches(tiny_data):
    a = TrainLoader(tiny_data, T, seed=3)
    for _ in range(9):
        a.next_batch(32)  # runs into the second epoch
    state = a.state_dict()
    buf = io.BytesIO()
    torch.save({"loader": state}, buf)
    buf.seek(0)
    restored = torch.load(buf, weights_only=True)["loader"]
    assert all(isinstance(v, (int, str)) for v in restored.values())
    b = TrainLoader(tiny_data, T, seed=3)
    b.load_state_dict(restored)
    assert b.epoch == a.epoch
    for n in (32, 5, 32):
        xa, ya = a.next_batch(n)
        xb, yb = b.next_batch(n)
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    with pytest.raises(FwlabError, match="block_size=64"):
        TrainLoader(tiny_data, 32, seed=3).load_state_dict(restored)


# ---------------------------------------------------------------------------- validation windows

def test_val_batches_are_fixed_ordered_and_capped(tiny_data):
    m = load_manifest(tiny_data)
    batches = val_batches(tiny_data, T, eval_tokens=2_000, batch_size=8)
    got = sum((rows(x, y) for x, y in batches), [])
    assert got == all_windows(tiny_data, "val")[:2_000 // T]  # the first windows, in order
    assert [len(x) for x, _ in batches] == [8, 8, 8, 7]
    again = val_batches(tiny_data, T, eval_tokens=2_000, batch_size=8)
    assert all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(batches, again))
    capped = sum((rows(x, y) for x, y in val_batches(tiny_data, T, eval_tokens=10**9, batch_size=16)), [])
    assert capped == all_windows(tiny_data, "val") and len(capped) == (m["val"]["tokens"] - 1) // T
    with pytest.raises(FwlabError, match="val split has .* tokens, less than one window"):
        val_batches(tiny_data, m["val"]["tokens"], eval_tokens=10**6, batch_size=1)
