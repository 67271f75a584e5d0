"""The built-in corpus: pair split without leakage, correct answers, determinism, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pathwatch.errors import InputError
from pathwatch.testbed.corpus import OPERATORS, build_corpus, item_records

PRIMES = [5, 7, 11, 13, 17, 23]
REFERENCE = {
    "add": lambda a, b, p: (a + b) % p,
    "sub": lambda a, b, p: (a - b) % p,
    "mul": lambda a, b, p: (a * b) % p,
    "sq": lambda a, b, p: (a * a + b * b) % p,
}


@settings(max_examples=30, deadline=None)
@given(
    prime=st.sampled_from(PRIMES),
    fraction=st.floats(0.1, 0.9),
    seed=st.integers(0, 2**16),
)
def test_split_by_unordered_pair_covers_every_pair_once(
    prime: int, fraction: float, seed: int
) -> None:
    corpus = build_corpus(prime=prime, domains=tuple(OPERATORS), train_fraction=fraction, seed=seed)
    for split in corpus.domains:
        train = {frozenset((a, b)) for a, b, _ in split.train.tolist()}
        test = {frozenset((a, b)) for a, b, _ in split.test.tolist()}
        assert not train & test, split.name
        ordered = [(a, b) for a, b, _ in np.concatenate([split.train, split.test]).tolist()]
        assert sorted(ordered) == [(a, b) for a in range(prime) for b in range(prime)]
        assert len(train) == round(fraction * prime * (prime + 1) / 2)


@pytest.mark.parametrize("prime", [7, 13])
def test_answers_match_plain_python(prime: int) -> None:
    corpus = build_corpus(prime=prime, domains=tuple(OPERATORS), seed=3)
    for split in corpus.domains:
        items = np.concatenate([split.train, split.test]).tolist()
        if split.name == "facts":
            assert all(0 <= c < prime for _, _, c in items)
            assert not split.generalizable
            continue
        assert split.generalizable
        assert all(c == REFERENCE[split.name](a, b, prime) for a, b, c in items)


def test_validation_expressions_evaluate_left_to_right() -> None:
    corpus = build_corpus(prime=11, domains=("add", "mul", "facts"), n_validation=50, seed=1)
    assert corpus.validation_domains == ("add", "mul")
    records = corpus.validation_records()
    assert len(records) == 50
    for record in records:
        a, op1, b, op2, c, eq, d = record["text"].split()
        assert eq == "=" and record["prompt"] == record["text"].rsplit(" ", 1)[0]
        python_op = {"+": "add", "*": "mul"}
        first = REFERENCE[python_op[op1]](int(a), int(b), 11)
        assert int(d) == REFERENCE[python_op[op2]](first, int(c), 11)


def test_same_seed_same_corpus_other_seed_other_split() -> None:
    one, two = build_corpus(seed=5), build_corpus(seed=5)
    other = build_corpus(seed=6)
    for a, b, c in zip(one.domains, two.domains, other.domains, strict=True):
        np.testing.assert_array_equal(a.train, b.train)
        np.testing.assert_array_equal(a.test, b.test)
        assert not np.array_equal(a.train, c.train)
    np.testing.assert_array_equal(one.validation, two.validation)


@settings(max_examples=20, deadline=None)
@given(fraction=st.floats(0.05, 0.95), seed=st.integers(0, 2**16))
def test_a_smaller_facts_control_is_a_subset_and_leaves_arithmetic_alone(
    fraction: float, seed: int
) -> None:
    domains = ("add", "facts", "sub")
    full = build_corpus(prime=13, domains=domains, seed=seed)
    small = build_corpus(prime=13, domains=domains, seed=seed, facts_fraction=fraction)
    np.testing.assert_array_equal(full.validation, small.validation)
    for a, b in zip(full.domains, small.domains, strict=True):
        if a.name != "facts":
            np.testing.assert_array_equal(a.train, b.train)
            np.testing.assert_array_equal(a.test, b.test)
            continue
        pairs = {frozenset((x, y)) for x, y, _ in np.concatenate([b.train, b.test]).tolist()}
        assert len(pairs) == round(fraction * 13 * 14 / 2)
        # the kept facts are the full control's items (same values, same side of the split)
        for part, whole in ((b.train, a.train), (b.test, a.test)):
            assert {tuple(r) for r in part.tolist()} <= {tuple(r) for r in whole.tolist()}


def test_records_score_only_the_answer() -> None:
    corpus = build_corpus(prime=5, domains=("sub",), seed=0)
    records = item_records("sub", corpus.domain("sub").train)
    assert {r["domain"] for r in records} == {"sub"}
    assert len({r["id"] for r in records}) == len(records)
    for r in records:
        a, op, b, eq, c = r["text"].split()
        assert (op, eq) == ("-", "=")
        assert r["prompt"] == f"{a} - {b} ="
        assert int(c) == (int(a) - int(b)) % 5


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"prime": 12}, "'prime' parameter of build_corpus must be a prime"),
        ({"prime": 3}, "'prime' parameter"),
        ({"domains": ()}, "'domains' parameter"),
        ({"domains": ("add", "add")}, "'domains' parameter"),
        ({"domains": ("ad",)}, "Did you mean 'add'"),
        ({"train_fraction": 1.0}, "'train_fraction' parameter"),
        ({"n_validation": 0}, "'n_validation' parameter"),
        ({"facts_fraction": 0.0}, "'facts_fraction' parameter"),
        ({"facts_fraction": 1.5}, "'facts_fraction' parameter"),
    ],
)
def test_bad_input_is_one_line_input_error(kwargs: dict, match: str) -> None:
    with pytest.raises(InputError, match=match) as info:
        build_corpus(**kwargs)
    assert "\n" not in str(info.value)


def test_unknown_domain_lookup() -> None:
    with pytest.raises(InputError, match="Unknown domain 'mull'"):
        build_corpus(prime=5).domain("mull")
