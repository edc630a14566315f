"""The loss baselines (SCE, bootstrapping, DisturbLabel, GCE) and OLS-Single against hand-computed
cases (K = 3 or 4, plain Python math), their options, randomness and state."""
import math

import pytest
import torch
import torch.nn.functional as F
from scipy import stats

from robustbench_ols.common.errors import SpecError
from robustbench_ols.data import Batch
from robustbench_ols.methods import FitInfo, StepOutput, build_method

NEW_METHODS = ("sce", "bootsoft", "boothard", "disturblabel", "gce", "ols-single")


def setup(name, k, labels=None, dataset="synthetic", seed=0, **opts):
    m, _ = build_method(name, opts)
    y = torch.as_tensor(labels if labels is not None else [0], dtype=torch.long)
    m.setup(FitInfo(k, len(y), y, epochs=2, steps_per_epoch=1, device=torch.device("cpu"),
                    dataset=dataset, seed=seed))
    return m


def batch(y, index=None):
    y = torch.tensor(y)
    index = torch.arange(len(y)) if index is None else torch.tensor(index)
    return Batch(torch.zeros(len(y), 3, 32, 32), y, index)


def softmax(row):
    e = [math.exp(v) for v in row]
    return [v / sum(e) for v in e]


def mean(xs):
    return sum(xs) / len(xs)


# K = 3 hand example shared by the loss tests.
LOGITS = [[2.0, 1.0, 0.0], [1.0, 0.0, 0.5], [0.3, 0.1, -1.0], [0.0, 1.0, 3.0]]
LABELS = [0, 2, 1, 2]
P = [softmax(r) for r in LOGITS]
CE = mean([-math.log(p[y]) for p, y in zip(P, LABELS)])


def loss_of(m, logits=LOGITS, labels=LABELS):
    return m.loss(torch.tensor(logits), batch(labels), 0).item()


# ------------------------------------------------------------------------------------------ SCE

def test_sce_with_alpha_1_beta_0_is_cross_entropy():
    assert loss_of(setup("sce", 3, alpha="1", beta="0")) == pytest.approx(CE, rel=1e-6)


@pytest.mark.parametrize("A_opt, A", [(None, -4.0), ("paper", -4.0), ("code", math.log(1e-4)),
                                      ("-9.2103", -9.2103)])
def test_sce_rce_term_is_minus_A_times_one_minus_p_y(A_opt, A):
    opts = {"alpha": "0", "beta": "1"} | ({"A": A_opt} if A_opt else {})
    m = setup("sce", 3, **opts)
    assert m.A == pytest.approx(A, rel=1e-12)
    # The definition: -sum_k p_k log q_k, q = onehot(y) with log 0 := A (log 1 = 0).
    by_definition = mean([-sum(pk * (0.0 if k == y else A) for k, pk in enumerate(p))
                          for p, y in zip(P, LABELS)])
    closed_form = mean([-A * (1 - p[y]) for p, y in zip(P, LABELS)])
    assert by_definition == pytest.approx(closed_form, rel=1e-12)
    assert loss_of(m) == pytest.approx(closed_form, rel=1e-5)


def test_sce_code_value_matches_clamped_one_hot():
    # The official code's form: q = clamp(onehot, 1e-4, 1), RCE = -sum p log q.
    rce = mean([-sum(pk * math.log(max(1.0 if k == y else 0.0, 1e-4)) for k, pk in enumerate(p))
                for p, y in zip(P, LABELS)])
    m = setup("sce", 3, alpha="0.1", beta="1", A="code")
    assert loss_of(m) == pytest.approx(0.1 * CE + rce, rel=1e-5)


def test_sce_clamped_ce_is_the_ols_authors_loss():
    """`ce=clamped`: the CE term against the one-hot clamped to [1e-4, 1] (and p to >= 1e-7), as in the OLS
    authors' SCE baseline; by hand, -log p_y - 1e-4 sum_{k != y} log p_k, plus the same RCE."""
    A = math.log(1e-4)
    by_hand = mean([0.1 * (-math.log(p[y]) - 1e-4 * sum(math.log(max(pk, 1e-7)) for k, pk in enumerate(p) if k != y))
                    + 1.0 * -A * (1 - p[y]) for p, y in zip(P, LABELS)])
    m = setup("sce", 3, alpha="0.1", beta="1", A="code", ce="clamped")
    assert loss_of(m) == pytest.approx(by_hand, rel=1e-6)
    plain = loss_of(setup("sce", 3, alpha="0.1", beta="1", A="code"))
    assert loss_of(m) > plain  # every -log p_k > 0 adds: a different loss
    # a near-zero probability (here e^-40 and e^-80) costs 1e-4 * -ln(1e-7) per class, the clamp of the
    # authors' code
    far = [[40.0, 0.0, -40.0]]
    extra = loss_of(m, far, [0]) - loss_of(setup("sce", 3, alpha="0.1", beta="1", A="code"), far, [0])
    assert extra == pytest.approx(0.1 * 1e-4 * 2 * -math.log(1e-7), rel=1e-3)
    assert m.options()["ce"] == "clamped" and "ce" not in setup("sce", 3).options()  # the default keeps old ids
    with pytest.raises(Exception, match="ce must be plain"):
        setup("sce", 3, ce="both")


