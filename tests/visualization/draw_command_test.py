"""Tests of `spinenet_tf.visualization.draw_command`: the `python -m spinenet_tf.draw` config and run, in-process."""

import pathlib
import tempfile

from absl.testing import parameterized
from PIL import Image

from spinenet_tf import registry
from spinenet_tf.visualization import draw_command


class RunTest(parameterized.TestCase):

    def test_writes_a_png_of_the_asked_size(self):
        with tempfile.TemporaryDirectory() as tmp:
            out = pathlib.Path(tmp, "new", "folder", "spinenet49.png")
            path = draw_command.run(draw_command.DrawConfig("spinenet-49", str(out), 1200, 450))
            self.assertEqual(path, out)
            with Image.open(out) as image:
                self.assertEqual(image.format, "PNG")
                self.assertEqual(image.size, (1200, 450))
                image.load()

    @parameterized.named_parameters(
        ("unknown_model", dict(model="spinenet-50", out="a.png"), "--model=spinenet-50: unknown backbone; valid "
         "names: " + ", ".join(registry.BACKBONES) + "$"),
        ("not_png", dict(model="spinenet-49", out="a.jpg"), "--out=a.jpg: must be a path ending in .png"),
        ("too_small", dict(model="spinenet-49", out="a.png", width=300), "--width=300 --height=600: must be at least"),
    )
    def test_config_errors_name_the_flag(self, kwargs, message):
        with self.assertRaisesRegex(ValueError, message):
            draw_command.DrawConfig(**kwargs)
