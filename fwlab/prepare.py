"""`fwlab prepare`: FineWeb(-Edu) from the hub, or local files, into GPT-2 token shards.

One streaming pass, memory bounded by one shard buffer plus the val set:
  main process   reads documents in source order (hub stream, .jsonl[.gz] lines, .json,
                 .parquet rows, one .txt file = one document) and packs them into ~0.5 MB chunks
  worker pool    tiktoken gpt2 `encode_ordinary`, an end-of-text token (50256) before every
                 document, a 64-bit blake2b hash of the text; results come back in order
  main process   files each document under val or train, fills train shards of shard_tokens,
                 checkpoints after every shard, writes val shards and manifest.json at the end.

The split. val is the set of documents with the *smallest text hashes*, just enough of them to
reach val_tokens (all documents if there are fewer tokens). That set depends only on which
documents the source holds, not on their order, and identical texts share a hash, so a copy of a
val document can never land in train. It is computed in one pass: val holds the lowest-hash
documents seen so far; when it holds more than it needs, its highest-hash document moves to
train, and no later document with a hash at least that high is ever taken into val (`cutoff`).
val is written at the end, sorted by hash, so its shards are also independent of source order.

Resume. After each train shard the state (documents consumed, the val set, the tokens already
past the last shard, the finished shards) goes to DIR/.prepare_state.npz by temp name + rename.
A re-run of the same command restores it, skips that many source documents and continues; as
everything is deterministic the shards come out byte-identical to an uninterrupted run.
manifest.json is written last: its presence means DIR is complete.

`--max-tokens` caps the tokens taken from the source (train + val, end-of-text tokens included);
the document that crosses the cap is cut so the total is exact.

Bad input (a missing, empty or corrupt file, a record without `text`, ...) raises FwlabError
naming the file and line, and removes whatever the run had written: such a DIR cannot be
finished as asked. An interrupt or kill keeps the checkpoint for the re-run.
"""
from __future__ import annotations

import glob as globlib
import gzip
import hashlib
import heapq
import io
import itertools
import json
import multiprocessing as mp
import os
import sys
import time
import zlib
from collections import deque
from contextlib import closing
from pathlib import Path

import numpy as np
import tiktoken
from tqdm.auto import tqdm

from fwlab.data import MANIFEST, load_manifest, write_shard
from fwlab.errors import FwlabError, WriteError, os_problem
from fwlab.utils import (atomic_write_bytes, atomic_write_json, folder_kind, parse_count,
                         resolve_path)

DEFAULT_SOURCE = "hf:HuggingFaceFW/fineweb-edu"
DEFAULT_HF_CONFIG = "sample-10BT"
TOKENIZER = "gpt2"
EOT = 50256
STATE = ".prepare_state.npz"
FORMAT = 1  # bump whenever the same input would give different shards
CHUNK_BYTES = 1 << 19  # text per worker task: large enough that pickling costs little
SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".json.gz", ".parquet", ".txt")
DELAY_ENV = "FWLAB_PREPARE_SHARD_DELAY"  # test hook: seconds to sleep after each shard write


# ---------------------------------------------------------------------------- sources

def _format(path: str) -> str:
    name = path.lower()
    for suffix in SUFFIXES:  # no suffix ends with another, so the order does not matter
        if name.endswith(suffix):
            return suffix.split(".")[1]
    raise FwlabError(f"{path}: unsupported file type; use {', '.join(SUFFIXES)} or hf:ORG/NAME")


def _skip_reason(p: Path) -> str | None:
    """Why a directory or glob entry is not read (None: it is read)."""
    if p.is_dir():
        return "a folder: folders inside a source folder are not read; give DIR/**/*.jsonl.gz (a glob) to include them"
    if not p.is_file():
        return "not a regular file"
    if not p.name.lower().endswith(SUFFIXES):
        return f"unsupported type: only {', '.join(SUFFIXES)} files are read"
    return None