@pytest.mark.parametrize("dataset, alpha, beta", [("cifar10", 0.1, 1.0), ("cifar100", 6.0, 0.1),
                                                  ("synthetic", 0.1, 1.0)])
def test_sce_dataset_defaults(dataset, alpha, beta):
    m = setup("sce", 3, dataset=dataset)
    assert m.options() == {"alpha": None, "beta": None, "A": -4.0}  # as given
    assert m.effective_options() == {"alpha": alpha, "beta": beta, "A": -4.0, "ce": "plain"}  # as used
    ref = mean([alpha * -math.log(p[y]) + beta * 4.0 * (1 - p[y]) for p, y in zip(P, LABELS)])
    assert loss_of(m) == pytest.approx(ref, rel=1e-5)
    # A given value wins over the dataset default.
    assert setup("sce", 3, dataset=dataset, alpha="2").effective_options()["alpha"] == 2.0


# -------------------------------------------------------------------------------- bootstrapping

@pytest.mark.parametrize("name", ["bootsoft", "boothard"])
@pytest.mark.parametrize("detach", ["true", "false"])
def test_bootstrapping_with_beta_1_is_cross_entropy(name, detach):
    assert loss_of(setup(name, 3, beta="1", detach=detach)) == pytest.approx(CE, rel=1e-6)


def test_bootstrapping_defaults():
    assert setup("bootsoft", 3).options() == {"beta": 0.95, "detach": True}
    assert setup("boothard", 3).options() == {"beta": 0.8, "detach": True}


def test_bootsoft_hand_value():
    b = 0.95
    ref = mean([-sum((b * (k == y) + (1 - b) * p[k]) * math.log(p[k]) for k in range(3))
                for p, y in zip(P, LABELS)])
    for detach in ("true", "false"):  # same value, different gradients
        assert loss_of(setup("bootsoft", 3, detach=detach)) == pytest.approx(ref, rel=1e-6)


def test_boothard_hand_value():
    b = 0.8
    argmax = [max(range(3), key=lambda k: p[k]) for p in P]  # [0, 0, 0, 2]
    assert argmax == [0, 0, 0, 2]
    ref = mean([-(b * math.log(p[y]) + (1 - b) * math.log(p[a])) for p, y, a in zip(P, LABELS, argmax)])
    assert loss_of(setup("boothard", 3)) == pytest.approx(ref, rel=1e-6)


def grad_of(m, logits=LOGITS, labels=LABELS):
    z = torch.tensor(logits, requires_grad=True)
    m.loss(z, batch(labels), 0).backward()
    return z.grad


def test_bootsoft_detach_stops_the_gradient_through_the_target():
    b, n = 0.95, len(LABELS)
    # detach=true: CE against a constant target t, so dL/dz = (p - t) / B.
    t = [[b * (k == y) + (1 - b) * p[k] for k in range(3)] for p, y in zip(P, LABELS)]
    expected = torch.tensor([[(p[k] - ti[k]) / n for k in range(3)] for p, ti in zip(P, t)])
    g_detached = grad_of(setup("bootsoft", 3))
    assert torch.allclose(g_detached, expected, atol=1e-6)
    g_through = grad_of(setup("bootsoft", 3, detach="false"))
    assert (g_through - g_detached).abs().max() > 1e-3  # the target's gradient is there
    # detach=false adds the gradient of (1-b) * H(p) = -(1-b) sum p log p, by finite differences.
    def ent(row):
        q = softmax(row)
        return -(1 - b) * sum(v * math.log(v) for v in q) / n
    h = 1e-6
    for i, row in enumerate(LOGITS):
        for k in range(3):
            up, dn = list(row), list(row)
            up[k] += h
            dn[k] -= h
            fd = (ent(up) - ent(dn)) / (2 * h)
            assert g_through[i, k].item() - g_detached[i, k].item() == pytest.approx(fd, abs=1e-5)


