#!/usr/bin/env bash
# slime with genrm-platform as its remote reward model: slime POSTs {"prompt", "response", "label"} to
# --rm-url; the router's /slime/reward answers a dict whose score is under "score" (hence --reward-key score)
# with the recipe's other keys beside it. ?recipe=NAME picks the recipe.
set -euo pipefail
ROUTER=${ROUTER:-http://127.0.0.1:9000}
python train.py \
  --rm-type remote_rm \
  --rm-url "$ROUTER/slime/reward?recipe=math" \
  --reward-key score \
  --n-samples-per-prompt 8 \
  "$@"
