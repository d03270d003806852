"""The README against the program, where a statement can be checked mechanically: every
command it shows parses (subcommand and options), every file and make target it names
exists, its model files load, no placeholder is left unfilled, and the exit codes it
states are the command line's."""

import re
import shlex

import pytest

import gpbayes as gb
from conftest import ROOT
from gpbayes import cli

README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"```(\w+)\n(.*?)```", README, re.S)


def commands() -> list[list[str]]:
    """The ``gpbayes ...`` command lines of the README's bash blocks (comments removed)."""
    out = []
    for lang, body in BLOCKS:
        for line in body.splitlines() if lang == "bash" else []:
            words = shlex.split(line.split("#")[0])
            if words and words[0].endswith("gpbayes"):
                out.append(words[1:])
    return out


def test_every_command_shown_parses():
    shown = commands()
    assert len(shown) >= 3
    parser = cli._parser()
    for words in shown:
        args = [w if w != "MODEL.toml" else "models/poisson1d-sin100.toml" for w in words]
        if args == ["--help"]:
            continue
        parser.parse_args(args)  # exits (SystemExit) on an unknown command or option


def test_every_file_and_target_named_exists():
    named = set(re.findall(r"(?<![\w/.])((?:models|examples|docs|benchmarks|inference)"
                           r"/[\w./-]+\.(?:toml|py|md|png))", README))
    named |= set(re.findall(r"\]\(((?!https?:)[^)#]+)\)", README))  # links
    assert len(named) >= 8
    missing = sorted(n for n in named if not (ROOT / n).exists())
    assert not missing, missing
    makefile = (ROOT / "Makefile").read_text()
    for target in set(re.findall(r"`make ([\w-]+)`|^make ([\w-]+)", README, re.M)):
        name = next(t for t in target if t)
        assert re.search(rf"^{re.escape(name)}:", makefile, re.M), f"make {name}"


@pytest.mark.parametrize("index", [i for i, (lang, _) in enumerate(BLOCKS) if lang == "toml"])
def test_model_files_shown_load(tmp_path, index):
    path = tmp_path / "shown.toml"
    path.write_text(BLOCKS[index][1])
    problem = gb.load_model(path)
    assert problem.size > 0


def test_no_placeholder_left():
    """An all-capitals word with an underscore (QUICKSTART_TIME) or a template brace is a
    placeholder; the capitals the README uses on purpose are names of things that exist."""
    left = set(re.findall(r"\b[A-Z]+_[A-Z_]+\b|\{\{[^}]*\}\}|\bTODO\b|\bTBD\b", README))
    allowed = {"GPBAYES_COMPILATION_CACHE", "GPBAYES_START_WORKERS", "XDG_CACHE_HOME",
               "OPENBLAS_NUM_THREADS", "XLA_FLAGS", "TEST_WORKERS"}
    from gpbayes import threads

    assert threads.WORKERS_ENV == "GPBAYES_START_WORKERS"  # it exists
    assert "TEST_WORKERS ?=" in (ROOT / "Makefile").read_text()
    assert left <= allowed, left - allowed


def test_exit_codes_stated_are_the_command_lines():
    """The README: a result that fails its trust check, and a posterior that fails its
    convergence checks, are written and the command exits 3."""
    stated = set(re.findall(r"exits? (?:with code )?\*\*(\d+)\*\*", README))
    assert stated == {str(cli.UNTRUSTED)} == {str(cli.NOT_CONVERGED)}
