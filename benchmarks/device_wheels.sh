#!/usr/bin/env bash
# The wheels benchmarks/device_check.py needs on a bare GPU machine (Python 3.12, x86-64) that
# has PyTorch, h5py, OpenCV, scikit-learn, SciPy, Pillow, PyYAML and tqdm but not pydantic (the
# params schema). Run here, in the repository root; they land in .whl/ (ignored by git, ~2.5 MB).
# There, before the check:
#   python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
#   PYTHONPATH=/tmp/site:src python3 benchmarks/device_check.py
set -euo pipefail
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo /.whl/ >> .git/info/exclude
for wheel in pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 \
             typing_extensions==4.16.0; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl "$wheel"
done
ls .whl
