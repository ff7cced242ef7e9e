"""--help of both scripts: the usage examples on their own lines, each default said once."""

import re

import pytest

import train
import visualization
from conftest import call_main


@pytest.mark.parametrize("script", [train, visualization])
def test_help_keeps_the_examples_on_their_own_lines_and_says_each_default_once(script):
    result = call_main(script.main, "--help")
    assert result.returncode == 0
    examples = [line.strip() for line in script.__doc__.splitlines() if line.strip().startswith("python ")]
    assert len(examples) >= 2
    lines = [line.strip() for line in result.stdout.splitlines()]
    assert all(example in lines for example in examples), result.stdout
    options = re.split(r"\n  (?=-)", result.stdout.split("options:", 1)[1])
    assert len(options) > 10
    for option in options:
        text = " ".join(option.split())
        assert "(default: None)" not in text and "(default: False)" not in text, text
        assert text.count("default") <= 1, text
    assert "training epochs (default: 80)" in " ".join(result.stdout.split()) or script is visualization
