"""The random part of the ids the facade makes: request ids, completion and response ids.

128 random bits as 32 hex digits from the OS's CSPRNG, as `uuid.uuid4().hex` gives, without
building a UUID object: 0.7 µs instead of 5.1 µs (timeit), two or three times per request.
The one difference: uuid4 fixes 6 of the 128 bits (version and variant); here all are random.
"""

from __future__ import annotations

import os


def random_hex(nbytes: int = 16) -> str:
    """2 x `nbytes` random hex digits (32 by default)."""
    return os.urandom(nbytes).hex()
