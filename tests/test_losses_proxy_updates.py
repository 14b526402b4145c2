"""Positive-proxy gradient semantics (PP f494707 / af9156d) and the moving-proxy update (§A.4)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from dml_core.losses import MovingProxyLoss, NormSoftmaxLoss, ProxyAnchorLoss

C, D = 6, 4
LABELS = torch.tensor([0, 2, 2, 5, 0, 2, 1, 5])  # classes 3, 4 absent; repeats
B = len(LABELS)


def _setup(seed):
    g = torch.Generator().manual_seed(seed)
    emb = F.normalize(torch.randn(B, D, generator=g, dtype=torch.float64), dim=1)
    prox = torch.randn(C, D, generator=g, dtype=torch.float64)
    return emb, prox


def _value_and_grads(loss, emb, prox):
    e, p = emb.clone().requires_grad_(), prox.clone().requires_grad_()
    value = functional_call(loss, {"proxies": p}, (e, LABELS))
    ge, gp = torch.autograd.grad(value, (e, p))
    return value, ge, gp


def _grad_wrt_similarities(plain, emb, prox):
    """G = dL/ds (B, C) of the plain loss, with s a leaf."""
    p_hat = F.normalize(prox, dim=1)
    s = (emb @ p_hat.t()).requires_grad_()
    (G,) = torch.autograd.grad(plain._loss(s, LABELS), s)
    return G, p_hat


LOSSES = [
    lambda pp: NormSoftmaxLoss(C, D, temperature=0.1, positive_proxy=pp),
    lambda pp: ProxyAnchorLoss(C, D, alpha=16.0, positive_proxy=pp, normalize_embeddings=False),
]


@pytest.mark.parametrize("make", LOSSES)
def test_positive_proxy_embeddings_semantics(make):
    emb, prox = _setup(0)
    plain, pos = make(False), make(True)
    assert pos.positive_proxy == "embeddings"
    v0, ge0, gp0 = _value_and_grads(plain, emb, prox)
    v1, ge1, gp1 = _value_and_grads(pos, emb, prox)
    assert v1.item() == v0.item()  # forward value unchanged
    assert torch.allclose(gp1, gp0, rtol=1e-12, atol=1e-14)  # proxies: the full gradient
    G, p_hat = _grad_wrt_similarities(plain, emb, prox)
    onehot = F.one_hot(LABELS, C).double()
    want = (G * onehot) @ p_hat  # row i = G[i, y_i] * p̂_{y_i}
    assert torch.allclose(ge1, want, rtol=1e-12, atol=1e-14)
    # each row is parallel to its own proxy, and the negative-proxy part really was dropped
    for i, y in enumerate(LABELS.tolist()):
        assert torch.allclose(ge1[i], G[i, y] * p_hat[y])
    assert not torch.allclose(ge1, ge0)
    assert torch.allclose(ge0, G @ p_hat, rtol=1e-12)  # plain = sum over all proxies
    assert not pos.proxies._backward_hooks  # no hooks registered on the parameter


@pytest.mark.parametrize("make", LOSSES)
def test_positive_proxy_proxies_variant(make):
    emb, prox = _setup(1)
    plain, pos = make(False), make("proxies")
    v0, ge0, gp0 = _value_and_grads(plain, emb, prox)
    v1, ge1, gp1 = _value_and_grads(pos, emb, prox)
    assert v1.item() == v0.item()
    assert torch.allclose(ge1, ge0, rtol=1e-12, atol=1e-14)  # embeddings: the full gradient
    G, p_hat = _grad_wrt_similarities(plain, emb, prox)
    onehot = F.one_hot(LABELS, C).double()
    counts = onehot.sum(0).clamp_min(1)
    g_phat = ((G * onehot).t() @ emb) / counts.unsqueeze(1)  # (1/n_c) sum_{i: y_i=c} G_ic f_i
    p = prox.clone().requires_grad_()
    (want,) = torch.autograd.grad(F.normalize(p, dim=1), p, g_phat)
    assert torch.allclose(gp1, want, rtol=1e-10, atol=1e-14)
    assert torch.equal(gp1[3], torch.zeros(D)) and torch.equal(gp1[4], torch.zeros(D))  # absent
    assert not torch.allclose(gp1, gp0)


def test_positive_proxy_option_validation():
    with pytest.raises(ValueError, match="positive_proxy"):
        NormSoftmaxLoss(C, D, positive_proxy="negatives")


# ----------------------------------------------------------------------------- moving proxies
def test_moving_proxy_loss_value_and_gradients():
    torch.manual_seed(0)
    loss = MovingProxyLoss(C, D, temperature=0.5, momentum=0.5)
    assert "proxies" not in dict(loss.named_parameters()) and "proxies" in loss.state_dict()
    assert not torch.allclose(loss.proxies.norm(dim=1), torch.ones(C))  # randn, not normalised
    emb = F.normalize(torch.randn(B, D), dim=1).requires_grad_()
    value = loss(emb, LABELS)
    w = loss.proxies.tolist()
    w = [[v / math.sqrt(sum(x * x for x in row)) for v in row] for row in w]
    e = emb.tolist()
    want = 0.0
    for i, y in enumerate(LABELS.tolist()):
        s = [sum(a * b for a, b in zip(e[i], wc)) / 0.5 for wc in w]
        want += -s[y] + math.log(sum(math.exp(v) for v in s))
    assert value.item() == pytest.approx(want / B, rel=1e-5)
    value.backward()
    assert emb.grad is not None and emb.grad.abs().sum() > 0


def test_moving_proxy_update_hand_example():
    loss = MovingProxyLoss(num_classes=3, embedding_dim=2, momentum=0.5)
    loss.proxies.copy_(torch.tensor([[3.0, 4.0], [0.0, 2.0], [1.0, 0.0]]))
    f = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    labels = torch.tensor([0, 2, 0])  # class 0 twice, class 1 absent
    loss.update(f, labels)
    # class 0: ŵ0 = (3,4)/5 = (0.6,0.8); (1-m)ŵ0 = (0.3,0.4)
    #          m * SUM f = 0.5 * ((1,0)+(0.6,0.8)) = (0.8,0.4)  -> w0 = (1.1, 0.8)
    # class 1: absent -> unchanged (0, 2) (not even normalised)
    # class 2: ŵ2 = (1,0); 0.5*(1,0) + 0.5*(0,1) = (0.5, 0.5)
    want = torch.tensor([[1.1, 0.8], [0.0, 2.0], [0.5, 0.5]])
    assert torch.allclose(loss.proxies, want, atol=1e-7)
    # the stored row is not renormalised; the next forward normalises it
    s = loss.logits(torch.tensor([[1.0, 0.0]]))
    assert s[0, 0].item() == pytest.approx(1.1 / math.sqrt(1.1**2 + 0.8**2), rel=1e-6)
    assert s[0, 1].item() == pytest.approx(0.0, abs=1e-7)
    # momentum weights the NEW features: m = 1 gives the plain sum of the batch features
    loss_m1 = MovingProxyLoss(3, 2, momentum=1.0)
    loss_m1.update(f, labels)
    assert torch.allclose(loss_m1.proxies[0], torch.tensor([1.6, 0.8]))
    # deterministic: same inputs, same result
    again = MovingProxyLoss(3, 2, momentum=0.5)
    again.proxies.copy_(torch.tensor([[3.0, 4.0], [0.0, 2.0], [1.0, 0.0]]))
    again.update(f, labels)
    assert torch.equal(again.proxies, loss.proxies)


def test_moving_proxy_learnable_variant():
    torch.manual_seed(1)
    loss = MovingProxyLoss(C, D, learnable=True)
    assert isinstance(loss.proxies, torch.nn.Parameter)
    before = loss.proxies.detach().clone()
    emb = F.normalize(torch.randn(B, D), dim=1)
    loss(emb, LABELS).backward()
    assert loss.proxies.grad is not None and loss.proxies.grad.abs().sum() > 0
    loss.update(emb, LABELS)  # no-op for learnable proxies
    assert torch.equal(loss.proxies.detach(), before)
    with pytest.raises(ValueError, match="momentum"):
        MovingProxyLoss(C, D, momentum=1.5)
