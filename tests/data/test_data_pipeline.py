"""The grain pipeline: coverage per epoch across processes, reshuffling, determinism, exact resumption."""

from __future__ import annotations

import json

import numpy as np
import pytest

import cnn.data

NUM_EXAMPLES = 100


@pytest.fixture(scope="module")
def numbered():
    """Example i has every pixel equal to i (so a batch says which examples it holds) and label i % 10."""
    images = np.broadcast_to(np.arange(NUM_EXAMPLES, dtype=np.uint8)[:, None, None, None], (NUM_EXAMPLES, 3, 2, 1))
    return cnn.data.ArraySource(np.ascontiguousarray(images), np.arange(NUM_EXAMPLES) % 10)


def _ids(batch) -> list:
    return batch["image"][:, 0, 0, 0].astype(int).tolist()


def _epochs(source, process_count, global_batch, num_epochs, seed=0):
    """Per epoch, per step: the ids each simulated process reads."""
    steps = cnn.data.steps_per_epoch(len(source), global_batch)
    per_process = [
        [_ids(b) for b in cnn.data.train_iterator(source, global_batch=global_batch, seed=seed, num_epochs=num_epochs,
                                                  process_index=p, process_count=process_count)]
        for p in range(process_count)
    ]
    return [[[ids for p in range(process_count) for ids in [per_process[p][e * steps + s]]] for s in range(steps)]
            for e in range(num_epochs)]


