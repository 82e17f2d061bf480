"""Helpers shared by the commands (cli, nightly, packcheck): argument types, the data root, loading the data a
set of runs needs. They live below the commands, so no command imports another."""
from __future__ import annotations

import argparse
import os
import re

from benchmarks.errors import UsageError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def default_data_root() -> str:
    return os.environ.get("CLREPRO_DATA") or os.path.join(os.path.expanduser("~"), ".cache", "clrepro", "data")


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seeds {text!r}: expected integers separated by commas, e.g. 0,1,2")
    if not seeds:
        raise argparse.ArgumentTypeError("--seeds: give at least one seed")
    return seeds


def _int_at_least(flag: str, low: int, also: tuple[str, ...] = ()):
    """An argparse type: an integer >= `low` (or one of the words in `also`), naming `flag` when it is not."""
    def parse(text: str) -> int | str:
        if text in also:
            return text
        try:
            k = int(text)
        except ValueError:
            k = low - 1
        if k < low:
            words = "".join(f"{w} or " for w in also)
            raise argparse.ArgumentTypeError(f"{flag} {text!r}: expected {words}an integer >= {low}")
        return k
    return parse


def _positive(text: str) -> float:
    try:
        x = float(text)
    except ValueError:
        x = 0.0
    if not x > 0:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number > 0")
    return x


def _regex(text: str) -> re.Pattern:
    try:
        return re.compile(text)
    except re.error as e:
        raise argparse.ArgumentTypeError(f"--filter {text!r} is not a valid regular expression: {e}")


def load_needed(plans, data_root: str, download: bool) -> dict:
    """Load every dataset the runs to do need, before anything is written: a dataset that is missing (downloads
    off) or fails to load is a usage error naming the dataset and the folder, not a string of failed runs."""
    from data import dataset_present, load_dataset  # torch: only when runs are about to train

    cache = {}
    for name in sorted({p.spec["data"]["dataset"] for p in plans}):
        if not download and not dataset_present(name, data_root):
            raise UsageError(f"dataset {name!r} is not under --data {data_root!r} and downloads are off "
                             f"(--no-download or $CLREPRO_NO_DOWNLOAD); point --data at a folder that holds it")
        try:
            cache[name] = load_dataset(name, data_root, download=download)
        except Exception as e:  # a failed download, a bad checksum, a truncated file
            raise UsageError(f"dataset {name!r} could not be loaded from {data_root!r}: {type(e).__name__}: {e}") \
                from None
    return cache
