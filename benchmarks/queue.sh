#!/usr/bin/env bash
# Run accuracy cells one after another, each resumable: a finished cell is skipped, a
# half-trained one resumes from its checkpoint under $LLATA_BENCH_RUNS.
#
#   benchmarks/queue.sh ETTm1:96:llata-no-llm:2024:L336 aside:ETTm1_96_llata-no-llm_s2024.json ...
#
# "aside:FILE" moves a committed result file to $LLATA_BENCH_ASIDE so that the next cell
# of that name is trained again (to record a field that the old file lacks); restore it
# with `git checkout benchmarks/accuracy/results/FILE` if the rerun is abandoned.
# A cell longer than a session: stop the queue, then `.venv/bin/python benchmarks/accuracy/run.py
# --only CELL --park` copies its checkpoint into benchmarks/accuracy/parked/; commit it, and
# the cell's next run on any machine resumes from it.
# One thread per queue: two queues share a 2-core machine with the rest of the work.
set -euo pipefail
failed=0
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
export LLATA_DATA_MIRROR="${LLATA_DATA_MIRROR:-$(cd "$root/.." && pwd)/shared/data}"
export LLATA_BENCH_RUNS="${LLATA_BENCH_RUNS:-$HOME/.cache/llata/bench-runs}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
aside="${LLATA_BENCH_ASIDE:-$HOME/.cache/llata/aside}"
for arg in "$@"; do
  case "$arg" in
    aside:*)
      name="${arg#aside:}"
      if [[ -f "benchmarks/accuracy/results/$name" ]]; then
        mkdir -p "$aside"
        mv "benchmarks/accuracy/results/$name" "$aside/$name"
        echo "$(date -u +%FT%TZ) moved $name aside to $aside"
      fi
      ;;
    *)
      echo "$(date -u +%FT%TZ) cell $arg"
      if ! .venv/bin/python benchmarks/accuracy/run.py --only "$arg"; then
        echo "$(date -u +%FT%TZ) cell $arg failed"
        failed=$((failed + 1))
      fi
      ;;
  esac
done
echo "$(date -u +%FT%TZ) queue done, $failed cell(s) failed"
# A later command chained with && (a coverage run on the cell's model) must not run on a
# cell that failed: the queue goes on past a failed cell but exits non-zero.
exit $((failed > 0))
