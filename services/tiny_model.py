"""``genrm tiny-model DIR``: a small random-weight causal LM that loads with ``from_pretrained``.

It exists so the whole stack (and the test suite) runs on any CPU with nothing downloaded: a
Llama-architecture model with random weights and a byte-level BPE tokenizer trained here, offline,
with a ChatML chat template. Its judgments are meaningless noise; point ``--model`` at a real GenRM
(e.g. a local FAPO-GenRM-4B directory) for real rewards.
"""

from __future__ import annotations

from pathlib import Path

from services.genrm_server.model_marker import has_marker, write_marker

WARNING = (
    "tiny random-weight model: its outputs and judgments are meaningless; pass --model DIR with a "
    "real GenRM (e.g. a local FAPO-GenRM-4B directory) for real rewards"
)

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

# ChatML, as the Qwen family (and FAPO-GenRM-4B, a Qwen3 fine-tune) uses it.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# Training text for the tokenizer: the judge prompts' vocabulary, math notation and digits.
_CORPUS = [
    "The following is a math problem with its ground truth answer, along with an AI solution (split into steps):",
    "[Math Problem] [Ground Truth] [AI Solution] Your task is to review and critique the solution step by step.",
    "Once you identify an error in a step, return the index of the step where the earliest error occurs.",
    "Otherwise, return the index of -1 (which typically denotes 'not found').",
    "Please reason step by step, put your final answer (i.e., the index) in \\boxed{}.",
    "Please put your final answer (i.e., 'True' or 'False') in \\boxed{}. Answer: $Answer",
    "Step 1: Let x be the number. Step 2: Then 2x + 3 = 11, so x = 4. The answer is \\boxed{4}.",
    "\\frac{1}{2} \\sqrt{2} \\dfrac{3}{4} \\pi \\cdot \\times \\leq \\geq \\neq x^2 + y^2 = r^2 (a, b) [0, 1]",
    "Compute the sum of all positive integers n such that n^2 - 19n + 99 is a perfect square.",
    "Find the remainder when 2^{100} is divided by 7. What is the probability that the product is even?",
    "0 1 2 3 4 5 6 7 8 9 10 11 12 100 1000 3.14 -1 True False yes no correct incorrect wrong right",
]


def build_tokenizer(vocab_size: int = 1024):
    """Train a byte-level BPE tokenizer on the built-in corpus (no download, deterministic)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte encodes: any text is valid
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>"],
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def write_tiny_model(
    out_dir: str | Path,
    *,
    hidden_size: int = 64,
    layers: int = 2,
    heads: int = 4,
    kv_heads: int = 2,
    max_position_embeddings: int = 4096,
    seed: int = 0,
    classifier: bool = False,
) -> Path:
    """Write tokenizer, config, generation config and random weights to ``out_dir``.

    ``classifier``: a ``LlamaForSequenceClassification`` with one label instead (a discriminative reward
    model for the ``disrm`` recipe; same tokenizer, ``pad_token_id`` set so batched scoring finds each last token).
    """
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer()
    tokenizer.save_pretrained(out)
    eos_ids = [tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.convert_tokens_to_ids("<|endoftext|>")]
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=max_position_embeddings,
        bos_token_id=None,
        eos_token_id=eos_ids,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
        **({"num_labels": 1} if classifier else {}),
    )
    torch.manual_seed(seed)
    if classifier:
        model = LlamaForSequenceClassification(config)
    else:
        model = LlamaForCausalLM(config)
        model.generation_config = GenerationConfig(eos_token_id=eos_ids, pad_token_id=tokenizer.pad_token_id)
    model.save_pretrained(out)
    write_marker(out, WARNING, seed=seed)  # the server logs WARNING when it loads this directory
    return out


def is_tiny_model(model_dir: str | Path | None) -> bool:
    return has_marker(model_dir)
