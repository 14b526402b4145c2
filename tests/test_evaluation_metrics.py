"""Retrieval metrics against an independent brute-force reference that sorts the full matrix."""
import math

import numpy as np
import pytest
import torch

from dml_core.evaluation import (PROTOCOLS, binarize, evaluate, map_at_r, r_precision, recall_at_k,
                                 retrieval_stats)


def brute_force(q, ql, g=None, gl=None, ties="pessimistic"):
    """Per query: rank of the first positive (inf if none), AP@R and precision@R (nan if R = 0).

    Full float64 similarity matrix; each query's candidates are sorted by score descending, and among
    equal scores negatives first (pessimistic) or positives first (optimistic) via np.lexsort.
    """
    self_mode = g is None
    if self_mode:
        g, gl = q, ql
    s = np.asarray(q, np.float64) @ np.asarray(g, np.float64).T
    first, ap, rp = [], [], []
    for i in range(len(q)):
        cand = np.array([j for j in range(len(g)) if not (self_mode and j == i)])
        rel = (np.asarray(gl)[cand] == ql[i]).astype(int)
        tie_key = rel if ties == "pessimistic" else -rel
        order = np.lexsort((tie_key, -s[i, cand]))  # last key is primary
        r = rel[order]
        R = r.sum()
        first.append(np.argmax(r) + 1 if R else np.inf)
        if R == 0:
            ap.append(np.nan)
            rp.append(np.nan)
            continue
        top = r[:R]
        prec_at_i = np.cumsum(top) / np.arange(1, R + 1)
        ap.append((prec_at_i * top).sum() / R)
        rp.append(top.sum() / R)
    return np.array(first, float), np.array(ap), np.array(rp)


def tie_data(n=90, d=4, classes=12, seed=0):
    """Small-integer vectors: exact float arithmetic, many ties, duplicates, negative similarities."""
    rng = np.random.default_rng(seed)
    x = rng.integers(-2, 3, size=(n, d)).astype(np.float32)
    x[5] = x[3]  # duplicates (also across classes)
    x[7] = x[3]
    y = rng.integers(0, classes, size=n).astype(np.int32)
    y[-1] = 999  # a class with one member: no positive
    return x, y


def check_against_reference(q, ql, g=None, gl=None, ties="pessimistic", **kw):
    ks = [1, 2, 3, 5, 10, 1000]
    f, ap, rp = brute_force(q, ql, g, gl, ties)
    with pytest.warns(UserWarning, match="K="):
        rec = recall_at_k(q, ql, ks, g, gl, ties=ties, **kw)
    if ties != "expected":
        st = retrieval_stats(q, ql, g, gl, ties=ties, need_map=False, **kw)
        np.testing.assert_array_equal(np.where(st.num_relevant.numpy() > 0, st.first_rank.numpy(), np.inf), f)
    for k in ks:
        assert rec[k] == pytest.approx(np.mean(f <= k), abs=1e-12), (k, ties)
    st = retrieval_stats(q, ql, g, gl, ties=ties, **kw)
    np.testing.assert_allclose(st.ap_at_r.numpy(), ap, atol=1e-12)
    np.testing.assert_allclose(st.precision_at_r.numpy(), rp, atol=1e-12)
    assert map_at_r(q, ql, g, gl, ties=ties, **kw) == pytest.approx(np.nanmean(ap), abs=1e-12)
    assert r_precision(q, ql, g, gl, ties=ties, **kw) == pytest.approx(np.nanmean(rp), abs=1e-12)


@pytest.mark.parametrize("ties", ["pessimistic", "optimistic"])
@pytest.mark.parametrize("chunk", [None, 1, 7])  # 7 does not divide 90
@pytest.mark.parametrize("method", ["symmetric", "rows"])
def test_self_retrieval_with_ties_matches_reference(ties, chunk, method):
    x, y = tie_data()
    check_against_reference(x, y, ties=ties, chunk_size=chunk, method=method)


@pytest.mark.parametrize("ties", ["pessimistic", "optimistic"])
def test_query_gallery_matches_reference(ties):
    x, y = tie_data(n=120, seed=1)
    check_against_reference(x[:40], y[:40], x[40:], y[40:], ties=ties, chunk_size=9)


