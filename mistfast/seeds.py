"""Seeds of a point's random streams (common random numbers across configurations)."""
from __future__ import annotations

import numpy as np


def point_seed(seed: int, *key: int) -> np.random.SeedSequence:
    return np.random.SeedSequence([seed, *key])


def seed_child(seed_seq: np.random.SeedSequence, i: int) -> np.random.SeedSequence:
    """Child ``i`` of a point's seed, without the state ``SeedSequence.spawn`` keeps: a point's
    random streams do not depend on what was drawn before (or on a cache skipping a draw).
    Children 0-3: arrivals, input lengths, output lengths, trace sampling; 4: pipeline sampling."""
    return np.random.SeedSequence(seed_seq.entropy, spawn_key=tuple(seed_seq.spawn_key) + (i,),
                                  pool_size=seed_seq.pool_size)
