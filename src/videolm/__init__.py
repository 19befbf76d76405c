"""videolm: video (language) modeling over k-means patch codes.

Importing the package makes OpenMP's threads sleep rather than spin while they wait
(`OMP_WAIT_POLICY=PASSIVE`), unless the environment already chooses a policy. Torch's CPU
threads otherwise spin between parallel regions, and on a shared machine a spinning thread
takes the core that another process, or this one's own other thread, needs (benchmarks/RESULTS.md
has training's speed beside a busy process with both policies). OpenMP reads the variable once, when torch loads it,
so it is set here, before any module imports torch.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
