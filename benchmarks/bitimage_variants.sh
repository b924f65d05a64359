#!/usr/bin/env bash
# Train bitimage generators that differ in one setting on one shared tokenizer, then
# compare them with benchmarks/bitimage_models.py.
#
# Usage: bash benchmarks/bitimage_variants.sh TOKENIZER_MODEL OUT_DIR [GENERATOR_STEPS]
#
# TOKENIZER_MODEL is a model folder whose tokenizer every variant reuses
# (--tokenizer-from). The variants are k=1, k=4 and k=16 with the diffusion head, and
# k=1 and k=4 with the per-bit Bernoulli head, each trained for GENERATOR_STEPS
# (default 1000) steps with otherwise default settings. VARIANTS, a space-separated
# list of these names (k1 k4 k16 k1-bernoulli k4-bernoulli), trains a subset; k1 is the
# baseline and must come first. Rerunning the script resumes unfinished variants and
# skips finished ones. The comparison is written to OUT_DIR/bitimage_models.json.
set -euo pipefail

tokenizer_model=${1:?usage: bash benchmarks/bitimage_variants.sh TOKENIZER_MODEL OUT_DIR [GENERATOR_STEPS]}
out_dir=${2:?usage: bash benchmarks/bitimage_variants.sh TOKENIZER_MODEL OUT_DIR [GENERATOR_STEPS]}
steps=${3:-1000}
mkdir -p "$out_dir"

declare -A settings=([k1]="1 diffusion" [k4]="4 diffusion" [k16]="16 diffusion" [k1-bernoulli]="1 bernoulli"
                     [k4-bernoulli]="4 bernoulli")
names=${VARIANTS:-k1 k4 k16 k1-bernoulli k4-bernoulli}
for name in $names; do
    if [[ -z ${settings[$name]:-} ]]; then
        echo "unknown variant $name: expected one of ${!settings[*]}" >&2
        exit 2
    fi
done

model_options=()
for name in $names; do
    read -r k head <<< "${settings[$name]}"
    folder=$out_dir/$name
    if [[ -f $folder/bitimage.json ]]; then
        echo "$name: finished, skipped"
    elif [[ -f $folder/training/config.json ]]; then
        erlgym image train --resume --out "$folder"
    else
        erlgym image train --out "$folder" --tokenizer-from "$tokenizer_model" --generator-steps "$steps" \
            --tokens-per-step "$k" --head "$head"
    fi
    model_options+=(--model "$name=$folder")
done

python benchmarks/bitimage_models.py "${model_options[@]}" --out "$out_dir/bitimage_models.json"
