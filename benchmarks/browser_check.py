"""The training and analysis notebooks in a real browser: JupyterLab driven by Playwright.

What a person does in `make lab`, done by a script: start `jupyter lab` from the project's venv
on 127.0.0.1 (with a token), open notebooks/02_train.ipynb and notebooks/03_analysis.ipynb, set
small settings in each parameters cell by typing them, Run > Run All Cells, and check that every
code cell ran, none ended in an error, and every figure rendered. Screenshots go to --out.
Exit status 0 when both notebooks pass, 1 otherwise (2 for a setup problem).

It first makes what the notebooks read with fwlab itself: a tiny data folder (`fwlab prepare`
on the FineWeb-Edu sample) and a tiny WSD sweep (`fwlab sweep`, three budgets of the tiny
model), under results/browser-check/ of the checkout (ignored by git). The notebooks get those
as paths relative to the repository root while their kernels run in notebooks/: the path rule of
fwlab.utils.resolve_path, in the browser.

Needs, outside the project venv: Chromium (Debian: `apt-get install chromium`, /usr/bin/chromium)
and Playwright in a venv of its own (`python3 -m venv /tmp/browser/venv && /tmp/browser/venv/bin/pip
install playwright`; no browser download, the system Chromium is used). Then:

    /tmp/browser/venv/bin/python benchmarks/browser_check.py --out /tmp/browser/shots

Nothing leaves the machine: the server listens on 127.0.0.1 only, Chromium resolves no other
host, and every request to another host is aborted (and counted as a failure). JupyterLab's
autosave is off (its settings live in a temporary folder), so the notebooks stay unmodified.
A few minutes on 2 cores; not part of the test suite for that reason.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO.parent / "shared" / "data" / "fineweb-edu-sample" / "fineweb_edu.jsonl.gz"
WORK = "results/browser-check"  # relative to the repository root, as the notebooks are given it

# the small settings typed into each notebook's parameters cell (appended below its own lines)
TRAIN_PARAMS = """
# browser check: small settings
max_iters = 8
preset = "tiny"
data_dir = "{work}/data"
run_dir = "{work}/nb-run"
tokens_per_iter = 512
eval_interval = 4
eval_tokens = 2048
device = "cpu"
dtype = "float32"
compile = False
extra = {{"progress": False}}
"""
ANALYSIS_PARAMS = """
# browser check: the tiny sweep, with the example claims
sweep_dir = "{work}/sweep"
claims = "examples/claims_40m_fineweb_edu.yaml"
"""


class CheckFailed(Exception):
    pass


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def run_fwlab(python: str, env: dict, *args: str) -> None:
    cmd = [python, "-m", "fwlab.cli", *args]
    log("$ fwlab " + " ".join(args))
    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    if r.returncode:
        sys.stderr.write(r.stdout + r.stderr)
        raise CheckFailed(f"fwlab {args[0]} failed with exit status {r.returncode}")


def make_inputs(python: str, env: dict, source: Path) -> None:
    """The tiny data folder and sweep the notebooks read (a finished sweep is left as it is)."""
    work = REPO / WORK
    if not (work / "data" / "manifest.json").exists():
        run_fwlab(python, env, "prepare", "--source", str(source), "--out", f"{WORK}/data",
                  "--max-tokens", "40e3", "--val-tokens", "6000", "--workers", "1")
    run_fwlab(python, env, "sweep", "--data", f"{WORK}/data", "--out", f"{WORK}/sweep",
              "--budgets", "8,12,16", "--mode", "wsd", "--preset", "tiny",
              "--tokens-per-iter", "512", "--eval-interval", "4", "--eval-tokens", "2048",
              "--device", "cpu", "--no-compile", "--no-progress")
    shutil.rmtree(work / "nb-run", ignore_errors=True)  # so that the training notebook trains


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_lab(venv: Path, env: dict, port: int, token: str, logfile: Path) -> subprocess.Popen:
    cmd = [str(venv / "bin" / "jupyter"), "lab", "--no-browser", "--ServerApp.ip=127.0.0.1",
           f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
           f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={REPO}",
           "--LabApp.expose_app_in_browser=True",  # read cell outputs from the notebook's model
           "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    if os.geteuid() == 0:
        cmd.append("--allow-root")
    log(f"$ jupyter lab on 127.0.0.1:{port} (log: {logfile})")
    f = open(logfile, "w")
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}/api/status?token={token}"
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            raise CheckFailed(f"jupyter lab exited with status {proc.returncode}; see {logfile}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.5)
    raise CheckFailed(f"jupyter lab did not answer on 127.0.0.1:{port} within 120 s; see {logfile}")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


# --- one notebook in the browser ---------------------------------------------------------------
# The open notebook's cells as nbformat JSON, from JupyterLab's own model (window.jupyterapp).
CELLS_JS = """() => {
  const w = window.jupyterapp.shell.currentWidget;
  const cells = w.content.model.cells;
  const out = [];
  for (let i = 0; i < cells.length; i++) out.push(cells.get(i).toJSON());
  return out;
}"""
KERNEL_JS = """() => {
  const w = window.jupyterapp.shell.currentWidget;
  const k = w.sessionContext.session && w.sessionContext.session.kernel;
  return k ? k.status : 'none';
}"""
IMAGES_JS = """() => Array.from(document.querySelectorAll(
    '.jp-NotebookPanel:not(.lm-mod-hidden) .jp-OutputArea-output img')).map(
    i => ({w: i.naturalWidth, h: i.naturalHeight, done: i.complete}))"""


def menu(page, top: str, item: str) -> None:
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(f"^{top}$")).click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(f"^{re.escape(item)}$")).first.click()


# (label, notebook, lines typed at the end of its parameters cell, the one-line error expected)
CASES = (
    ("02_train", "02_train.ipynb", TRAIN_PARAMS, None),
    ("02_train-mistyped", "02_train.ipynb", TRAIN_PARAMS + "max_iter = 40\n",
     "unknown parameter 'max_iter'; did you mean 'max_iters'?"),
    ("03_analysis", "03_analysis.ipynb", ANALYSIS_PARAMS, None),
)


def check_notebook(page, base: str, token: str, label: str, name: str, params: str,
                   expect_error: str | None, shots: Path, timeout_s: float) -> dict:
    """Open notebooks/NAME, type `params` at the end of its parameters cell, Run All Cells.
    Passes when every code cell ran without an error and every figure rendered, or, with
    `expect_error`, when the run stopped at exactly that one-line error (no traceback around it).
    Returns dict(label, notebook, seconds, code_cells, figures, problems)."""
    res = dict(label=label, notebook=f"notebooks/{name}", seconds=None, code_cells=None,
               figures=0, problems=[])
    problems = res["problems"]
    page.goto(f"{base}/lab/tree/notebooks/{name}?token={token}&reset")
    page.wait_for_function("() => window.jupyterapp && window.jupyterapp.shell.currentWidget"
                           " && window.jupyterapp.shell.currentWidget.content", timeout=90_000)
    page.wait_for_function(f"() => ({KERNEL_JS})() === 'idle'", timeout=120_000)
    cells = page.evaluate(CELLS_JS)
    res["code_cells"] = sum(c["cell_type"] == "code" for c in cells)
    pidx = next((i for i, c in enumerate(cells) if c["cell_type"] == "code"
                 and "parameters" in c.get("metadata", {}).get("tags", [])), None)
    if pidx is None:
        problems.append(f"{label}: no cell tagged 'parameters'")
        return res
    # type the settings as a person would: click into the cell, go to its end, type
    editor = page.locator(".jp-Notebook .jp-Cell").nth(pidx).locator(".cm-content")
    editor.click()
    page.keyboard.press("Control+End")
    page.keyboard.insert_text(params.rstrip("\n"))
    page.keyboard.press("Escape")
    page.screenshot(path=str(shots / f"{label}-0-parameters.png"))
    log(f"{label}: Run > Run All Cells")
    t0 = time.time()
    menu(page, "Run", "Run All Cells")

    def finished():
        now = page.evaluate(CELLS_JS)
        counts = [c.get("execution_count") for c in now if c["cell_type"] == "code"]
        errored = any(o.get("output_type") == "error" for c in now for o in c.get("outputs", []))
        busy = page.evaluate(KERNEL_JS) != "idle"
        return now, (all(counts) or errored) and not busy

    while True:
        time.sleep(1.0)
        now, done = finished()
        if done:
            time.sleep(1.0)  # let the last outputs render
            now, done = finished()
            if done:
                break
        if time.time() - t0 > timeout_s:
            page.screenshot(path=str(shots / f"{label}-timeout.png"), full_page=True)
            problems.append(f"{label}: not finished after {timeout_s:.0f} s")
            return res
    res["seconds"] = round(time.time() - t0, 1)
    log(f"{label}: ran in {res['seconds']} s")
    errors = [(i, o) for i, c in enumerate(now) if c["cell_type"] == "code"
              for o in c.get("outputs", []) if o.get("output_type") == "error"]
    if expect_error is None:
        for i, c in enumerate(now):
            if c["cell_type"] == "code" and not c.get("execution_count"):
                problems.append(f"{label}: cell {i} did not run")
        for i, o in errors:
            problems.append(f"{label}: cell {i} raised {o.get('ename')}: {o.get('evalue')}")
        n_png = sum("image/png" in o.get("data", {}) for c in now for o in c.get("outputs", []))
        res["figures"] = n_png
        if n_png == 0:
            problems.append(f"{label}: no figure among the outputs")
        # rendered: every <img> in the outputs has loaded with a real size
        page.wait_for_function("() => Array.from(document.querySelectorAll("
                               "'.jp-OutputArea-output img')).every(i => i.complete)", timeout=30_000)
        imgs = page.evaluate(IMAGES_JS)
        if len(imgs) < n_png or any(not (i["done"] and i["w"] > 100 and i["h"] > 100) for i in imgs):
            problems.append(f"{label}: figures not rendered in the page ({imgs}, {n_png} in the model)")
    else:
        shown = [o.get("traceback") for _, o in errors]
        if shown != [[expect_error]]:
            problems.append(f"{label}: expected the one-line error {expect_error!r}, got {shown}")
        text = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-OutputArea-output"
                            "[data-mime-type='application/vnd.jupyter.stderr']").all_inner_texts()
        if not any(t.strip() == expect_error for t in text):
            problems.append(f"{label}: the page does not show {expect_error!r} alone ({text})")
        res["error_shown"] = text
    # screenshots: the notebook after the run, each figure as the page shows it, the last cell
    page.screenshot(path=str(shots / f"{label}-1-after-run.png"))
    figs = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-OutputArea-output img")
    for k in range(figs.count()):
        figs.nth(k).scroll_into_view_if_needed()
        figs.nth(k).screenshot(path=str(shots / f"{label}-figure{k + 1}.png"))
    target = (page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-OutputArea-output"
                           "[data-mime-type='application/vnd.jupyter.stderr']").last
              if expect_error else page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell").last)
    if target.count():
        target.scroll_into_view_if_needed()
    page.screenshot(path=str(shots / f"{label}-2-end.png"))
    log(f"{label}: {res['code_cells']} code cells, {res['figures']} figure(s), "
        + ("OK" if not problems else f"{len(problems)} problem(s)"))
    # close it without saving (no dialog): the notebook file stays as it is in the repository
    page.evaluate("""async () => {
      const w = window.jupyterapp.shell.currentWidget;
      await w.sessionContext.shutdown();
      w.context.model.dirty = false;
      w.dispose();
    }""")
    return res


def write_record(path: Path, python: str, env: dict, started: str, results: list, problems: list,
                 versions: dict, tcp_warning: bool, argv: list) -> None:
    """The run as a small JSON record (benchmarks/records/): what ran, on what, with what result."""
    from importlib.metadata import version

    sys.path.insert(0, str(REPO))
    from fwlab.records import code_record
    from fwlab.utils import atomic_write_json
    probe = subprocess.run([python, "-c", "import jupyterlab, jupyter_client, ipykernel; print("
                            "jupyterlab.__version__, jupyter_client.__version__, "
                            "ipykernel.__version__)"], env=env, capture_output=True, text=True)
    lab, client, kernel = (probe.stdout.split() + [None] * 3)[:3]
    spec = subprocess.run([python, "-c", "import json; from jupyter_client.kernelspec import "
                           "KernelSpecManager as M; k = M().get_kernel_spec('python3'); print(json."
                           "dumps([k.resource_dir, k.metadata.get('kernel_provisioner')]))"],
                          env=env, capture_output=True, text=True)
    try:
        spec_dir, provisioner = json.loads(spec.stdout)
    except ValueError:
        spec_dir = provisioner = None
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), None) if Path("/proc/cpuinfo").exists() else None
    atomic_write_json(path, dict(
        benchmark="browser_check", started=started, command="python benchmarks/browser_check.py "
        + " ".join(argv), ok=not problems, problems=problems, notebooks=results,
        kernel_warned_tcp_without_encryption=tcp_warning,
        kernelspec=dict(python3=spec_dir, provisioner=(provisioner or {}).get("provisioner_name")),
        versions=dict(versions, jupyterlab=lab, jupyter_client=client, ipykernel=kernel,
                      playwright=version("playwright")),
        machine=dict(cpu=cpu, cores=os.cpu_count()), code=code_record()))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="folder for the screenshots")
    ap.add_argument("--venv", default=str(REPO / ".venv"),
                    help="the project venv with jupyter lab and fwlab (default: REPO/.venv)")
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    ap.add_argument("--source", default=str(SAMPLE), help="the local FineWeb-Edu file to prepare")
    ap.add_argument("--timeout", type=float, default=600, help="seconds per notebook run")
    ap.add_argument("--headed", action="store_true", help="show the browser window")
    ap.add_argument("--record", default=str(REPO / "benchmarks" / "records" / "browser_check.json"),
                    help="write the result here as JSON ('' = no record; default: "
                         "benchmarks/records/browser_check.json)")
    a = ap.parse_args(argv)
    from playwright.sync_api import sync_playwright  # the checker's venv, not the project's

    venv, shots = Path(a.venv), Path(a.out)
    python = str(venv / "bin" / "python")
    for need, what in ((python, "the project venv's python (--venv)"), (a.chromium, "Chromium"),
                       (a.source, "the FineWeb-Edu sample (--source)")):
        if not Path(need).exists():
            print(f"browser_check: {what} not found: {need}", file=sys.stderr)
            return 2
    shots.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="fwlab-browser-"))
    settings = tmp / "lab-settings" / "@jupyterlab" / "docmanager-extension"
    settings.mkdir(parents=True)
    (settings / "plugin.jupyterlab-settings").write_text(json.dumps({"autosave": False}))
    news = tmp / "lab-settings" / "@jupyterlab" / "apputils-extension"  # no "Jupyter news?" toast
    news.mkdir(parents=True)
    (news / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false"}))
    path = os.pathsep.join(filter(None, (str(REPO), os.environ.get("PYTHONPATH"))))
    env = dict(os.environ, PYTHONPATH=path, MPLBACKEND="Agg", HF_HUB_OFFLINE="1",
               HF_DATASETS_OFFLINE="1", JUPYTERLAB_SETTINGS_DIR=str(tmp / "lab-settings"),
               JUPYTERLAB_WORKSPACES_DIR=str(tmp / "lab-workspaces"))
    cache = REPO.parent / "shared" / "tiktoken_cache"
    if cache.is_dir():
        env.setdefault("TIKTOKEN_CACHE_DIR", str(cache))
    problems, outside, results, versions = [], [], [], {}
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that `finally` stops the server
    lab = None
    try:
        make_inputs(python, env, Path(a.source))
        port, token = free_port(), secrets.token_hex(24)
        lab = start_lab(venv, env, port, token, shots / "jupyterlab.log")
        base = f"http://127.0.0.1:{port}"
        with sync_playwright() as p:
            args = ["--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
                    "--disable-background-networking", "--no-first-run"]
            if os.geteuid() == 0:
                args.append("--no-sandbox")
            browser = p.chromium.launch(executable_path=a.chromium, headless=not a.headed,
                                        args=args)
            versions["chromium"] = browser.version
            context = browser.new_context(viewport={"width": 1400, "height": 1000})

            def loopback_only(route):
                host = urlparse(route.request.url).hostname
                if host in ("127.0.0.1", None) or route.request.url.startswith(("data:", "blob:")):
                    return route.continue_()
                outside.append(route.request.url)
                return route.abort()
            context.route("**/*", loopback_only)
            page = context.new_page()
            page.on("dialog", lambda d: d.accept())  # leaving a page: leave it
            for label, name, params, expect in CASES:
                r = check_notebook(page, base, token, label, name, params.format(work=WORK),
                                   expect, shots, a.timeout)
                results.append(r)
                problems += r["problems"]
            browser.close()
    except CheckFailed as e:
        print(f"browser_check: {e}", file=sys.stderr)
        return 2
    finally:
        if lab is not None:
            stop(lab)
        shutil.rmtree(tmp, ignore_errors=True)
    trained = REPO / WORK / "nb-run" / "final.json"
    if not trained.exists():
        problems.append(f"02_train.ipynb: no {trained} (the run directory from run_dir)")
    elif json.loads(trained.read_text()).get("status") != "completed":
        problems.append(f"02_train.ipynb: {trained} says {trained.read_text()[:200]}")
    if not (REPO / WORK / "sweep" / "report" / "curves.png").exists():
        problems.append("03_analysis.ipynb: no curves.png in the sweep's report folder")
    lablog = (shots / "jupyterlab.log").read_text(errors="replace")
    if "without encryption" in lablog:
        print("browser_check: note: a kernel warned that it runs over TCP without encryption",
              file=sys.stderr)
    if outside:
        problems.append(f"requests to other hosts (aborted): {sorted(set(outside))[:5]}")
    for pr in problems:
        print(f"FAIL {pr}")
    if a.record:
        write_record(Path(a.record), python, env, started, results, problems, versions,
                     tcp_warning="without encryption" in lablog, argv=sys.argv[1:])
        log(f"record: {a.record}")
    print(f"browser check: {'FAILED' if problems else 'OK'}; screenshots in {shots}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