def _expand(sources: list[str], skipped: list | None = None) -> list[tuple[str, str]]:
    """[("hf", name) | (format, path)] in reading order; globs and directories are sorted.
    The entries of a directory or glob that are not read go to `skipped` as [path, why]."""
    if not sources:
        raise FwlabError("no source given; pass hf:ORG/NAME or local files")
    skipped = [] if skipped is None else skipped
    out = []
    for s in sources:
        if s.startswith("hf:"):
            if not s[3:]:
                raise FwlabError(f"source {s!r}: give a dataset name, e.g. {DEFAULT_SOURCE}")
            out.append(("hf", s[3:]))
            continue
        if any(c in s for c in "*?["):
            matches = sorted(globlib.glob(s, recursive=True))
            paths = [p for p in matches if os.path.isfile(p)]
            # a glob names its files: one of another type is an error (below), a folder is skipped
            skipped += [[p, _skip_reason(Path(p))] for p in matches if not os.path.isfile(p)]
            if not paths:
                raise FwlabError(f"source {s!r}: no files match this pattern")
        elif os.path.isdir(s):
            entries = sorted(Path(s).iterdir())
            reasons = {str(p): _skip_reason(p) for p in entries}
            paths = [p for p, why in reasons.items() if why is None]
            skipped += [[p, why] for p, why in reasons.items() if why is not None]
            if not paths:
                raise FwlabError(f"source {s!r}: the directory holds no {', '.join(SUFFIXES)} files"
                                 + (f" (skipped: {_skipped_text(skipped)})" if skipped else ""))
        elif os.path.isfile(s):
            paths = [s]
        elif os.path.exists(s):
            raise FwlabError(f"source {s!r}: not a regular file (a FIFO, socket or device); give a "
                             f"file of {', '.join(SUFFIXES)}")
        else:
            raise FwlabError(f"source {s!r}: no such file (give local paths/globs of "
                             f"{', '.join(SUFFIXES)} files, or hf:ORG/NAME)")
        for p in paths:
            fmt = _format(p)
            if os.path.getsize(p) == 0:
                raise FwlabError(f"{p}: the file is empty")
            out.append((fmt, p))
    return out


def _skipped_text(skipped: list) -> str:
    return "; ".join(f"{os.path.basename(p) or p} ({why})" for p, why in skipped[:10]) + (
        f"; and {len(skipped) - 10} more" if len(skipped) > 10 else "")


def _fingerprint(specs) -> list:
    """What identifies the sources' contents, cheaply: per local file its path, size, mtime and a
    hash of its first and last 64 KiB; a hub dataset by its name. A resume or an 'already
    complete' answer needs the same fingerprint."""
    out = []
    for fmt, where in specs:
        if fmt == "hf":
            out.append([f"hf:{where}"])
            continue
        st = os.stat(where)
        h = hashlib.blake2b(digest_size=16)
        with open(where, "rb") as f:
            h.update(f.read(1 << 16))
            if st.st_size > 1 << 16:
                f.seek(max(1 << 16, st.st_size - (1 << 16)))
                h.update(f.read(1 << 16))
        out.append([where, st.st_size, st.st_mtime_ns, h.hexdigest()])
    return out


def _source_changed(out: Path, old: list, new: list, when: str) -> FwlabError:
    o, n = {x[0]: x for x in old}, {x[0]: x for x in new}
    parts = [f"added {', '.join(k for k in n if k not in o)}" if any(k not in o for k in n) else "",
             f"removed {', '.join(k for k in o if k not in n)}" if any(k not in n for k in o) else "",
             f"changed {', '.join(k for k in n if k in o and o[k] != n[k])}"
             if any(k in o and o[k] != n[k] for k in n) else ""]
    what = "; ".join(p for p in parts if p) or "the order of the files changed"
    return FwlabError(f"{out}: the source changed since it was {when} ({what}); its shards would mix "
                      "old and new documents: pass --overwrite to prepare it again from scratch, "
                      "or choose another --out")


def _text_field(record, where: str) -> str:
    if not isinstance(record, dict) or "text" not in record:
        raise FwlabError(f"{where}: the record has no 'text' field")
    text = record["text"]
    if not isinstance(text, str):
        raise FwlabError(f"{where}: 'text' is {type(text).__name__}, not a string")
    return text


def _line_text(line: bytes, path: str, lineno: int) -> str:
    try:
        record = json.loads(line)
    except ValueError as e:  # JSONDecodeError and UnicodeDecodeError
        raise FwlabError(f"{path}:{lineno}: not valid JSON ({e}); fix or remove this line") from None
    return _text_field(record, f"{path}:{lineno}")


