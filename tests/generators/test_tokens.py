"""Special tokens: added unsplittable, embeddings initialised to their sub-words' mean.

A tiny word-level tokenizer and a one-layer Qwen2 model are built locally (nothing is
downloaded).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

from generators.prompt import SPECIAL_TOKENS, TOKEN_WORDS, compressed_prompt
from generators.tokens import TokenInitError, add_special_tokens

WORDS = "today 1 day ago days week weeks month older search click hint running shoes " + " ".join(
    str(i) for i in range(2, 21)
)


def _tokenizer() -> Any:  # transformers' classes are only partly typed
    tokenizer = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordLevelTrainer(special_tokens=["[UNK]", "[EOS]"])
    tokenizer.train_from_iterator([WORDS], trainer)
    fast: Any = PreTrainedTokenizerFast
    return fast(tokenizer_object=tokenizer, unk_token="[UNK]", eos_token="[EOS]")


def _model(vocab_size: int, *, tied: bool) -> Any:
    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=256,
        tie_word_embeddings=tied,
    )
    model_class: Any = Qwen2ForCausalLM
    return model_class(config)


def _weights(model: Any) -> tuple[torch.Tensor, torch.Tensor]:
    return model.get_input_embeddings().weight, model.get_output_embeddings().weight


def _mean_rows(weight: torch.Tensor, ids: list[int]) -> torch.Tensor:
    return weight[ids].mean(dim=0)


@pytest.mark.parametrize("tied", [True, False])
def test_new_tokens_get_mean_of_sub_word_embeddings(tied: bool) -> None:
    tokenizer = _tokenizer()
    model = _model(len(tokenizer), tied=tied)
    old_rows = len(tokenizer)
    old_input, old_output = (w.detach().clone() for w in _weights(model))
    sub_ids = {
        token: tokenizer(words, add_special_tokens=False).input_ids
        for token, words in TOKEN_WORDS.items()
    }

    added = add_special_tokens(tokenizer, model, TOKEN_WORDS)

    assert added == list(SPECIAL_TOKENS)
    assert len(tokenizer) == old_rows + len(SPECIAL_TOKENS)
    input_weight, output_weight = _weights(model)
    assert input_weight.shape[0] == len(tokenizer)
    assert output_weight.shape[0] == len(tokenizer)
    assert (input_weight.data_ptr() == output_weight.data_ptr()) is tied
    assert torch.equal(input_weight[:old_rows], old_input)
    assert torch.equal(output_weight[:old_rows], old_output)
    for token in SPECIAL_TOKENS:
        new_id = tokenizer.convert_tokens_to_ids(token)
        assert new_id >= old_rows
        assert torch.allclose(input_weight[new_id], _mean_rows(old_input, sub_ids[token]))
        assert torch.allclose(output_weight[new_id], _mean_rows(old_output, sub_ids[token]))
    assert sub_ids["<1_day_ago>"] == [
        tokenizer.convert_tokens_to_ids(w) for w in ("1", "day", "ago")
    ]


def test_special_tokens_are_never_split() -> None:
    tokenizer = _tokenizer()
    add_special_tokens(tokenizer, _model(len(tokenizer), tied=True), TOKEN_WORDS)
    day_ago = tokenizer.convert_tokens_to_ids("<1_day_ago>")
    assert tokenizer("<1_day_ago>", add_special_tokens=False).input_ids == [day_ago]
    prompt = compressed_prompt([], [(0, "search", "running shoes", "")], now_ms=86_400_000)
    ids = tokenizer(prompt, add_special_tokens=False).input_ids
    for token in ("<1>", "<1_day_ago>", "<search>"):
        assert ids.count(tokenizer.convert_tokens_to_ids(token)) == 1
    assert "<1_day_ago>" in tokenizer.all_special_tokens


def test_second_call_adds_nothing_and_padded_models_are_not_resized() -> None:
    tokenizer = _tokenizer()
    padded = len(tokenizer) + 64  # like Qwen checkpoints: spare rows beyond the tokenizer
    model = _model(padded, tied=True)
    assert add_special_tokens(tokenizer, model, TOKEN_WORDS) == list(SPECIAL_TOKENS)
    assert _weights(model)[0].shape[0] == padded
    before = _weights(model)[0].detach().clone()
    assert add_special_tokens(tokenizer, model, TOKEN_WORDS) == []
    assert torch.equal(_weights(model)[0], before)


def test_existing_tokens_are_skipped() -> None:
    tokenizer = _tokenizer()
    model = _model(len(tokenizer), tied=True)
    added = add_special_tokens(tokenizer, model, {"today": "today", "<new>": "running shoes"})
    assert added == ["<new>"]
    assert "today" not in tokenizer.all_special_tokens
    assert "<new>" in tokenizer.all_special_tokens
    assert tokenizer("today", add_special_tokens=False).input_ids == [
        tokenizer.convert_tokens_to_ids("today")
    ]


def test_words_without_tokens_are_an_error() -> None:
    tokenizer = _tokenizer()
    with pytest.raises(TokenInitError, match="<empty>"):
        add_special_tokens(tokenizer, _model(len(tokenizer), tied=True), {"<empty>": "   "})
