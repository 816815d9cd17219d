"""Prepared token data: the llm.c shard format, the manifest, the training loader, the val set.

A prepared DIR (written by `fwlab.prepare`) holds manifest.json plus train_NNNNNN.bin and
val_NNNNNN.bin shards in llm.c's format: a 256 x int32 little-endian header
(magic, version, number of tokens, zeros) followed by the tokens, uint16 for vocabularies up to
65,536 ids (magic 20240520, version 1) and uint32 above that (magic 20240801, version 7).

Training windows. Every shard of n tokens is cut into floor((n - 1) / T) windows of T + 1 tokens
with stride T (x = window[:-1], y = window[1:]); windows never cross a shard boundary, which costs
at most T tokens per shard (nothing at 100M-token shards) and keeps indexing a plain division.
The windows of all train shards form one list of W windows. Epoch e visits all W in the order
of a permutation seeded by (seed, e); the global order is epoch 0's permutation, then epoch 1's,
and so on. A loader position is the number of windows of that global order consumed by all
ranks together, so `next_batch(n)` on rank r of R takes global windows
[pos + r*n, pos + (r+1)*n) and advances pos by n*R. Hence a global batch of G windows is the same
multiset however it is split into micro-batches and ranks, and a resumed loader continues exactly.
"""
from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

import numpy as np

from fwlab.errors import FwlabError
from fwlab.utils import atomic_open, atomic_write_json, read_json

HEADER_INTS = 256
HEADER_BYTES = HEADER_INTS * 4
# magic -> (version, token dtype)
FORMATS = {20240520: (1, np.dtype("<u2")), 20240801: (7, np.dtype("<u4"))}
MANIFEST = "manifest.json"


# ---------------------------------------------------------------------------- shard files

def write_shard(path: str | os.PathLike, tokens: np.ndarray) -> str:
    """Write `tokens` as an llm.c shard (temp name + rename); returns the file's sha256 hex.

    uint16 tokens give the version-1 format, anything needing ids >= 65,536 the uint32 one.
    """
    path = Path(path)
    tokens = np.asarray(tokens)
    if tokens.dtype != np.uint16:
        wide = tokens.dtype == np.uint32 or (tokens.size and int(tokens.max()) >= 1 << 16)
        tokens = tokens.astype(np.uint32 if wide else np.uint16)
    magic = 20240520 if tokens.dtype == np.uint16 else 20240801
    version, dtype = FORMATS[magic]
    if tokens.size >= 2**31:
        raise FwlabError(f"{path}: {tokens.size} tokens do not fit an llm.c shard header; use smaller shards")
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[:3] = (magic, version, tokens.size)
    body = np.ascontiguousarray(tokens, dtype=dtype)
    digest = hashlib.sha256(header.tobytes())
    digest.update(memoryview(body).cast("B"))
    with atomic_open(path) as f:
        f.write(header.tobytes())
        body.tofile(f)
    return digest.hexdigest()


