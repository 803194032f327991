"""One argument parser for the course's scripts: the script's docstring in ``--help``, the common flags.

A script builds its parser with ``script_parser(__doc__, __file__, ...)``, asking for the common
flags it needs; each has one name, one meaning and one help text in every script:

* ``--device``: ``auto`` (CUDA, else MPS, else CPU, or ``COURSE_DEVICE``), ``cpu``, ``cuda[:N]``, ``mps``;
* ``--seed``: the seed of Python's, NumPy's and PyTorch's random numbers;
* ``--threads``: PyTorch's CPU threads;
* ``--out-dir``: the folder the script writes into, by default under ``checkpoints/`` (``checkpoint_dir``);
* ``--weights auto|gpt2|books``, ``--size``, ``--books-dir``: the base model of ``load_base_model``;
* ``--quick``: quick mode for this run, as ``COURSE_QUICK=1``;
* ``--debug`` (every script): Python's traceback for the errors ``script_main`` otherwise prints as
  one line (unreadable course files, failed downloads, Ctrl-C).

Default folders go through ``shared.runtime.checkpoint_dir`` once the arguments are parsed (so
``--quick`` and ``COURSE_CHECKPOINT_DIR`` count): ``args.out_dir`` and ``args.books_dir`` are
``Path`` objects after ``parse_args``. ``setup_runtime(args)`` then applies ``--threads`` and
``--seed`` and returns the ``torch.device`` of ``--device``.
"""

from __future__ import annotations

import argparse
import functools
import os
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import torch

from shared.runtime import REPO_ROOT, books_model_dir, course_dir, get_device, is_quick, set_seed

DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
T = TypeVar("T")
WEIGHTS_CHOICES = ("auto", "gpt2", "books")
# A folder default: a name for checkpoint_dir, or a function of the parsed arguments that returns one
DirDefault = str | Callable[[argparse.Namespace], str | Path]  # a checkpoint_dir name, or a folder


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """The description (the script's docstring) as written; each flag's default after its help."""

    def _get_help_string(self, action: argparse.Action) -> str:
        """The help text, with ``(default: ...)`` added unless the text already names its default."""
        text = action.help or ""
        unset = action.default is None or action.default is False or action.default == argparse.SUPPRESS
        shown = action.option_strings and not unset  # 0 and 0.0 are shown: they are values
        if shown and "default" not in text and "%(default)" not in text:
            text += " (default: %(default)s)"
        return text


class ScriptParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` that fills default folders through ``checkpoint_dir`` after parsing."""

    def __init__(self, *args, **kwargs) -> None:
        """As ``argparse.ArgumentParser``; ``default_dirs`` maps a folder's destination to its default."""
        super().__init__(*args, **kwargs)
        self.default_dirs: dict[str, DirDefault | None] = {}

    def error(self, message: str) -> None:
        """A bad argument: one line naming the flag, the value and what it accepts (exit code 2)."""
        self.exit(2, f"{self.prog}: error: {message} (--help lists the flags)\n")

    def parse_known_args(
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        """Parse, then set ``quick`` (``--quick`` or ``COURSE_QUICK``) and the folders left at None."""
        parsed, extras = super().parse_known_args(args, namespace)
        if hasattr(parsed, "quick"):
            parsed.quick = bool(parsed.quick) or is_quick()
        quick = bool(getattr(parsed, "quick", False))
        for dest, name in self.default_dirs.items():
            value = getattr(parsed, dest, None)
            if value is not None:
                setattr(parsed, dest, Path(value))
            elif name is not None:
                target = name(parsed) if callable(name) else name  # a checkpoint_dir name, or a folder
                setattr(parsed, dest, target if isinstance(target, Path) else course_dir(target, quick=quick))
        return parsed, extras


def script_prog(script: str | os.PathLike) -> str:
    """A script's name in ``usage:``: its path from the repository root (``ch05_pretraining/train.py``)."""
    path = Path(script).resolve()
    try:
        return path.relative_to(REPO_ROOT).as_posix()
    except ValueError:
        return path.name


def script_parser(
    doc: str,
    script: str | os.PathLike | None = None,
    *,
    device: bool = False,
    seed: int | None = None,
    threads: bool = False,
    out_dir: DirDefault | None = None,
    base_model: str | None = None,
    quick: str | None = None,
) -> ScriptParser:
    """A parser whose ``--help`` shows ``doc`` as written (examples included), with common flags on request.

    ``script`` is the script's ``__file__`` (for ``usage:``); ``seed`` is the default of ``--seed``;
    ``out_dir`` the ``checkpoint_dir`` name of ``--out-dir``'s default (or a function of the parsed
    arguments that returns it); ``base_model`` the default GPT-2 size of ``--weights``, ``--size`` and
    ``--books-dir``; ``quick`` says what ``--quick`` shrinks. Flags with more to say are added with
    ``add_seed``, ``add_out_dir``, ... directly.
    """
    parser = ScriptParser(
        prog=script_prog(script) if script is not None else None,
        description=doc.strip(),
        formatter_class=HelpFormatter,
    )
    if device:
        add_device(parser)
    if seed is not None:
        add_seed(parser, default=seed)
    if threads:
        add_threads(parser)
    if out_dir is not None:
        add_out_dir(parser, out_dir)
    if base_model is not None:
        add_base_model(parser, size=base_model)
    if quick is not None:
        add_quick(parser, quick)
    parser.add_argument(
        "--debug",
        action="store_true",
        help="show Python's traceback for errors otherwise printed as one line",
    )
    return parser


def script_main(*errors: type[BaseException]) -> Callable[[Callable], Callable]:
    """Decorate a script's ``main(argv)``: ``errors``, failed downloads and Ctrl-C printed as one message.

    ``errors`` are the script's expected failures (``CourseFileError`` for an unreadable course file;
    ``shared`` imports no lesson code, so the script passes it). The message goes to stderr without
    a traceback (exit code 1, 130 for Ctrl-C); with ``--debug`` the exception propagates.
    """
    from shared.data import DownloadError

    known = (*errors, DownloadError)

    def decorate(main: Callable[[list[str] | None], int]) -> Callable[[list[str] | None], int]:
        """``main`` wrapped."""

        @functools.wraps(main)
        def run(argv: list[str] | None = None) -> int:
            """``main(argv)``, its known failures printed as one message."""
            debug = "--debug" in (sys.argv[1:] if argv is None else argv)
            try:
                return main(argv)
            except KeyboardInterrupt:
                if debug:
                    raise
                print("interrupted (Ctrl-C); files already written are complete", file=sys.stderr)
                return 130
            except known as err:
                if debug:
                    raise
                print(f"error: {err} (--debug shows the traceback)", file=sys.stderr)
                return 1

        return run

    return decorate


def device_name(value: str) -> str:
    """``--device``'s check: ``auto``, ``cpu``, ``mps``, ``cuda`` or ``cuda:N``."""
    if not DEVICE_RE.match(value):
        raise argparse.ArgumentTypeError(f"{value!r} is not a device: use auto, cpu, cuda, cuda:N or mps")
    return value


def add_device(parser: argparse.ArgumentParser) -> None:
    """``--device``: where the model runs."""
    parser.add_argument(
        "--device",
        type=device_name,
        default="auto",
        metavar="{auto,cpu,cuda,cuda:N,mps}",
        help="where the model runs; auto: $COURSE_DEVICE if set, else CUDA, else MPS, else the CPU",
    )


def add_seed(parser: argparse.ArgumentParser, default: int = 123, detail: str = "") -> None:
    """``--seed``: the seed of the random numbers; ``detail`` says what it decides in this script."""
    text = "seed of Python's, NumPy's and PyTorch's random numbers"
    parser.add_argument("--seed", type=int, default=default, help=f"{text}{detail}")


def number_type(
    kind: type, low: float | None = None, high: float | None = None, *, open_low=False, open_high=False
) -> Callable[[str], int | float]:
    """An argparse type: an ``int`` or ``float`` in a range; a bad value names the range it accepts."""
    name = "an integer" if kind is int else "a number"
    bounds = []
    if low is not None:
        bounds.append(f"{'>' if open_low else '>='} {low:g}")
    if high is not None:
        bounds.append(f"{'<' if open_high else '<='} {high:g}")
    wanted = f"{name} {' and '.join(bounds)}".strip()

    def check(value: str) -> int | float:
        """``value`` as ``kind``, or an ``ArgumentTypeError`` naming the accepted range."""
        try:
            number = kind(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {value!r}") from None
        too_low = low is not None and (number <= low if open_low else number < low)
        too_high = high is not None and (number >= high if open_high else number > high)
        if too_low or too_high or (kind is float and number != number):  # NaN is in no range
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {value}")
        return number

    check.__name__ = f"{kind.__name__}_in_range"
    return check


positive_int = number_type(int, 1)  # 1, 2, ...: counts, sizes, steps
nonneg_int = number_type(int, 0)  # 0, 1, ...: retries, warmup steps, 0 meaning "off"
positive_float = number_type(float, 0, open_low=True)  # > 0: learning rates, seconds, scales
nonneg_float = number_type(float, 0)  # >= 0: weight decay, temperature
open_fraction = number_type(float, 0, 1, open_low=True, open_high=True)  # (0, 1): shares of the data
dropout_rate = number_type(float, 0, 1, open_high=True)  # [0, 1)


def add_threads(parser: argparse.ArgumentParser) -> None:
    """``--threads``: PyTorch's CPU threads."""
    parser.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        metavar="N",
        help="CPU threads PyTorch may use (torch.set_num_threads; default: PyTorch's choice, one per core)",
    )


def add_out_dir(
    parser: ScriptParser, name: DirDefault | None, what: str = "its results", default_help: str | None = None
) -> None:
    """``--out-dir``: the folder the script writes ``what`` into, by default ``checkpoint_dir(name)``.

    ``name`` may be a function of the parsed arguments (its ``default_help`` then says what it picks);
    with ``name=None`` the script chooses the default itself and ``default_help`` describes it.
    """
    if default_help is None:
        if not isinstance(name, str):
            raise ValueError("add_out_dir: give default_help when the default is not one folder name")
        default_help = f"checkpoints/{name}"
    parser.default_dirs["out_dir"] = name  # a given folder becomes a Path; None: no default folder
    if name is not None:
        default_help += "; -quick appended in quick mode, and $COURSE_CHECKPOINT_DIR replaces checkpoints/"
    parser.add_argument(
        "--out-dir", default=None, metavar="DIR", help=f"folder for {what} (default: {default_help})"
    )


def add_base_model(parser: ScriptParser, size: str = "124M") -> None:
    """``--weights``, ``--size`` and ``--books-dir``: the base model that ``load_base_model`` loads."""
    from shared.registry import GPT2_SIZES

    parser.add_argument(
        "--weights",
        choices=WEIGHTS_CHOICES,
        default="auto",
        help="base model: OpenAI's GPT-2 (gpt2), the course's books model (books), or auto: GPT-2 if its "
        "weights can be loaded, else the books model ($COURSE_BASE_WEIGHTS may fix auto's choice)",
    )
    parser.add_argument(
        "--size",
        choices=GPT2_SIZES,
        default=size,
        help="GPT-2 size, when GPT-2 weights are used",
    )
    parser.default_dirs["books_dir"] = lambda args: books_model_dir(quick=bool(getattr(args, "quick", False)))
    parser.add_argument(
        "--books-dir",
        default=None,
        metavar="DIR",
        help="folder of the books model (default: the copy that ships with the course, "
        "ch05_pretraining/books_model; in quick mode checkpoints/books-quick, written by quick runs)",
    )


def add_quick(parser: argparse.ArgumentParser, what: str) -> None:
    """``--quick``: quick mode for this run (``what`` it shrinks), as ``COURSE_QUICK=1``."""
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"quick mode, as COURSE_QUICK=1: {what}; default folders get -quick",
    )


def add_overwrite(parser: argparse.ArgumentParser) -> None:
    """``--overwrite``: replace the run already in ``--out-dir`` (its outputs are removed first)."""
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the run already in --out-dir (removes its files first)",
    )


def claim_out_dir(folder: Path, outputs: Sequence[str], overwrite: bool, other: str = "") -> None:
    """Refuse a folder holding a run's ``outputs`` (glob patterns) unless ``overwrite``; then remove them.

    A new run never mixes its files with an old run's (epoch-1.pth of one, responses.json of another).
    ``other`` names another way out, e.g. ``", or --resume to continue it"``.
    """
    found = sorted({p.name for pattern in outputs for p in Path(folder).glob(pattern) if p.is_file()})
    if not found:
        return
    if not overwrite:
        shown = ", ".join(found[:4]) + (" ..." if len(found) > 4 else "")
        raise SystemExit(
            f"error: {folder} already holds a run ({shown}); pass --overwrite to replace it{other}, "
            "or choose another --out-dir"
        )
    for name in found:
        (Path(folder) / name).unlink()


def restore_run_args(
    parser: argparse.ArgumentParser, args: argparse.Namespace, saved: dict, keys: Sequence[str], legacy: dict
) -> None:
    """``--resume``: set ``keys`` from the run's ``saved`` arguments; refuse a flag given with another value.

    A key the checkpoint lacks takes its ``legacy`` value (what older runs used), else the parsed one.
    """
    defaults = vars(parser.parse_known_args([])[0])  # folders included, as parsing fills them in
    given = [k for k in keys if getattr(args, k) not in (defaults.get(k), saved.get(k))]
    if given:  # the run's settings come from its checkpoint: never ignore a flag silently
        flags = ", ".join(
            f"--{k.replace('_', '-')} {getattr(args, k)} (the run's: {saved.get(k)})" for k in given
        )
        raise SystemExit(f"--resume continues the run with its own settings; drop {flags}")
    for key in keys:
        setattr(args, key, saved.get(key, legacy.get(key, getattr(args, key))))


def resume_run(
    parser: argparse.ArgumentParser,
    args: argparse.Namespace,
    keys: Sequence[str],
    read_extra: Callable[[Path], dict],
) -> None:
    """``--resume`` from the newest ``epoch-<k>.pth``: restore ``keys``, keep (path, extras) in ``_resumed``.

    ``read_extra`` reads a checkpoint's extras (the scripts pass chapter 5's reader); the run's
    arguments are under ``"args"``. The checkpoint is read once: ``main`` finds it in ``args._resumed``
    (None without ``--resume``), which ``plain_args`` leaves out.
    """
    args._resumed = None
    if not args.resume:
        return
    if args.overwrite:
        raise SystemExit("--resume continues the run in --out-dir, --overwrite replaces it: choose one")
    if (last := last_epoch_checkpoint(args.out_dir)) is None:
        raise SystemExit(f"--resume: no epoch-<k>.pth in {args.out_dir}; run without --resume first")
    extra = read_extra(last)
    restore_run_args(parser, args, extra.get("args", {}), keys, {})
    args._resumed = (last, extra)


def last_epoch_checkpoint(folder: Path) -> Path | None:
    """The ``epoch-<k>.pth`` with the largest k in ``folder`` (where ``--resume`` starts), or None."""
    found = [(int(p.stem[6:]), p) for p in Path(folder).glob("epoch-*.pth") if p.stem[6:].isdigit()]
    return max(found)[1] if found else None


def course_file_or_path(name: str, flag: str) -> Path:
    """A registered course file by name (fetched: cache, mirror, then its URLs), else an existing file."""
    from shared.data import fetch
    from shared.registry import FILES

    if name in FILES:
        return fetch(name, quiet=True)
    if not Path(name).is_file():
        raise SystemExit(f"{flag} {name!r} is neither a course file (shared/registry.py) nor a file")
    return Path(name)


def base_weights(args: argparse.Namespace) -> str | None:
    """``--weights`` as ``load_base_model`` takes it: None for auto, else ``gpt2`` or ``books``."""
    return None if args.weights == "auto" else args.weights


def load_base(
    args: argparse.Namespace,
    loader: Callable[..., T],
    device: torch.device | str = "cpu",
    download: Callable[[str], os.PathLike] | None = None,
) -> T:
    """``loader`` (chapter 5's ``load_base_model``) with ``--weights``, ``--size`` and ``--books-dir``.

    GPT-2 comes from Hugging Face's safetensors file unless ``download`` fetches it otherwise; when no
    weights can be loaded the script ends with the loader's one message (what was tried, how to fix it).
    """
    from shared.data import fetch_gpt2_safetensors

    try:
        return loader(
            args.size,
            weights=base_weights(args),
            books_dir=args.books_dir,
            gpt2_download=download or fetch_gpt2_safetensors,
            device=device,
        )
    except FileNotFoundError as err:  # BaseModelUnavailable: nothing could be loaded
        raise SystemExit(f"error: no base model: {err}") from None


def plain_args(args: argparse.Namespace) -> dict:
    """The parsed arguments as plain values (folders as strings), for checkpoints and JSON logs.

    Names that start with ``_`` (such as ``_resumed``) are the process's own, not settings: left out.
    """
    return {
        name: str(value) if isinstance(value, Path) else value
        for name, value in vars(args).items()
        if not name.startswith("_")
    }


def setup_runtime(args: argparse.Namespace) -> torch.device:
    """Apply ``--threads`` and ``--seed`` (where the parser has them); return ``--device``'s device."""
    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    if getattr(args, "seed", None) is not None:
        set_seed(args.seed)
    choice = getattr(args, "device", "auto")
    device = get_device(None if choice in (None, "auto") else choice)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"error: --device {choice}: PyTorch sees no CUDA GPU here (use --device cpu)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise SystemExit(f"error: --device {choice}: Apple's MPS backend is not available here")
    return device
