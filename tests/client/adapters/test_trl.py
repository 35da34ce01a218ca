"""TRL adapter: ``RemoteReward`` against a real router + 2 servers, alone and inside ``GRPOTrainer`` on CPU."""

from __future__ import annotations

import os
import re
from pathlib import Path

import httpx
import pytest

from services.local_stack import LocalStack
from trainer_client.adapters.trl import RemoteReward, group_id
from trainer_client.reward_client import AsyncRewardClient

for _var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ[_var] = "1"  # nothing may be downloaded: the policy is the tiny model built offline

_SAMPLES = re.compile(r'^genrm_reward_samples_total\{[^}]*recipe="math"[^}]*\} (\S+)$', re.M)


def scored(server_url: str) -> int:
    """Samples this server scored with the math recipe (``genrm_reward_samples``, every outcome)."""
    text = httpx.get(server_url + "/metrics", timeout=10).text
    return int(sum(float(v) for v in _SAMPLES.findall(text)))


def per_server(stack: LocalStack) -> list[int]:
    return [scored(s.url) for s in stack.servers]


def chat(text: str, role: str = "user") -> list[dict[str, str]]:
    return [{"role": role, "content": text}]


async def test_plain_prompts(stack: LocalStack) -> None:
    reward = RemoteReward(stack.url, recipe="math", ground_truth_column="answer")
    assert reward.__name__ == "genrm_math"
    try:
        scores = await reward(
            prompts=["What is 2 + 2?", "What is 2 + 2?", "What is 3 * 3?"],
            completions=["So the answer is \\boxed{4}.", "I think \\boxed{5}.", "\\boxed{9}"],
            answer=["4", "4", "9"],
        )
    finally:
        await reward.aclose()
    assert scores == [1.0, -1.0, 1.0]


async def test_conversational_prompts_and_question_column(stack: LocalStack, monkeypatch) -> None:
    sent: list[dict] = []
    real = AsyncRewardClient.score_batch

    async def spy(self, samples, **kw):
        sent.extend(samples)
        return await real(self, samples, **kw)

    monkeypatch.setattr(AsyncRewardClient, "score_batch", spy)
    reward = RemoteReward(stack.url, ground_truth_column="solution", name="my_reward")
    assert reward.__name__ == "my_reward"
    system = {"role": "system", "content": "Put the answer in \\boxed{}."}
    prompts = [[system, *chat("What is 2 + 2?")]] * 2 + [[system, *chat("Half of 8?")]]
    completions = [chat("\\boxed{4}", "assistant"), chat("\\boxed{22}", "assistant"), chat("\\boxed{4}", "assistant")]
    try:
        scores = await reward(prompts=prompts, completions=completions, completion_ids=[[1], [2], [3]],
                              solution=[4, 4, "4"], trainer_state=None, log_metric=print)
        assert scores == [1.0, -1.0, 1.0]
        assert [s["question"] for s in sent] == ["What is 2 + 2?", "What is 2 + 2?", "Half of 8?"]
        assert [s["solution"] for s in sent] == ["\\boxed{4}", "\\boxed{22}", "\\boxed{4}"]
        assert sent[0]["group_id"] == sent[1]["group_id"] == group_id(prompts[0]) != sent[2]["group_id"]
        assert group_id(prompts[0]) == group_id([dict(m) for m in prompts[0]])  # stable: content, not identity

        sent.clear()  # question_column: the judge sees the dataset's problem text, not the templated prompt
        reward.question_column = "problem"
        scores = await reward(prompts=["<templated>"], completions=["\\boxed{4}"], solution=["4"],
                              problem=["What is 2 + 2?"])
        assert scores == [1.0] and sent[0]["question"] == "What is 2 + 2?"
    finally:
        await reward.aclose()


async def test_one_group_goes_to_one_replica(stack: LocalStack) -> None:
    """The completions of one prompt share a group id: the router sends the whole group to one server."""
    reward = RemoteReward(stack.url)
    before = per_server(stack)
    try:
        scores = await reward(prompts=["What is 2 + 2?"] * 6, completions=[f"\\boxed{{{i}}}" for i in range(6)],
                              answer=["4"] * 6)
    finally:
        await reward.aclose()
    assert scores == [-1.0] * 4 + [1.0, -1.0]
    grew = sorted(a - b for a, b in zip(per_server(stack), before, strict=True))
    assert grew == [0, 6]


async def test_missing_ground_truth_column_names_the_columns(stack: LocalStack) -> None:
    reward = RemoteReward(stack.url, ground_truth_column="answer")
    with pytest.raises(KeyError, match=r"'answer'.*'label'"):
        await reward(prompts=["q"], completions=["a"], label=["1"])


async def test_unreachable_router_gives_none() -> None:
    """on_failure="none" (the default): TRL drops a None reward instead of training on a made-up one."""
    reward = RemoteReward("http://127.0.0.1:9", timeout_s=2.0)
    try:
        assert await reward(prompts=["q", "q"], completions=["\\boxed{1}", "x"], answer=["1", "1"]) == [None, None]
    finally:
        await reward.aclose()


QUESTIONS = {"What is 2 + 2?": "4", "What is 3 + 5?": "8", "What is 10 - 7?": "3", "What is 6 / 2?": "3",
             "What is 2 * 4?": "8", "What is 9 - 4?": "5", "What is 1 + 1?": "2", "What is 3 * 3?": "9"}


def test_grpo_trainer_end_to_end(stack: LocalStack, tiny_model: Path, tmp_path: Path) -> None:
    trl = pytest.importorskip("trl", reason="TRL is not installed (pip install -e '.[dev]')")
    from datasets import Dataset
    from transformers import AutoTokenizer

    steps, batch = 2, 4
    dataset = Dataset.from_dict({"prompt": [chat(q) for q in QUESTIONS], "answer": list(QUESTIONS.values())})
    args = trl.GRPOConfig(
        output_dir=str(tmp_path), max_steps=steps, per_device_train_batch_size=batch, num_generations=2,
        max_completion_length=8, learning_rate=1e-5, logging_steps=1, report_to=[], use_cpu=True, bf16=False,
        save_strategy="no", seed=0, dataloader_num_workers=0, disable_tqdm=True,
    )
    reward = RemoteReward(stack.url, recipe="math", ground_truth_column="answer")
    trainer = trl.GRPOTrainer(
        model=str(tiny_model), reward_funcs=[reward], args=args, train_dataset=dataset,
        processing_class=AutoTokenizer.from_pretrained(tiny_model),
    )
    before = sum(per_server(stack))
    trainer.train()

    assert trainer.state.global_step == steps
    logged = [entry for entry in trainer.state.log_history if "rewards/genrm_math/mean" in entry]
    assert len(logged) == steps, trainer.state.log_history
    # A random policy never writes \boxed{<right answer>} in 8 tokens: every score is the math rule's -1.
    assert all(entry["rewards/genrm_math/mean"] == -1.0 for entry in logged), logged
    assert sum(per_server(stack)) - before == steps * batch