def read_shard(path: str | os.PathLike, expected_tokens: int | None = None) -> np.ndarray:
    """Validate a shard's header against its size and memory-map its tokens (read-only)."""
    path = Path(path)
    try:
        size = path.stat().st_size
        header = np.fromfile(path, dtype="<i4", count=HEADER_INTS)
    except OSError as e:
        raise FwlabError(f"shard {path}: cannot read ({e.strerror}); re-run fwlab prepare") from None
    if header.size < HEADER_INTS:
        raise FwlabError(f"shard {path}: {size} bytes is shorter than the {HEADER_BYTES}-byte header")
    magic, version, ntok = (int(v) for v in header[:3])
    if magic not in FORMATS:
        raise FwlabError(f"shard {path}: bad magic {magic} (expected 20240520 or 20240801); "
                         "not an llm.c token shard")
    want_version, dtype = FORMATS[magic]
    if version != want_version:
        raise FwlabError(f"shard {path}: magic {magic} needs version {want_version}, header says {version}")
    if ntok < 0 or size != HEADER_BYTES + ntok * dtype.itemsize:
        raise FwlabError(f"shard {path}: header says {ntok} tokens ({HEADER_BYTES + ntok * dtype.itemsize} "
                         f"bytes) but the file has {size} bytes; it is truncated or corrupt, re-run fwlab prepare")
    if expected_tokens is not None and ntok != expected_tokens:
        raise FwlabError(f"shard {path}: {ntok} tokens but the manifest says {expected_tokens}")
    if ntok == 0:
        return np.zeros(0, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r", offset=HEADER_BYTES, shape=(ntok,))


def load_manifest(data_dir: str | os.PathLike) -> dict:
    """The data folder's manifest.json, its shard lists checked: every entry a file name inside
    the folder and a token count (FwlabError naming the entry otherwise)."""
    path = Path(data_dir) / MANIFEST
    if not path.is_file():
        d = Path(data_dir).absolute()
        if d.is_dir() and any(d.iterdir()):  # something else: preparing here is not the fix
            raise FwlabError(f"{d} is not a prepared data directory (no {MANIFEST}, but other "
                             f"files); pass the directory `fwlab prepare --out` wrote")
        if d.exists() and not d.is_dir():
            raise FwlabError(f"{d} is a file, not a prepared data directory")
        what = "an empty directory" if d.is_dir() else "no such directory"
        raise FwlabError(f"{d}: no prepared data there ({what}); check the path (relative paths are from the repository root) or "
                         f"create it with: fwlab prepare --source SRC --out {d}")
    manifest = read_json(path)
    if not isinstance(manifest, dict):
        raise FwlabError(f"{path}: not a manifest (a JSON object); re-run fwlab prepare with --overwrite")
    for split in ("train", "val"):
        if not isinstance(manifest.get(split), dict) or not isinstance(manifest[split].get("shards"), list):
            raise FwlabError(f"{path}: no '{split}' shard list; re-run fwlab prepare with --overwrite")
        for i, e in enumerate(manifest[split]["shards"]):
            where = f"{path}: {split} shard {i}"
            if not isinstance(e, dict) or not isinstance(e.get("file"), str) or not e["file"]:
                raise FwlabError(f"{where}: {e!r} has no file name ('file' must be text)")
            if isinstance(e.get("tokens"), bool) or not isinstance(e.get("tokens"), int) or e["tokens"] < 0:
                raise FwlabError(f"{where} ({e['file']}): 'tokens' must be a whole number >= 0, "
                                 f"got {e.get('tokens')!r}")
            if "sha256" in e and not isinstance(e["sha256"], str):
                raise FwlabError(f"{where} ({e['file']}): 'sha256' must be text, got {e['sha256']!r}")
    return manifest


def shard_path(data_dir: str | os.PathLike, name: str) -> Path:
    """The file a manifest entry names, resolved inside the data folder: a name that leads
    outside it (an absolute path, '..', a symlink out) or to anything but a regular file (a
    FIFO would block the reader forever) raises FwlabError before the file is opened."""
    root = Path(data_dir).resolve()
    path = (root / name).resolve()
    if root not in path.parents:
        raise FwlabError(f"{Path(data_dir) / MANIFEST}: shard {name!r} lies outside the data folder "
                         f"{data_dir}; a manifest names files inside its own folder only")
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise FwlabError(f"shard {path}: listed in {MANIFEST} but missing; re-run fwlab prepare") from None
    except OSError as e:
        raise FwlabError(f"shard {path}: cannot read ({e.strerror}); re-run fwlab prepare") from None
    if not stat.S_ISREG(mode):
        what = "a FIFO" if stat.S_ISFIFO(mode) else "a directory" if stat.S_ISDIR(mode) else "not a regular file"
        raise FwlabError(f"shard {path}: is {what}, not a shard file; re-run fwlab prepare")
    return path


# every shard verified in this process: {path: its record as in VERIFIED}
_VERIFIED: dict[str, dict] = {}
VERIFIED = ".fwlab_verified.json"  # the same record in the data folder, across processes


def verify_data(data_dir: str | os.PathLike, manifest: dict | None = None, force: bool = False,
                progress: bool = False) -> None:
    """Check every shard of a data folder once: its header, its sha256 against the manifest's,
    and that every token id is inside the manifest's vocabulary. A shard whose size and mtime
    are those of its last check is not read again (DATA/.fwlab_verified.json, where the folder
    is writable, and a record in this process); `force` reads every shard anyway."""
    manifest = load_manifest(data_dir) if manifest is None else manifest
    n_vocab = manifest.get("n_vocab")
    n_vocab = n_vocab if isinstance(n_vocab, int) and not isinstance(n_vocab, bool) else None
    todo = []
    for split in ("train", "val"):
        for e in manifest[split]["shards"]:
            path = shard_path(data_dir, e["file"])
            st = path.stat()
            key = (st.st_size, st.st_mtime_ns)
            rec = {"size": key[0], "mtime_ns": key[1], "sha256": e.get("sha256"), "n_vocab": n_vocab}
            if force or _VERIFIED.get(str(path)) != rec:
                todo.append((path, e, key, rec))
    if not todo:
        return
    cache_path = Path(data_dir) / VERIFIED
    try:  # the record of earlier processes; anything unreadable there counts as unverified
        cache = json.loads(cache_path.read_text(encoding="utf-8"))
        cache = cache if isinstance(cache, dict) else {}
    except (OSError, ValueError):
        cache = {}
    if not force:
        for t in [t for t in todo if cache.get(t[1]["file"]) == t[3]]:
            _VERIFIED[str(t[0])] = t[3]
            todo.remove(t)
    if not todo:
        return
    from tqdm.auto import tqdm
    bar = tqdm(total=sum(k[0] for _, _, k, _ in todo), unit="B", unit_scale=True,
               disable=not progress, desc=f"verify {Path(data_dir).name}")
    for path, e, key, rec in todo:
        tokens = read_shard(path, e["tokens"])
        if e.get("sha256"):
            h = hashlib.sha256()
            with open(path, "rb") as f:
                while block := f.read(1 << 22):
                    h.update(block)
                    bar.update(len(block))
            if h.hexdigest() != e["sha256"]:
                raise FwlabError(f"shard {path}: its sha256 {h.hexdigest()[:16]}... differs from the "
                                 f"manifest's {e['sha256'][:16]}...; the file changed after fwlab "
                                 f"prepare wrote it: re-run fwlab prepare --overwrite")
        if n_vocab is not None and len(tokens):
            top = int(tokens.max())
            if top >= n_vocab:
                at = int(np.argmax(np.asarray(tokens) >= n_vocab))
                raise FwlabError(f"shard {path}: token id {top} (first bad one at position {at}) "
                                 f"is outside the vocabulary (n_vocab {n_vocab}); the shard is "
                                 f"corrupt or of another tokenizer: re-run fwlab prepare")
        _VERIFIED[str(path)] = rec
        cache[e["file"]] = rec
    bar.close()
    try:  # a read-only data folder is fine: this process remembers, the next one checks again
        atomic_write_json(cache_path, cache)
    except (OSError, FwlabError):
        pass


def open_split(data_dir: str | os.PathLike, split: str,
               manifest: dict | None = None) -> list[np.ndarray]:
    """Memory-maps of one split's shards, in manifest order, each header checked and the data
    folder verified (verify_data, once per size and mtime). `manifest`: the directory's manifest
    already loaded (load_manifest), else it is read here."""
    manifest = load_manifest(data_dir) if manifest is None else manifest
    verify_data(data_dir, manifest)
    return [read_shard(shard_path(data_dir, s["file"]), s["tokens"]) for s in manifest[split]["shards"]]


def train_tokens(data_dir: str | os.PathLike) -> int:
    return int(load_manifest(data_dir)["train"]["tokens"])


# ---------------------------------------------------------------------------- windows

def _first_windows(shards: list[np.ndarray], block_size: int) -> np.ndarray:
    """Windows numbered across shards in manifest order: entry s is the id of shard s's first
    window, the last entry the total. A shard of n tokens holds floor((n - 1) / T) windows."""
    counts = [max(0, (len(s) - 1) // block_size) for s in shards]
    return np.concatenate([[0], np.cumsum(counts, dtype=np.int64)])


def _windows(shards, first: np.ndarray, ids: np.ndarray, block_size: int) -> np.ndarray:
    """(n, T+1) int64 array of the windows with global ids `ids` (first from _first_windows)."""
    shard_ids = np.searchsorted(first, ids, side="right") - 1  # skips shards without windows
    starts = (ids - first[shard_ids]) * block_size
    out = np.empty((len(ids), block_size + 1), dtype=np.int64)
    for k, (s, o) in enumerate(zip(shard_ids, starts)):
        out[k] = shards[s][o:o + block_size + 1]
    return out


def _to_xy(windows: np.ndarray):
    # torch is imported here, not at module top, so tokenising workers of fwlab.prepare (which
    # import this module for write_shard) start without paying for it
    import torch

    t = torch.from_numpy(windows)
    return t[:, :-1].contiguous(), t[:, 1:].contiguous()


class TrainLoader:
    """Windows of block_size + 1 training tokens, a fresh permutation per epoch, DDP-aware."""

    def __init__(self, data_dir, block_size: int, seed: int = 1337, rank: int = 0, world_size: int = 1,
                 manifest: dict | None = None):
        if block_size < 1:
            raise FwlabError(f"block_size must be >= 1, got {block_size}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise FwlabError(f"rank {rank} is not in 0..{world_size - 1} (world_size {world_size})")
        self.data_dir, self.block_size, self.seed = str(data_dir), int(block_size), int(seed)
        self.rank, self.world_size = int(rank), int(world_size)
        self.shards = open_split(data_dir, "train", manifest)
        self._first = _first_windows(self.shards, self.block_size)
        self.windows_per_epoch = int(self._first[-1])
        if self.windows_per_epoch == 0:
            n = sum(len(s) for s in self.shards)
            raise FwlabError(f"{data_dir}: {n} train tokens hold no window of block_size+1 = "
                             f"{self.block_size + 1} tokens; use more data or a smaller block")
        self.tokens_per_epoch = self.windows_per_epoch * self.block_size
        self.pos = 0  # global windows consumed by all ranks together
        self._perm_epoch, self._perm = -1, None

    @property
    def epoch(self) -> float:
        """Exact fractional epochs consumed (all ranks together)."""
        return self.pos / self.windows_per_epoch

    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch != self._perm_epoch:
            rng = np.random.default_rng([self.seed, epoch])
            self._perm, self._perm_epoch = rng.permutation(self.windows_per_epoch), epoch
        return self._perm

    def _window_ids(self, start: int, n: int) -> np.ndarray:
        """Window ids at global positions start .. start+n-1 (may run across epochs)."""
        ids = np.empty(n, dtype=np.int64)
        done = 0
        while done < n:
            epoch, off = divmod(start + done, self.windows_per_epoch)
            take = min(n - done, self.windows_per_epoch - off)
            ids[done:done + take] = self._permutation(epoch)[off:off + take]
            done += take
        return ids

    def next_batch(self, n: int):
        """The next n windows for this rank as int64 CPU tensors x, y of shape (n, block_size)."""
        if n < 1:
            raise FwlabError(f"batch size must be >= 1, got {n}")
        ids = self._window_ids(self.pos + self.rank * n, n)
        self.pos += n * self.world_size
        return _to_xy(_windows(self.shards, self._first, ids, self.block_size))

    def state_dict(self) -> dict:
        # plain ints/str only: it is stored in checkpoints loaded with torch.load(weights_only=True)
        return {"pos": int(self.pos), "seed": self.seed, "block_size": self.block_size,
                "windows_per_epoch": self.windows_per_epoch, "data_dir": self.data_dir}

    def load_state_dict(self, d: dict) -> None:
        for key in ("seed", "block_size", "windows_per_epoch"):
            if int(d[key]) != getattr(self, key):
                raise FwlabError(f"loader state has {key}={d[key]} but this loader has {getattr(self, key)} "
                                 f"(data {self.data_dir}); resume with the same data and settings")
        self.pos = int(d["pos"])


def val_batches(data_dir, block_size: int, eval_tokens: int, batch_size: int,
                manifest: dict | None = None) -> list:
    """A fixed validation set: the first eval_tokens // block_size windows of the val split in
    order (capped by what the split holds), as (x, y) int64 batches of batch_size (the last one
    may be smaller). The same for every run on the same data, so val losses are comparable.
    `manifest`: as for open_split."""
    if block_size < 1 or batch_size < 1:
        raise FwlabError(f"block_size and batch_size must be >= 1, got {block_size}, {batch_size}")
    shards = open_split(data_dir, "val", manifest)
    first = _first_windows(shards, block_size)
    if first[-1] == 0:
        n = sum(len(s) for s in shards)
        raise FwlabError(f"{data_dir}: the val split has {n} tokens, less than one window of "
                         f"block_size+1 = {block_size + 1}; prepare with a larger --val-tokens")
    want = max(1, min(int(eval_tokens) // block_size, int(first[-1])))
    windows = _windows(shards, first, np.arange(want), block_size)
    return [_to_xy(windows[i:i + batch_size]) for i in range(0, want, batch_size)]