def _why(e: Exception) -> str:
    if isinstance(e, OSError) and e.strerror:  # permission denied and the like
        return e.strerror
    return f"{e}; the file is corrupt or truncated"  # bad gzip data, early end of stream


def _open_bytes(path: str):
    return gzip.open(path, "rb") if path.lower().endswith(".gz") else open(path, "rb")


# Every reader yields (payload, path, lineno) per document. A payload of bytes is a JSON line
# that a worker parses (so parsing runs in parallel too); a str payload is the text itself.

def _read_jsonl(path: str):
    lineno, n = 0, 0
    try:
        with _open_bytes(path) as f:
            for lineno, line in enumerate(f, 1):
                if line.strip():
                    n += 1
                    yield line, path, lineno
    except (OSError, EOFError, zlib.error) as e:
        raise FwlabError(f"{path}: cannot read past line {lineno} ({_why(e)})") from None
    if n == 0:
        raise FwlabError(f"{path}: no documents in the file (only blank lines)")


def _read_json(path: str):
    try:
        with _open_bytes(path) as f:
            head = f.read(4096).lstrip()
    except (OSError, EOFError, zlib.error) as e:
        raise FwlabError(f"{path}: cannot read ({_why(e)})") from None
    if not head.startswith(b"["):  # JSON lines under a .json name
        yield from _read_jsonl(path)
        return
    try:
        with _open_bytes(path) as f:
            records = json.load(f)
    except (OSError, EOFError, zlib.error, ValueError) as e:
        raise FwlabError(f"{path}: not a valid JSON array of records ({e})") from None
    if not records:
        raise FwlabError(f"{path}: no documents in the file (empty array)")
    for i, record in enumerate(records):
        yield _text_field(record, f"{path}: record {i}"), path, i


def _read_parquet(path: str):
    import pyarrow.parquet as pq

    row = 0
    try:
        pf = pq.ParquetFile(path)
        if "text" not in pf.schema_arrow.names:
            raise FwlabError(f"{path}: no 'text' column (columns: {', '.join(pf.schema_arrow.names)})")
        for batch in pf.iter_batches(columns=["text"], batch_size=1024):
            for text in batch.column(0).to_pylist():
                if not isinstance(text, str):
                    raise FwlabError(f"{path}: row {row} has no text (null)")
                yield text, path, row
                row += 1
    except FwlabError:
        raise
    except Exception as e:  # pyarrow reports corrupt files with several exception types
        raise FwlabError(f"{path}: cannot read parquet near row {row} ({e}); the file is corrupt") from None
    if row == 0:
        raise FwlabError(f"{path}: no documents in the file (no rows)")


def _read_txt(path: str):
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise FwlabError(f"{path}: not UTF-8 text (bad byte at offset {e.start})") from None
    except OSError as e:
        raise FwlabError(f"{path}: cannot read ({e.strerror})") from None
    yield text, path, 1


READERS = {"jsonl": _read_jsonl, "json": _read_json, "parquet": _read_parquet, "txt": _read_txt}


def open_hf(name: str, config: str | None = None, data_files=None, split: str = "train"):
    """A streaming `datasets` IterableDataset; fails fast (FwlabError) when it cannot be opened."""
    import datasets

    try:
        ds = datasets.load_dataset(name, config, data_files=data_files, split=split, streaming=True)
    except Exception as e:
        raise FwlabError(
            f"cannot open hub dataset {name!r} (config {config!r}): {type(e).__name__}: {e}. "
            "Without internet (or with HF_HUB_OFFLINE=1) use local files instead, e.g. "
            "--source 'path/to/*.jsonl.gz' (.jsonl[.gz], .json, .parquet with a 'text' field, "
            "or .txt files of one document each)") from None
    if ds.column_names is not None:
        if "text" not in ds.column_names:
            raise FwlabError(f"hub dataset {name!r}: no 'text' column (columns: {', '.join(ds.column_names)})")
        ds = ds.select_columns(["text"])  # skip decoding the other columns
    return ds


def _read_hf(ds, name: str):
    for i, row in enumerate(ds):
        yield _text_field(row, f"hf:{name} row {i}"), None, i


