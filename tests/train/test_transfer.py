"""cnn.train.transfer and the optimizer's groups: the head of each family (against the twins' tables), frozen
BatchNorm layers in evaluation mode, linear probing, and per-group learning rates against hand-computed updates."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

import cnn.models
from cnn.models.torch_keys import layout
from cnn.train import optim, transfer

# One model of each family with a torchvision/timm twin, at a small input where the family allows one.
FAMILY_SAMPLES = {
    "resnet18": (32, 32, 3), "vgg11": (32, 32, 3), "alexnet": (64, 64, 3), "googlenet": (64, 64, 3),
    "inception_v3": (75, 75, 3), "densenet121": (32, 32, 3), "mobilenet_v2": (32, 32, 3),
    "mobilenet_v3_small": (32, 32, 3), "efficientnet_b0": (32, 32, 3), "convnext_tiny": (32, 32, 3),
    "squeezenet1_1": (64, 64, 3), "r3d_18": (4, 16, 16, 3), "vit_tiny_patch16_224": (32, 32, 3),
    "mobilenet_v1": (32, 32, 3),
}


def test_every_family_with_a_twin_is_sampled():
    assert {cnn.models.twin(name).family for name in cnn.models.TWINS} == {cnn.models.twin(n).family for n in FAMILY_SAMPLES}


@pytest.mark.parametrize("name", sorted(FAMILY_SAMPLES))
def test_the_head_is_the_twins_classifier(name):
    """The head (shapes that follow the class count) is the layer the twin's table calls its classifier, plus the
    auxiliary classifiers' last layers where the twin has them (GoogLeNet, Inception-v3)."""
    spec = cnn.models.twin(name)
    fields = dict(spec.kwargs.get("aux_logits") and {"aux_logits": True} or {}, **spec.overrides)
    model = cnn.models.create(name, num_classes=10, **fields)
    shape = FAMILY_SAMPLES[name]
    head = transfer.head_paths(model, shape)
    entries = layout(spec, model, transfer._variable_shapes(model, shape)).by_key()
    classifier = {entries[spec.classifier].our_name, entries[spec.classifier.replace(".weight", ".bias")].our_name}
    assert {f"params/{p}" for p in head} >= classifier
    auxiliary = {p for p in head if f"params/{p}" not in classifier}
    expected_aux = {"googlenet": 4, "inception_v3": 2}.get(name, 0)  # kernel and bias of each auxiliary classifier
    assert len(auxiliary) == expected_aux, sorted(auxiliary)


def test_the_head_of_the_small_digit_models():
    assert transfer.head_paths(cnn.models.create("lenet5", num_classes=10), (28, 28, 1)) == {"fc3/kernel", "fc3/bias"}
    assert transfer.head_paths(cnn.models.create("simple_cnn", num_classes=4), (28, 28, 1)) == {"fc2/kernel", "fc2/bias"}


# ----------------------------------------------------------------------------- evaluation mode


def small_resnet():
    model = cnn.models.create("resnet20_cifar", num_classes=3, stage_sizes=(1, 1, 1), widths=(4, 4, 8), stem_width=4,
                              zero_init_last=False)  # (a zero-initialised last norm would make a block the identity)
    x = jax.random.normal(jax.random.PRNGKey(1), (4, 8, 8, 3))
    variables = model.init(jax.random.PRNGKey(0), x, train=False)
    # Running statistics far from the batch's, so that evaluation mode and training mode differ everywhere.
    stats = jax.tree.map(lambda s: s + 0.5 * jax.random.uniform(jax.random.PRNGKey(s.size), s.shape), variables["batch_stats"])
    return model, {**variables, "batch_stats": stats}, x


def outputs(apply, variables, x, train):
    mutable = ["batch_stats", "intermediates"] if train else ["intermediates"]
    run = jax.jit(lambda v, x: apply(v, x, train=train, mutable=mutable, capture_intermediates=True))
    logits, state = run(variables, x)
    captured = {name: value["__call__"][0] for name, value in state["intermediates"].items() if "__call__" in value}
    return logits, captured, state.get("batch_stats")


def test_frozen_batch_norm_keeps_its_statistics_and_normalises_with_them():
    model, variables, x = small_resnet()
    freezing = transfer.Freezing(("^stem/",))
    _, trained, stats = outputs(freezing.apply_fn(model.apply), variables, x, train=True)
    _, evaluated, _ = outputs(model.apply, variables, x, train=False)
    _, plain, plain_stats = outputs(model.apply, variables, x, train=True)
    np.testing.assert_array_equal(trained["stem"], evaluated["stem"])  # the frozen stem: evaluation mode
    assert not np.allclose(plain["stem"], evaluated["stem"])  # (without freezing it is not)
    for key in ("mean", "var"):
        np.testing.assert_array_equal(stats["stem"]["norm"][key], variables["batch_stats"]["stem"]["norm"][key])
        assert not np.allclose(plain_stats["stem"]["norm"][key], variables["batch_stats"]["stem"]["norm"][key])
    # The blocks after it train as usual: batch statistics, and running statistics that move.
    assert not np.allclose(stats["stage1_block1"]["conv1"]["norm"]["mean"],
                           variables["batch_stats"]["stage1_block1"]["conv1"]["norm"]["mean"])
    assert not np.allclose(trained["stage1_block1"], evaluated["stage1_block1"])


