"""GRPO with TRL, rewards from a GenRM router: ``RemoteReward`` is an ordinary TRL reward function.

    genrm up --replicas 2 --model /models/FAPO-GenRM-4B        # prints "router ready: http://127.0.0.1:PORT"
    python examples/trl_grpo.py --router-url http://127.0.0.1:PORT --model Qwen/Qwen3-0.6B --steps 100 --recipe fapo

The dataset needs a ``prompt`` column (text or chat messages) and the ground-truth column (``answer`` here);
TRL passes every other column to the reward function, which sends it to the router with each completion.
"""

import argparse

import torch
from datasets import Dataset
from transformers import AutoTokenizer
from trl import GRPOConfig, GRPOTrainer

from trainer_client.adapters.trl import RemoteReward

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--router-url", default=None, help="GenRM router (default: $GENRM_URL)")
parser.add_argument("--model", required=True, help="policy model: a hub id or a local directory")
parser.add_argument("--steps", type=int, default=100)
parser.add_argument("--recipe", default="math", help="math (rule check) or fapo (rule + GenRM judge), ...")
args = parser.parse_args()

# Replace with your data, e.g. datasets.load_dataset(...).map(...) into these two columns.
problems = {"What is 17 * 3?": "51", "What is 2^10?": "1024", "What is 144 / 12?": "12", "What is 7 + 8 * 2?": "23"}
dataset = Dataset.from_dict({
    "prompt": [[{"role": "user", "content": f"{q} Put the final answer in \\boxed{{}}."}] for q in problems],
    "answer": list(problems.values()),
})

# The recipe runs on the GenRM servers; a failed call gives None, which TRL leaves out of the advantage.
# Completions of one prompt share a group id: the router scores a GRPO group on one replica.
reward = RemoteReward(args.router_url, recipe=args.recipe, ground_truth_column="answer")
config = GRPOConfig(output_dir="grpo-genrm", max_steps=args.steps, per_device_train_batch_size=4, num_generations=4,
                    max_completion_length=512, logging_steps=1, report_to=[],  # logs rewards/genrm_<recipe>/mean
                    bf16=torch.cuda.is_available(), use_cpu=not torch.cuda.is_available())
trainer = GRPOTrainer(model=args.model, reward_funcs=[reward], args=config, train_dataset=dataset,
                      processing_class=AutoTokenizer.from_pretrained(args.model))
trainer.train()
