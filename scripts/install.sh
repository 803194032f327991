#!/usr/bin/env bash
# Creates .venv and installs the course: PyTorch first (so that no CUDA build is pulled
# where a CPU build is wanted), then the course's packages, then the test packages.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet "torch==${COURSE_TORCH_VERSION:-2.13.0}"
.venv/bin/python -m pip install --quiet -r requirements.txt -r requirements-test.txt
# The course's generated package, gpt_from_scratch/, editable: `import gpt_from_scratch.ch05` works anywhere.
.venv/bin/python -m pip install --quiet --no-deps -e .
.venv/bin/python -m ipykernel install --sys-prefix --name python3 >/dev/null
echo "Installed into .venv: $(.venv/bin/python -c 'import torch; print("torch", torch.__version__)')"