def test_boothard_detach_makes_no_difference():
    assert torch.allclose(grad_of(setup("boothard", 3)), grad_of(setup("boothard", 3, detach="false")))


# ---------------------------------------------------------------------------------------- GCE

def test_gce_hand_value_and_limits():
    q = 0.7
    ref = mean([(1 - p[y] ** q) / q for p, y in zip(P, LABELS)])
    assert loss_of(setup("gce", 3)) == pytest.approx(ref, rel=1e-6)  # q = 0.7 default
    assert loss_of(setup("gce", 3, q="1")) == pytest.approx(mean([1 - p[y] for p, y in zip(P, LABELS)]),
                                                           rel=1e-6)  # MAE-like
    assert loss_of(setup("gce", 3, q="1e-4")) == pytest.approx(CE, abs=1e-3)  # q -> 0: CE
    assert abs(loss_of(setup("gce", 3, q="1e-4")) - CE) < abs(loss_of(setup("gce", 3, q="0.01")) - CE)


# ------------------------------------------------------------------------------- DisturbLabel

def test_disturblabel_flip_rate_and_uniform_other_classes():
    k, alpha, n = 4, 0.1, 200_000
    m = setup("disturblabel", k)
    y = torch.arange(n) % k
    new = m.disturb(y)
    flipped = new != y
    rate, p = flipped.float().mean().item(), alpha * (k - 1) / k
    assert abs(rate - p) < 4 * math.sqrt(p * (1 - p) / n)
    # The new label of a flipped sample is uniform over the K-1 other classes, for each true class.
    for c in range(k):
        sel = flipped & (y == c)
        counts = torch.bincount(new[sel], minlength=k)
        assert counts[c] == 0
        others = [counts[j].item() for j in range(k) if j != c]
        assert stats.chisquare(others).pvalue > 1e-4
    # alpha = 1: every label resampled uniformly over all K classes, so (K-1)/K change.
    rate1 = (setup("disturblabel", k, alpha="1").disturb(y) != y).float().mean().item()
    assert abs(rate1 - 0.75) < 4 * math.sqrt(0.75 * 0.25 / n)
    assert torch.equal(setup("disturblabel", k, alpha="0").disturb(y), y)


def test_disturblabel_loss_is_ce_on_the_disturbed_labels():
    k, z, y = 4, torch.randn(64, 4), torch.randint(0, 4, (64,))
    a, b = setup("disturblabel", k, alpha="0.5", seed=3), setup("disturblabel", k, alpha="0.5", seed=3)
    new = b.disturb(y)
    assert not torch.equal(new, y)
    assert torch.allclose(a.loss(z, Batch(torch.zeros(64, 3, 32, 32), y, torch.arange(64)), 0),
                          F.cross_entropy(z, new))


def test_disturblabel_reproducible_by_seed_and_resumes_exactly():
    y = torch.zeros(5000, dtype=torch.long)
    assert torch.equal(setup("disturblabel", 4, seed=1).disturb(y), setup("disturblabel", 4, seed=1).disturb(y))
    assert not torch.equal(setup("disturblabel", 4, seed=1).disturb(y), setup("disturblabel", 4, seed=2).disturb(y))
    # The trainer's global RNG does not affect it.
    torch.manual_seed(0)
    a = setup("disturblabel", 4, seed=1).disturb(y)
    torch.manual_seed(1)
    assert torch.equal(a, setup("disturblabel", 4, seed=1).disturb(y))
    # Uninterrupted: two draws. Interrupted after the first: state_dict -> fresh method -> second draw.
    m = setup("disturblabel", 4, seed=5)
    m.disturb(y)
    state = m.state_dict()
    second = m.disturb(y)
    fresh = setup("disturblabel", 4, seed=99)
    fresh.load_state_dict(state)
    assert torch.equal(fresh.disturb(y), second)


# ---------------------------------------------------------------------------------- OLS-Single

# K = 3. Labels 0, 0, 1, 2, 0. Predictions 0 (correct), 0 (correct), 0 (wrong), 2 (correct),
# 0 (correct): class 0 has three correct samples (0, 1, 4), class 1 none, class 2 one (sample 3).
S_LOGITS = [[2.0, 1.0, 0.0], [1.0, 0.0, 0.5], [0.3, 0.1, -1.0], [0.0, 1.0, 3.0], [3.0, -1.0, 0.5]]
S_LABELS = [0, 0, 1, 2, 0]
SP = [softmax(r) for r in S_LOGITS]


