"""``kernelviz serve``: the live explorer."""

from __future__ import annotations

from pathlib import Path

import click

from ..optvis.settings import QUICK, OptimSettings
from .options import ModelSource, errors_to_click, given_settings, model_options, optimize_options

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
    "--token",
    envvar="KERNELVIZ_TOKEN",
    default=None,
    help="The token every request needs, fixed so that links last across restarts (or $KERNELVIZ_TOKEN; at "
    "least 16 characters) [default: a new random one each start].",
)
@click.option("--no-token", is_flag=True, help="Do not ask for a token (anyone who can reach the port can use it).")
@click.option(
    "--quick",
    is_flag=True,
    help=f"Previews: {QUICK.steps} steps at {QUICK.size} px unless set otherwise (the optimization options below "
    "override it).",
)
@optimize_options
@errors_to_click
def serve_cmd(
    model: str,
    source: ModelSource,
    atlas: Path | None,
    images: Path | None,
    host: str,
    port: int,
    token: str | None,
    no_token: bool,
    quick: bool,
    settings: OptimSettings,
) -> None:
    """Explore MODEL in the browser: its layers, each filter's picture (computed as you look), its kernel and
    the channels that feed it, real images that excite it, a layer's concepts, and any photo through the network.

    Prints the URL to open (with its token); Ctrl-C stops it, every written picture intact. The optimization
    options set how the pictures are made; without any (and without --quick), an atlas already in --atlas keeps
    its own settings.
    """
    from ..serve import serve

    if token is not None and no_token:
        raise click.UsageError("--token and --no-token exclude each other")
    if token is not None and len(token) < 16:
        raise click.BadParameter("a token must hold at least 16 characters (a guessable token protects nothing)",
                                 param_hint="--token")  # fmt: skip
    given = given_settings(settings)
    chosen = QUICK.with_(**given) if quick else settings if given else None
    serve(
        source.load(model),
        atlas=atlas,
        images=images,
        host=host,
        port=port,
        token=False if no_token else token or True,
        settings=chosen,
        say=click.echo,
    )
