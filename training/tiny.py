"""A tiny Qwen3-architecture model with a tokenizer trained here: nothing is downloaded.

Two uses: plumbing tests of the generation backends (random weights are enough to check that
vLLM loads the folder, batches, samples ``n`` and honours the output format), and the
starting point of the embedded default model that IL-SFT trains (issue 6).

Two tokenizers:

- ``word`` (the default model's): one id per whole word (a run of non-space characters, as
  the evaluation counts words) seen in the texts it is trained on, anything else ``<unk>``; a
  newline and the prompt's braces are tokens of their own. IL-SFT trains it on the run's
  *targets*, the queries users actually searched, so every token the model can emit is a word
  somebody searched: it cannot spell a non-word ("walium"), and copying a query from the
  prompt is a few tokens, not a dozen sub-words. Every word token carries its leading space
  (a space is put before each line's first word), so two words can never be glued into a
  third ("free" + "th"). Tokens are GPT-2 byte-level strings with its decoder, the layout
  vLLM and its structured-output grammar (xgrammar) read as they read any GPT-2 tokenizer.
- ``bpe``: byte-level BPE, so any text (accents, CJK, emoji) encodes without unknown tokens.

The prompt's special tokens are added whole, so each is one id and can never be split or
produced by user text (the prompt builder escapes ``<`` and ``>``).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from generators.prompt import SPECIAL_TOKENS

EOS = "<|endoftext|>"
UNK = "<unk>"
TokenizerKind = Literal["word", "bpe"]


@dataclass(frozen=True)
class TinyConfig:
    """Shape of the tiny model and its tokenizer. Defaults: trains on a CPU in minutes."""

    tokenizer: TokenizerKind = "word"
    """"word": whole words only (:func:`train_word_tokenizer`); "bpe": byte-level BPE"""
    vocab_size: int = 12_000
    """vocabulary target (the real size also counts the special tokens); the most frequent
    words are kept when the texts have more"""
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
        if self.tokenizer not in ("word", "bpe"):
            raise ValueError(f"tokenizer must be word or bpe, got {self.tokenizer!r}")
        if self.vocab_size < (300 if self.tokenizer == "bpe" else 16):
            raise ValueError("vocab_size must be >= 300 for bpe (bytes plus merges), 16 for word")


def train_tokenizer(texts: Iterable[str], vocab_size: int, special: bool = True) -> Any:
    """A byte-level BPE ``PreTrainedTokenizerFast``, with the prompt's special tokens unless
    ``special`` is false (the trainer adds them itself, with mean-of-sub-word embeddings)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

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
    return _fast(core, None, special)


def _fast(core: Any, unk: str | None, special: bool) -> Any:
    """``core`` as a ``PreTrainedTokenizerFast`` (EOS pads), with the prompt's special tokens
    unless ``special`` is false."""
    from transformers import PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=core, eos_token=EOS, pad_token=EOS, unk_token=unk, bos_token=None
    )
    if special:
        tokenizer.add_special_tokens({"additional_special_tokens": list(SPECIAL_TOKENS)})
    return tokenizer


def train_word_tokenizer(texts: Iterable[str], vocab_size: int, special: bool = True) -> Any:
    """A word-level ``PreTrainedTokenizerFast``: one id per word seen in ``texts`` (a space
    and a run of non-space characters; a newline, ``{`` and ``}`` are tokens of their own),
    the ``vocab_size`` most frequent kept, any other word ``<unk>``. With the prompt's special
    tokens unless ``special`` is false.

    Text is normalised so that every word has a space before it (at the start, after a
    newline, after ``{``): "google" in the prompt's history and "google" as the list's first
    query are one token, and the model can only ever write whole words, space-separated.
    Decoding gives " google\n yahoo mail"; the output parser strips the edge spaces.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    core = Tokenizer(models.WordLevel(unk_token=UNK))
    core.normalizer = normalizers.Sequence(
        [normalizers.Replace("\n", "\n "), normalizers.Replace("{", "{ "), normalizers.Prepend(" ")]
    )
    core.pre_tokenizer = pre_tokenizers.Sequence(
        [  # keep " word", "\n", "{", "}"; drop the other spaces; then bytes as GPT-2 shows them
            pre_tokenizers.Split(Regex(r" [^\s{}]+|\n|[{}]"), "removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    core.decoder = decoders.ByteLevel()
    trainer = trainers.WordLevelTrainer(
        vocab_size=vocab_size, min_frequency=1, special_tokens=[EOS, UNK], show_progress=False
    )
    # the newline ends a query: without it no list could be written (nor matched by vLLM's
    # structured-output grammar), so it is in every vocabulary, ranked as the most frequent
    core.train_from_iterator(itertools.chain(texts, ["\n"] * 10_000), trainer=trainer)
    return _fast(core, UNK, special)


def new_tokenizer(texts: Iterable[str], config: TinyConfig, special: bool = True) -> Any:
    """``config``'s kind of tokenizer, trained on ``texts``."""
    train = train_word_tokenizer if config.tokenizer == "word" else train_tokenizer
    return train(texts, config.vocab_size, special)


def build_tiny_model(path: Path, texts: Iterable[str], config: TinyConfig | None = None) -> Path:
    """Train a tokenizer on ``texts``, create the model with random weights, save both."""
    config = config or TinyConfig()
    tokenizer = new_tokenizer(texts, config)
    model = new_tiny_model(tokenizer, config)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def new_tiny_model(tokenizer: Any, config: TinyConfig) -> Any:
    """A Qwen3 causal LM of ``config``'s shape with random weights, sized to ``tokenizer``.

    Qwen3, not Qwen2: transformers (5.x, in both environments) loads the tokenizer of a
    ``qwen2`` folder as its own ``Qwen2Tokenizer``, rebuilt from the vocabulary with Qwen's
    BPE pre-tokenisation, whatever ``tokenizer.json`` says, which turns a word-level
    vocabulary into nothing; a ``qwen3`` folder's tokenizer loads as saved.
    """
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(config.seed)
    eos_id = tokenizer.convert_tokens_to_ids(EOS)
    return Qwen3ForCausalLM(  # type: ignore[no-untyped-call]
        Qwen3Config(
            vocab_size=len(tokenizer),
            hidden_size=config.hidden_size,
            head_dim=config.hidden_size // config.heads,
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
