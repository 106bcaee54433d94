"""Where tensorflow-datasets and grain are not installed (an accelerator machine with JAX alone), the IDX
datasets and synthetic data are read straight into memory and a run trains on the device-held split: the
arrays are those the tfds builders prepare. Simulated in a subprocess in which both imports fail."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import cnn.data

ROOT = pathlib.Path(__file__).resolve().parents[2]
MNIST = pathlib.Path(os.environ.get("CNN_DATA_DIR", "")) / "mnist" / "t10k-images-idx3-ubyte.gz"
WITHOUT = "import sys\nfor name in ('tensorflow_datasets', 'grain', 'grain.experimental'):\n    sys.modules[name] = None\n"


def run(code: str, tmp_path, **env):
    environment = {**os.environ, "JAX_PLATFORMS": "cpu", "CNN_PREPARED_DIR": str(tmp_path / "prepared"), **env}
    done = subprocess.run([sys.executable, "-c", WITHOUT + code], cwd=ROOT, env=environment, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()[-1]


@pytest.mark.skipif(not MNIST.exists(), reason="needs the real MNIST files (CNN_DATA_DIR)")
def test_mnist_in_memory_equals_the_prepared_split(tmp_path, monkeypatch):
    code = ("import json, numpy as np, cnn.data\ns = cnn.data.source('mnist', 'test[:2000]')\n"
            "x = np.stack([r['image'] for r in s.__getitems__(range(len(s)))])\n"
            "print(json.dumps([len(s), int(x.sum()), [int(v) for v in s.labels[:10]], [float(m) for m in s.mean]]))")
    length, pixel_sum, labels, mean = json.loads(run(code, tmp_path))
    monkeypatch.setenv("CNN_PREPARED_DIR", str(tmp_path / "prepared"))
    prepared = cnn.data.source("mnist", "test[:2000]")
    images = np.stack([r["image"] for r in prepared.__getitems__(range(len(prepared)))])
    assert (length, pixel_sum) == (len(prepared), int(images.sum()))
    assert labels == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    np.testing.assert_allclose(mean, prepared.mean, rtol=1e-6)


def test_a_run_trains_without_tfds_and_grain(tmp_path):
    code = ("import json\nfrom cnn.train.loop import train_and_evaluate\nfrom experiments.configs import mnist_simple_cnn\n"
            "config = mnist_simple_cnn.get_config('smoke')\n"
            f"print(json.dumps(train_and_evaluate(config, {str(tmp_path / 'run')!r})))")
    results = json.loads(run(code, tmp_path))
    assert results["steps"] == 6 and results["test_examples"] == 40
    with pytest.raises(cnn.data.DataError, match="cifar10 needs tensorflow-datasets"):
        from cnn.data import without_tfds

        without_tfds.source("cifar10", "train")
