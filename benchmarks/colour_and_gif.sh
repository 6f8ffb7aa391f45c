#!/usr/bin/env bash
# benchmarks/colour_and_gif.sh [OUT]   (from the repository root; OUT defaults to runs/colour_and_gif)
# docs/BENCHMARKS.md "Coloured text and animated GIFs": each look trained for 170 s with and without its
# preprocessing (--colour=red, --gif_frames=min), then read on 500 held-out captchas of the same look.
set -euo pipefail
out=${1:-runs/colour_and_gif}
mkdir -p "$out"
bin/generate --flagfile=experiments/colour_decoy.flags --output_dir="$out/heldout_colour_decoy" --count=500 --seed=20261207
bin/generate --flagfile=experiments/gif.flags --output_dir="$out/heldout_gif" --count=500 --seed=20261207
run() {  # name flagfile extra-flag heldout
  bin/train --flagfile="$2" $3 --model_dir="$out/$1/run" --save_dir="$out/$1/model" --noexport
  bin/evaluate --model="$out/$1/model" --output_json="$out/$1/evaluate.json" "$4" | tail -n 20
}
run colour_red experiments/colour_decoy.flags --colour=red "$out/heldout_colour_decoy"
run colour_none experiments/colour_decoy.flags --colour= "$out/heldout_colour_decoy"
run gif_min experiments/gif.flags --gif_frames=min "$out/heldout_gif"
run gif_first experiments/gif.flags --gif_frames=first "$out/heldout_gif"
