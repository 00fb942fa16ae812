"""A tiny Qwen2-architecture model with a tokenizer trained here: nothing is downloaded.

Two uses: plumbing tests of the generation backends (random weights are enough to check that
vLLM loads the folder, batches, samples ``n`` and honours the output format), and the
starting point of the embedded default model that IL-SFT trains (issue 6).

The tokenizer is byte-level BPE, so any text (accents, CJK, emoji) encodes without unknown
tokens; the prompt's special tokens are added whole, so each is one id and can never be
split or produced by user text (the prompt builder escapes ``<`` and ``>``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from generators.prompt import SPECIAL_TOKENS

EOS = "<|endoftext|>"


@dataclass(frozen=True)
class TinyConfig:
    """Shape of the tiny model. Defaults: ~1M parameters, trains on a CPU in minutes."""

    vocab_size: int = 4_000
    """BPE vocabulary target (the real size also counts the special tokens)"""
    hidden_size: int = 128
    """width; head size is hidden_size / heads and vLLM's CPU kernels want 32, 64, 128..."""
    layers: int = 2
    heads: int = 2
    kv_heads: int = 1
    intermediate_size: int = 384
    max_positions: int = 2_048
    seed: int = 0

    def __post_init__(self) -> None:
        if self.hidden_size % self.heads or self.heads % self.kv_heads:
            raise ValueError("hidden_size must divide by heads, and heads by kv_heads")
        if self.vocab_size < 300:
            raise ValueError("vocab_size must be >= 300 (256 bytes plus merges)")


def train_tokenizer(texts: Iterable[str], vocab_size: int, special: bool = True) -> Any:
    """A byte-level BPE ``PreTrainedTokenizerFast``, with the prompt's special tokens unless
    ``special`` is false (the trainer adds them itself, with mean-of-sub-word embeddings)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(texts, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=core, eos_token=EOS, pad_token=EOS, bos_token=None, unk_token=None
    )
    if special:
        tokenizer.add_special_tokens({"additional_special_tokens": list(SPECIAL_TOKENS)})
    return tokenizer


def build_tiny_model(path: Path, texts: Iterable[str], config: TinyConfig | None = None) -> Path:
    """Train a tokenizer on ``texts``, create the model with random weights, save both."""
    config = config or TinyConfig()
    tokenizer = train_tokenizer(texts, config.vocab_size)
    model = new_tiny_model(tokenizer, config)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def new_tiny_model(tokenizer: Any, config: TinyConfig) -> Any:
    """A Qwen2 causal LM of ``config``'s shape with random weights, sized to ``tokenizer``."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(config.seed)
    eos_id = tokenizer.convert_tokens_to_ids(EOS)
    return Qwen2ForCausalLM(  # type: ignore[no-untyped-call]
        Qwen2Config(
            vocab_size=len(tokenizer),
            hidden_size=config.hidden_size,
            intermediate_size=config.intermediate_size,
            num_hidden_layers=config.layers,
            num_attention_heads=config.heads,
            num_key_value_heads=config.kv_heads,
            max_position_embeddings=config.max_positions,
            tie_word_embeddings=True,
            bos_token_id=eos_id,
            eos_token_id=eos_id,
            pad_token_id=eos_id,
        )
    )
