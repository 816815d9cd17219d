"""fwlab.prepare on the real FineWeb(-Edu) sample: exact tokens, the split, resume after SIGKILL,
bad input, the datasets code path, the notebook."""
import gzip
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter

import numpy as np
import pytest
import tiktoken

from fwlab.data import load_manifest, read_shard
from fwlab.errors import FwlabError
from fwlab.prepare import (DEFAULT_HF_CONFIG, DEFAULT_SOURCE, EOT, default_source, describe, iter_documents,
                           prepare)

ENC = tiktoken.get_encoding("gpt2")


def texts_of(path):
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in f if line.strip()]


def write_jsonl(path, texts, extra_lines=()):
    with open(path, "w", encoding="utf-8") as f:
        for t in texts:
            f.write(json.dumps({"text": t}) + "\n")
        for line in extra_lines:
            f.write(line + "\n")
    return str(path)


def stream(data_dir, split):
    m = load_manifest(data_dir)
    parts = [np.asarray(read_shard(data_dir / s["file"], s["tokens"])) for s in m[split]["shards"]]
    return np.concatenate(parts) if parts else np.zeros(0, np.uint16)


def docs_of(tokens):
    """Split a token stream at EOT: every document starts with one, and GPT-2's encode_ordinary
    never produces 50256 inside a text, so the split is exact."""
    assert len(tokens) == 0 or tokens[0] == EOT
    cuts = np.flatnonzero(tokens == EOT).tolist() + [len(tokens)]
    return [tokens[a + 1:b].tolist() for a, b in zip(cuts[:-1], cuts[1:])]


def files_bytes(d):
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


def blake(text):
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")


# ---------------------------------------------------------------------------- exact content

def test_tiny_data_holds_every_document_exactly_once(tiny_data, edu_sample):
    texts = texts_of(edu_sample)
    m = load_manifest(tiny_data)
    encoded = [ENC.encode_ordinary(t) for t in texts]
    # counts against an independent tiktoken count
    assert m["docs"] == len(texts) == m["train"]["docs"] + m["val"]["docs"]
    assert m["tokens"] == sum(len(e) + 1 for e in encoded) == m["train"]["tokens"] + m["val"]["tokens"]
    assert (m["tokenizer"], m["n_vocab"], m["eot_id"], m["dtype"]) == ("gpt2", 50257, 50256, "uint16")
    for split in ("train", "val"):
        for s in m[split]["shards"]:
            raw = (tiny_data / s["file"]).read_bytes()
            assert hashlib.sha256(raw).hexdigest() == s["sha256"]
            header = np.frombuffer(raw[:1024], dtype="<i4")
            assert header[:3].tolist() == [20240520, 1, s["tokens"]] and len(raw) == 1024 + 2 * s["tokens"]
        assert sum(s["tokens"] for s in m[split]["shards"]) == m[split]["tokens"]
    assert len(m["train"]["shards"]) == 3 and all(s["tokens"] == 40_000 for s in m["train"]["shards"][:-1])
    # decoding every shard gives back exactly the documents: each once, token for token
    train_docs, val_docs = docs_of(stream(tiny_data, "train")), docs_of(stream(tiny_data, "val"))
    assert (len(train_docs), len(val_docs)) == (m["train"]["docs"], m["val"]["docs"])
    assert Counter(map(tuple, train_docs + val_docs)) == Counter(map(tuple, encoded))
    # val: ~10k tokens collected (at most one document past the target), the rest is train
    assert 10_000 <= m["val"]["tokens"] < 10_000 + max(len(e) + 1 for e in encoded)
    assert not {tuple(d) for d in train_docs} & {tuple(d) for d in val_docs}


def test_without_val_the_shards_decode_to_the_documents_joined_with_eot(tmp_path, edu_sample, fineweb_sample):
    sources = [str(edu_sample), str(fineweb_sample)]
    m = prepare(sources, tmp_path / "d", val_tokens=0, shard_tokens=30_000, workers=2, progress=False)
    texts = texts_of(edu_sample) + texts_of(fineweb_sample)
    joined = "".join("<|endoftext|>" + t for t in texts)
    assert ENC.decode(stream(tmp_path / "d", "train").tolist()) == joined
    assert m["val"] == {"tokens": 0, "docs": 0, "shards": []}
    assert m["docs"] == 396 and m["tokens"] == sum(len(ENC.encode_ordinary(t)) + 1 for t in texts)


