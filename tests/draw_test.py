"""Tests of spinenet_tf/draw.py, the `python -m spinenet_tf.draw` CLI, run as a user would in a subprocess."""

import os
import pathlib
import subprocess
import sys
import tempfile

from absl.testing import parameterized
from PIL import Image

from spinenet_tf import registry

_REPO = pathlib.Path(__file__).resolve().parents[1]


class CliTest(parameterized.TestCase):
    """Runs `python -m spinenet_tf.draw` as a user would (in-process, its flags could clash with other CLIs')."""

    def _run(self, *args):
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
        return subprocess.run([sys.executable, "-m", "spinenet_tf.draw", *args], cwd=_REPO, env=env,
                              capture_output=True, text=True, timeout=300)

    def test_writes_the_file(self):
        with tempfile.TemporaryDirectory() as tmp:
            out = pathlib.Path(tmp, "mobile49xs.png")
            result = self._run("--model=spinenet-mobile-49xs", f"--out={out}", "--width=1000", "--height=420")
            self.assertEqual(result.returncode, 0, result.stderr)
            with Image.open(out) as image:
                self.assertEqual(image.size, (1000, 420))

    def test_bad_model_name(self):
        with tempfile.TemporaryDirectory() as tmp:
            out = pathlib.Path(tmp, "x.png")
            result = self._run("--model=spinenet-50", f"--out={out}")
            self.assertEqual(result.returncode, 2)
            self.assertFalse(out.exists())
        line = "error: --model=spinenet-50: unknown backbone; valid names: " + ", ".join(registry.BACKBONES)
        self.assertEqual(result.stderr.strip().splitlines(), [line])

    def test_unwritable_out(self):
        with tempfile.TemporaryDirectory() as tmp:
            blocker = pathlib.Path(tmp, "file")
            blocker.write_text("")
            out = blocker / "x.png"  # a path under a regular file
            result = self._run("--model=spinenet-mobile-49xs", f"--out={out}")
        self.assertEqual(result.returncode, 2)
        self.assertEqual(result.stderr.strip().splitlines()[-1],
                         f"error: --out={out}: cannot write {out}: Not a directory")
