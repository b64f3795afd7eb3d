#!/usr/bin/env bash
# The issue's ratio targets measured as alternated pairs: a reference run, then nnc's, N times,
# so that both sides of each pair see the same phase of a noisy shared machine. Prints one line
# per pair (reference, nnc, ratio) and the median ratio per workload.
#
# Usage (needs the venv of ../shared/bench/README.md and a release build):
#   PY=~/.venvs/nnc-bench/bin/python [N=4] [THREADS=2] [ONLY=CNN] bash tools/pairs.sh
# ONLY keeps the workloads whose name contains it.
set -u
cd "$(dirname "$0")/.."
PY=${PY:-python3}
N=${N:-4}
THREADS=${THREADS:-2}
B=$PWD/target/release/nnc
M=$PWD/../shared/data/mnist
T=$PWD/../shared/data/tinyshakespeare
REF=$PWD/../shared/bench
export BENCH_QUIET_WAIT=${BENCH_QUIET_WAIT:-5} BENCH_QUIET_THRESHOLD=${BENCH_QUIET_THRESHOLD:-0.3}

# FIELD of the last JSON line of a reference script (of workload WL, when not empty)
ref_field() {
  local field=$1 wl=$2; shift 2
  (cd "$REF" && "$PY" "$@" 2>/dev/null | grep "^{" |
    "$PY" -c 'import json,sys; f,w=sys.argv[1:]; r=[json.loads(l) for l in sys.stdin]; print([x for x in r if not w or x["workload"]==w][-1][f])' "$field" "$wl")
}
# samples/s of a reference script's JSON line
ref() { ref_field samples_per_s "" "$@"; }
# samples/s of nnc's summary line (the number before "samples/s" in `bench`, or the column of `train`)
nnc_bench() { "$B" bench "$@" 2>&1 | awk '/^run /{for(i=1;i<=NF;i++) if($i=="samples/s") {print $(i-1); exit}}'; }
nnc_train() { "$B" train "$@" 2>&1 | awk 'NR>2 && NF>=7 {v=$(NF-1)} END{print v}'; }
# the batch-1 median latency (µs) of `nnc bench`
nnc_latency() { "$B" bench "$@" 2>&1 | awk '/batch 1 median/ {for(i=1;i<=NF;i++) if($i=="median") {print $(i+1); exit}}'; }

pairs() {
  local name=$1; shift
  [[ "$name" == *"${ONLY:-}"* ]] || return 0
  local ratios=()
  for _ in $(seq "$N"); do
    r=$(eval "$REFCMD")
    n=$(eval "$NNCCMD")
    q=$(awk -v a="$n" -v b="$r" 'BEGIN{printf "%.2f", a/b}')
    ratios+=("$q")
    echo "$name: reference $r  nnc $n  ratio $q"
  done
  printf '%s\n' "${ratios[@]}" | sort -n | awk -v n="$name" '{a[NR]=$1} END{m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%s: median ratio %.2f (%s pairs, %s–%s)\n", n, m, NR, a[1], a[NR]}'
}

REFCMD='ref bench_torch.py --workload cnn --threads $THREADS --momentum --channels-last' \
NNCCMD='nnc_bench examples/mnist_cnn.nn --data-dir $M --threads $THREADS --steps 150 --reps 10' \
  pairs "CNN, nnc / PyTorch channels-last"
REFCMD='ref bench_jax.py --workload mlp --threads $THREADS' \
NNCCMD='nnc_train examples/mnist_mlp.nn --data-dir $M -q --threads $THREADS' \
  pairs "MLP, nnc / JAX"
REFCMD='ref bench_jax.py --workload ae --threads $THREADS' \
NNCCMD='nnc_train examples/autoencoder_finetune.nn --data-dir $M -q --threads $THREADS --run pretrain --epochs 1' \
  pairs "autoencoder, nnc / JAX"
REFCMD='ref_field tokens_per_s "" bench_jax.py --workload rnn --threads $THREADS' \
NNCCMD='nnc_train examples/char_rnn.nn --data-dir $T -q --threads $THREADS | awk "{print \$1 * 64}"' \
  pairs "char-RNN tokens/s, nnc / JAX"
# Latency: a ratio below 1 is nnc ahead.
REFCMD='ref_field batch1_median_us infer_mlp bench_jax.py --workload infer --threads $THREADS' \
NNCCMD='nnc_latency examples/mnist_mlp.nn --data-dir $M --threads $THREADS --steps 1 --reps 2000' \
  pairs "MLP batch-1 latency, nnc / JAX"
REFCMD='ref_field batch1_median_us infer_cnn bench_jax.py --workload infer --threads $THREADS' \
NNCCMD='nnc_latency examples/mnist_cnn.nn --data-dir $M --threads $THREADS --steps 1 --reps 2000' \
  pairs "CNN batch-1 latency, nnc / JAX"
