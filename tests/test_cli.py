"""The command line: every verb is reachable and explains itself."""
import importlib
import subprocess
import sys

import pytest

from refinemask.cli import VERBS, main

ISSUE_VERBS = {"train", "eval", "predict", "demo", "convert", "export", "make-synthetic", "check-data"}


def test_top_level_help_lists_every_verb(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert ISSUE_VERBS <= set(VERBS)
    for verb in VERBS:
        assert verb in out


@pytest.mark.parametrize("verb", sorted(VERBS))
def test_each_verb_has_a_module_and_its_own_help(verb, capsys):
    module = importlib.import_module(f"refinemask.commands.{VERBS[verb][0]}")
    assert callable(module.add_arguments) and callable(module.run)
    with pytest.raises(SystemExit) as exit_info:
        main([verb, "--help"])
    assert exit_info.value.code == 0
    assert f"refinemask {verb}" in capsys.readouterr().out


def test_an_unknown_verb_is_refused():
    result = subprocess.run([sys.executable, "-m", "refinemask.cli", "trian"], capture_output=True, text=True)
    assert result.returncode == 2
    assert "unknown verb" in result.stderr
