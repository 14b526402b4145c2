"""The five methods (and the Proxy-Anchor baseline) against the Method contract, on tiny CPU data.

Every test builds the method's demo recipe (resnet18_s2 with a random init instead of the demo's
pretrained stand-in, 64-d) for 5 classes and drives it exactly as the engine does (zero_grad,
training_step, backward, clip, step, after_step).
"""
from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn

from dml_core.methods import build_method
from dml_core.methods.recipes import METHODS  # the published methods (the toy has its own tests)
from dml_core.methods.recipes import demo_recipe, recipe_by_name

NUM_CLASSES = 5
ALL = list(METHODS)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def batch(n_per_class: int = 2, size: int = 16, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(NUM_CLASSES).repeat_interleave(n_per_class)
    # class-dependent images so that a step has something to learn
    base = torch.randn(NUM_CLASSES, 3, size, size, generator=g)
    images = base[labels] + 0.3 * torch.randn(len(labels), 3, size, size, generator=g)
    return images, labels


def random_init(method: str, **overrides) -> dict:
    """The method's demo recipe with a random trunk (the contract, not the weights, is tested)."""
    return demo_recipe(method, **{"pretrained": False, **overrides})


def make(method: str, **overrides):
    torch.manual_seed(0)
    return build_method(random_init(method, **overrides), NUM_CLASSES)


def step(m, images, labels, epoch: int = 1):
    """One engine step; returns the StepOutput."""
    m.zero_grad()
    out = m.training_step(images, labels)
    out.loss.backward()
    m.clip_gradients()
    m.optimizer_step(epoch)
    m.after_optimizer_step(out, labels)
    return out


def start(m, epoch: int):
    m.model.train()
    m.criterion.train()
    m.on_epoch_start(epoch)


def snapshot(params):
    return [p.detach().clone() for p in params]


def changed(before, params) -> bool:
    return any(not torch.equal(b, p.detach()) for b, p in zip(before, params))


def bn2d(module):
    return [m for m in module.modules() if isinstance(m, nn.BatchNorm2d)]


# ------------------------------------------------------------------------------ contract
@pytest.mark.parametrize("method", ALL)
def test_training_step_shapes_and_norms(method):
    m = make(method)
    images, labels = batch()
    start(m, 1)
    out = m.training_step(images, labels)
    dim = demo_recipe(method)["embedding_dim"]
    assert out.loss.dim() == 0 and out.loss.dtype == torch.float32 and torch.isfinite(out.loss)
    assert out.loss.requires_grad
    assert out.embeddings.shape == (len(labels), dim) and not out.embeddings.requires_grad
    assert torch.allclose(out.embeddings.norm(dim=1), torch.ones(len(labels)), atol=1e-4)
    assert out.logits.shape == (len(labels), NUM_CLASSES)
    m.model.eval()
    with torch.no_grad():
        emb = m.model(images)
    assert emb.shape == (len(labels), dim)
    assert torch.allclose(emb.norm(dim=1), torch.ones(len(labels)), atol=1e-4)
    assert m.name == method
    assert set(m.state_dict()) == {"model", "criterion", "optimizers", "schedulers"}


@pytest.mark.parametrize("method", ALL)
def test_one_step_lowers_the_loss(method):
    m = make(method)
    images, labels = batch()
    # the warm-up epoch of every method counts: head-only steps must lower the loss too
    start(m, 1)
    before = float(step(m, images, labels).loss.detach())
    after = float(m.training_step(images, labels).loss.detach())
    assert after < before, (method, before, after)


@pytest.mark.parametrize("method", ALL)
def test_state_dict_round_trip(method):
    a, b = make(method), make(method)
    images, labels = batch()
    start(a, 1)
    step(a, images, labels)
    a.on_epoch_end(1)
    b.load_state_dict(copy.deepcopy(a.state_dict()))
    for (k, pa), pb in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert torch.equal(pa, pb), k
    for k in a.all_optimizers():
        assert a.all_optimizers()[k].state_dict()["param_groups"][0]["lr"] == \
            b.all_optimizers()[k].state_dict()["param_groups"][0]["lr"]


def test_build_method_rejects_unknown_method():
    with pytest.raises(ValueError, match="valid methods: normsoftmax"):
        build_method({**random_init("cgd"), "method": "nope"}, 5)


# ------------------------------------------------------------------------------ BN freezing
@pytest.mark.parametrize("method", ["cgd", "asymptotic_proxy", "positive_proxy", "dynamic_margin",
                                    "proxy_anchor"])
def test_bn_freezing_keeps_running_statistics(method):
    # NormSoftmax trains BN statistics; the others' recipes freeze them
    key = "bn_freeze" if method in ("dynamic_margin", "proxy_anchor") else "freeze_bn"
    m = make(method, **{key: True})
    images, labels = batch()
    start(m, 3)
    bns = bn2d(m.model.backbone)
    assert bns and all(not b.training for b in bns)
    stats = snapshot([t for b in bns for t in (b.running_mean, b.running_var)])
    step(m, images, labels, epoch=3)
    m.training_step(images, labels)
    assert not changed(stats, [t for b in bns for t in (b.running_mean, b.running_var)])
    if method == "cgd":  # the auxiliary BatchNorm1d is not frozen
        assert m.model.aux[0].training


def test_normsoftmax_bn_is_not_frozen():
    m = make("normsoftmax")
    images, labels = batch()
    start(m, 1)
    bns = bn2d(m.model.backbone)
    stats = snapshot([b.running_mean for b in bns])
    step(m, images, labels)
    assert all(b.training for b in bns)
    assert changed(stats, [b.running_mean for b in bns])  # even in the warm-up epoch (seed)


# ------------------------------------------------------------------------------ NormSoftmax
def test_normsoftmax_warmup_keeps_backbone_fixed_then_trains_it():
    m = make("normsoftmax")
    images, labels = batch()
    backbone = list(m.model.backbone.parameters())
    head = list(m.model.embedding.parameters()) + list(m.criterion.parameters())
    start(m, 1)
    assert m.optimizers_for_epoch(1) == [m.warmup_optimizer]
    b0, h0 = snapshot(backbone), snapshot(head)
    for _ in range(2):
        step(m, images, labels, epoch=1)
    assert not changed(b0, backbone), "warm-up stepped the backbone"
    assert changed(h0, head)
    lr_before = m.optimizer.param_groups[0]["lr"]
    m.on_epoch_end(1)
    assert m.optimizer.param_groups[0]["lr"] == lr_before  # the warm-up epoch is not scheduled
    start(m, 2)
    assert m.optimizers_for_epoch(2) == [m.optimizer]
    b1 = snapshot(backbone)
    step(m, images, labels, epoch=2)
    assert changed(b1, backbone)
    # the main optimiser covers every parameter; the warm-up one only refactor + proxies
    main_ids = {id(p) for g in m.optimizer.param_groups for p in g["params"]}
    assert main_ids == {id(p) for p in list(m.model.parameters()) + list(m.criterion.parameters())}
    warm_ids = {id(p) for g in m.warmup_optimizer.param_groups for p in g["params"]}
    assert warm_ids == {id(p) for p in head}


def test_normsoftmax_optimizer_switch():
    demo = build_method(random_init("normsoftmax"), NUM_CLASSES)
    adam = build_method(random_init("normsoftmax", optimizer="adam"), NUM_CLASSES)
    assert recipe_by_name("normsoftmax/cub/resnet50/uncropped")["optimizer"] == "sgd"  # the original code's
    assert isinstance(demo.optimizer, torch.optim.SGD) and isinstance(demo.warmup_optimizer, torch.optim.SGD)
    assert isinstance(adam.optimizer, torch.optim.Adam) and isinstance(adam.warmup_optimizer, torch.optim.Adam)
    assert [g["weight_decay"] for g in adam.optimizer.param_groups] == [1e-4, 1e-4]
    with pytest.raises(ValueError, match="optimizer=.lamb.: expected one of sgd, adam"):
        build_method(random_init("normsoftmax", optimizer="lamb"), NUM_CLASSES)


def test_normsoftmax_schedule_is_the_seeds_31_epochs():
    m = build_method(random_init("normsoftmax", epochs=31, lr=0.01, lr_step=None, optimizer="sgd"),
                     NUM_CLASSES)
    lrs = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scheduler stepped without optimiser steps
        for epoch in range(1, 32):
            lrs[epoch] = m.optimizers_for_epoch(epoch)[0].param_groups[0]["lr"]
            m.on_epoch_end(epoch)
    assert lrs[1] == pytest.approx(0.01)  # warm-up optimiser
    assert all(lrs[e] == pytest.approx(0.01) for e in range(2, 17))
    assert all(lrs[e] == pytest.approx(0.001) for e in range(17, 32))
    g = m.optimizer.param_groups
    assert g[0]["momentum"] == 0.9 and g[0]["weight_decay"] == 1e-4 and g[1]["weight_decay"] == 1e-4


def test_normsoftmax_official_options():
    from dml_core.models import feature_dim

    width = feature_dim(demo_recipe("normsoftmax")["backbone"])  # the demo trunk's: 256
    m = build_method(random_init("normsoftmax", refactor="official", embedding_dim=width,
                                 proxy_weight_decay=False), NUM_CLASSES)
    assert isinstance(m.model.embedding, nn.Identity)  # D = backbone width: no remap layer
    assert m.optimizer.param_groups[1]["weight_decay"] == 0.0
    m = build_method(random_init("normsoftmax", refactor="official"), NUM_CLASSES)
    assert isinstance(m.model.embedding, nn.Linear) and m.model.embedding.bias is None
    with pytest.raises(ValueError, match="refactor"):
        build_method(random_init("normsoftmax", refactor="nope"), NUM_CLASSES)


# ------------------------------------------------------------------------------ CGD
def test_cgd_loss_parts_schedule_and_optimizer():
    m = make("cgd")
    images, labels = batch()
    start(m, 1)
    out = m.training_step(images, labels)
    assert set(out.parts) == {"cls", "triplet"}
    assert float(out.loss.detach()) == pytest.approx(out.parts["cls"] + out.parts["triplet"], rel=1e-5)
    full = build_method(random_init("cgd", epochs=20, lr_milestones=None), NUM_CLASSES)
    assert sorted(full.scheduler.milestones) == [12, 16]
    assert isinstance(full.optimizer, torch.optim.Adam)
    assert full.optimizer.param_groups[0]["weight_decay"] == 0


# ------------------------------------------------------------------------------ AsymptoticProxy
def test_moving_proxy_update_after_step_with_same_forward_embeddings():
    m = make("asymptotic_proxy")
    images, labels = batch()
    start(m, 1)
    mom = m.criterion.momentum
    assert not any(p is m.criterion.proxies for g in m.optimizer.param_groups for p in g["params"])
    with torch.no_grad():
        pre = m.model(images)  # BN frozen and no dropout: the forward the step will see
    w0 = m.criterion.proxies.clone()
    m.zero_grad()
    out = m.training_step(images, labels)
    assert torch.allclose(out.embeddings, pre, atol=1e-5)
    out.loss.backward()
    m.clip_gradients()
    m.optimizer_step(1)
    assert torch.equal(m.criterion.proxies, w0)  # the optimiser never touches the proxies
    with torch.no_grad():
        post = m.model(images)
    assert not torch.allclose(post, pre, atol=1e-5)
    m.after_optimizer_step(out, labels)
    onehot = nn.functional.one_hot(labels, NUM_CLASSES).float()
    expected = (1 - mom) * nn.functional.normalize(w0, dim=1) + mom * onehot.t() @ pre
    assert torch.allclose(m.criterion.proxies, expected, atol=1e-5)
    assert not torch.allclose(m.criterion.proxies, (1 - mom) * nn.functional.normalize(w0, dim=1)
                              + mom * onehot.t() @ post, atol=1e-4)


def test_asymptotic_proxy_schedule():
    m = build_method(random_init("asymptotic_proxy", epochs=30, lr=1e-4, lr_step=None), NUM_CLASSES)
    assert m.scheduler.step_size == 15 and m.scheduler.gamma == 0.1
    assert isinstance(m.optimizer, torch.optim.Adam)


# ------------------------------------------------------------------------------ PP
def test_pp_warmup_freezes_backbone_and_scheduler_counts_it():
    m = make("positive_proxy", warmup_epochs=2, lr_step=5)
    images, labels = batch()
    backbone = list(m.model.backbone.parameters())
    head = list(m.model.embedding.parameters()) + list(m.criterion.parameters())
    for epoch in (1, 2):
        start(m, epoch)
        b0, h0 = snapshot(backbone), snapshot(head)
        step(m, images, labels, epoch)
        assert not changed(b0, backbone) and changed(h0, head)
        m.on_epoch_end(epoch)
    start(m, 3)
    b0 = snapshot(backbone)
    step(m, images, labels, 3)
    assert changed(b0, backbone)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for epoch in (3, 4, 5):
            m.on_epoch_end(epoch)
    lrs = [g["lr"] for g in m.optimizer.param_groups]
    r = demo_recipe("positive_proxy")
    assert lrs == pytest.approx([r["lr"] / 2, r["refactor_lr"] / 2, r["proxy_lr"] / 2])


def test_pp_losses_and_positive_proxy_option():
    from adamp import AdamP

    from dml_core.losses import NormSoftmaxLoss, PositiveProxyLoss, ProxyAnchorLoss

    images, labels = batch()
    kinds = {"proxy_anchor": ProxyAnchorLoss, "normalized_softmax": NormSoftmaxLoss,
             "positive_only": PositiveProxyLoss}
    for loss, cls in kinds.items():
        m = make("positive_proxy", loss=loss)
        assert isinstance(m.criterion, cls) and isinstance(m.optimizer, AdamP)
        assert torch.allclose(m.criterion.proxies.norm(dim=1), torch.ones(NUM_CLASSES))
    ref, pp = make("positive_proxy"), make("positive_proxy", positive_proxy=True)
    start(ref, 3)
    start(pp, 3)
    lr_, lp = ref.training_step(images, labels).loss, pp.training_step(images, labels).loss
    assert torch.allclose(lr_, lp)  # same value, different gradients
    lr_.backward()
    lp.backward()
    assert torch.allclose(ref.criterion.proxies.grad, pp.criterion.proxies.grad, atol=1e-6)
    assert not torch.allclose(ref.model.embedding.weight.grad, pp.model.embedding.weight.grad)
    with pytest.raises(ValueError, match="positive_proxy"):
        make("positive_proxy", loss="positive_only", positive_proxy=True)


# ------------------------------------------------------------------------------ LDM / PA
@pytest.mark.parametrize("method", ["dynamic_margin", "proxy_anchor"])
def test_ldm_warmup_bn_freeze_and_partial_freeze_quirk(method):
    m = make(method, warmup_epochs=1, bn_freeze=True)
    images, labels = batch()
    assert not m.bn_affine_trainable()  # bn_freeze at construction
    start(m, 1)
    trunk = list(m.model.backbone.parameters())
    emb = list(m.model.embedding.parameters()) + [m.criterion.proxies]
    t0, e0 = snapshot(trunk), snapshot(emb)
    step(m, images, labels, 1)
    assert not changed(t0, trunk) and changed(e0, emb)
    start(m, 2)
    assert m.bn_affine_trainable()  # the quirk: un-freezing releases the BN affine too
    t1 = snapshot(trunk)
    step(m, images, labels, 2)
    assert changed(t1, trunk)
    strict = make(method, warmup_epochs=1, bn_freeze=True, unfreeze_bn_affine_after_warmup=False)
    start(strict, 2)
    assert not strict.bn_affine_trainable()
    assert all(p.requires_grad for p in strict.model.backbone.conv1.parameters())
    groups = m.optimizer.param_groups
    lr = demo_recipe(method)["lr"]
    assert [g["lr"] for g in groups] == pytest.approx([lr, lr, 100 * lr])
    assert all(g["weight_decay"] == 1e-4 for g in groups)
    assert isinstance(m.optimizer, torch.optim.AdamW)


def test_ldm_gradient_clipping():
    m = make("dynamic_margin")
    assert m.grad_clip_value == 10
    images, labels = batch()
    start(m, 2)
    m.zero_grad()
    out = m.training_step(images, labels)
    (out.loss * 1e5).backward()
    params = list(m.model.parameters()) + list(m.criterion.parameters())
    assert max(float(p.grad.abs().max()) for p in params if p.grad is not None) > 10
    m.clip_gradients()
    assert max(float(p.grad.abs().max()) for p in params if p.grad is not None) <= 10
    assert float(m.criterion.margins.grad.abs().max()) <= 10


def test_ldm_margin_optimizer_steps_the_margins():
    m = make("dynamic_margin", mrg_lr=1e-4)
    images, labels = batch()
    start(m, 2)
    assert m.optimizers_for_epoch(2) == [m.optimizer, m.margin_optimizer]
    main_ids = {id(p) for g in m.optimizer.param_groups for p in g["params"]}
    assert id(m.criterion.margins) not in main_ids
    assert m.margin_optimizer.param_groups[0]["lr"] == 1e-4
    assert m.margin_optimizer.param_groups[0]["weight_decay"] == 1e-4
    m0 = m.criterion.margins.detach().clone()
    assert torch.allclose(m0, torch.full((NUM_CLASSES,), 0.1))
    step(m, images, labels, 2)
    assert not torch.equal(m.criterion.margins.detach(), m0)
    log = m.epoch_log()
    assert set(log) == {"margin_mean", "margin_min", "margin_max"}
    assert log["margin_min"] <= log["margin_mean"] <= log["margin_max"]
    assert log["margin_mean"] == pytest.approx(float(m.criterion.margins.mean()))
    assert m.margin_scheduler.step_size == 10 and m.margin_scheduler.gamma == 0.5
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for epoch in range(2, 12):
            m.on_epoch_end(epoch)
    assert m.margin_optimizer.param_groups[0]["lr"] == pytest.approx(0.5e-4)
    assert make("proxy_anchor").epoch_log() == {}
