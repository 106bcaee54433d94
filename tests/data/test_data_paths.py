"""Where raw and prepared data live: the argument, else the environment variable, else the home cache."""

from __future__ import annotations

import pathlib

import cnn.data


def test_data_dir_resolution(tmp_path, monkeypatch):
    monkeypatch.delenv("CNN_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cnn.data.resolve_data_dir() == tmp_path / "xdg" / "cnn" / "data"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cnn.data.resolve_data_dir() == pathlib.Path.home() / ".cache" / "cnn" / "data"
    monkeypatch.setenv("CNN_DATA_DIR", str(tmp_path / "env"))
    assert cnn.data.resolve_data_dir() == tmp_path / "env"
    assert cnn.data.resolve_data_dir(tmp_path / "arg") == tmp_path / "arg"


def test_prepared_dir_resolution(tmp_path, monkeypatch):
    monkeypatch.delenv("CNN_PREPARED_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cnn.data.resolve_prepared_dir() == tmp_path / "xdg" / "cnn" / "prepared"
    monkeypatch.setenv("CNN_PREPARED_DIR", str(tmp_path / "env"))
    assert cnn.data.resolve_prepared_dir() == tmp_path / "env"
    assert cnn.data.resolve_prepared_dir(str(tmp_path / "arg")) == tmp_path / "arg"


def test_source_prepares_into_the_environment_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("CNN_PREPARED_DIR", str(tmp_path / "elsewhere"))
    source = cnn.data.source("synthetic", "test", image_shape=(2, 2, 1), num_classes=2, num_train=2, num_test=3)
    assert source.path.is_relative_to(tmp_path / "elsewhere" / "synthetic")
    assert (source.path / "dataset_info.json").exists() and len(source) == 3
