"""``import cnn.data`` and augmentation work where tensorflow_datasets and grain are absent (a GPU box with JAX only)."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_import_and_augment_without_tfds_or_grain(tmp_path):
    script = textwrap.dedent(
        """
        import sys

        class Absent:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("tensorflow_datasets", "grain", "tensorflow", "array_record"):
                    raise ImportError(f"{name} is not installed here")

        sys.meta_path.insert(0, Absent())
        import jax, jax.numpy as jnp
        import cnn.data

        chain = cnn.data.augmentation("crop(1)|flip", mean=[1.0], std=[2.0])
        images, labels = chain(jax.random.key(0), jnp.zeros((2, 4, 4, 1), jnp.uint8), jnp.zeros(2, jnp.int32))
        assert images.shape == (2, 4, 4, 1) and float(images.max()) == -0.5
        assert "mnist" in cnn.data.names()
        source = cnn.data.ArraySource(jnp.zeros((4, 2, 2, 1), jnp.uint8).__array__(), [0, 1, 0, 1])
        assert len(source) == 4
        assert not [m for m in sys.modules if m.split(".")[0] in ("tensorflow_datasets", "grain")]
        try:  # IDX datasets are read without tfds: an empty folder names the missing official file
            cnn.data.source("mnist", "train", data_dir=sys.argv[1], download=False)
        except cnn.data.DataError as error:
            print("source:", error)
        """
    )
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "source: mnist: missing train-images-idx3-ubyte.gz" in result.stdout