def feed(m, rows=range(5)):
    rows = list(rows)
    z = torch.tensor([S_LOGITS[i] for i in rows])
    m.after_backward(batch([S_LABELS[i] for i in rows], rows), StepOutput(torch.tensor(0.0), z))


def which(row, candidates):
    """The index i in `candidates` whose softmax equals `row` (exactly one must match)."""
    hits = [i for i in candidates if all(abs(a - b) < 1e-6 for a, b in zip(row.tolist(), SP[i]))]
    assert len(hits) == 1, (row, hits)
    return hits[0]


def test_ols_single_soft_label_is_one_correct_prediction():
    m = setup("ols-single", 3, S_LABELS, draw="class")
    feed(m)
    m.on_epoch_start(0, None)  # epoch 0 keeps S0
    assert torch.allclose(m.S, torch.full((3, 3), 1 / 3))
    m.on_epoch_start(1, None)
    chosen = which(m.S[0], [0, 1, 4])  # exactly one of the correct class-0 predictions, not a mean
    assert torch.allclose(m.S[1], torch.full((3,), 1 / 3))  # no correct sample: uniform
    assert torch.allclose(m.S[2], torch.tensor(SP[3]), atol=1e-6)  # the only correct one
    # The loss: 0.5 * CE + 0.5 * soft CE against S[y], by hand.
    soft = {0: SP[chosen], 1: [1 / 3] * 3, 2: SP[3]}
    ref = mean([-(0.5 * math.log(p[y]) + 0.5 * sum(s * math.log(v) for s, v in zip(soft[y], p)))
                for p, y in zip(SP, S_LABELS)])
    assert m.loss(torch.tensor(S_LOGITS), batch(S_LABELS), 1).item() == pytest.approx(ref, rel=1e-6)
    # The next epoch starts empty: with no correct prediction, every class becomes uniform.
    m.on_epoch_start(2, None)
    assert torch.allclose(m.S, torch.full((3, 3), 1 / 3))


def test_ols_single_choice_varies_with_seed_and_is_uniform_across_batches():
    # Class 0's correct predictions arrive in two batches (samples 0, 1, then 4): the kept one must
    # be uniform over all three, not biased to the last batch.
    counts = [0, 0, 0]
    for seed in range(300):
        m = setup("ols-single", 3, S_LABELS, seed=seed, draw="class")
        feed(m, [0, 1, 2])
        feed(m, [3, 4])
        m.on_epoch_start(1, None)
        counts[[0, 1, 4].index(which(m.S[0], [0, 1, 4]))] += 1
    assert min(counts) > 0
    assert stats.chisquare(counts).pvalue > 1e-4
    # Same seed, same choice.
    a, b = setup("ols-single", 3, S_LABELS, seed=7, draw="class"), setup("ols-single", 3, S_LABELS, seed=7, draw="class")
    for m in (a, b):
        feed(m)
        m.on_epoch_start(1, None)
    assert torch.equal(a.S, b.S)


def test_ols_single_init_zeros_and_period():
    m = setup("ols-single", 3, S_LABELS, init="zeros", draw="class")
    ce = mean([-math.log(p[y]) for p, y in zip(SP, S_LABELS)])
    assert m.loss(torch.tensor(S_LOGITS), batch(S_LABELS), 0).item() == pytest.approx(0.5 * ce, rel=1e-6)
    m = setup("ols-single", 3, S_LABELS, period="2", draw="class")
    feed(m)
    assert torch.allclose(m.S, torch.full((3, 3), 1 / 3))  # 1 of 2 iterations
    feed(m)
    which(m.S[0], [0, 1, 4])
    assert torch.all(m.best_key == -1)  # collectors reset


def test_ols_single_state_resumes_exactly():
    def run(interrupt):
        m = setup("ols-single", 3, S_LABELS, seed=11, draw="class")
        feed(m, [0, 1, 2])
        if interrupt:
            state = m.state_dict()
            m = setup("ols-single", 3, S_LABELS, seed=12, draw="class")  # another seed: everything comes from state
            m.load_state_dict(state)
        feed(m, [3, 4])
        m.on_epoch_start(1, None)
        feed(m)
        m.on_epoch_start(2, None)
        return m
    a, b = run(False), run(True)
    assert torch.equal(a.S, b.S) and torch.equal(a.best_key, b.best_key)
    assert torch.equal(a.generator.get_state(), b.generator.get_state())
    state = a.state_dict()
    state["S"] += 1  # a copy, not shared
    assert not torch.equal(a.S, state["S"])


