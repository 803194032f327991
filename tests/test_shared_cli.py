"""shared/cli.py: the scripts' one argument helper (docstring in --help, common flags, default folders)."""

from __future__ import annotations

import argparse
import inspect
from pathlib import Path

import pytest
import torch

from gpt_from_scratch.ch05 import BaseModelUnavailable
from shared.cli import (
    WEIGHTS_CHOICES,
    HelpFormatter,
    ScriptParser,
    add_out_dir,
    add_seed,
    base_weights,
    course_dir,
    load_base,
    plain_args,
    script_parser,
    setup_runtime,
)
from shared.runtime import REPO_ROOT, SHIPPED_BOOKS_MODEL

DOC = """A demo script.

Examples:

    python demo.py --seed 1     # the first example
    python demo.py --weights books
"""
ALL_FLAGS = dict(device=True, seed=7, threads=True, out_dir="demo", base_model="355M", quick="a short run")


@pytest.fixture
def checkpoints(tmp_path, monkeypatch) -> Path:
    """COURSE_CHECKPOINT_DIR in a temporary folder, quick mode off, no device or weights chosen by env."""
    for name in ("COURSE_QUICK", "COURSE_DEVICE", "COURSE_BASE_WEIGHTS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("COURSE_CHECKPOINT_DIR", str(tmp_path))
    return tmp_path


def flag_actions(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """Every action of a parser but -h."""
    return [a for a in parser._actions if not isinstance(a, argparse._HelpAction)]


def test_help_shows_the_docstring_as_written(capsys):
    parser = script_parser(DOC, REPO_ROOT / "ch05_pretraining" / "demo.py", **ALL_FLAGS)
    with pytest.raises(SystemExit) as exc:
        parser.parse_args(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: ch05_pretraining/demo.py")  # the path from the repository root
    assert "    python demo.py --seed 1     # the first example\n" in out  # line breaks and indents kept
    words = " ".join(out.split())  # help texts are wrapped to the terminal's width
    assert "(default: 7)" in words and "(default: auto)" in words and "(default: 355M)" in words


def test_every_common_flag_has_help():
    parser = script_parser(DOC, **ALL_FLAGS)
    names = {a.option_strings[0] for a in flag_actions(parser)}
    expected = {
        "--device",
        "--seed",
        "--threads",
        "--out-dir",
        "--weights",
        "--size",
        "--books-dir",
        "--quick",
        "--debug",
    }
    assert names == expected
    assert all(a.help and len(a.help) > 20 for a in flag_actions(parser))


def test_flags_only_on_request():
    assert [a.dest for a in flag_actions(script_parser(DOC))] == ["debug"]  # every script has --debug
    parser = script_parser(DOC, device=True)
    assert [a.dest for a in flag_actions(parser)] == ["device", "debug"]


def test_default_folders_go_through_checkpoint_dir(checkpoints):
    args = script_parser(DOC, **ALL_FLAGS).parse_args([])
    assert args.out_dir == checkpoints / "demo" and args.books_dir == SHIPPED_BOOKS_MODEL  # shipped
    assert (args.seed, args.device, args.weights, args.size, args.threads) == (
        7,
        "auto",
        "auto",
        "355M",
        None,
    )
    assert args.quick is False and base_weights(args) is None


def test_quick_flag_and_quick_mode_pick_the_quick_folders(checkpoints, monkeypatch):
    args = script_parser(DOC, **ALL_FLAGS).parse_args(["--quick"])
    assert args.quick and args.out_dir == checkpoints / "demo-quick"
    assert args.books_dir == checkpoints / "books-quick"
    monkeypatch.setenv("COURSE_QUICK", "1")
    args = script_parser(DOC, **ALL_FLAGS).parse_args([])
    assert args.quick and args.out_dir == checkpoints / "demo-quick"  # from checkpoint_dir itself
    assert args.books_dir == checkpoints / "books-quick"  # the tiny model of quick runs
    assert course_dir("demo", quick=True) == checkpoints / "demo-quick"  # never demo-quick-quick


def test_given_folders_are_kept_as_paths(checkpoints):
    argv = ["--out-dir", "runs/x", "--books-dir", "elsewhere", "--weights", "books"]
    args = script_parser(DOC, **ALL_FLAGS).parse_args(argv)
    assert args.out_dir == Path("runs/x") and args.books_dir == Path("elsewhere")
    assert base_weights(args) == "books"
    plain = plain_args(args)
    assert plain["out_dir"] == "runs/x" and plain["books_dir"] == "elsewhere" and plain["size"] == "355M"
    torch.save(plain, Path(checkpoints) / "args.pt")  # plain values: loadable with weights_only=True
    assert torch.load(Path(checkpoints) / "args.pt", weights_only=True) == plain


def test_out_dir_default_may_depend_on_other_arguments(checkpoints):
    parser = script_parser(DOC)
    parser.add_argument("--data", default="text", help="what to train on")
    add_out_dir(parser, lambda a: "ch05" if a.data == "text" else "books", "checkpoints", "ch05 or books")
    assert parser.parse_args([]).out_dir == checkpoints / "ch05"
    assert parser.parse_args(["--data", "books"]).out_dir == checkpoints / "books"
    with pytest.raises(ValueError, match="default_help"):
        add_out_dir(script_parser(DOC), lambda a: "x")


def test_out_dir_chosen_by_the_script():
    parser = script_parser(DOC)
    add_out_dir(parser, None, "the report", default_help="next to the first file")
    assert parser.parse_args([]).out_dir is None
    assert parser.parse_args(["--out-dir", "reports"]).out_dir == Path("reports")
    assert "next to the first file" in parser.format_help()


@pytest.mark.parametrize(
    "bad", [["--device", "gpu"], ["--size", "7B"], ["--weights", "none"], ["--threads", "0"]]
)
def test_bad_values_are_refused(bad, capsys):
    with pytest.raises(SystemExit) as exc:
        script_parser(DOC, **ALL_FLAGS).parse_args(bad)
    assert exc.value.code == 2 and bad[0] in capsys.readouterr().err


def test_setup_runtime_applies_threads_and_seed(checkpoints):
    threads = torch.get_num_threads()
    try:
        args = script_parser(DOC, **ALL_FLAGS).parse_args(
            ["--threads", "1", "--seed", "5", "--device", "cpu"]
        )
        assert setup_runtime(args) == torch.device("cpu") and torch.get_num_threads() == 1
        first = torch.rand(3)
        setup_runtime(args)
        assert torch.equal(torch.rand(3), first)  # seeded again: the same numbers
    finally:
        torch.set_num_threads(threads)


def test_setup_runtime_auto_follows_course_device(checkpoints, monkeypatch):
    monkeypatch.setenv("COURSE_DEVICE", "cpu")
    assert setup_runtime(script_parser(DOC, device=True).parse_args([])) == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="a machine with CUDA")
def test_setup_runtime_refuses_a_missing_gpu(checkpoints):
    args = script_parser(DOC, device=True).parse_args(["--device", "cuda:0"])
    with pytest.raises(SystemExit, match="no CUDA GPU"):
        setup_runtime(args)


def test_defaults_are_added_to_help_once():
    parser = argparse.ArgumentParser(formatter_class=HelpFormatter)
    add_seed(parser, default=9, detail="; also the split")
    parser.add_argument("--n", type=int, default=4, help="how many (default: four)")
    parser.add_argument("--flag", action="store_true", help="a switch")
    parser.add_argument("--temperature", type=float, default=0.0, help="0: greedy")
    text = " ".join(parser.format_help().split())
    assert "the split (default: 9)" in text and "(default: four)" in text and "greedy (default: 0.0)" in text
    assert text.count("default") == 3  # none for the switch, none twice


# Every command-line script of the course: a chapter folder's .py file other than previous_chapters.py
SCRIPTS = sorted(p for p in REPO_ROOT.glob("ch*_*/*.py") if p.name != "previous_chapters.py")
RENAMED = ("--checkpoint-dir", "--gpt2")  # now --out-dir, and --weights gpt2 --size SIZE
SAME_HELP = ("--device", "--threads", "--weights", "--size", "--books-dir")  # one text everywhere
SAME_START = {
    "--seed": "seed of Python's",
    "--out-dir": "folder for",
    "--quick": "quick mode, as COURSE_QUICK=1",
}


class _Parsed(Exception):
    """Raised instead of parsing: the parser a script built is what the test wants."""


def parser_of(script: Path, script_module) -> argparse.ArgumentParser:
    """The ArgumentParser that a script's ``main`` builds (caught before it parses anything)."""
    built = []

    def catch(self, *args, **kwargs):
        built.append(self)
        raise _Parsed

    module = script_module(script)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(argparse.ArgumentParser, "parse_args", catch)
        with pytest.raises(_Parsed):
            module.main([])
    return built[0]


def script_id(script: Path) -> str:
    """A script's test id: its chapter and name, e.g. ch07-finetune.py."""
    return f"{script.parent.name[:4]}-{script.name}"


def script_params() -> list:
    """SCRIPTS as pytest parameters, each with its id."""
    return [pytest.param(p, id=script_id(p)) for p in SCRIPTS]


def test_the_scripts_are_found():
    assert {p.name for p in SCRIPTS} >= {"generate.py", "train.py", "finetune.py", "evaluate.py"}
    assert len(SCRIPTS) >= 5


@pytest.mark.parametrize("script", SCRIPTS, ids=script_id)
def test_every_script_has_main(script, script_module):
    parameters = list(inspect.signature(script_module(script).main).parameters)
    assert parameters == ["argv"], "main(argv: list[str] | None = None) -> int, for the in-process runner"


@pytest.mark.parametrize("script", script_params())
def test_every_flag_of_every_script_has_help(script, script_module):
    parser = parser_of(script, script_module)
    assert isinstance(parser, ScriptParser), "built with shared.cli.script_parser"
    missing = [a.option_strings or [a.dest] for a in flag_actions(parser) if not (a.help or "").strip()]
    assert missing == [], f"{script.name}: flags without help"


@pytest.mark.parametrize("script", script_params())
def test_help_shows_the_docstring_with_its_examples(script, script_module):
    module = script_module(script)
    text = parser_of(script, script_module).format_help()
    examples = [line for line in module.__doc__.splitlines() if line.strip().startswith("python ")]
    assert examples and all(line in text for line in examples)  # as written, indentation kept


@pytest.mark.parametrize("script", script_params())
def test_common_flags_have_one_name_and_one_meaning(script, script_module):
    flags = {
        a.option_strings[0]: a for a in flag_actions(parser_of(script, script_module)) if a.option_strings
    }
    assert not set(RENAMED) & set(flags), "renamed flags"
    reference = script_parser(
        "doc", device=True, seed=1, threads=True, out_dir="x", base_model="124M", quick="q"
    )
    common = {a.option_strings[0]: a for a in flag_actions(reference)}
    for name in SAME_HELP:
        if name in flags:
            assert flags[name].help == common[name].help, name
    for name, start in SAME_START.items():
        if name in flags:
            assert flags[name].help.startswith(start), name
    if "--weights" in flags:
        assert flags["--weights"].default == "auto" and tuple(flags["--weights"].choices) == WEIGHTS_CHOICES


# Issue 21: unreadable course files, failed downloads and Ctrl-C as one message; --debug for tracebacks
@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_script_has_debug(script, run_script):
    assert "--debug" in run_script(script, "--help").out


def damaged_checkpoint(folder: Path, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(b"PK\x03\x04 not a whole checkpoint")
    return path


def assert_one_line(err: str, path: Path) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0], err
    assert "Traceback" not in err and "weights_only" not in err


def test_scripts_name_a_damaged_checkpoint_in_one_line(tmp_path, run_script):
    path = damaged_checkpoint(tmp_path / "gen", "last.pth")
    done = run_script(REPO_ROOT / "ch05_pretraining/generate.py", "--checkpoint", str(path), check=False)
    assert done.code == 1
    assert_one_line(done.err, path)
    path = damaged_checkpoint(tmp_path / "cls", "classifier.pth")
    done = run_script(
        REPO_ROOT / "ch06_classification/finetune.py",
        "--classify",
        "hi",
        "--out-dir",
        str(path.parent),
        check=False,
    )
    assert done.code == 1
    assert_one_line(done.err, path)
    path = damaged_checkpoint(tmp_path / "run", "last.pth")
    done = run_script(
        REPO_ROOT / "ch05_pretraining/train.py", "--resume", "--out-dir", str(path.parent), check=False
    )
    assert done.code == 1
    assert_one_line(done.err, path)


def test_debug_shows_the_traceback(tmp_path, run_script):
    from gpt_from_scratch.ch05 import CourseFileError

    path = damaged_checkpoint(tmp_path, "last.pth")
    with pytest.raises(CourseFileError):
        run_script(
            REPO_ROOT / "ch05_pretraining/generate.py", "--checkpoint", str(path), "--debug", check=False
        )


def test_ctrl_c_is_one_line(monkeypatch, run_script, script_module):
    module = script_module(REPO_ROOT / "ch05_pretraining/generate.py")

    def interrupted(argv):
        raise KeyboardInterrupt

    monkeypatch.setattr(module, "parse_args", interrupted)
    done = run_script(REPO_ROOT / "ch05_pretraining/generate.py", "--prompt", "x", check=False)
    assert done.code == 130 and len(done.err.strip().splitlines()) == 1 and "Ctrl-C" in done.err


BAD_VALUES = [  # issue 21: each refused before any work, in one line naming the flag, value and range
    ("ch05_pretraining/train.py", "--epochs", "0"),
    ("ch05_pretraining/train.py", "--steps", "0"),
    ("ch05_pretraining/train.py", "--batch-size", "0"),
    ("ch05_pretraining/train.py", "--save-every", "0"),
    ("ch05_pretraining/train.py", "--eval-freq", "0"),
    ("ch05_pretraining/train.py", "--context-length", "0"),
    ("ch05_pretraining/train.py", "--val-ratio", "1"),
    ("ch05_pretraining/train.py", "--val-ratio", "0"),
    ("ch05_pretraining/train.py", "--lr", "-1"),
    ("ch05_pretraining/train.py", "--drop-rate", "1"),
    ("ch05_pretraining/generate.py", "--max-new-tokens", "-1"),
    ("ch05_pretraining/generate.py", "--temperature", "-0.5"),
    ("ch05_pretraining/generate.py", "--top-k", "0"),
    ("ch06_classification/finetune.py", "--epochs", "0"),
    ("ch06_classification/finetune.py", "--batch-size", "0"),
    ("ch07_instruction/finetune.py", "--epochs", "0"),
    ("ch07_instruction/finetune.py", "--max-new-tokens", "-1"),
    ("ch07_instruction/finetune.py", "--max-length", "0"),
    ("ch07_instruction/finetune.py", "--limit", "-1"),
    ("ch07_instruction/finetune.py", "--lr", "nan"),
    ("ch07_instruction/evaluate.py", "--retries", "-1"),
    ("ch07_instruction/evaluate.py", "--timeout", "0"),
]


@pytest.mark.parametrize(("script", "flag", "value"), BAD_VALUES)
def test_bad_values_are_refused_in_one_line(script, flag, value, run_script, tmp_path):
    done = run_script(REPO_ROOT / script, f"{flag}={value}", "--out-dir", str(tmp_path / "o"), check=False)
    assert done.code == 2
    lines = done.err.strip().splitlines()
    assert len(lines) == 1 and flag in lines[0] and value in lines[0] and "expected" in lines[0], done.err
    assert not (tmp_path / "o").exists()  # nothing done


def test_number_types_name_their_range():
    from shared.cli import dropout_rate, nonneg_int, open_fraction, positive_float

    assert nonneg_int("0") == 0 and positive_float("1e-4") == 1e-4 and dropout_rate("0") == 0.0
    with pytest.raises(argparse.ArgumentTypeError, match=r"> 0 and < 1, got 1"):
        open_fraction("1")
    with pytest.raises(argparse.ArgumentTypeError, match="expected an integer >= 0, got 'x'"):
        nonneg_int("x")


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_help_says_what_can_go_wrong(script, run_script):
    out = run_script(script, "--help").out
    assert "What can go wrong" in out and "--debug" in out


def test_load_base_passes_the_flags_and_ends_with_one_line(checkpoints):
    args = script_parser(DOC, **ALL_FLAGS).parse_args(["--weights", "books", "--size", "774M"])
    calls = []

    def loader(size, **kwargs):
        calls.append((size, kwargs))
        return "a model"

    assert load_base(args, loader, device="cpu") == "a model"
    ((size, kwargs),) = calls
    got = (size, kwargs["weights"], kwargs["books_dir"], kwargs["device"])
    assert got == ("774M", "books", args.books_dir, "cpu")
    assert kwargs["gpt2_download"].__name__ == "fetch_gpt2_safetensors"  # GPT-2 from Hugging Face by default

    def nothing(size, **kwargs):
        raise BaseModelUnavailable("No pretrained weights could be loaded. Tried: ...")

    with pytest.raises(SystemExit, match="^error: no base model: No pretrained weights could be loaded"):
        load_base(args, nothing)