def test_max_tokens_cuts_exactly(tmp_path, edu_sample):
    full = np.array([tok for t in texts_of(edu_sample) for tok in [EOT] + ENC.encode_ordinary(t)], np.uint16)
    m = prepare(str(edu_sample), tmp_path / "d", max_tokens="3e4", val_tokens=0, shard_tokens=7_000,
                workers=1, progress=False)
    assert m["tokens"] == m["train"]["tokens"] == 30_000 and m["last_doc_truncated"]
    assert np.array_equal(stream(tmp_path / "d", "train"), full[:30_000])
    assert [s["tokens"] for s in m["train"]["shards"]] == [7_000] * 4 + [2_000]


# ---------------------------------------------------------------------------- the split

def test_val_is_the_smallest_hashes_whatever_the_order_and_never_in_train(tmp_path, edu_sample):
    texts = texts_of(edu_sample)
    # duplicates of every 10th document at the end: a copy of a val document must not reach train
    forward = write_jsonl(tmp_path / "forward.jsonl", texts + texts[::10])
    backward = write_jsonl(tmp_path / "backward.jsonl", (texts + texts[::10])[::-1])
    a = prepare(forward, tmp_path / "a", val_tokens=10_000, shard_tokens=20_000, progress=False)
    b = prepare(backward, tmp_path / "b", val_tokens=10_000, shard_tokens=20_000, progress=False)
    val_a, train_a = (ENC.decode_batch(docs_of(stream(tmp_path / "a", s))) for s in ("val", "train"))
    assert not set(val_a) & set(train_a)
    # same documents in any order -> byte-identical val shards
    assert (tmp_path / "a" / "val_000000.bin").read_bytes() == (tmp_path / "b" / "val_000000.bin").read_bytes()
    assert Counter(ENC.decode_batch(docs_of(stream(tmp_path / "b", "train")))) == Counter(train_a)
    assert a["val"]["tokens"] == b["val"]["tokens"] and a["train"]["docs"] == b["train"]["docs"]
    # independently: val = the shortest prefix of distinct texts by hash reaching 10k tokens
    counts = Counter(texts + texts[::10])
    total, expect = 0, set()
    for t in sorted(counts, key=blake):
        if total >= 10_000:
            break
        expect.add(t)
        total += counts[t] * (len(ENC.encode_ordinary(t)) + 1)
    assert set(val_a) == expect and len(val_a) == sum(counts[t] for t in expect)


# ---------------------------------------------------------------------------- resume

KILL_SCRIPT = (
    "import json, sys\n"
    "from fwlab.prepare import prepare\n"
    "prepare(json.loads(sys.argv[1]), sys.argv[2], val_tokens=10_000, shard_tokens=5_000, workers=2, progress=False)\n"
)


def _start(sources, out, delay):
    env = dict(os.environ, FWLAB_PREPARE_SHARD_DELAY=str(delay))
    return subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, json.dumps(sources), str(out)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _kill_when(proc, path, timeout=60):
    end = time.time() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.stdout.read().decode()
        assert time.time() < end, f"{path} never appeared"
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def test_sigkill_then_rerun_gives_byte_identical_shards(tmp_path, edu_sample, fineweb_sample):
    sources = [str(edu_sample), str(fineweb_sample)]
    ref = prepare(sources, tmp_path / "ref", val_tokens=10_000, shard_tokens=5_000, workers=1, progress=False)
    assert len(ref["train"]["shards"]) > 40
    out = tmp_path / "killed"
    # killed three times: while tokenising the first shard, between a train shard's rename and its
    # checkpoint (the test delay sits there), between the val shards and the manifest; then run to the end
    for name in (".prepare_state.npz", "train_000003.bin", "val_000000.bin"):
        _kill_when(_start(sources, out, delay=0.05), out / name)
        assert not (out / "manifest.json").exists() and (out / ".prepare_state.npz").exists()
    proc = _start(sources, out, delay=0)
    assert proc.wait(timeout=120) == 0, proc.stdout.read().decode()
    assert files_bytes(out) == files_bytes(tmp_path / "ref")
    # a complete DIR is left alone
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    proc = _start(sources, out, delay=0)
    assert proc.wait(timeout=60) == 0
    assert "already complete" in proc.stdout.read().decode()
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == mtimes


