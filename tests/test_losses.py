"""Losses vs independent plain-Python loop computations, gradients (gradcheck), numerics, errors."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from dml_core.losses import (
    BatchHardTripletLoss,
    DynamicMarginLoss,
    LabelSmoothingCrossEntropy,
    MovingProxyLoss,
    NormSoftmaxLoss,
    PositiveProxyLoss,
    ProxyAnchorLoss,
    log1p_sum_exp,
    make_margin_optimizer,
    masked_logsumexp,
)

C, D = 7, 5
# classes 0, 1, 2, 3, 5 present (1 and 3 repeated), 4 and 6 absent
LABELS = torch.tensor([0, 1, 1, 3, 5, 3, 2, 1, 3, 0])
B = len(LABELS)


def data(seed=0, dtype=torch.float64, normalize=True):
    g = torch.Generator().manual_seed(seed)
    emb = torch.randn(B, D, generator=g, dtype=dtype)
    if normalize:
        emb = F.normalize(emb, dim=1)
    prox = torch.randn(C, D, generator=g, dtype=dtype)
    return emb, prox


# ----------------------------------------------------------------------------- loop references
def ref_cos(emb, prox, normalize_emb=False):
    e, p = emb.tolist(), prox.tolist()
    if normalize_emb:
        e = [[v / math.sqrt(sum(x * x for x in row)) for v in row] for row in e]
    p = [[v / math.sqrt(sum(x * x for x in row)) for v in row] for row in p]
    return [[sum(a * b for a, b in zip(ei, pc)) for pc in p] for ei in e], p


def ref_pa(emb, prox, labels, alpha_p, alpha_n, pos_m, neg_m, normalize_emb=True):
    """pos_m, neg_m: lists of per-class margins."""
    s, _ = ref_cos(emb, prox, normalize_emb)
    y = labels.tolist()
    present = sorted(set(y))
    pos = 0.0
    for c in present:
        pos += math.log(1 + sum(math.exp(-alpha_p * (s[i][c] - pos_m[c])) for i in range(len(y)) if y[i] == c))
    neg = 0.0
    for c in range(len(s[0])):
        neg += math.log(1 + sum(math.exp(alpha_n * (s[i][c] + neg_m[c])) for i in range(len(y)) if y[i] != c))
    return pos / len(present) + neg / len(s[0])


def ref_pp(prox, margins, delta, scale):
    _, p = ref_cos(prox[:1], prox)
    rows = []
    for i in range(len(p)):
        acc = 0.0
        for j in range(len(p)):
            if j != i:
                acc += math.exp(scale * (sum(a * b for a, b in zip(p[i], p[j])) - margins[i] + delta))
        rows.append(math.log(1 + acc))
    return sum(rows)


def ref_ce(s, labels, T):
    total = 0.0
    for i, y in enumerate(labels.tolist()):
        denom = sum(math.exp(v / T) for v in s[i])
        total += -math.log(math.exp(s[i][y] / T) / denom)
    return total / len(s)


def loss_with(loss, emb, labels, **tensors):
    """Evaluate ``loss`` with some parameters/buffers replaced (float64 for gradcheck)."""
    return functional_call(loss, tensors, (emb, labels))


# ----------------------------------------------------------------------------- forward values
def test_normsoftmax_matches_loop():
    emb, prox = data(1)
    loss = NormSoftmaxLoss(C, D, temperature=0.05)
    got = loss_with(loss, emb, LABELS, proxies=prox)
    s, _ = ref_cos(emb, prox)
    assert got.item() == pytest.approx(ref_ce(s, LABELS, 0.05), rel=1e-10)
    logits = loss.logits(emb.float())
    assert logits.shape == (B, C) and logits.dtype == torch.float32


def test_proxy_anchor_matches_loop():
    emb, prox = data(2, normalize=False)  # also checks the internal embedding normalisation
    loss = ProxyAnchorLoss(C, D, margin=0.1, alpha=32.0)
    got = loss_with(loss, emb, LABELS, proxies=prox)
    want = ref_pa(emb, prox, LABELS, 32.0, 32.0, [0.1] * C, [0.1] * C)
    assert got.item() == pytest.approx(want, rel=1e-10)


def test_positive_proxy_loss_matches_loop():
    emb, prox = data(3)
    loss = PositiveProxyLoss(C, D, alpha=32.0)
    got = loss_with(loss, emb, LABELS, proxies=prox)
    s, _ = ref_cos(emb, prox)
    y = LABELS.tolist()
    present = sorted(set(y))
    want = sum(math.log(1 + sum(math.exp(-32 * s[i][c]) for i in range(B) if y[i] == c))
               for c in present) / len(present)
    assert got.item() == pytest.approx(want, rel=1e-10)


@pytest.mark.parametrize("neg_learnable,pp_scale,pp_norm", [(False, 1.0, "C"), (True, 3.0, "P+")])
def test_dynamic_margin_matches_loop(neg_learnable, pp_scale, pp_norm):
    emb, prox = data(4)
    margins = torch.linspace(-0.2, 0.4, C, dtype=torch.float64)
    loss = DynamicMarginLoss(C, D, alpha_p=48.0, alpha_n=40.0, margin=0.1, delta=0.1, lam=0.7,
                             neg_uses_learnable_margin=neg_learnable, pp_scale=pp_scale,
                             pp_normaliser=pp_norm)
    got = loss_with(loss, emb, LABELS, proxies=prox, margins=margins)
    m = margins.tolist()
    # neg_learnable: LDM at e4e4832, exp(32 * (s - m_c + 0.05)), alpha_n unused
    alpha_n, neg_m = (32.0, [0.05 - mc for mc in m]) if neg_learnable else (40.0, [0.1] * C)
    normaliser = C if pp_norm == "C" else len(set(LABELS.tolist()))
    want = (ref_pa(emb, prox, LABELS, 48.0, alpha_n, m, neg_m)
            + 0.7 * ref_pp(prox, m, 0.1, pp_scale) / normaliser)
    assert got.item() == pytest.approx(want, rel=1e-10)


def test_dynamic_margin_learnable_negative_margin_hand_worked():
    """neg_uses_learnable_margin=True is LDM e4e4832's AMLoss: exp(32 * (s - m_c + 0.05)).

    One image of class 0 at (1, 0); proxies (1, 0) and (0.5, sqrt(0.75)): s = [1, 0.5];
    margins m = [0.2, 0.1]; alpha_p = 10, alpha_n = 7 (unused by this term); lam = 0.
    pos = log(1 + e^{-10 (1 - 0.2)}) = log(1 + e^-8) (one present class);
    neg = [0 + log(1 + e^{32 (0.5 - 0.1 + 0.05)})] / C = log(1 + e^14.4) / 2.
    """
    loss = DynamicMarginLoss(2, 2, alpha_p=10.0, alpha_n=7.0, margin=0.1, lam=0.0,
                             neg_uses_learnable_margin=True)
    with torch.no_grad():
        loss.proxies.copy_(torch.tensor([[1.0, 0.0], [0.5, math.sqrt(0.75)]]))
        loss.margins.copy_(torch.tensor([0.2, 0.1]))
    got = loss(torch.tensor([[1.0, 0.0]]), torch.tensor([0])).item()
    want = math.log1p(math.exp(-8.0)) + math.log1p(math.exp(14.4)) / 2
    assert want == pytest.approx(7.2003357, abs=1e-6)
    assert got == pytest.approx(want, rel=1e-5)
    # the HEAD form exp(alpha_n (s + delta_n)) would give log(1 + e^{7 * 0.6}) / 2 instead
    assert abs(got - (math.log1p(math.exp(-8.0)) + math.log1p(math.exp(4.2)) / 2)) > 1.0


def test_dynamic_margin_equals_proxy_anchor_when_lam_zero():
    torch.manual_seed(0)
    emb = F.normalize(torch.randn(B, D), dim=1)
    pa = ProxyAnchorLoss(C, D, margin=0.1, alpha=32.0)
    dm = DynamicMarginLoss(C, D, alpha_p=32.0, alpha_n=32.0, margin=0.1, lam=0.0, learn_margins=False)
    with torch.no_grad():
        dm.proxies.copy_(pa.proxies)
    l_pa, l_dm = pa(emb, LABELS), dm(emb, LABELS)
    assert torch.allclose(l_pa, l_dm, rtol=1e-6, atol=0)
    l_pa.backward()
    l_dm.backward()
    assert torch.allclose(pa.proxies.grad, dm.proxies.grad, rtol=1e-5, atol=1e-7)
    assert dm.margins.grad is None  # frozen
    # with lam=1 the proxy-proxy term (~log C at init) is added
    dm.lam = 1.0
    assert dm(emb, LABELS).item() > l_dm.item() + 0.5


def test_dynamic_margin_margin_gradient_closed_form():
    emb, prox = data(5)
    ap, lam, delta = 48.0, 0.8, 0.1
    margins = torch.linspace(0.0, 0.3, C, dtype=torch.float64).requires_grad_()
    loss = DynamicMarginLoss(C, D, alpha_p=ap, alpha_n=32.0, delta=delta, lam=lam)
    (g,) = torch.autograd.grad(loss_with(loss, emb, LABELS, proxies=prox, margins=margins), margins)
    s, p = ref_cos(emb, prox, True)
    y = LABELS.tolist()
    present = set(y)
    m = margins.tolist()
    for c in range(C):
        A = sum(math.exp(-ap * (s[i][c] - m[c])) for i in range(B) if y[i] == c)
        Bc = sum(math.exp(sum(a * b for a, b in zip(p[c], p[j])) - m[c] + delta) for j in range(C) if j != c)
        want = ap / len(present) * A / (1 + A) * (c in present) - lam / C * Bc / (1 + Bc)
        assert g[c].item() == pytest.approx(want, rel=1e-8, abs=1e-12)
        # sign: absent classes are only pushed up (negative gradient)
        if c not in present:
            assert g[c].item() < 0


def test_margin_optimizer_and_stats():
    dm = DynamicMarginLoss(C, D, margin=0.1)
    assert dm.margin_stats() == pytest.approx({"margin_mean": 0.1, "margin_min": 0.1, "margin_max": 0.1})
    assert [id(p) for p in dm.margin_parameters()] == [id(dm.margins)]
    assert [id(p) for p in dm.proxy_parameters()] == [id(dm.proxies)]
    opt, sched = make_margin_optimizer(dm, lr=1e-2, step=2, gamma=0.5)
    before = dm.proxies.detach().clone()
    emb = F.normalize(torch.randn(B, D), dim=1)
    dm(emb, LABELS).backward()
    opt.step()
    assert not torch.allclose(dm.margins.detach(), torch.full((C,), 0.1))
    assert torch.equal(dm.proxies.detach(), before)  # the margin optimiser touches margins only
    for _ in range(2):
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(5e-3)


# ----------------------------------------------------------------------------- gradients
def _gradcheck(loss, emb, extra):
    names = list(extra)

    def f(e, *ts):
        return loss_with(loss, e, LABELS, **dict(zip(names, ts)))

    inputs = [emb.clone().requires_grad_()] + [t.clone().requires_grad_() for t in extra.values()]
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("make", [
    lambda: NormSoftmaxLoss(C, D, temperature=0.1),
    lambda: ProxyAnchorLoss(C, D, alpha=8.0),
    lambda: PositiveProxyLoss(C, D, alpha=8.0),
])
def test_gradcheck_proxy_losses(make):
    emb, prox = data(6, normalize=False)
    _gradcheck(make(), emb, {"proxies": prox})


def test_gradcheck_dynamic_margin():
    emb, prox = data(7, normalize=False)
    loss = DynamicMarginLoss(C, D, alpha_p=6.0, alpha_n=5.0, lam=0.9, pp_scale=2.0)
    _gradcheck(loss, emb, {"proxies": prox, "margins": torch.linspace(-0.1, 0.3, C, dtype=torch.float64)})


def test_gradcheck_moving_and_cgd():
    emb, prox = data(8, normalize=False)
    _gradcheck(MovingProxyLoss(C, D, temperature=0.2), emb, {"proxies": prox})
    ls = LabelSmoothingCrossEntropy()
    assert torch.autograd.gradcheck(lambda z: ls(z, LABELS), (torch.randn(B, C, dtype=torch.float64,
                                                                        requires_grad=True),))
    tri = BatchHardTripletLoss(margin=0.5)
    assert torch.autograd.gradcheck(lambda e: tri(e, LABELS), (emb.clone().requires_grad_(),))


# ----------------------------------------------------------------------------- numerics
@pytest.mark.parametrize("alpha", [64.0, 200.0])
def test_stable_at_large_alpha(alpha):
    torch.manual_seed(1)
    for make in (lambda: ProxyAnchorLoss(C, D, alpha=alpha),
                 lambda: DynamicMarginLoss(C, D, alpha_p=alpha, alpha_n=alpha),
                 lambda: PositiveProxyLoss(C, D, alpha=alpha),
                 lambda: NormSoftmaxLoss(C, D, temperature=1.0 / alpha)):
        loss = make()
        p_hat = F.normalize(loss.proxies.detach(), dim=1)
        # similarities of exactly +1 to a wrong proxy and -1 to the own proxy: worst case
        wrong = (LABELS + 1) % C
        emb = (-p_hat[LABELS] + 1e-3 * torch.randn(B, D))
        emb[::2] = p_hat[wrong[::2]]
        emb = F.normalize(emb, dim=1).requires_grad_()
        value = loss(emb, LABELS)
        value.backward()
        assert torch.isfinite(value) and value.item() > 0
        assert torch.isfinite(emb.grad).all() and torch.isfinite(loss.proxies.grad).all()


def test_masked_logsumexp_helpers():
    x = torch.tensor([[1000.0, 0.0], [2.0, 3.0]], requires_grad=True)
    mask = torch.tensor([[False, False], [True, True]])
    out = log1p_sum_exp(x, mask, dim=1)
    assert out[0].item() == 0.0  # empty set -> log(1) = 0, even with a huge masked value
    assert out[1].item() == pytest.approx(math.log(1 + math.exp(2) + math.exp(3)), rel=1e-6)
    out.sum().backward()
    assert torch.equal(x.grad[0], torch.zeros(2))
    y = masked_logsumexp(x.detach().requires_grad_(), mask, dim=1)
    assert y[0].item() == float("-inf") and y[1].item() == pytest.approx(math.log(math.exp(2) + math.exp(3)))
    y[1].backward()


@pytest.mark.parametrize("make", [
    lambda: NormSoftmaxLoss(C, D, temperature=0.05),
    lambda: ProxyAnchorLoss(C, D),
    lambda: DynamicMarginLoss(C, D, alpha_p=48.0, alpha_n=48.0),
    lambda: MovingProxyLoss(C, D),
    lambda: BatchHardTripletLoss(),
])
def test_bf16_autocast_gives_float32(make):
    torch.manual_seed(2)
    loss = make()
    emb = F.normalize(torch.randn(B, D), dim=1)
    ref = loss(emb, LABELS)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        out = loss(emb.bfloat16(), LABELS)  # what a bf16 model would hand over
        out_same = loss(emb, LABELS)
    assert out.dtype == torch.float32 and out_same.dtype == torch.float32
    assert torch.allclose(out_same, ref, rtol=1e-6)  # autocast does not downcast inside
    assert torch.allclose(out, ref, rtol=0.05, atol=0.02)  # only input rounding differs


def test_label_smoothing_matches_torch():
    torch.manual_seed(3)
    z = torch.randn(B, C) * 3
    ls = LabelSmoothingCrossEntropy(smoothing=0.1, temperature=0.5)
    want = F.cross_entropy(z / 0.5, LABELS, label_smoothing=0.1)
    assert torch.allclose(ls(z, LABELS), want, rtol=1e-6)
    # and by hand for one smoothing value
    q = F.log_softmax(z / 0.5, dim=1).tolist()
    by_hand = sum(0.7 * -q[i][y] + 0.3 * sum(-v for v in q[i]) / C for i, y in enumerate(LABELS.tolist())) / B
    assert LabelSmoothingCrossEntropy(0.3, 0.5)(z, LABELS).item() == pytest.approx(by_hand, rel=1e-5)


def test_batch_hard_triplet_matches_loop():
    torch.manual_seed(4)
    emb = torch.randn(B, D, dtype=torch.float64)
    y = LABELS.tolist()  # labels 2 and 5 have a single sample: anchors without positives
    e = emb.tolist()
    dist = [[math.sqrt(sum((a - b) ** 2 for a, b in zip(e[i], e[j]))) for j in range(B)] for i in range(B)]
    total = 0.0
    for i in range(B):
        pos = max([dist[i][j] for j in range(B) if j != i and y[j] == y[i]], default=0.0)
        neg = min(dist[i][j] for j in range(B) if y[j] != y[i])
        total += max(pos - neg + 0.3, 0.0)
    got = BatchHardTripletLoss(margin=0.3)(emb, LABELS)
    assert got.item() == pytest.approx(total / B, rel=1e-9)


# ----------------------------------------------------------------------------- init, errors
def test_proxy_inits():
    ns = NormSoftmaxLoss(100, 64)
    assert ns.proxies.abs().max().item() <= 1 / math.sqrt(64)
    assert ns.proxies.std().item() == pytest.approx(1 / math.sqrt(64) / math.sqrt(3), rel=0.1)
    pa = ProxyAnchorLoss(1000, 64)
    assert pa.proxies.std().item() == pytest.approx(math.sqrt(2 / 1000), rel=0.05)
    pp = PositiveProxyLoss(10, 64)
    assert torch.allclose(pp.proxies.norm(dim=1), torch.ones(10))
    assert NormSoftmaxLoss(10, 64, proxy_init="unit_randn").proxies.norm(dim=1).mean().item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="unknown proxy init"):
        NormSoftmaxLoss(10, 64, proxy_init="xavier")


@pytest.mark.parametrize("make", [
    lambda: NormSoftmaxLoss(C, D), lambda: ProxyAnchorLoss(C, D), lambda: DynamicMarginLoss(C, D),
    lambda: PositiveProxyLoss(C, D), lambda: MovingProxyLoss(C, D),
])
def test_clear_errors(make):
    loss = make()
    emb = torch.randn(B, D)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 7\)"):
        loss(emb, torch.full((B,), C))
    with pytest.raises(ValueError, match=r"labels must lie"):
        loss(emb, torch.full((B,), -1))
    with pytest.raises(ValueError, match="2-D"):
        loss(emb[0], LABELS)
    with pytest.raises(ValueError, match="dim 4"):
        loss(emb[:, :4], LABELS)
    with pytest.raises(ValueError, match="length B"):
        loss(emb, LABELS[:3])
    with pytest.raises(ValueError, match="integer"):
        loss(emb, LABELS.float())


def test_agrees_with_pytorch_metric_learning():
    """A second independent implementation: PML's ProxyAnchorLoss and NormalizedSoftmaxLoss."""
    import pytorch_metric_learning.losses as pml_losses
    torch.manual_seed(5)
    emb = torch.randn(B, D)
    ref = pml_losses.ProxyAnchorLoss(C, D, margin=0.1, alpha=32)
    ours = ProxyAnchorLoss(C, D, margin=0.1, alpha=32.0)
    with torch.no_grad():
        ours.proxies.copy_(ref.proxies)
    assert torch.allclose(ours(emb, LABELS), ref(emb, LABELS), rtol=1e-5)
    ref_ns = pml_losses.NormalizedSoftmaxLoss(C, D, temperature=0.05)  # W is (D, C) there
    ours_ns = NormSoftmaxLoss(C, D, temperature=0.05)
    with torch.no_grad():
        ours_ns.proxies.copy_(ref_ns.W.t())
    unit = F.normalize(emb, dim=1)
    assert torch.allclose(ours_ns(unit, LABELS), ref_ns(unit, LABELS), rtol=1e-5)
