"""avfix command line: parse options, call pipeline/, print results. No logic lives here."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import click

from pipeline import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(__version__, prog_name="avfix")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
def main(verbose: int) -> None:
    """avfix: pseudo human-fixation maps from category-tagged videos, and an audio-visual
    saliency network trained on them."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


def _emit_summary(summary: dict, as_json: bool, text: str) -> None:
    if as_json:
        click.echo(json.dumps(summary, indent=2, default=str))
    else:
        click.echo(text)


# --- extract -----------------------------------------------------------------------------------
# (filled in below by the extract stage)

# --- synth -------------------------------------------------------------------------------------

# --- evaluate ----------------------------------------------------------------------------------


if __name__ == "__main__":
    main()
