#!/usr/bin/env bash
# nnc beside PyTorch eager, torch.compile and JAX jit on every workload, in one run on one machine,
# with the reference scripts of ../shared/bench (same initial weights and batch order for them).
# The references print JSON lines; nnc's own reports are kept as text beside them.
#
# Usage (needs the venv of ../shared/bench/README.md and a release build):
#   PY=~/.venvs/nnc-bench/bin/python [THREADS=1] bash tools/side_by_side.sh results-dir
# Runs take about 10 minutes on 2 cores; workloads are interleaved (reference, then nnc) so that
# both sides see the same machine load, which each reference line records (`other_load_cores`).
set -u
cd "$(dirname "$0")/.."
OUT=${1:-side-by-side}
mkdir -p "$OUT"
PY=${PY:-python3}
# Threads for every framework (2 = the issue's setting; 1 when something else holds a core).
THREADS=${THREADS:-2}
B=$PWD/target/release/nnc
M=$PWD/../shared/data/mnist
T=$PWD/../shared/data/tinyshakespeare
REF=$PWD/../shared/bench
export BENCH_QUIET_WAIT=${BENCH_QUIET_WAIT:-20} BENCH_QUIET_THRESHOLD=${BENCH_QUIET_THRESHOLD:-0.3}
ref() { (cd "$REF" && "$PY" "$@" 2>/dev/null | grep "^{") >> "$OUT/reference.jsonl"; }
nnc() { echo "\$ nnc $*" >> "$OUT/nnc.txt"; "$B" "$@" >> "$OUT/nnc.txt" 2>&1; }

ref bench_torch.py --workload xor
ref bench_jax.py --workload xor
nnc bench examples/xor.nn --threads 1 --reps 2000

ref bench_torch.py --workload mlp --threads "$THREADS"
ref bench_jax.py --workload mlp --threads "$THREADS"
nnc train examples/mnist_mlp.nn --data-dir "$M" -q --threads "$THREADS"
nnc bench examples/mnist_mlp.nn --data-dir "$M" --threads "$THREADS" --reps 2000

ref bench_torch.py --workload cnn --threads "$THREADS" --momentum
ref bench_torch.py --workload cnn --threads "$THREADS" --momentum --channels-last
ref bench_torch.py --workload cnn --threads "$THREADS" --momentum --compile --budget 60
ref bench_jax.py --workload cnn --threads "$THREADS" --momentum
nnc train examples/mnist_cnn.nn --data-dir "$M" -q --threads "$THREADS"
nnc bench examples/mnist_cnn.nn --data-dir "$M" --threads "$THREADS" --steps 100 --reps 300

ref bench_torch.py --workload rnn --threads "$THREADS"
ref bench_jax.py --workload rnn --threads "$THREADS"
nnc train examples/char_rnn.nn --data-dir "$T" -q --threads "$THREADS"

ref bench_torch.py --workload ae --threads "$THREADS"
ref bench_jax.py --workload ae --threads "$THREADS"
nnc train examples/autoencoder_finetune.nn --data-dir "$M" -q --threads "$THREADS" --run pretrain --epochs 1

ref bench_torch.py --workload kd --threads "$THREADS" --student-lr 0.05
ref bench_jax.py --workload kd --threads "$THREADS" --student-lr 0.05
nnc train examples/distill.nn --data-dir "$M" -q --threads "$THREADS"

ref bench_torch.py --workload infer --threads "$THREADS"
ref bench_jax.py --workload infer --threads "$THREADS"
for f in examples/*.nn; do
  /usr/bin/time -f "%e s %M KB: nnc check $f" "$B" check "$f" > /dev/null 2>> "$OUT/nnc.txt"
done
/usr/bin/time -f "%M KB peak RSS: nnc train mnist_cnn 1 epoch" "$B" train examples/mnist_cnn.nn \
  --data-dir "$M" -q --threads "$THREADS" > /dev/null 2>> "$OUT/nnc.txt"
echo "done: $OUT/reference.jsonl, $OUT/nnc.txt"