def _open(specs, hf_config, data_files=None) -> list:
    """Record generators, one per source; hub datasets are opened now so bad names fail fast."""
    gens = []
    for fmt, where in specs:
        if fmt == "hf":
            gens.append(_read_hf(open_hf(where, hf_config, data_files), where))
        else:
            gens.append(READERS[fmt](where))
    return gens


def _as_list(source) -> list[str]:
    return [str(source)] if isinstance(source, (str, os.PathLike)) else [str(s) for s in source]


def default_source(source=None, hf_config: str | None = None) -> tuple[str | list[str], str | None]:
    """(source, hf_config) as the commands read them: no source means the default dataset, read
    as its DEFAULT_HF_CONFIG sample unless a config is given (its own default is the whole set)."""
    source = source or DEFAULT_SOURCE
    if hf_config is None and DEFAULT_SOURCE in _as_list(source):
        hf_config = DEFAULT_HF_CONFIG
    return source, hf_config


def iter_documents(source, hf_config: str | None = None, data_files=None):
    """The document texts of one or more sources, in the order prepare reads them."""
    for payload, path, lineno in itertools.chain.from_iterable(_open(_expand(_as_list(source)), hf_config, data_files)):
        yield payload if isinstance(payload, str) else _line_text(payload, path, lineno)


# ---------------------------------------------------------------------------- tokenising

_ENC = None


def _init_worker():
    global _ENC
    _ENC = tiktoken.get_encoding(TOKENIZER)


def _text_hash(text: str) -> int:
    # surrogatepass: JSON may carry lone surrogates, which plain utf-8 refuses to encode
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")


def _encode_ordinary(text: str) -> np.ndarray:
    """tiktoken's encode_ordinary as a uint16 array. encode_to_numpy with no special tokens
    allowed or disallowed gives the same ids (the tests compare every document) without building
    a Python list of ints, which cost ~10% of the whole pipeline."""
    try:
        ids = _ENC.encode_to_numpy(text, allowed_special=set(), disallowed_special=())
    except UnicodeEncodeError:  # lone surrogates: encode_ordinary knows how to repair them
        ids = _ENC.encode_ordinary(text)
    return np.asarray(ids, dtype=np.uint16)  # gpt2 ids < 50257 fit in 16 bits


_EOT_ARRAY = np.array([EOT], dtype=np.uint16)


def _encode_chunk(items):
    """Worker task: (hashes, lengths, tokens) for a chunk; each document is EOT + its tokens."""
    hashes, lengths, parts = [], [], []
    for payload, path, lineno in items:
        text = payload if isinstance(payload, str) else _line_text(payload, path, lineno)
        tokens = _encode_ordinary(text)
        hashes.append(_text_hash(text))
        lengths.append(len(tokens) + 1)
        parts += (_EOT_ARRAY, tokens)
    return hashes, lengths, np.concatenate(parts)


def _chunks(records):
    chunk, size = [], 0
    for record in records:
        chunk.append(record)
        size += len(record[0])
        if size >= CHUNK_BYTES:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


def _unpack(result):
    hashes, lengths, flat = result
    start = 0
    for h, n in zip(hashes, lengths):
        yield h, flat[start:start + n]
        start += n


def _tokenize(records, workers: int):
    """(hash, EOT + tokens) per document, in source order, tokenised on `workers` processes."""
    if workers == 1:
        _init_worker()
        for chunk in _chunks(records):
            yield from _unpack(_encode_chunk(chunk))
        return
    # fork, not spawn/forkserver: those re-import the caller's __main__ in every worker, which
    # breaks scripts without a __main__ guard and `python - <<EOF` (workers die and are respawned
    # forever). The workers only run tiktoken, json and numpy, none of which the parent's threads
    # (tqdm's monitor, the hub stream) hold locks of.
    # An ordered imap with back-pressure: at most 3 chunks per worker in flight, so memory stays
    # bounded however large the source (Pool.imap would read the whole source ahead).
    pool = mp.get_context("fork").Pool(workers, initializer=_init_worker)
    try:
        pending = deque()
        for chunk in _chunks(records):
            pending.append(pool.apply_async(_encode_chunk, (chunk,)))
            if len(pending) >= 3 * workers:
                yield from _unpack(pending.popleft().get())
        while pending:
            yield from _unpack(pending.popleft().get())
    finally:
        pool.terminate()
        pool.join()