def test_float_data_and_tie_rules_differ_only_on_ties():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((150, 16)).astype(np.float32)
    y = rng.integers(0, 20, 150)
    check_against_reference(x, y)  # no ties: both rules agree with the reference
    xt, yt = tie_data()
    pess = recall_at_k(xt, yt, [1], ties="pessimistic")[1]
    opt = recall_at_k(xt, yt, [1], ties="optimistic")[1]
    assert pess < opt  # the tie data really has ties that matter


def test_binary_codes_match_hamming_reference():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((100, 12)).astype(np.float32)
    x[0, :4] = 0.0  # zeros map to -1, like (e > 0)
    y = rng.integers(0, 10, 100)
    b = binarize(x)
    assert set(np.unique(b.numpy())) == {-1.0, 1.0} and b.dtype == torch.float32
    assert torch.equal(b[0, :4], -torch.ones(4))
    bits = x > 0
    ham = (bits[:, None, :] != bits[None, :, :]).sum(-1)
    np.testing.assert_array_equal((b @ b.T).numpy(), 12 - 2 * ham)  # inner product = D - 2·Hamming
    check_against_reference(b.numpy(), y, chunk_size=13)


def test_seed_zero_masking_bug_is_fixed():
    # All similarities negative. Query 0 (class A); its only positive, item 1, has similarity -1;
    # the negative item 2 has -0.6. Seeds set S[0,0] = 0 → the query ranks first and is its own hit.
    x = np.array([[1.0, 0.0], [-1.0, 0.0], [-0.6, 0.8]], np.float32)
    y = np.array([0, 0, 1])
    s = x @ x.T
    np.fill_diagonal(s, 0.0)  # the original code's masking
    seed_top1 = np.argsort(-s, axis=1, kind="stable")[:, 0]
    seed_r1 = np.mean(y[seed_top1] == y)
    # query 0: self (0) > item 2 (-0.6) > item 1 (-1) → "hit" on itself; query 1: item 2 (+0.6) first
    # → miss; query 2: no positive → miss. Seeds' R@1 = 1/3, all of it from the self-match.
    assert seed_top1[0] == 0 and seed_r1 == pytest.approx(1 / 3)
    ours = recall_at_k(x, y, [1, 2])
    assert ours[1] == 0.0  # each query's best positive ranks below the negative
    assert ours[2] == pytest.approx(2 / 3)


def test_map_at_r_hand_worked():
    # One query (label 1) against a 1-D gallery, scores = gallery values:
    #   gallery  0.9(+) 0.8(-) 0.7(+) 0.6(-) 0.5(+) 0.4(-)   → R = 3
    #   ranking rel = 1,0,1 in the top R=3 → P(1)=1, P(3)=2/3
    #   MAP@R = (1 + 2/3)/3 = 5/9 ≈ 0.5556; R-precision = 2/3; R@1 = 1
    g = np.array([[0.9], [0.8], [0.7], [0.6], [0.5], [0.4]], np.float32)
    gl = np.array([1, 0, 1, 0, 1, 0])
    q, ql = np.array([[1.0]], np.float32), np.array([1])
    assert map_at_r(q, ql, g, gl) == pytest.approx(5 / 9)
    assert r_precision(q, ql, g, gl) == pytest.approx(2 / 3)
    # Tie: the negative 0.8 moved to 0.7 ties the positive at rank 2/3 (the R-th place).
    #   pessimistic: +,-,+ → MAP = (1 + 2/3)/3 = 5/9;  optimistic: +,+,- → MAP = (1+1)/3 = 2/3
    g2 = g.copy()
    g2[1] = 0.7
    assert map_at_r(q, ql, g2, gl, ties="pessimistic") == pytest.approx(5 / 9)
    assert map_at_r(q, ql, g2, gl, ties="optimistic") == pytest.approx(2 / 3)


