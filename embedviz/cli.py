"""Command-line helpers shared by the scripts: one-line errors, --help, option types."""

import argparse
import math


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """The description as written, its usage examples on their own lines; each option's default said
    once: appended unless the help already names it or there is none (None, off)."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if default is None or default is False or default is argparse.SUPPRESS or "default" in text:
            return text
        shown = " ".join(map(str, default)) if isinstance(default, (list, tuple)) else str(default)
        return f"{text} (default: {shown.replace('%', '%%')})"


class ArgumentParser(argparse.ArgumentParser):
    """argparse, with a bad option reported in one line (no usage block) and defaults in --help."""

    def __init__(self, **kwargs):
        super().__init__(formatter_class=HelpFormatter, **kwargs)

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def number(kind, is_valid, requirement):
    """An option type: text -> kind, refused unless is_valid(value), the refusal saying `requirement`."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not is_valid(value):
            raise argparse.ArgumentTypeError(f"must be {requirement}, got {text}")
        return value
    parse.__name__ = f"{requirement} {kind.__name__}"  # argparse names the type by it
    return parse


def positive(kind):
    return number(kind, lambda value: 0 < value < math.inf, "positive and finite")


def int_from(low, high=math.inf):
    """An integer option from low to high (with no high: low or more)."""
    requirement = f"from {low} to {high}" if high < math.inf else f"{low} or more"
    return number(int, lambda value: low <= value <= high, requirement)


non_negative_int = number(int, lambda value: value >= 0, "0 or more")
finite_float = number(float, math.isfinite, "finite")
non_negative_float = number(float, lambda value: 0 <= value < math.inf, "0 or more and finite")
seed_int = number(int, lambda value: 0 <= value < 2 ** 64, "from 0 to 2**64 - 1")  # what torch and numpy take


def image_size(text):
    """--image-size: 28, as the digits, or a multiple of 8 from 16 to 64 (three poolings halve it)."""
    size = int(text) if text.isdigit() else None
    if size != 28 and (size is None or size % 8 or not 16 <= size <= 64):
        raise argparse.ArgumentTypeError(f"{text!r} is not 28 or a multiple of 8 from 16 to 64")
    return size


def class_indices(text):
    """--classes, --unseen-classes: "7" -> [7], "100-132" -> [100, ..., 132]."""
    first, dash, last = text.partition("-")
    if not (first.isdigit() and (last.isdigit() or not dash)):
        raise argparse.ArgumentTypeError(f"{text!r} is not a class index or a range of them (6, or 100-132)")
    if dash and int(last) < int(first):
        raise argparse.ArgumentTypeError(f"{text!r}: a range goes up (100-132)")
    return list(range(int(first), int(last or first) + 1))