# ---------------------------------------------------------------------------- split and shards

class _ValSet:
    """The lowest-hash documents seen so far, just enough to reach `budget` tokens."""

    def __init__(self, budget: int):
        self.budget, self.tokens, self.cutoff = budget, 0, 1 << 64
        self.groups: dict[int, list] = {}  # hash -> [tokens, [(arrival, doc tokens), ...]]
        self.heap: list[int] = []  # -hash per group: heap[0] is the largest hash in val

    def add(self, h: int, arrival: int, doc: np.ndarray) -> list[np.ndarray]:
        """File one document; returns the documents that go to train now, in order."""
        if h >= self.cutoff:
            return [doc]
        self.put(h, arrival, doc.copy())  # copy: a view would pin the worker's whole chunk
        out = []
        # the largest-hash group leaves while the rest already reach the budget
        while self.heap and self.tokens - self.groups[-self.heap[0]][0] >= self.budget:
            top = -heapq.heappop(self.heap)
            size, docs = self.groups.pop(top)
            self.tokens -= size
            self.cutoff = top
            out.extend(d for _, d in docs)
        return out

    def put(self, h: int, arrival: int, doc: np.ndarray) -> None:
        if h not in self.groups:
            self.groups[h] = [0, []]
            heapq.heappush(self.heap, -h)
        self.groups[h][0] += len(doc)
        self.groups[h][1].append((arrival, doc))
        self.tokens += len(doc)

    def docs(self) -> list[tuple[int, int, np.ndarray]]:
        """(hash, arrival, tokens) of every val document, sorted: the order val is written in."""
        return sorted((h, a, d) for h, (_, docs) in self.groups.items() for a, d in docs)


class _TrainShards:
    """Fills a buffer of shard_tokens and writes train_NNNNNN.bin whenever it is full."""

    def __init__(self, out: Path, shard_tokens: int, shards: list, carry: np.ndarray):
        self.out, self.shards = out, shards
        self.buf = np.empty(shard_tokens, dtype=np.uint16)
        self.fill = len(carry)
        self.buf[:self.fill] = carry

    def add(self, doc: np.ndarray) -> bool:
        """Append one document's tokens; True when a shard was written."""
        wrote = False
        while len(doc):
            k = min(len(doc), len(self.buf) - self.fill)
            self.buf[self.fill:self.fill + k] = doc[:k]
            self.fill += k
            doc = doc[k:]
            if self.fill == len(self.buf):
                self.flush()
                wrote = True
        return wrote

    def flush(self) -> None:
        name = f"train_{len(self.shards):06d}.bin"
        sha = write_shard(self.out / name, self.buf[:self.fill])
        self.shards.append({"file": name, "tokens": int(self.fill), "sha256": sha})
        self.fill = 0


def _save_state(out: Path, meta: dict, val: _ValSet, train: _TrainShards) -> None:
    docs = val.docs()
    buf = io.BytesIO()
    np.savez(buf, meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
             val_hash=np.array([h for h, _, _ in docs], dtype=np.uint64),
             val_arrival=np.array([a for _, a, _ in docs], dtype=np.int64),
             val_len=np.array([len(d) for _, _, d in docs], dtype=np.int64),
             val_tokens=np.concatenate([d for _, _, d in docs] or [np.zeros(0, np.uint16)]),
             carry=train.buf[:train.fill])
    atomic_write_bytes(out / STATE, buf.getvalue())


def _load_state(path: Path) -> dict:
    try:
        with np.load(path, allow_pickle=False) as z:
            state = {k: z[k] for k in z.files}
        state["meta"] = json.loads(state["meta"].tobytes())
        return state
    except Exception as e:
        raise FwlabError(f"{path}: unreadable checkpoint ({e}); re-run with --overwrite to start over") from None


# ---------------------------------------------------------------------------- the output directory

def _outputs(out: Path) -> list[Path]:
    """Every file prepare writes in DIR, finished or temporary."""
    names = [MANIFEST, STATE, "train_*.bin", "val_*.bin", ".train_*.tmp", ".val_*.tmp",
             f".{MANIFEST}.*.tmp", f".{STATE}.*.tmp"]
    return sorted({p for n in names for p in out.glob(n) if p.is_file()})