def test_boundary_ties_outside_topk_list_are_counted():
    # Query label 0 with R=2; positive scores 3 and 1; four negatives also score 1 (beyond R+1 list).
    #   pessimistic order: 3(+), 1(-)x4, 1(+) → top R=2: +,- → MAP = 1/2, RP = 1/2
    g = np.array([[3], [1], [1], [1], [1], [1], [0]], np.float32)
    gl = np.array([0, 1, 1, 1, 1, 0, 1])
    q, ql = np.array([[1.0]], np.float32), np.array([0])
    assert map_at_r(q, ql, g, gl, ties="pessimistic") == pytest.approx(0.5)
    # expected: 3(+) then a 5-item tie group (4-, 1+) at ranks 2..6; rank 2 is the positive with
    # P = 1/5 and then P(2) = 2/2 → MAP@R = (1 + 1/5)/2 = 0.6, RP = (1 + 1/5)/2 = 0.6
    assert map_at_r(q, ql, g, gl) == pytest.approx(0.6, abs=1e-12)
    assert r_precision(q, ql, g, gl) == pytest.approx(0.6, abs=1e-12)
    # with the positive 3 lowered to 1: all tie, pessimistic puts 4 negatives first → MAP = 0
    g[0] = 1
    assert map_at_r(q, ql, g, gl, ties="pessimistic") == 0.0
    assert recall_at_k(q, ql, [4, 5], g, gl, ties="pessimistic") == {4: 0.0, 5: 1.0}


@pytest.mark.parametrize("method", ["symmetric", "rows"])
def test_collapsed_embedding_scores_zero_pessimistic_and_chance_expected(method):
    x = np.ones((30, 4), np.float32)
    y = np.repeat(np.arange(10), 3)
    assert recall_at_k(x, y, [1], ties="pessimistic", method=method)[1] == 0.0
    assert map_at_r(x, y, ties="pessimistic", method=method) == 0.0
    # expected: 29 tied candidates, 2 positives → R@1 = 2/29 (chance level, not 0 or 1);
    # R@2 = 1 − (27/29)(26/28); R-precision (R = 2) = 2·(2/29)/2 = 2/29;
    # MAP@R = [P(rel 1)·1 + E(rel 2·cum 2)/2]/2 = [2/29 + (2/29)(1 + 1/28)/2]/2
    rec = recall_at_k(x, y, [1, 2], method=method)
    assert rec[1] == pytest.approx(2 / 29, abs=1e-12)
    assert rec[2] == pytest.approx(1 - 27 / 29 * 26 / 28, abs=1e-12)
    assert r_precision(x, y, method=method) == pytest.approx(2 / 29, abs=1e-12)
    assert map_at_r(x, y, method=method) == pytest.approx((2 / 29 + 2 / 29 * (1 + 1 / 28) / 2) / 2, abs=1e-12)


def test_label_dtypes_and_torch_numpy_inputs_agree():
    x, y = tie_data(seed=4)
    y = np.where(y == 999, 99, y)
    ref = recall_at_k(x, y.astype(np.int64), [1, 4])
    for yy in (y.astype(np.int8), y.astype(np.uint8), torch.from_numpy(y.astype(np.int16)), list(y)):
        assert recall_at_k(torch.from_numpy(x), yy, [1, 4]) == ref
    assert recall_at_k(x.astype(np.float64), y, [1, 4]) == ref
    assert recall_at_k(x, y - 50, [1, 4]) == ref  # negative labels are fine


def test_normalize_option_is_cosine():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((60, 8)).astype(np.float32)
    y = rng.integers(0, 6, 60)
    scaled = x * rng.uniform(0.1, 10, (60, 1)).astype(np.float32)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    assert recall_at_k(scaled, y, [1, 2], normalize=True) == recall_at_k(unit, y, [1, 2])
    assert retrieval_stats(scaled, y, normalize=True).map_at_r() == pytest.approx(map_at_r(unit, y))


def test_query_without_positive_is_miss_and_excluded_from_map():
    x = np.array([[1, 0], [0.9, 0.1], [0, 1]], np.float32)
    y = np.array([0, 0, 7])  # class 7 has no other member
    assert recall_at_k(x, y, [2])[2] == pytest.approx(2 / 3)
    st = retrieval_stats(x, y)
    assert math.isnan(float(st.ap_at_r[2])) and st.num_relevant.tolist() == [1, 1, 0]
    assert map_at_r(x, y) == 1.0
    assert math.isnan(map_at_r(x, np.array([0, 1, 2])))  # nobody has a positive


