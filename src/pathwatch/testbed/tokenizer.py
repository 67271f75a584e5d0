"""A word-level tokenizer for the testbed corpus, loadable with ``AutoTokenizer`` from a checkpoint."""

from __future__ import annotations

from collections.abc import Sequence

from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

PAD = "[PAD]"
UNK = "[UNK]"


def build_tokenizer(words: Sequence[str]) -> PreTrainedTokenizerFast:
    """One token per whitespace-separated word; ``[PAD]`` is id 0 and ``[UNK]`` id 1.

    ``[PAD]`` is also the BOS and EOS token, so that a saved checkpoint is evaluable by
    lm-evaluation-harness as it is: loglikelihood prefixes an empty context with the BOS (else
    EOS) id, and generate_until stops at EOS. Reusing ``[PAD]`` rather than adding tokens keeps
    the vocabulary, hence every model and every stored checkpoint, as it was; no special token is
    ever added to an encoding.

    Parameters
    ----------
    words : sequence of str
        The vocabulary, in id order after the two special tokens.

    Returns
    -------
    transformers.PreTrainedTokenizerFast
        Adds no special tokens, so a prompt's ids are a prefix of its text's ids.

    Examples
    --------
    >>> tok = build_tokenizer(["0", "1", "+", "="])
    >>> tok("1 + 1 = 0")["input_ids"]
    [3, 4, 3, 5, 2]
    """
    vocab = {PAD: 0, UNK: 1} | {w: i + 2 for i, w in enumerate(words)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token=PAD, unk_token=UNK, bos_token=PAD, eos_token=PAD
    )