def _remove_outputs(out: Path, temp_only: bool = False) -> None:
    for p in _outputs(out):
        if not temp_only or p.name.endswith(".tmp"):
            p.unlink(missing_ok=True)


def _differs(out: Path, theirs: dict | None, ours: dict) -> FwlabError:
    theirs = theirs if isinstance(theirs, dict) else {}  # a hand-edited "config": 5 differs too
    diff = [f"{k}: {theirs.get(k)!r} there, {ours[k]!r} now" for k in ours if theirs.get(k) != ours[k]]
    return FwlabError(f"{out} was prepared with other settings ({'; '.join(diff)}); "
                      "choose another --out, or pass --overwrite to replace it")


def _inspect(out: Path, config: dict, overwrite: bool, fingerprint: list | None = None):
    """("complete", manifest) | ("resume", state) | ("fresh", None); refuses a foreign DIR and
    one prepared (or begun) from sources whose fingerprint differs."""
    if out.exists() and not out.is_dir():
        raise FwlabError(f"--out {out} exists and is not a directory")
    kind = folder_kind(out)
    if kind and not kind.startswith("a data folder"):  # --overwrite replaces only a data folder
        raise FwlabError(f"--out {out}: holds {kind}, not a data folder; nothing was changed, "
                         "choose another --out")
    if overwrite:
        return "fresh", None
    if (out / MANIFEST).is_file():
        manifest = load_manifest(out)  # its shape checked: a hand-edited one is named, no traceback
        if manifest.get("config") != config:
            raise _differs(out, manifest.get("config"), config)
        old = manifest.get("source_fingerprint")
        if fingerprint is not None and old is not None and old != fingerprint:
            raise _source_changed(out, old, fingerprint, "prepared")
        for split in ("train", "val"):
            for shard in manifest[split]["shards"]:
                if not (out / shard["file"]).is_file():
                    raise FwlabError(f"{out}: manifest.json lists {shard['file']} but the file is missing; "
                                     "pass --overwrite to rebuild")
        return "complete", manifest
    if (out / STATE).is_file():
        state = _load_state(out / STATE)
        if state["meta"]["config"] != config:
            raise _differs(out, state["meta"]["config"], config)
        old = state["meta"].get("fingerprint")
        if fingerprint is not None and old is not None and old != fingerprint:
            raise _source_changed(out, old, fingerprint, "begun")
        for shard in state["meta"]["train_shards"]:
            if not (out / shard["file"]).is_file():
                raise FwlabError(f"{out}: checkpoint lists {shard['file']} but the file is missing; "
                                 "pass --overwrite to start over")
        return "resume", state
    if any(out.glob("train_*.bin")) or any(out.glob("val_*.bin")):
        raise FwlabError(f"{out} holds token shards without a manifest.json or checkpoint; "
                         "choose another --out, or pass --overwrite to replace them")
    return "fresh", None


def describe(manifest: dict) -> str:
    """A few lines summing up a manifest (for notebooks and the CLI)."""
    lines = [f"source: {' '.join(manifest['source'])}" + (f" ({manifest['hf_config']})" if manifest["hf_config"] else ""),
             f"tokenizer: {manifest['tokenizer']} (n_vocab {manifest['n_vocab']}, eot {manifest['eot_id']}, "
             f"{manifest['dtype']})"]
    for split in ("train", "val"):
        s = manifest[split]
        lines.append(f"{split}: {s['tokens']:,} tokens, {s['docs']:,} documents, {len(s['shards'])} shard(s)")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- prepare

