#!/usr/bin/env bash
# OpenRLHF with genrm-platform as its remote reward model: OpenRLHF POSTs {"query", "prompts", "labels"}
# to --remote_rm_url and reads {"rewards", "scores", "extra_logs"}; the router's /get_reward speaks that.
# ?recipe=fapo picks the recipe (default: the servers' --recipe); labels carry the ground truth.
set -euo pipefail
ROUTER=${ROUTER:-http://127.0.0.1:9000}
python -m openrlhf.cli.train_ppo_ray \
  --pretrain Qwen/Qwen3-4B \
  --prompt_data your/math-dataset --input_key question --label_key answer --apply_chat_template \
  --remote_rm_url "$ROUTER/get_reward?recipe=fapo" \
  --advantage_estimator group_norm --n_samples_per_prompt 8 \
  "$@"
