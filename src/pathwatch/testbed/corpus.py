"""The testbed's built-in multi-domain corpus, generated on the fly and deterministic for a seed.

Every item is one line ``"a OP b = c"`` over the numbers ``0 … p-1`` (p prime); only the answer ``c``
is scored. Arithmetic domains compute ``c`` modulo p and can be *generalized* to pairs never seen in
training. The control domain ``facts`` assigns every ordered pair an independent random value: its
held-out items can only be guessed (chance = 1/p), so it can be memorized but never generalized.

Train and held-out items are split by **unordered pair** {a, b}: (a, b) and (b, a) always land on
the same side. A random split of ordered pairs leaks commutativity (and sub's antisymmetry) into the
held-out set, which then looks "generalized" before any grokking.

The validation set comes from a different distribution than the accuracy items, as pretraining
validation text does: three-operand expressions ``"a OP b OP c = d"`` (evaluated left to right),
a format the model never trains on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pathwatch._validate import check_float, check_int, is_int
from pathwatch.errors import invalid_parameter, unknown_name

# domain -> operator token; "facts" is the memorization-only control
OPERATORS: dict[str, str] = {"add": "+", "sub": "-", "mul": "*", "sq": "^", "facts": "?"}
ARITHMETIC: tuple[str, ...] = ("add", "sub", "mul", "sq")
EQUALS = "="


def _apply(domain: str, a: np.ndarray, b: np.ndarray, prime: int) -> np.ndarray:
    """The answer of an arithmetic domain for operand arrays ``a`` and ``b`` (same shape)."""
    if domain == "add":
        return (a + b) % prime
    if domain == "sub":
        return (a - b) % prime
    if domain == "mul":
        return (a * b) % prime
    return (a * a + b * b) % prime  # "sq": a² + b²


def _is_prime(n: int) -> bool:
    return n >= 2 and all(n % k for k in range(2, int(n**0.5) + 1))


@dataclass(frozen=True)
class DomainSplit:
    """Train and held-out items of one domain.

    Attributes
    ----------
    name : str
        Domain name, a key of :data:`OPERATORS`.
    train, test : numpy.ndarray
        int64 arrays of shape (n, 3): columns a, b, answer.
    """

    name: str
    train: np.ndarray
    test: np.ndarray

    @property
    def generalizable(self) -> bool:
        """Whether held-out items can be answered by a rule (False for the ``facts`` control)."""
        return self.name in ARITHMETIC


@dataclass(frozen=True)
class Corpus:
    """The whole corpus: one :class:`DomainSplit` per domain plus a validation set.

    Attributes
    ----------
    prime : int
        The modulus p; the numbers are ``0 … p-1``.
    domains : tuple of DomainSplit
        In the order requested.
    validation : numpy.ndarray
        int64 array of shape (V, 6): a, op1 index, b, op2 index, c, answer, where op indices point
        into ``validation_domains``.
    validation_domains : tuple of str
        The arithmetic domains whose operators the validation expressions use.
    """

    prime: int
    domains: tuple[DomainSplit, ...]
    validation: np.ndarray
    validation_domains: tuple[str, ...]

    def domain(self, name: str) -> DomainSplit:
        """The split of domain ``name``."""
        for split in self.domains:
            if split.name == name:
                return split
        raise unknown_name("domain", name, [d.name for d in self.domains])

    def vocabulary(self) -> list[str]:
        """Every word a corpus of this prime can use: the numbers, every operator, and ``=``."""
        return [str(n) for n in range(self.prime)] + list(OPERATORS.values()) + [EQUALS]

    def validation_records(self) -> list[dict[str, str]]:
        """Validation samples as records with ``id``, ``domain`` ("validation"), ``text``, ``prompt``."""
        ops = [OPERATORS[d] for d in self.validation_domains]
        records = []
        for i, (a, o1, b, o2, c, d) in enumerate(self.validation.tolist()):
            prompt = f"{a} {ops[o1]} {b} {ops[o2]} {c} {EQUALS}"
            records.append(
                {
                    "id": f"validation-{i:05d}",
                    "domain": "validation",
                    "text": f"{prompt} {d}",
                    "prompt": prompt,
                }
            )
        return records


def item_prompt(domain: str, a: int, b: int) -> str:
    """The prompt of an item, e.g. ``"12 + 7 ="``."""
    return f"{a} {OPERATORS[domain]} {b} {EQUALS}"


def item_id(domain: str, a: int, b: int) -> str:
    """The stable id of an item, e.g. ``"add-12-7"``."""
    return f"{domain}-{a}-{b}"


def item_records(domain: str, items: np.ndarray) -> list[dict[str, str]]:
    """Items of shape (n, 3) as records with ``id``, ``domain``, ``text``, ``prompt``."""
    records = []
    for a, b, c in items.tolist():
        prompt = item_prompt(domain, a, b)
        records.append(
            {
                "id": item_id(domain, a, b),
                "domain": domain,
                "text": f"{prompt} {c}",
                "prompt": prompt,
            }
        )
    return records


def build_corpus(
    *,
    prime: int = 59,
    domains: Sequence[str] = ("add", "sub", "mul", "facts"),
    train_fraction: float = 0.5,
    n_validation: int = 256,
    seed: int = 0,
    facts_fraction: float = 1.0,
) -> Corpus:
    """Generate the corpus: every ordered pair (a, b) of ``0 … p-1`` for every domain.

    Parameters
    ----------
    prime : int
        The modulus p (a prime ≥ 5); ``p * p`` items per domain.
    domains : sequence of str
        Keys of :data:`OPERATORS`; ``"facts"`` is the memorization-only control.
    train_fraction : float
        Fraction of unordered pairs {a, b} in training, in (0, 1); the rest is held out.
        Each domain draws its own split.
    n_validation : int
        Number of three-operand validation expressions (≥ 1).
    seed : int
        Seed of the splits, the facts' values and the validation expressions.
    facts_fraction : float
        Fraction of the unordered pairs that the ``facts`` control covers, in (0, 1] (both its train
        and held-out items). Random facts cost model capacity that the arithmetic domains then lack;
        a smaller control leaves them more of it.

    Returns
    -------
    Corpus

    Examples
    --------
    >>> corpus = build_corpus(prime=7, domains=("add", "facts"), seed=0)
    >>> [d.name for d in corpus.domains]
    ['add', 'facts']
    >>> sum(len(d.train) + len(d.test) for d in corpus.domains)
    98
    """
    if not is_int(prime) or prime < 5 or not _is_prime(prime):
        raise invalid_parameter("build_corpus", "prime", "a prime >= 5", prime)
    domains = tuple(domains)
    if not domains or len(set(domains)) != len(domains):
        raise invalid_parameter(
            "build_corpus", "domains", "a non-empty sequence of distinct names", domains
        )
    for name in domains:
        if name not in OPERATORS:
            raise unknown_name("domain", name, OPERATORS)
    check_float(
        "build_corpus",
        "train_fraction",
        train_fraction,
        low=0,
        high=1,
        low_open=True,
        high_open=True,
    )
    check_float("build_corpus", "facts_fraction", facts_fraction, low=0, high=1, low_open=True)
    check_int("build_corpus", "n_validation", n_validation, low=1)
    check_int("build_corpus", "seed", seed, low=0)

    rng = np.random.default_rng(seed)
    a, b = (g.ravel() for g in np.meshgrid(np.arange(prime), np.arange(prime), indexing="ij"))
    # index of each ordered pair's unordered pair {min, max} in the upper triangle
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    pair_index = lo * prime - lo * (lo - 1) // 2 + (hi - lo)
    n_pairs = prime * (prime + 1) // 2
    n_train = round(train_fraction * n_pairs)

    splits = []
    for name in domains:
        in_train = np.zeros(n_pairs, dtype=bool)
        in_train[rng.permutation(n_pairs)[:n_train]] = True
        covered = np.ones(n_pairs, dtype=bool)
        if name == "facts":
            answer = rng.integers(0, prime, size=a.shape)
            if facts_fraction < 1.0:  # its own generator: every other draw stays as it was
                drop = np.random.default_rng([seed, 1]).permutation(n_pairs)
                covered[drop[round(facts_fraction * n_pairs) :]] = False
        else:
            answer = _apply(name, a, b, prime)
        items = np.stack([a, b, answer], axis=1).astype(np.int64)
        mask, keep = in_train[pair_index], covered[pair_index]
        splits.append(DomainSplit(name=name, train=items[mask & keep], test=items[~mask & keep]))

    arithmetic = tuple(d for d in domains if d in ARITHMETIC) or ("add",)
    x = rng.integers(0, prime, size=(n_validation, 3))
    ops = rng.integers(0, len(arithmetic), size=(n_validation, 2))
    first = np.empty(n_validation, dtype=np.int64)
    answer = np.empty(n_validation, dtype=np.int64)
    for k, name in enumerate(arithmetic):
        sel = ops[:, 0] == k
        first[sel] = _apply(name, x[sel, 0], x[sel, 1], prime)
    for k, name in enumerate(arithmetic):
        sel = ops[:, 1] == k
        answer[sel] = _apply(name, first[sel], x[sel, 2], prime)
    validation = np.stack([x[:, 0], ops[:, 0], x[:, 1], ops[:, 1], x[:, 2], answer], axis=1)
    return Corpus(
        prime=prime,
        domains=tuple(splits),
        validation=validation.astype(np.int64),
        validation_domains=arithmetic,
    )
