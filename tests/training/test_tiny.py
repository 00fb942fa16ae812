"""The word-level tokenizer of the default model: whole searched words only, and it round-trips
through a saved model folder (transformers must load it as saved, not rebuild it)."""

from __future__ import annotations

import random
from pathlib import Path

from transformers import AutoTokenizer

from generators.output import parse_queries
from generators.prompt import SPECIAL_TOKENS, compressed_prompt
from training.tiny import EOS, UNK, TinyConfig, build_tiny_model, train_word_tokenizer

QUERIES = ["google", "bank of america", "yahoo mail", "www.google.com", "cheap flights to paris"]


def test_every_token_is_a_whole_word_of_the_texts_so_no_output_spells_a_non_word() -> None:
    tok = train_word_tokenizer(["\n".join(QUERIES), "google maps\nfree"], vocab_size=100)
    words = {word for text in [*QUERIES, "google maps", "free"] for word in text.split()}
    specials = {EOS, UNK, *SPECIAL_TOKENS}
    for token, id_ in tok.get_vocab().items():
        text = tok.decode([id_], skip_special_tokens=True)
        assert token in specials or text in {"\n"} or text.strip() in words, token
    # any sequence of ids decodes to known words only: no two tokens glue into a new word
    rng = random.Random(0)
    ids = list(tok.get_vocab().values())
    for _ in range(200):
        text = tok.decode(rng.choices(ids, k=12), skip_special_tokens=True)
        assert set(text.split()) <= words, text
    # an unseen word is <unk>, never spelt from pieces
    assert tok("walium", add_special_tokens=False).input_ids == [tok.unk_token_id]


def test_a_list_and_a_prompt_encode_word_for_word_and_decode_to_the_parsed_list() -> None:
    tok = train_word_tokenizer(["\n".join(QUERIES)], vocab_size=100)
    target = "\n".join(QUERIES)
    ids = tok(target, add_special_tokens=False).input_ids
    assert len(ids) == sum(len(q.split()) for q in QUERIES) + len(QUERIES) - 1  # words + newlines
    assert parse_queries(tok.decode(ids), k=10) == QUERIES
    # the prompt's history says a query's words with the same tokens as the list does
    prompt = compressed_prompt([], [(0, "search", "google", "")], now_ms=0, history=QUERIES)
    prompt_ids = tok(prompt, add_special_tokens=False).input_ids
    [newline] = tok("\n", add_special_tokens=False).input_ids
    assert all(i in prompt_ids for i in ids if i != newline)


def test_a_saved_tiny_model_folder_loads_the_same_tokenizer(tmp_path: Path) -> None:
    folder = build_tiny_model(tmp_path / "m", QUERIES, TinyConfig(vocab_size=64, layers=1))
    loaded = AutoTokenizer.from_pretrained(str(folder))
    fresh = train_word_tokenizer(QUERIES, vocab_size=64)
    text = "bank of america\nyahoo mail"
    assert loaded.tokenize(text) == fresh.tokenize(text) == [
        "Ġbank", "Ġof", "Ġamerica", "Ċ", "Ġyahoo", "Ġmail",
    ]  # fmt: skip
    assert (folder / "config.json").read_text().count('"qwen3"') == 1
