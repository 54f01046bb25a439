"""Labelled and unlabeled images in one training set, at a chosen ratio.

``mix_records(labelled, unlabeled, f)`` returns the records of one training epoch in which a
fraction ``f`` of the samples are unlabeled. With ``n_l`` labelled and ``n_u`` unlabeled images
and 0 < f < 1 the epoch holds

    N = max(ceil(n_l / (1 - f)), ceil(n_u / f)) samples: N_u = round(f * N) unlabeled and
    N_l = N - N_u labelled,

each group cycled in its order to fill its share. So every image appears at least once, the
scarcer group (for its share) is repeated, and the unlabeled fraction is f within 1/(2N).
``f`` = 0, or a missing group, keeps the plain concatenation (each image once per epoch). Both
engines shuffle the epoch, so the order of the returned list does not matter.
"""

from __future__ import annotations

import math
from typing import Dict, List, Sequence, Tuple


def mixed_counts(n_labelled: int, n_unlabeled: int, fraction: float) -> Tuple[int, int]:
    """(N_l, N_u): labelled and unlabeled samples of one mixed epoch (see the module doc)."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"the unlabeled fraction must be in [0, 1), got {fraction}")
    if fraction == 0.0 or n_labelled == 0 or n_unlabeled == 0:
        return n_labelled, n_unlabeled
    total = max(math.ceil(n_labelled / (1.0 - fraction)), math.ceil(n_unlabeled / fraction))
    n_u = int(round(fraction * total))
    return total - n_u, n_u


def _cycled(records: Sequence[Dict], count: int) -> List[Dict]:
    return [dict(records[i % len(records)]) for i in range(count)]


def mix_records(labelled: Sequence[Dict], unlabeled: Sequence[Dict], fraction: float) -> List[Dict]:
    """One epoch of ``labelled`` and ``unlabeled`` records with an unlabeled share ``fraction``
    (0 = each record once)."""
    n_l, n_u = mixed_counts(len(labelled), len(unlabeled), fraction)
    return _cycled(labelled, n_l) + _cycled(unlabeled, n_u)