def test_bad_inputs_give_clear_errors():
    x = np.zeros((5, 3), np.float32)
    y = np.arange(5)
    with pytest.raises(ValueError, match="match"):
        recall_at_k(x, y[:4], [1])
    with pytest.raises(ValueError, match="empty"):
        recall_at_k(np.zeros((0, 3), np.float32), np.zeros(0, int), [1])
    with pytest.raises(ValueError, match="NaN or inf"):
        bad = x.copy()
        bad[2, 1] = np.nan
        recall_at_k(bad, y, [1])
    with pytest.raises(ValueError, match="NaN or inf"):
        recall_at_k(x, y, [1], gallery=np.full((2, 3), np.inf, np.float32), gallery_labels=[0, 1])
    with pytest.raises(ValueError, match="2-D"):
        recall_at_k(np.zeros(5, np.float32), y, [1])
    with pytest.raises(ValueError, match="dimension"):
        recall_at_k(x, y, [1], gallery=np.zeros((2, 4), np.float32), gallery_labels=[0, 1])
    with pytest.raises(TypeError, match="integer"):
        recall_at_k(x, y.astype(float), [1])
    with pytest.raises(ValueError, match="ks"):
        recall_at_k(x, y, [0])
    with pytest.raises(ValueError, match="both"):
        recall_at_k(x, y, [1], gallery=x)
    with pytest.raises(ValueError, match="ties"):
        recall_at_k(x, y, [1], ties="random")
    with pytest.raises(ValueError, match="memory_budget_mb"):
        recall_at_k(x, y, [1], memory_budget_mb=1e-9)
    with pytest.warns(UserWarning, match="K=\\[10\\]"):  # K ≥ gallery: documented, not clamped
        assert recall_at_k(x, np.zeros(5, int), [10]) == {10: 1.0}


def test_evaluate_protocols_and_keys():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((80, 16)).astype(np.float32)
    y = rng.integers(0, 8, 80)
    m = evaluate(x, y, "cub")
    assert list(m) == ["dense/R@1", "dense/R@2", "dense/R@4", "dense/R@8", "dense/MAP@R", "dense/RP",
                       "binary/R@1", "binary/R@2", "binary/R@4", "binary/R@8", "binary/MAP@R", "binary/RP"]
    assert all(isinstance(v, float) and 0 <= v <= 1 for v in m.values())
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    assert m["dense/R@4"] == recall_at_k(unit, y, [4])[4]
    assert m["binary/R@1"] == recall_at_k(binarize(x), y, [1])[1]
    assert set(evaluate(x, y, "toy", binary=False)) == {"dense/R@1", "dense/MAP@R", "dense/RP"}
    isc = evaluate(x[:30], y[:30], "isc", x[30:], y[30:])
    assert [k for k in isc if k.startswith("dense/R@")] == [f"dense/R@{k}" for k in PROTOCOLS["isc"].ks]
    with pytest.raises(ValueError, match="gallery"):
        evaluate(x, y, "isc")
    with pytest.raises(ValueError, match="self-retrieval"):
        evaluate(x, y, "sop", x, y)
    with pytest.raises(ValueError, match="unknown protocol"):
        evaluate(x, y, "imagenet")


