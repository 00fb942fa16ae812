"""Adding the prompt's special tokens to a tokenizer and model, with meaningful embeddings.

The compressed prompt (:mod:`generators.prompt`) writes small-vocabulary fields as dedicated
tokens (``<1>``, ``<1_day_ago>``, ``<search>``). The paper starts each new token's embedding at
the mean of the embeddings of its plain words' sub-word tokens (``1``, ``day``, ``ago``), so the
model begins from what the words already mean instead of noise. :func:`add_special_tokens` does
that for any Hugging Face causal LM; the trainer and the generator both call it, so a fine-tuned
checkpoint and a fresh base model see the same token ids.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from aigq.errors import AigqError


class TokenInitError(AigqError):
    """A special token's words give no sub-word tokens to initialise its embedding from."""


def _sub_word_ids(tokenizer: Any, words: str) -> list[int]:
    ids = tokenizer(words, add_special_tokens=False).input_ids
    return [int(i) for i in ids]


def _is_tied(input_weight: torch.Tensor, output: Any) -> bool:
    if output is None:
        return True
    weight = output.weight
    return bool(weight is input_weight or weight.data_ptr() == input_weight.data_ptr())


def add_special_tokens(tokenizer: Any, model: Any, token_words: Mapping[str, str]) -> list[str]:
    """Add ``token_words``' tokens that ``tokenizer`` lacks; initialise their embeddings.

    The tokens not in the vocabulary yet (the returned list, in ``token_words`` order) become
    extra special tokens, so they are never split nor normalised; tokens already there are left
    as they are (an ordinary word made special would vanish from ``skip_special_tokens``
    decoding). The model's input embeddings are grown when they have no spare rows
    (Qwen checkpoints are padded beyond the tokenizer, and are never shrunk here), and each new
    row is set to the mean of the rows of ``tokenizer(words, add_special_tokens=False)``'s ids.
    When the output embeddings are not tied to the input ones their new rows get the same
    treatment from the output matrix. Calling it again adds nothing and returns ``[]``.

    Raises :class:`TokenInitError` when a token's words tokenize to nothing.
    """
    vocab = tokenizer.get_vocab()
    missing = [token for token in token_words if token not in vocab]
    # sub-words are taken before the new tokens exist, so no word maps onto a new token
    sources = {token: _sub_word_ids(tokenizer, token_words[token]) for token in missing}
    for token, ids in sources.items():
        if not ids:
            raise TokenInitError(f"{token!r}: its words {token_words[token]!r} give no tokens")
    if not missing:
        return []
    tokenizer.add_special_tokens(
        {"extra_special_tokens": missing}, replace_extra_special_tokens=False
    )

    new_ids = {token: int(tokenizer.convert_tokens_to_ids(token)) for token in missing}
    needed = max(max(new_ids.values()) + 1, len(tokenizer))
    rows = model.get_input_embeddings().weight.shape[0]
    if needed > rows:
        model.resize_token_embeddings(needed, mean_resizing=False)

    input_weight: torch.Tensor = model.get_input_embeddings().weight
    output = model.get_output_embeddings()
    tied = _is_tied(input_weight, output)
    with torch.no_grad():
        for token, new_id in new_ids.items():
            source = torch.tensor(sources[token], dtype=torch.long, device=input_weight.device)
            mean = input_weight.index_select(0, source).float().mean(dim=0)
            input_weight[new_id] = mean.to(input_weight.dtype)
            if not tied:
                out_weight: torch.Tensor = output.weight
                out_source = source.to(out_weight.device)
                out_mean = out_weight.index_select(0, out_source).float().mean(dim=0)
                out_weight[new_id] = out_mean.to(out_weight.dtype)
    return missing
