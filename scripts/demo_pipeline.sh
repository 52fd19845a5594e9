#!/usr/bin/env bash
# The demo-size pipeline with every command's defaults, timed stage by stage.
set -euo pipefail
G=${GAUDI:-$(cd "$(dirname "$0")/.." && pwd)/.venv/bin/gaudi}
W=${1:-/tmp/demo600}
rm -rf "$W"
t() { local s=$(date +%s); "$@"; echo "TIME $(( $(date +%s) - s )) s: $4"; }
t $G -w $W demo
t $G -w $W export-manifest --out data/manifest.csv
t $G -w $W descriptions export --out data/tag_descriptions.json
cd $W
C="--manifest data/manifest.csv --tag-desc data/tag_descriptions.json"
t $G -w $W train-align $C --out runs/align_s1
t $G -w $W pseudolabels $C --align-ckpt runs/align_s1/checkpoints/model.pt --out runs/pseudomasks_v1
t $G -w $W train-segmenter $C --pseudomasks runs/pseudomasks_v1 --out runs/seg_s1
t $G -w $W pseudolabels $C --align-ckpt runs/align_s1/checkpoints/model.pt --segmenter-ckpt runs/seg_s1/checkpoints/model.pt --out runs/pseudomasks_v2
t $G -w $W train-segmenter $C --pseudomasks runs/pseudomasks_v2 --init-from runs/seg_s1/checkpoints/model.pt --out runs/seg_s2
echo ALLDONE
