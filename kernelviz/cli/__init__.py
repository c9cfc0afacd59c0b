"""The ``kernelviz`` command line: a thin shell over the library.

Each command parses its arguments, calls one library function (:mod:`kernelviz.jobs`,
:mod:`kernelviz.sets`), and prints what it reports. Errors the user can fix
(:class:`~kernelviz.errors.KernelvizError`) become a one-line message and exit status 1, never a
traceback; an option the chosen mode does not use is refused in one line. Options shared by several commands
are declared once, in ``options`` (with the progress bars every command shows), with their defaults read from the
library; the commands: ``optimize`` (filter, grid, atlas, examples), ``inspect`` (layers, maps, heatmap, weights),
``concepts``, ``photo`` (caricature, dream, accentuate), ``serve``.
"""

from __future__ import annotations

import click
import matplotlib

matplotlib.use("Agg")  # files only: the CLI never opens a window

from .concepts import concepts_cmd
from .inspect import ablate_cmd, heatmap_cmd, layers_cmd, maps_cmd, units_cmd, weights_cmd
from .optimize import atlas_cmd, examples_cmd, filter_cmd, grid_cmd
from .photo import accentuate_cmd, caricature_cmd, dream_cmd
from .serve import serve_cmd

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="kernelviz")
def main() -> None:
    """See what the filters of a trained CNN respond to.

    MODEL is a torchvision classifier name (vgg16, vgg19_bn, resnet50, ...) or
    package.module:factory, a function returning your own nn.Module.
    """


for _command in (
    layers_cmd,
    filter_cmd,
    grid_cmd,
    atlas_cmd,
    examples_cmd,
    units_cmd,
    ablate_cmd,
    concepts_cmd,
    caricature_cmd,
    dream_cmd,
    accentuate_cmd,
    maps_cmd,
    heatmap_cmd,
    weights_cmd,
    serve_cmd,
):
    main.add_command(_command)
