"""Draws a SpineNet backbone's scale-permuted network as a PNG, in the style of the paper's figures.

    python -m spinenet_tf.draw --model=spinenet-49 --out=docs/spinenet49.png
    python -m spinenet_tf.draw --model=spinenet-49 --block_specs=search/best.json --out=best.png
"""

from absl import flags

from spinenet_tf import cli
from spinenet_tf.visualization import draw_command

_MODEL = flags.DEFINE_string("model", None, "A backbone name from `spinenet_tf.list_models()`.")
_OUT = flags.DEFINE_string("out", None, "Path of the PNG to write; missing folders are created.")
_WIDTH = flags.DEFINE_integer("width", 1600, "Picture width in pixels.")
_HEIGHT = flags.DEFINE_integer("height", 600, "Picture height in pixels.")
_BLOCK_SPECS = flags.DEFINE_string("block_specs", None, "A block-spec file (JSON table and stem, e.g. a search's "
                                   "best.json) to draw instead of the backbone's table.")


def config_from_flags() -> draw_command.DrawConfig:
    """The only place that reads flags."""
    return draw_command.DrawConfig(model=_MODEL.value, out=_OUT.value, width=_WIDTH.value, height=_HEIGHT.value,
                                   block_specs=_BLOCK_SPECS.value)


def main() -> None:
    config = config_from_flags()
    try:
        path = draw_command.run(config)
    except OSError as error:
        cli.fail(f"--out={config.out}: cannot write {error.filename or config.out}: {error.strerror or error}")
    print(f"Wrote {path} ({config.width}x{config.height})")


if __name__ == "__main__":
    flags.mark_flags_as_required(["model", "out"])
    cli.run(main)