def test_ols_single_draw_sample_excludes_itself():
    m = setup("ols-single", 3, S_LABELS, draw="sample", seed=0)
    feed(m)
    m.on_epoch_start(0, None)
    assert not m.pooled  # the first epoch uses S0 (uniform), as OLS
    z = torch.tensor(S_LOGITS)
    s0 = mean([-(0.5 * math.log(p[y]) + 0.5 * sum(math.log(v) for v in p) / 3) for p, y in zip(SP, S_LABELS)])
    assert m.loss(z, batch(S_LABELS), 0).item() == pytest.approx(s0, rel=1e-6)
    m.on_epoch_start(1, None)
    reps = 400
    y = torch.tensor(S_LABELS * reps)
    idx = torch.arange(5).repeat(reps)
    soft = m.sample_soft_labels(y, idx)
    picks = {i: [] for i in range(5)}
    for r in range(len(y)):
        i = int(idx[r])
        if S_LABELS[i] == 0:
            picks[i].append(which(soft[r], [0, 1, 4]))
        else:  # class 1: no correct sample; class 2: the only one is the sample itself
            assert torch.allclose(soft[r], torch.full((3,), 1 / 3))
    for i in (0, 1, 4):
        others = [j for j in (0, 1, 4) if j != i]
        assert i not in picks[i]  # never itself
        c = [picks[i].count(j) for j in others]
        assert stats.binomtest(c[0], reps).pvalue > 1e-4  # uniform over the two others
    # A wrongly predicted sample of class 0 (index 2 relabelled as 0 here) may get any of the three.
    soft2 = m.sample_soft_labels(torch.tensor([0] * 600), torch.tensor([2] * 600))
    got = [which(r, [0, 1, 4]) for r in soft2]
    assert stats.chisquare([got.count(j) for j in (0, 1, 4)]).pvalue > 1e-4
    # The loss uses these labels; state round-trips (generator included).
    state = m.state_dict()
    fresh = setup("ols-single", 3, S_LABELS, draw="sample", seed=5)
    fresh.load_state_dict(state)
    assert torch.equal(m.loss(z, batch(S_LABELS), 1), fresh.loss(z, batch(S_LABELS), 1))


# ------------------------------------------------------------------------------ common checks

@pytest.mark.parametrize("name", NEW_METHODS)
def test_loss_on_random_logits_is_a_finite_scalar_with_gradient(name):
    k, n = 4, 16
    y = torch.randint(0, k, (n,))
    m = setup(name, k, y.tolist())
    z = torch.randn(n, k, requires_grad=True)
    b = Batch(torch.zeros(n, 3, 32, 32), y, torch.arange(n))
    loss = m.loss(z, b, 0)
    assert loss.dim() == 0 and loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert z.grad is not None and torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0
    m.after_backward(b, StepOutput(loss.detach(), z.detach()))
    m.on_epoch_start(1, None)
    assert torch.isfinite(m.loss(z.detach(), b, 1))


@pytest.mark.parametrize("name, opts, match", [
    ("sce", {"A": "0"}, "sce: A"), ("sce", {"A": "2"}, "sce: A"), ("sce", {"A": "codes"}, "sce: A"),
    ("sce", {"alpha": "-1"}, "sce: alpha must be"), ("sce", {"beta": "nan"}, "sce: beta must be"),
    ("sce", {"alpha": "0", "beta": "0"}, "sce: alpha and beta"),
    ("bootsoft", {"beta": "1.5"}, r"bootsoft: beta must be in \[0, 1\]"),
    ("boothard", {"beta": "-0.1"}, r"boothard: beta must be in \[0, 1\]"),
    ("bootsoft", {"detach": "maybe"}, "'bootsoft': option detach='maybe' is not a valid bool"),
    ("disturblabel", {"alpha": "1.2"}, r"disturblabel: alpha must be in \[0, 1\]"),
    ("gce", {"q": "0"}, r"gce: q must be in \(0, 1\]"), ("gce", {"q": "1.5"}, r"gce: q must be in"),
    ("ols-single", {"alpha": "2"}, r"ols-single: alpha must be in \[0, 1\]"),
    ("ols-single", {"init": "random"}, "ols-single: init must be"),
    ("ols-single", {"period": "-1"}, "ols-single: period must be >= 0"),
    ("ols-single", {"draw": "batch"}, "ols-single: draw must be class"),
])
def test_bad_options_name_the_method(name, opts, match):
    with pytest.raises(SpecError, match=match):
        build_method(name, opts)