def test_complete_dir_kept_other_settings_refused_unless_overwrite(tiny_data, edu_sample, capsys, tmp_path):
    before = files_bytes(tiny_data)
    m = prepare(str(edu_sample), tiny_data, val_tokens=10_000, shard_tokens=40_000, progress=False)
    assert "already complete" in capsys.readouterr().out and m == load_manifest(tiny_data)
    with pytest.raises(FwlabError, match="other settings.*val_tokens"):
        prepare(str(edu_sample), tiny_data, val_tokens=20_000, shard_tokens=40_000, progress=False)
    assert files_bytes(tiny_data) == before
    # --overwrite (on a copy: tiny_data is shared by other tests)
    copy = tmp_path / "copy"
    copy.mkdir()
    for name, data in before.items():
        (copy / name).write_bytes(data)
    m2 = prepare(str(edu_sample), copy, val_tokens=20_000, shard_tokens=40_000, overwrite=True, progress=False)
    assert m2["val"]["tokens"] >= 20_000 and load_manifest(copy)["config"]["val_tokens"] == 20_000


# ---------------------------------------------------------------------------- bad input

def _bad_sources(tmp, edu):
    raw = edu.read_bytes()
    (tmp / "empty.jsonl").write_bytes(b"")
    (tmp / "blank.jsonl").write_text("\n \n")
    (tmp / "cut.jsonl.gz").write_bytes(raw[: len(raw) // 2])
    (tmp / "notgz.jsonl.gz").write_bytes(b"this is not gzip\n")
    write_jsonl(tmp / "badjson.jsonl", ["a", "b"], ['{"text": "c"'])
    write_jsonl(tmp / "notext.jsonl", ["a"], ['{"body": "b"}'])
    (tmp / "data.csv").write_text("text\nhello\n")
    return {
        "missing": (str(tmp / "nope.jsonl"), r"nope.jsonl': no such file"),
        "no_glob_match": (str(tmp / "*.parquet"), r"no files match"),
        "empty": (str(tmp / "empty.jsonl"), r"empty.jsonl: the file is empty"),
        "blank": (str(tmp / "blank.jsonl"), r"blank.jsonl: no documents"),
        "truncated_gz": (str(tmp / "cut.jsonl.gz"), r"cut.jsonl.gz: cannot read past line \d+ .*corrupt or truncated"),
        "not_gz": (str(tmp / "notgz.jsonl.gz"), r"notgz.jsonl.gz: cannot read"),
        "bad_json": (str(tmp / "badjson.jsonl"), r"badjson.jsonl:3: not valid JSON"),
        "no_text": (str(tmp / "notext.jsonl"), r"notext.jsonl:2: the record has no 'text' field"),
        "csv": (str(tmp / "data.csv"), r"data.csv: unsupported file type"),
    }


BAD = ["missing", "no_glob_match", "empty", "blank", "truncated_gz", "not_gz", "bad_json", "no_text", "csv"]


@pytest.mark.parametrize("case", BAD)
def test_bad_input_is_named_and_leaves_nothing(tmp_path, edu_sample, case):
    source, pattern = _bad_sources(tmp_path, edu_sample)[case]
    with pytest.raises(FwlabError, match=pattern):
        prepare(source, tmp_path / "out", val_tokens=100, shard_tokens=1_000, workers=2, progress=False)
    assert not (tmp_path / "out").exists()


def test_error_after_shards_were_written_removes_them(tmp_path, edu_sample):
    # the bad record sits after ~100k tokens: shards and checkpoints exist when a worker meets it
    src = write_jsonl(tmp_path / "late.jsonl", texts_of(edu_sample), ['{"title": "no text here"}'])
    with pytest.raises(FwlabError, match=r"late.jsonl:157: the record has no 'text'"):
        prepare(src, tmp_path / "out", val_tokens=1_000, shard_tokens=2_000, workers=2, progress=False)
    assert not (tmp_path / "out").exists()


def test_unknown_hub_name_offline_fails_fast_and_says_use_local_files(tmp_path):
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    t0 = time.time()
    with pytest.raises(FwlabError, match=r"cannot open hub dataset 'nobody/no-such-set'.*local files"):
        prepare("hf:nobody/no-such-set", tmp_path / "out", progress=False)
    assert time.time() - t0 < 30 and not (tmp_path / "out").exists()


@pytest.mark.parametrize("value", [0, -5, "0", "-1e3"])
def test_max_tokens_must_be_positive(tmp_path, edu_sample, value):
    with pytest.raises(FwlabError, match="max_tokens"):
        prepare(str(edu_sample), tmp_path / "out", max_tokens=value, progress=False)
    assert not (tmp_path / "out").exists()


def test_cli_reads_counts_as_text_and_the_default_dataset_as_its_sample(tmp_path, edu_sample, capsys):
    from fwlab.cli import main
    assert main(["prepare", "--source", str(edu_sample), "--out", str(tmp_path / "out"), "--workers", "1",
                 "--max-tokens", "2e4", "--val-tokens", "5_000", "--shard-tokens", "1e4"]) == 0
    config = load_manifest(tmp_path / "out")["config"]
    assert (config["max_tokens"], config["val_tokens"], config["shard_tokens"], config["hf_config"]) == \
        (20_000, 5_000, 10_000, None)
    assert default_source(None) == (DEFAULT_SOURCE, DEFAULT_HF_CONFIG)
    assert default_source([DEFAULT_SOURCE], "sample-100BT") == ([DEFAULT_SOURCE], "sample-100BT")
    assert default_source([str(edu_sample)]) == ([str(edu_sample)], None)


def test_all_tokens_in_val_is_an_error(tmp_path, edu_sample):
    with pytest.raises(FwlabError, match="all 101,471 tokens went to val"):
        prepare(str(edu_sample), tmp_path / "out", val_tokens=10_000_000, progress=False)
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------- formats, datasets

def test_every_local_format_and_the_datasets_path_read_the_same_texts(tmp_path, edu_sample):
    import pyarrow as pa
    import pyarrow.parquet as pq

    texts = texts_of(edu_sample)[:12]
    (tmp_path / "in").mkdir()
    write_jsonl(tmp_path / "in" / "a.jsonl", texts[:3])
    (tmp_path / "in" / "b.json").write_text(json.dumps([{"text": t, "id": i} for i, t in enumerate(texts[3:6])]))
    pq.write_table(pa.table({"text": texts[6:9], "n": [1, 2, 3]}), tmp_path / "in" / "c.parquet")
    for i, t in enumerate(texts[9:]):
        (tmp_path / "in" / f"d{i}.txt").write_text(t, encoding="utf-8")
    assert list(iter_documents(str(tmp_path / "in" / "*"))) == texts
    assert list(iter_documents(str(tmp_path / "in"))) == texts  # a directory
    assert list(iter_documents(str(edu_sample))) == texts_of(edu_sample)
    # the `datasets` streaming code path (hub sources use it), run offline on local files
    assert list(iter_documents("hf:json", data_files=[str(edu_sample)])) == texts_of(edu_sample)
    assert list(iter_documents("hf:parquet", data_files=[str(tmp_path / "in" / "c.parquet")])) == texts[6:9]
    m = prepare(str(tmp_path / "in" / "*"), tmp_path / "out", val_tokens=0, shard_tokens=1_000_000, progress=False)
    assert ENC.decode(stream(tmp_path / "out", "train").tolist()) == "".join("<|endoftext|>" + t for t in texts)
    assert m["docs"] == 12


def test_notebook_is_thin_and_stored_clean(repo_root):
    nb = json.loads((repo_root / "notebooks" / "01_prepare_data.ipynb").read_text(encoding="utf-8"))
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    params = [c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", [])]
    assert len(params) == 1
    names = {}
    exec("".join(params[0]["source"]), {"__builtins__": {}}, names)  # literals only: no names, no imports
    assert set(names) == {"source", "out_dir", "hf_config", "max_tokens", "val_tokens", "shard_tokens"}
    code = ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(not c["outputs"] and c["execution_count"] is None for c in nb["cells"] if c["cell_type"] == "code")
    assert any("from fwlab.prepare import" in c and "prepare(source, out_dir" in c for c in code)


def test_notebook_runs_headless(repo_root, tmp_path, edu_sample):
    import papermill

    papermill.execute_notebook(
        str(repo_root / "notebooks" / "01_prepare_data.ipynb"), str(tmp_path / "run.ipynb"),
        parameters=dict(source=str(edu_sample), hf_config=None, out_dir=str(tmp_path / "data"), max_tokens=None,
                        val_tokens=10_000, shard_tokens=40_000),
        kernel_name="python3", cwd=str(tmp_path), progress_bar=False)
    manifest = load_manifest(tmp_path / "data")
    assert manifest["docs"] == 156
    cell = next(c for c in json.loads((tmp_path / "run.ipynb").read_text())["cells"] if "describe(" in "".join(c["source"]))
    printed = "".join(t for o in cell["outputs"] if o.get("name") == "stdout" for t in o["text"])
    assert printed.strip() == describe(manifest)
