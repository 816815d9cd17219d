#!/usr/bin/env bash
# A non-editable `pip install .` into a fresh venv runs `fwlab sweep` and `fwlab report` (the
# notebooks and examples come with the package, not from the checkout). Minutes, not a test:
#   bash benchmarks/fresh_install.sh [VENV_DIR] [WORK_DIR]
# TORCH_SPEC picks the torch to install first (default "torch": a CUDA build on Linux; on a
# CPU-only machine use e.g. TORCH_SPEC="torch==2.13.0+cpu" with a local CPU wheel or the CPU index).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
VENV=${1:-/tmp/fwlab-fresh}
WORK=${2:-/tmp/fwlab-fresh-run}
SHARED=${SHARED:-$REPO/../shared}
SAMPLE=${SAMPLE:-$SHARED/data/fineweb-edu-sample/fineweb_edu.jsonl.gz}
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 MPLBACKEND=Agg
[ -d "$SHARED/tiktoken_cache" ] && export TIKTOKEN_CACHE_DIR=$SHARED/tiktoken_cache
unset PYTHONPATH

python3 -m venv "$VENV"
"$VENV/bin/pip" install -q "${TORCH_SPEC:-torch}"
# a copy of the tracked files only: nothing of the checkout (results/, .venv/) comes along
SRC=$(mktemp -d)
git -C "$REPO" ls-files -z | (cd "$REPO" && tar --null -cf - -T -) | tar -xf - -C "$SRC"
"$VENV/bin/pip" install -q "$SRC"
rm -rf "$SRC" "$WORK" && mkdir -p "$WORK" && cd "$WORK"   # outside the repository
F=$VENV/bin/fwlab
"$VENV/bin/python" -c "import fwlab.utils as u; print('notebooks from', u.asset('notebooks'))"
$F prepare --source "$SAMPLE" --out data --max-tokens 40e3 --val-tokens 6000 --workers 1
$F sweep --data data --out sweep --budgets 8,12,16 --mode wsd --preset tiny --tokens-per-iter 512 \
    --eval-interval 4 --eval-tokens 2048 --device cpu --no-compile --no-progress
$F report sweep --claims "$("$VENV/bin/python" -c "import fwlab.utils as u; print(u.asset('examples', 'claims_40m_fineweb_edu.yaml'))")"
$F report sweep/runs/b8 sweep/runs/b16 --out runs-report
ls sweep/report runs-report
echo "fresh install: fwlab sweep and fwlab report OK in $WORK"