@pytest.mark.parametrize("process_count", [1, 2, 4])
def test_every_example_once_per_epoch_across_processes(numbered, process_count):
    epochs = _epochs(numbered, process_count, global_batch=20, num_epochs=2)
    for epoch in epochs:
        seen = [i for step in epoch for ids in step for i in ids]
        assert sorted(seen) == list(range(NUM_EXAMPLES))  # 100 = 5 global batches of 20: nothing dropped
        assert all(len(ids) == 20 // process_count for step in epoch for ids in step)
    assert epochs[0] != epochs[1]


def test_processes_split_the_same_global_batches(numbered):
    single = _epochs(numbered, 1, global_batch=20, num_epochs=1)[0]
    four = _epochs(numbered, 4, global_batch=20, num_epochs=1)[0]
    assert [sum(step, []) for step in four] == [step[0] for step in single]


def test_train_drops_the_remainder_only(numbered):
    epoch = _epochs(numbered, 2, global_batch=16, num_epochs=1)[0]  # 6 steps of 16, 4 examples dropped
    seen = [i for step in epoch for ids in step for i in ids]
    assert len(epoch) == 6 and len(seen) == 96 and len(set(seen)) == 96


def test_order_depends_on_seed_and_epoch_only(numbered):
    first = _epochs(numbered, 1, global_batch=10, num_epochs=3, seed=7)
    again = _epochs(numbered, 1, global_batch=10, num_epochs=3, seed=7)
    other = _epochs(numbered, 1, global_batch=10, num_epochs=3, seed=8)
    assert first == again
    assert first != other
    assert len({json.dumps(epoch) for epoch in first}) == 3  # a different order every epoch
    assert first[0] != [[list(range(s * 10, s * 10 + 10))] for s in range(10)]  # actually shuffled


def test_batch_format(numbered):
    batch = next(cnn.data.train_iterator(numbered, global_batch=8, seed=0, process_index=0, process_count=2))
    assert batch["image"].dtype == np.uint8 and batch["image"].shape == (4, 3, 2, 1)
    assert batch["label"].dtype == np.int32 and batch["label"].tolist() == [i % 10 for i in _ids(batch)]
    assert "mask" not in batch
    np.testing.assert_allclose(numbered.mean, [49.5])  # ArraySource statistics, pixel units
    np.testing.assert_allclose(numbered.std, [np.arange(100).std()], rtol=1e-6)


@pytest.mark.parametrize("process_count", [1, 2, 4])
def test_eval_visits_every_example_exactly_once_with_mask(numbered, process_count):
    global_batch = 24  # 100 examples: 5 batches, the last one holds 4 real examples
    seen, counts = [], []
    for p in range(process_count):
        batches = list(cnn.data.eval_iterator(numbered, global_batch=global_batch, process_index=p, process_count=process_count))
        counts.append(len(batches))
        for batch in batches:
            assert batch["image"].shape[0] == global_batch // process_count and batch["mask"].dtype == bool
            assert not batch["image"][~batch["mask"]].any() and not batch["label"][~batch["mask"]].any()
            seen += np.asarray(_ids(batch))[batch["mask"]].tolist()
    assert counts == [cnn.data.eval_steps(NUM_EXAMPLES, global_batch)] * process_count == [5] * process_count
    assert sorted(seen) == list(range(NUM_EXAMPLES))


def test_eval_keeps_source_order(numbered):
    batches = list(cnn.data.eval_iterator(numbered, global_batch=30, process_index=0, process_count=1))
    ids = [i for b in batches for i, real in zip(_ids(b), b["mask"]) if real]
    assert ids == list(range(NUM_EXAMPLES))


@pytest.mark.parametrize("worker_count", [0, 1])
def test_restored_state_continues_with_the_next_batch(numbered, worker_count):
    """The reference reads in this process; with a worker process the batches must be the same ones."""
    kwargs = dict(global_batch=8, seed=3, process_index=1, process_count=2)
    reference = [_ids(b) for b, _ in zip(cnn.data.train_iterator(numbered, **kwargs), range(30))]
    iterator = cnn.data.train_iterator(numbered, worker_count=worker_count, **kwargs)
    consumed = [_ids(next(iterator)) for _ in range(17)]  # crosses the epoch boundary (12 steps per epoch)
    state = json.loads(json.dumps(iterator.get_state()))  # what a checkpoint stores
    after = [_ids(next(iterator)) for _ in range(3)]
    iterator.close()
    restored = cnn.data.train_iterator(numbered, worker_count=worker_count, **kwargs)
    restored.set_state(state)
    resumed = [_ids(next(restored)) for _ in range(13)]
    restored.close()
    assert consumed == reference[:17] and after == reference[17:20]
    assert resumed == reference[17:30]


def test_finite_epochs_end(numbered):
    batches = list(cnn.data.train_iterator(numbered, global_batch=25, seed=0, num_epochs=2, process_index=0, process_count=1))
    assert len(batches) == 8


def test_bad_batch_sizes(numbered):
    with pytest.raises(ValueError, match=r"global_batch=10 must be a positive multiple of process_count=4 \(e.g. 8\)"):
        cnn.data.train_iterator(numbered, global_batch=10, seed=0, process_index=0, process_count=4)
    with pytest.raises(ValueError, match=r"global_batch=128 is larger than the 100 examples"):
        cnn.data.train_iterator(numbered, global_batch=128, seed=0, process_index=0, process_count=1)
    with pytest.raises(ValueError, match=r"seed=-1; expected a non-negative integer"):
        cnn.data.train_iterator(numbered, global_batch=10, seed=-1, process_index=0, process_count=1)
    with pytest.raises(ValueError, match=r"process_index=2 is outside \[0, process_count=2\)"):
        cnn.data.eval_iterator(numbered, global_batch=8, process_index=2, process_count=2)


def test_defaults_to_jax_process(numbered):
    import jax

    batch = next(cnn.data.train_iterator(numbered, global_batch=jax.process_count() * 4, seed=0))
    assert batch["image"].shape[0] == 4


def test_pipeline_over_a_prepared_source():
    source = cnn.data.source("synthetic", "train", image_shape=(4, 4, 3), num_classes=5, num_train=64, num_test=8)
    batches = list(cnn.data.train_iterator(source, global_batch=16, seed=1, num_epochs=1, process_index=0, process_count=1))
    assert len(batches) == 4 and all(b["image"].shape == (16, 4, 4, 3) for b in batches)
    read = sorted((bytes(image), int(label)) for b in batches for image, label in zip(b["image"], b["label"]))
    stored = sorted((bytes(e["image"]), e["label"]) for e in source.__getitems__(range(64)))
    assert read == stored


def test_orbax_checkpoint_round_trip(numbered, tmp_path):
    """The way the train engine saves the position: grain's orbax handler inside a CheckpointManager."""
    import grain
    import orbax.checkpoint as ocp

    kwargs = dict(global_batch=4, seed=1, process_index=0, process_count=1)
    iterator = cnn.data.train_iterator(numbered, **kwargs)
    for _ in range(31):  # into the second epoch (25 steps per epoch)
        next(iterator)
    with ocp.CheckpointManager(tmp_path / "checkpoints") as manager:
        manager.save(31, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(iterator)))
        manager.wait_until_finished()
    expected = [_ids(next(iterator)) for _ in range(3)]
    restored = cnn.data.train_iterator(numbered, **kwargs)
    with ocp.CheckpointManager(tmp_path / "checkpoints") as manager:
        manager.restore(31, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(restored)))
    assert [_ids(next(restored)) for _ in range(3)] == expected


@pytest.mark.parametrize("split", ["train", "train[10:50]"])
def test_batched_reads_parse_records_as_tfds_decodes_them(split):
    source = cnn.data.source("synthetic", split, image_shape=(5, 3, 2), num_classes=7, num_train=64, num_test=8)
    indices = [3, 0, 17, 3, 29]
    ours = source.__getitems__(indices)
    assert callable(source._parse)  # the raw-record parser, not tfds's generic decoding
    for example, record in zip(ours, source._source.__getitems__(indices)):  # tfds's own decoding
        np.testing.assert_array_equal(example["image"], record["image"])
        assert example["image"].shape == (5, 3, 2) and example["image"].dtype == np.uint8
        assert example["label"] == int(record["label"])
    assert source.__getitems__([]) == []


def test_batched_reads_fall_back_to_tfds_when_the_parser_disagrees(monkeypatch):
    source = cnn.data.source("synthetic", "train", image_shape=(4, 4, 1), num_classes=3, num_train=16, num_test=4)
    original = type(source)._example

    def shifted(self, record):  # tfds's decoding, with labels the raw parser cannot reproduce
        example = original(self, record)
        return {**example, "label": example["label"] + 100}

    monkeypatch.setattr(type(source), "_example", shifted)
    labels = [e["label"] for e in source.__getitems__(range(16))]
    assert source._parse is False and min(labels) >= 100