def prepare(source: str | list[str], out: str, hf_config: str | None = None, max_tokens: int | None = None,
            val_tokens: int = 10_000_000, shard_tokens: int = 100_000_000, workers: int | None = None,
            overwrite: bool = False, progress: bool = True) -> dict:
    """Tokenise `source` into DIR `out` (shards + manifest.json); returns the manifest.

    Re-running the same call resumes an interrupted run, or returns at once when DIR is complete.
    """
    sources = _as_list(source)
    if max_tokens is not None:
        max_tokens = parse_count(max_tokens, "max_tokens")
        if max_tokens <= 0:
            raise FwlabError(f"max_tokens must be > 0, got {max_tokens}")
    val_tokens = parse_count(val_tokens, "val_tokens")
    shard_tokens = parse_count(shard_tokens, "shard_tokens")
    if not 0 < shard_tokens < 2**31:
        raise FwlabError(f"shard_tokens must be between 1 and 2**31-1 (llm.c header), got {shard_tokens}")
    if workers is None:
        workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if workers < 1:
        raise FwlabError(f"workers must be >= 1, got {workers}")
    skipped: list = []
    # local files by fwlab's path rule (from the repository root); the manifest keeps them as given
    specs = _expand([s if s.startswith("hf:") else str(resolve_path(s)) for s in sources], skipped)
    if skipped:  # said every time: the user may expect those files to be read
        print(f"prepare: skipped {len(skipped)} entr{'y' if len(skipped) == 1 else 'ies'} of the "
              f"source: {_skipped_text(skipped)}", file=sys.stderr)
    fingerprint = _fingerprint(specs)
    if not any(fmt == "hf" for fmt, _ in specs):
        hf_config = None  # only hub datasets have configs
    config = {"format": FORMAT, "source": sources, "hf_config": hf_config, "tokenizer": TOKENIZER,
              "max_tokens": max_tokens, "val_tokens": val_tokens, "shard_tokens": shard_tokens}
    out = resolve_path(out)

    status, found = _inspect(out, config, overwrite, fingerprint)
    if status == "complete":
        _remove_outputs(out, temp_only=True)
        (out / STATE).unlink(missing_ok=True)
        print(f"{out}: already complete ({found['train']['tokens']:,} train + {found['val']['tokens']:,} "
              "val tokens); nothing to do")
        return found
    try:
        enc = tiktoken.get_encoding(TOKENIZER)
    except Exception as e:
        raise FwlabError(f"cannot load the {TOKENIZER} tokenizer ({e}); without internet set "
                         "TIKTOKEN_CACHE_DIR to a folder holding its BPE files") from None
    readers = _open(specs, hf_config)  # before touching DIR: a bad hub name fails here
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise WriteError(f"--out {out}: cannot create it ({e.filename or out}: {os_problem(e)}); "
                         "nothing was written", os_problem(e)) from None
    _remove_outputs(out, temp_only=not overwrite)
    try:
        return _run(out, config, enc, readers, found, workers, progress,
                    dict(fingerprint=fingerprint, skipped=skipped))
    except WriteError as e:
        # disk full, permissions: the input is fine, so keep the checkpoint for a re-run
        _remove_outputs(out, temp_only=True)
        kept = (out / STATE).is_file()
        raise WriteError(f"{e}; " + (f"the checkpoint in {out} is kept: fix this and re-run the "
                                     "same command to resume" if kept else "nothing was kept"),
                         e.problem) from None
    except FwlabError:
        # bad input: the run cannot finish as asked, so leave nothing of it behind
        _remove_outputs(out)
        if created and not any(out.iterdir()):
            out.rmdir()
        raise


