"""``kernelviz serve``: the live explorer."""

from __future__ import annotations

from pathlib import Path

import click

from .options import ModelSource, errors_to_click, model_options

__all__ = ["serve_cmd"]


@click.command("serve")
@click.argument("model")
@model_options
@click.option(
    "--atlas",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Atlas folder that keeps the pictures (kernelviz atlas output serves at once) [default: a new temporary "
    "folder].",
)
@click.option(
    "--images",
    type=click.Path(path_type=Path, exists=True, file_okay=False),
    default=None,
    help="Folder of natural images: dataset examples on filter pages, a picker on the image page.",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind (127.0.0.1: this machine only).")
@click.option("--port", type=click.IntRange(1, 65535), default=8765, show_default=True, help="Port.")
@click.option(
    "--no-token", is_flag=True, help="Do not ask for the random token (anyone who can reach the port can use it)."
)
@errors_to_click
def serve_cmd(
    model: str, source: ModelSource, atlas: Path | None, images: Path | None, host: str, port: int, no_token: bool
) -> None:
    """Explore MODEL in the browser: its layers, each filter's picture (computed as you look), its kernel and
    the channels that feed it, real images that excite it, and any photo through the network.

    Prints the URL to open (with its token); Ctrl-C stops it, every written picture intact.
    """
    from ..serve import serve

    serve(source.load(model), atlas=atlas, images=images, host=host, port=port, token=not no_token, say=click.echo)