def test_a_batch_norm_is_frozen_only_when_all_its_parameters_are():
    model, variables, x = small_resnet()
    scale_only = transfer.Freezing(("^stem/norm/scale$",))
    _, _, stats = outputs(scale_only.apply_fn(model.apply), variables, x, train=True)
    assert not np.allclose(stats["stem"]["norm"]["mean"], variables["batch_stats"]["stem"]["norm"]["mean"])


def test_linear_probe_trains_a_linear_head_on_features_computed_in_evaluation_mode():
    model, variables, x = small_resnet()
    head = transfer.head_paths(model, x.shape[1:])
    probe = transfer.Freezing(linear_probe=True, head=head)
    params = transfer.leaf_paths(variables["params"])
    assert [p for p in params if not probe.frozen(p)] == ["head/fc/bias", "head/fc/kernel"]
    logits, _, stats = outputs(probe.apply_fn(model.apply), variables, x, train=True)
    eval_logits = model.apply(variables, x, train=False)
    np.testing.assert_allclose(logits, eval_logits, rtol=1e-6, atol=1e-6)
    jax.tree.map(np.testing.assert_array_equal, stats, variables["batch_stats"])  # no statistic moved
    assert not np.allclose(model.apply(variables, x, train=True, mutable=["batch_stats"])[0], eval_logits)


# ----------------------------------------------------------------------------- per-group learning rates

PARAMS = {
    "stem": {"kernel": jnp.linspace(-1.0, 1.0, 12).reshape(2, 2, 3, 1), "bias": jnp.full((1,), 0.25)},
    "head": {"fc": {"kernel": jnp.linspace(0.5, -0.5, 6).reshape(2, 3), "bias": jnp.zeros(3)}},
}
HEAD = {"head/fc/kernel", "head/fc/bias"}


def grads(step):
    leaves, tree = jax.tree.flatten(PARAMS)
    key = jax.random.PRNGKey(step)
    return jax.tree.unflatten(tree, [jax.random.normal(jax.random.fold_in(key, i), x.shape) for i, x in enumerate(leaves)])


def run(tx, steps):
    params, state = PARAMS, tx.init(PARAMS)
    for step in range(steps):
        updates, state = tx.update(grads(step), state, params)
        params = optax.apply_updates(params, updates)
    return params


def build(frozen=None, **fields):
    config = ml_collections.ConfigDict({**dict(name="sgd", learning_rate=0.1, momentum=0.9, nesterov=False,
                                               weight_decay=0.0, schedule="constant"), **fields})
    return optim.build(config, steps_per_epoch=10, total_steps=100, global_batch=8, frozen=frozen,
                       head=HEAD.__contains__)[0]


def is_head(path):
    return path[0].key == "head"


def test_backbone_lr_scale_with_momentum_sgd_against_a_hand_computed_update():
    new = run(build(backbone_lr_scale=0.1), steps=2)
    g0, g1 = grads(0), grads(1)

    def expected(path, p, a, b):  # torch.optim.SGD: buf = g0, then 0.9 * buf + g1; p -= lr * buf at each step
        lr = 0.1 if is_head(path) else 0.01
        return p - lr * a - lr * (0.9 * a + b)

    want = jax.tree_util.tree_map_with_path(expected, PARAMS, g0, g1)
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7), new, want)


def test_backbone_lr_scale_with_adamw_against_a_hand_computed_update():
    new = run(build(name="adamw", backbone_lr_scale=0.25, weight_decay=0.5, decay_mask="all"), steps=1)

    def expected(path, p, g):  # first AdamW step: m/sqrt(v) = g/|g| (bias-corrected), decoupled decay lr * wd * p
        lr = 0.1 if is_head(path) else 0.025
        return p - lr * (g / (jnp.abs(g) + 1e-8) + 0.5 * p)

    want = jax.tree_util.tree_map_with_path(expected, PARAMS, grads(0))
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6), new, want)


def test_frozen_parameters_stay_with_per_group_rates_and_clipping():
    frozen = lambda path: path == "stem/bias"  # noqa: E731
    tx = build(frozen=frozen, backbone_lr_scale=0.5, momentum=0.0, clip_norm=1e-3)
    new = run(tx, steps=1)
    np.testing.assert_array_equal(new["stem"]["bias"], PARAMS["stem"]["bias"])
    # Clipping sees the trained parameters only: their clipped gradient has norm 1e-3.
    g = grads(0)
    trained = [g["stem"]["kernel"], g["head"]["fc"]["kernel"], g["head"]["fc"]["bias"]]
    factor = 1e-3 / float(jnp.sqrt(sum(jnp.sum(x**2) for x in trained)))
    np.testing.assert_allclose(new["stem"]["kernel"], PARAMS["stem"]["kernel"] - 0.05 * factor * g["stem"]["kernel"], rtol=1e-5)
    np.testing.assert_allclose(new["head"]["fc"]["kernel"], PARAMS["head"]["fc"]["kernel"] - 0.1 * factor * g["head"]["fc"]["kernel"],
                               rtol=1e-5)


def test_backbone_lr_scale_needs_the_head():
    config = ml_collections.ConfigDict(dict(name="sgd", learning_rate=0.1, backbone_lr_scale=0.1))
    with pytest.raises(ValueError, match="backbone_lr_scale=0.1 needs"):
        optim.build(config, steps_per_epoch=1, total_steps=1, global_batch=1)
