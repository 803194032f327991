"""Test settings for `pytest` (unit tests and nbval over every notebook).

Notebooks run in quick mode unless COURSE_QUICK is set, with figures going to the
cache, and with the non-interactive matplotlib backend. The kernels nbval starts
inherit these variables.
"""

import os

os.environ.setdefault("COURSE_QUICK", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("PYTHONHASHSEED", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

collect_ignore_glob = ["data/*", "checkpoints/*", ".venv/*"]