def test_cross_check_pytorch_metric_learning():
    import pytorch_metric_learning.utils.accuracy_calculator as pml
    rng = np.random.default_rng(7)
    x = torch.nn.functional.normalize(torch.from_numpy(rng.standard_normal((200, 8)).astype(np.float32)), dim=1)
    y = torch.from_numpy(rng.integers(0, 15, 200))
    from pytorch_metric_learning.distances import CosineSimilarity
    from pytorch_metric_learning.utils.inference import CustomKNN

    # PML's torch kNN, so that faiss (a benchmark-only dependency) is not needed
    calc = pml.AccuracyCalculator(include=("precision_at_1", "mean_average_precision_at_r", "r_precision"),
                                  k="max_bin_count", knn_func=CustomKNN(CosineSimilarity()))
    ref = calc.get_accuracy(x, y, x, y, ref_includes_query=True)
    assert recall_at_k(x, y, [1])[1] == pytest.approx(ref["precision_at_1"], abs=1e-6)
    assert map_at_r(x, y) == pytest.approx(ref["mean_average_precision_at_r"], abs=1e-6)
    assert r_precision(x, y) == pytest.approx(ref["r_precision"], abs=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    x, y = tie_data()
    cpu = retrieval_stats(x, y)
    gpu = retrieval_stats(torch.from_numpy(x).cuda(), torch.from_numpy(y).cuda())
    for name in ("n_above", "tied_neg", "tied_pos"):
        assert torch.equal(getattr(cpu, name), getattr(gpu, name))
    torch.testing.assert_close(cpu.ap_at_r, gpu.ap_at_r, equal_nan=True)


# ------------------------------------------------------------------ ties="expected" (the default)
def random_tie_reference(q, ql, keys, g=None, gl=None):
    """Mean over tie-break keys (one row per draw, a key per gallery item, ascending breaks ties)
    of per-query (hit rank, AP@R, precision@R); float64 full matrix, every query at once."""
    self_mode = g is None
    if self_mode:
        g, gl = q, ql
    s = np.asarray(q, np.float64) @ np.asarray(g, np.float64).T
    rel = (np.asarray(ql)[:, None] == np.asarray(gl)[None, :]).astype(float)
    if self_mode:  # the query itself: last and irrelevant
        np.fill_diagonal(s, -np.inf)
        np.fill_diagonal(rel, 0)
    R = rel.sum(1)
    first, ap, rp = [], [], []
    for key in keys:
        o = np.lexsort((np.broadcast_to(key, s.shape), -s), axis=1)
        r = np.take_along_axis(rel, o, 1)
        first.append(np.where(R > 0, np.argmax(r, 1) + 1, np.inf))
        j = np.arange(1, r.shape[1] + 1)
        in_r = j[None, :] <= R[:, None]
        prec = np.cumsum(r, 1) / j
        with np.errstate(invalid="ignore", divide="ignore"):
            ap.append(np.where(R > 0, (prec * r * in_r).sum(1) / R, np.nan))
            rp.append(np.where(R > 0, (r * in_r).sum(1) / R, np.nan))
    return np.array(first), np.array(ap), np.array(rp)


@pytest.mark.parametrize("method", ["symmetric", "rows"])
def test_expected_ties_exact_enumeration_tiny(method):
    # 7 items, integer 2-D features → many exact ties. Every one of the 7! tie-break orders of the
    # items is applied, so the average is the exact expectation under a uniformly random tie order.
    import itertools
    x = np.array([[1, 0], [1, 0], [1, 1], [0, 1], [1, 0], [0, 1], [1, 1]], np.float32)
    y = np.array([0, 0, 0, 1, 1, 2, 2])
    keys = np.array(list(itertools.permutations(range(7))))
    f, ap, rp = random_tie_reference(x, y, keys)
    st = retrieval_stats(x, y, method=method)
    for k in (1, 2, 3, 5):
        np.testing.assert_allclose(st.hit_probability(k).numpy(), (f <= k).mean(0), atol=1e-12)
    np.testing.assert_allclose(st.ap_at_r.numpy(), ap.mean(0), atol=1e-12)
    np.testing.assert_allclose(st.precision_at_r.numpy(), rp.mean(0), atol=1e-12)
    # query gallery too (rows engine)
    f, ap, rp = random_tie_reference(x[:3], y[:3], keys, x, y[::-1].copy())
    st = retrieval_stats(x[:3], y[:3], x, y[::-1].copy())
    np.testing.assert_allclose(st.hit_probability(2).numpy(), (f <= 2).mean(0), atol=1e-12)
    np.testing.assert_allclose(st.ap_at_r.numpy(), ap.mean(0), atol=1e-12)


@pytest.mark.parametrize("method", ["symmetric", "rows"])
def test_expected_ties_match_monte_carlo(method):
    x, y = tie_data()
    rng = np.random.default_rng(11)
    keys = np.array([rng.permutation(len(x)) for _ in range(3000)])
    f, ap, rp = random_tie_reference(x, y, keys)
    ks = [1, 2, 5, 10]
    rec = recall_at_k(x, y, ks, method=method, chunk_size=7)
    st = retrieval_stats(x, y, method=method, chunk_size=7)
    for k in ks:  # standard error of a 3000-draw mean ≤ 0.5/sqrt(3000) ≈ 0.009 per query, less for the mean
        assert rec[k] == pytest.approx(np.mean(f <= k), abs=0.004)
    assert st.map_at_r() == pytest.approx(np.nanmean(ap), abs=0.004)
    assert st.r_precision() == pytest.approx(np.nanmean(rp), abs=0.004)
    # per query, the closed form lies between the two deterministic rules
    pess = retrieval_stats(x, y, ties="pessimistic", method=method)
    opt = retrieval_stats(x, y, ties="optimistic", method=method)
    h = st.hit_probability(1).numpy()
    assert np.all(pess.hit_probability(1).numpy() <= h + 1e-15) and np.all(h <= opt.hit_probability(1).numpy() + 1e-15)
    assert np.all(pess.ap_at_r.numpy()[:-1] <= st.ap_at_r.numpy()[:-1] + 1e-12)


def test_expected_recall_hand_worked():
    # One query (label 0), gallery scores (1-D): 5(-), 3(+), 3(-), 3(-), 3(+), 3(-), 1(+).
    #   n_above = 1 (the 5), b = 3, t_neg = 3, t_pos = 2.
    #   R@1: n_above ≥ 1 → 0.   R@2: j = 1 → 1 − P(X ≥ 1) = 1 − 3/5 = 2/5.
    #   R@3: j = 2 → 1 − (3/5)(2/4) = 7/10.   R@4: 1 − (3/5)(2/4)(1/3) = 9/10.   R@5: j = 4 > t_neg → 1.
    g = np.array([[5], [3], [3], [3], [3], [3], [1]], np.float32)
    gl = np.array([1, 0, 1, 1, 0, 1, 0])
    q, ql = np.array([[1.0]], np.float32), np.array([0])
    st = retrieval_stats(q, ql, g, gl)
    assert (int(st.n_above[0]), int(st.tied_neg[0]), int(st.tied_pos[0])) == (1, 3, 2)
    rec = recall_at_k(q, ql, [1, 2, 3, 4, 5], g, gl)
    assert rec == pytest.approx({1: 0.0, 2: 0.4, 3: 0.7, 4: 0.9, 5: 1.0}, abs=1e-12)
    # MAP@R, R = 3: ranks 1 = "-", 2..6 the tie group (A = 1 above, b = 0 positives above,
    # t_pos = 2, T = 5), U = R − A = 2 places count. E[rel·cum] at u: (2/5)(1 + (u−1)(1/4)):
    #   u=1 (rank 2): 2/5 → /2 = 1/5;   u=2 (rank 3): (2/5)(5/4) = 1/2 → /3 = 1/6.
    #   MAP@R = (1/5 + 1/6)/3 = 11/90;  RP = (2 · 2/5)/3 = 4/15.
    assert st.map_at_r() == pytest.approx(11 / 90, abs=1e-12)
    assert st.r_precision() == pytest.approx(4 / 15, abs=1e-12)


def test_small_binary_codes_are_not_punished_by_ties():
    # 4-bit codes: ~16 code words for 300 items → huge tie groups. Pessimistic gives ~0 R@1;
    # expected sits at the average of arbitrary tie orders (what a seed's topk would report).
    rng = np.random.default_rng(12)
    y = np.repeat(np.arange(30), 10)
    centres = rng.standard_normal((30, 4))
    x = (centres[y] + 0.7 * rng.standard_normal((300, 4))).astype(np.float32)
    b = binarize(x).numpy()
    pess = recall_at_k(b, y, [1], ties="pessimistic")[1]
    exp = recall_at_k(b, y, [1])[1]
    keys = np.array([rng.permutation(300) for _ in range(400)])
    f, _, _ = random_tie_reference(b, y, keys)
    assert pess < 0.05 < exp
    assert exp == pytest.approx(np.mean(f <= 1), abs=0.01)
    m = evaluate(x, y, "toy")  # evaluate() uses the default ties="expected"
    assert m["binary/R@1"] == pytest.approx(exp, abs=1e-12)
