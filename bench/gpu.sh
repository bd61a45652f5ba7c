#!/usr/bin/env bash
# The GPU check of issues 19 and 20 as one command on one CUDA GPU, about 7 minutes (each step has its own limit; 9.8 at most):
#   0. the device tests (tests/test_distributed.py, fast tier) on the GPU: a model trained there translates as on the CPU;
#   1. decoding with the shipped de->en model over test_2016_flickr, greedy and beam 5, with the defaults (on a GPU:
#      fp32, no shortlist, 256 sentences a batch) and beam 5 with the former GPU defaults (bf16, the shortlist,
#      batches of 64), this session's table's baseline (the one-pass attention cannot be turned off on a GPU)
#      (bench/decode_speed.py: sentences/s, BLEU, the fraction of the GPU's own measured product rate; the defaults
#      with --profile: one batch per beam traced, kernel launches and host against device time, in log.txt);
#   1b. the whole `nlp-rnn translate --device cuda` command over the 1,000 sentences under cProfile (its time by
#      function, in log.txt): on the H200 it took 5.8-6.8 s against 0.25 s of decoding;
#   2. the default translation config's training: one step traced (bench/train_step.py --profile: kernel launches,
#      host against device time) and a short whole run (bench/train_multi30k.py: target tokens/s);
#   3. the IMDb pipeline with each stage timed (bench/imdb.py: pretrain, fine-tune, classifier, evaluate),
#      on a sample of the reviews (6,000 of train.csv, 3,000 of test.csv: speed, not the accuracy table).
#
#   bash bench/gpu.sh pack            here, once: .gpu/ (ignored) gets the data the steps read (subsets of
#                                     ../shared/data, xz-compressed) and the wheels the GPU machine's
#                                     image lacks (datasets, dill, multiprocess, for Python 3.12)
#   device tool: run(command="bash bench/gpu.sh", carry=[".gpu"], timeout_s=600)
#   bash bench/gpu.sh --device cpu --short    the same steps here, a few seconds of training each
#
# Results: one JSON per step and log.txt in $OUT (set on the device machine) or bench/results/gpu/;
# the JSONs are printed at the end. A step that fails or overruns its limit is reported and the next runs.
set -uo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = pack ]; then
    set -e
    src=../shared/data
    rm -rf .gpu && mkdir -p .gpu/data/multi30k .gpu/data/text/wikitext-2 .gpu/data/imdb .gpu/data/sst/sst2 .gpu/data/nyse
    for part in train val test_2016_flickr; do cp "$src"/multi30k/$part.{de,en} .gpu/data/multi30k/; done
    head -n 12000 "$src"/text/wikitext-2/wiki.train.tokens >.gpu/data/text/wikitext-2/wiki.train.tokens
    cp "$src"/text/wikitext-2/wiki.valid.tokens .gpu/data/text/wikitext-2/
    cp "$src"/sst/sst2/{train,dev,test}.tsv .gpu/data/sst/sst2/
    cp "$src"/nyse/NYSE.csv .gpu/data/nyse/ && cp "$src"/text/tinyshakespeare.txt .gpu/data/text/
    python3 - "$src"/imdb .gpu/data/imdb <<'EOF'
import csv, random, sys
for name, n in (("train.csv", 6000), ("test.csv", 3000)):
    with open(f"{sys.argv[1]}/{name}", encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))
    kept = random.Random(0).sample(rows[1:], n)
    with open(f"{sys.argv[2]}/{name}", "w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows([rows[0], *kept])
EOF
    tar -C .gpu -cJf .gpu/data.tar.xz data && rm -rf .gpu/data
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .gpu/whl \
        datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19
    du -sh .gpu
    exit 0
fi

device=cuda short=0
while [ $# -gt 0 ]; do
    case $1 in
        --device) device=$2; shift 2 ;;
        --short) short=1; shift ;;
        *) echo "bench/gpu.sh: unknown argument '$1' (pack | --device D | --short)" >&2; exit 2 ;;
    esac
done
[ -f .gpu/data.tar.xz ] || { echo "bench/gpu.sh: no .gpu/data.tar.xz: run 'bash bench/gpu.sh pack' first (here)" >&2; exit 2; }
out=${OUT:-bench/results/gpu}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$out" && tar -xJf .gpu/data.tar.xz -C "$work"
data=$work/data
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
if ! python3 -c "import datasets" 2>/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$work/site" .gpu/whl/*.whl \
        && export PYTHONPATH=$PYTHONPATH:$work/site
fi
if [ $short = 1 ]; then minutes=(0.2 0.3 0.1 0.2) repeats=1; else minutes=(1.0 1.0 0.5 0.5) repeats=2; fi
# minutes: translation training, pretraining, LM fine-tuning, classifier

step() {  # step NAME SECONDS COMMAND...: run with a time limit, log it, go on whatever happens
    local name=$1 limit=$2 started=$SECONDS
    shift 2
    echo "== $name ($(date +%T))" | tee -a "$out/log.txt"
    timeout "$limit" "$@" >>"$out/log.txt" 2>&1
    echo "== $name: exit $?, $((SECONDS - started)) s" | tee -a "$out/log.txt"
}

{ nvidia-smi -L 2>/dev/null; python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"; } | tee -a "$out/log.txt"
step "device tests" 60 env NLP_RNN_TEST_DATA="$data" NLP_RNN_TEST_DEVICE="$device" \
    python3 -m pytest -q -p no:cacheprovider -m "not slow" tests/test_distributed.py
step "decode, defaults" 60 python3 bench/decode_speed.py --device "$device" --repeats $((repeats + 1)) --no-command \
    --profile --data "$data/multi30k" --json "$out/decode_auto.json"
step "decode, bf16 with the shortlist" 60 python3 bench/decode_speed.py --device "$device" --precision bf16 \
    --shortlist on --beams 5 --batch-size 64 --repeats $((repeats + 1)) --no-command --data "$data/multi30k" \
    --json "$out/decode_bf16_shortlist.json"
step "translate command, profiled" 30 python3 -m cProfile -o "$work/translate.prof" -m nlp_rnn translate \
    --device "$device" --input "$data/multi30k/test_2016_flickr.de" --output "$work/translate.en"
step "translate command, its profile" 10 python3 -c "import pstats, sys; \
pstats.Stats(sys.argv[1]).sort_stats('cumulative').print_stats(30)" "$work/translate.prof"
step "training step, traced" 60 python3 bench/train_step.py --device "$device" --steps 12 --skip 4 --rounds 1 \
    --profile --data "$data/multi30k" --output "$out/train_step.json"
step "translation training" 110 python3 bench/train_multi30k.py --device "$device" --minutes "${minutes[0]}" \
    --skip-test --data "$data/multi30k" --output "$work/multi30k"
cp "$work/multi30k/bench.json" "$out/train_multi30k.json" 2>/dev/null
step "imdb pipeline" 200 python3 bench/imdb.py --data "$data" --device "$device" \
    --pretrain-minutes "${minutes[1]}" --finetune-minutes "${minutes[2]}" --classifier-minutes "${minutes[3]}" \
    --classifier-config configs/imdb_one_rate.yaml --runs "$work/imdb" --output "$out/imdb.json"
for f in "$out"/*.json; do echo "--- $f"; cat "$f"; done