def _run(out: Path, config: dict, enc, readers: list, state: dict | None, workers: int, progress: bool,
         about: dict | None = None) -> dict:
    """`about`: fingerprint (of the sources) and skipped (entries not read), for the record."""
    about = about or {"fingerprint": None, "skipped": []}
    max_tokens, shard_tokens = config["max_tokens"], config["shard_tokens"]
    val = _ValSet(config["val_tokens"])
    if state is None:  # fresh: a checkpoint at zero first, so DIR never holds shards without one
        meta = {"config": config, "docs": 0, "tokens": 0, "train_docs": 0, "train_shards": [],
                "cutoff": val.cutoff, "truncated": False, "fingerprint": about["fingerprint"]}
        train = _TrainShards(out, shard_tokens, [], np.zeros(0, np.uint16))
        _save_state(out, meta, val, train)
    else:
        meta = state["meta"]
        val.cutoff = meta["cutoff"]
        start = 0
        for h, a, n in zip(state["val_hash"].tolist(), state["val_arrival"].tolist(), state["val_len"].tolist()):
            val.put(h, a, state["val_tokens"][start:start + n])
            start += n
        train = _TrainShards(out, shard_tokens, list(meta["train_shards"]), state["carry"])
    delay = float(os.environ.get(DELAY_ENV, "0") or 0)

    bar = tqdm(total=max_tokens, initial=meta["tokens"], unit="tok", unit_scale=True, disable=not progress,
               desc=f"prepare {out.name}")
    if max_tokens is None or meta["tokens"] < max_tokens:
        # skip the documents the checkpoint already holds (reading them is cheap, tokenising is not)
        records = itertools.islice(itertools.chain.from_iterable(readers), meta["docs"], None)
        with closing(_tokenize(records, workers)) as docs:
            for h, doc in docs:
                last = max_tokens is not None and meta["tokens"] + len(doc) >= max_tokens
                if last and meta["tokens"] + len(doc) > max_tokens:
                    doc = doc[:max_tokens - meta["tokens"]]
                    meta["truncated"] = True
                arrival = meta["docs"]
                meta["docs"] += 1
                meta["tokens"] += len(doc)
                wrote = False
                for d in val.add(h, arrival, doc):
                    meta["train_docs"] += 1
                    wrote |= train.add(d)
                bar.update(len(doc))
                if meta["docs"] % 1024 == 0:
                    bar.set_postfix(docs=meta["docs"], refresh=False)
                if wrote:
                    if delay:
                        time.sleep(delay)
                    meta["cutoff"], meta["train_shards"] = val.cutoff, train.shards
                    _save_state(out, meta, val, train)
                if last:
                    break
    bar.set_postfix(docs=meta["docs"])
    bar.close()

    if meta["docs"] == 0:
        raise FwlabError(f"source {' '.join(config['source'])} holds no documents")
    if train.fill:
        train.flush()
    if not train.shards:
        # val keeps its largest-hash document only while the others fall short of val_tokens
        rest = val.tokens - (val.groups[-val.heap[0]][0] if val.heap else 0)
        if rest == 0:
            raise FwlabError(f"the source holds a single document ({meta['tokens']:,} tokens, "
                             f"{'identical copies of it' if meta['docs'] > 1 else 'one document'}): "
                             "val and train each take whole documents, so at least two different "
                             "ones are needed; split it into several documents (e.g. several .txt "
                             "files) or add data")
        raise FwlabError(f"all {meta['tokens']:,} tokens went to val (val_tokens={config['val_tokens']:,}); "
                         f"lower --val-tokens to at most {rest:,} or add data")
    val_docs = val.docs()
    val_stream = np.concatenate([d for _, _, d in val_docs]) if val_docs else np.zeros(0, np.uint16)
    val_shards = []
    for i, start in enumerate(range(0, len(val_stream), shard_tokens)):
        name = f"val_{i:06d}.bin"
        piece = val_stream[start:start + shard_tokens]
        val_shards.append({"file": name, "tokens": int(len(piece)), "sha256": write_shard(out / name, piece)})

    if delay:
        time.sleep(delay)
    manifest = {
        "config": config,
        "source": config["source"], "hf_config": config["hf_config"],
        "tokenizer": TOKENIZER, "n_vocab": enc.n_vocab, "eot_id": EOT, "dtype": "uint16",
        "shard_format": "llm.c: 256 x int32 header (20240520, 1, n_tokens), then uint16 tokens",
        "split": "val = the documents with the smallest 64-bit blake2b hashes of their text, until "
                 "val_tokens is reached; every document starts with eot_id",
        "docs": meta["docs"], "tokens": meta["tokens"], "last_doc_truncated": meta["truncated"],
        "source_fingerprint": meta.get("fingerprint"),
        "skipped": [{"path": p, "why": why} for p, why in about["skipped"]],
        "train": {"tokens": sum(s["tokens"] for s in train.shards), "docs": meta["train_docs"],
                  "shards": train.shards},
        "val": {"tokens": int(len(val_stream)), "docs": len(val_docs), "shards": val_shards},
    }
    assert manifest["train"]["tokens"] + manifest["val"]["tokens"] == meta["tokens"]
    atomic_write_json(out / MANIFEST, manifest)
    (out / STATE).unlink(missing_ok=True)
    return manifest
