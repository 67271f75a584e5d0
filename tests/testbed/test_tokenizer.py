"""The word-level tokenizer: one token per word, round trip, and AutoTokenizer loading."""

from __future__ import annotations

from pathlib import Path

from transformers import AutoTokenizer

from pathwatch.testbed.corpus import build_corpus, item_records
from pathwatch.testbed.tokenizer import PAD, UNK, build_tokenizer


def _texts() -> tuple[list[str], list[str], list[str]]:
    corpus = build_corpus(prime=11, domains=("add", "sub", "mul", "sq", "facts"), seed=0)
    records = [r for split in corpus.domains for r in item_records(split.name, split.train)]
    records += corpus.validation_records()
    return corpus.vocabulary(), [r["text"] for r in records], [r["prompt"] for r in records]


def test_one_token_per_word_and_round_trip() -> None:
    vocab, texts, prompts = _texts()
    tok = build_tokenizer(vocab)
    assert len(tok) == len(vocab) + 2
    assert (tok.pad_token, tok.pad_token_id, tok.unk_token) == (PAD, 0, UNK)
    for text, prompt in zip(texts, prompts, strict=True):
        ids = tok(text)["input_ids"]
        assert ids == [vocab.index(w) + 2 for w in text.split()]
        assert tok.decode(ids) == text
        assert tok(prompt)["input_ids"] == ids[:-1]  # only the answer is scored


def test_unknown_words_map_to_unk() -> None:
    tok = build_tokenizer(["0", "1", "+", "="])
    assert tok("1 + 7 = 0")["input_ids"] == [3, 4, 1, 5, 2]


def test_auto_tokenizer_loads_the_saved_tokenizer(tmp_path: Path) -> None:
    vocab, texts, _ = _texts()
    tok = build_tokenizer(vocab)
    tok.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert loaded.pad_token_id == 0
    # BOS and EOS saved (as [PAD]): lm-eval's loglikelihood and generate_until need them
    assert (loaded.bos_token_id, loaded.eos_token_id) == (0, 0)
    assert loaded(texts[0])["input_ids"] == tok(texts[0])["input_ids"]  # none added
    batch = loaded(texts[:8], padding=True)["input_ids"]
    assert batch == tok(texts[:8], padding=True)["input_ids"]
