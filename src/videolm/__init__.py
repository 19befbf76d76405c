"""videolm: video (language) modeling over k-means patch codes.

Importing the package sets, in the environment, how OpenMP's threads wait, before torch
loads (only where the environment does not choose already): they sleep rather than spin
(`OMP_WAIT_POLICY=PASSIVE`). Torch's CPU threads otherwise spin between parallel regions, and
on a shared machine a spinning thread takes the core that another process, or this one's own
other thread, needs (benchmarks/RESULTS.md has training's speed beside a busy process with
both policies). The stage scripts and the `videolm` command import the package first.

No math library is pinned to a code path. What must be the same bits however the work is
batched, split or threaded holds by construction (`codes/search.py`, `model/tiles.py`), under
every math setting (tests/test_math_paths.py); docs/reliability.md says what holds across CPUs.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
