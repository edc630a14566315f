"""Hard, LS (both forms) and OLS against hand-computed cases; the option syntax and its errors."""
import math

import pytest
import torch
import torch.nn.functional as F

from robustbench_ols.common.errors import SpecError
from robustbench_ols.data import Batch
from robustbench_ols.methods import FitInfo, StepOutput, build_method, parse_method


def setup(name, k, labels=None, **opts):
    m, resolved = build_method(name, opts)
    y = torch.as_tensor(labels if labels is not None else [0], dtype=torch.long)
    m.setup(FitInfo(k, len(y), y, epochs=2, steps_per_epoch=1, device=torch.device("cpu"),
                    dataset="synthetic", seed=0))
    return m


def batch(y):
    y = torch.tensor(y)
    return Batch(torch.zeros(len(y), 3, 32, 32), y, torch.arange(len(y)))


def test_hard_is_cross_entropy():
    z, y = torch.randn(16, 10), torch.randint(0, 10, (16,))
    assert torch.allclose(setup("hard", 10).loss(z, batch(y.tolist()), 0), F.cross_entropy(z, y))


def test_ls_equals_torch_label_smoothing():
    z, y = torch.randn(32, 10), torch.randint(0, 10, (32,))
    for eps in (0.1, 0.3):
        got = setup("ls", 10, eps=str(eps)).loss(z, batch(y.tolist()), 0)
        assert torch.allclose(got, F.cross_entropy(z, y, label_smoothing=eps), atol=1e-6)
    assert setup("ls", 10).eps == 0.1  # the default


def test_ls_gamma_form():
    k, gamma = 10, 0.8
    m = setup("ls", k, gamma=str(gamma))
    assert m.eps == pytest.approx((1 - gamma) * k / (k - 1))
    z, y = torch.randn(8, k), torch.randint(0, k, (8,))
    # The target the gamma form means: gamma on the label, (1-gamma)/(K-1) elsewhere.
    target = torch.full((8, k), (1 - gamma) / (k - 1))
    target[torch.arange(8), y] = gamma
    ref = -(target * F.log_softmax(z, 1)).sum(1).mean()
    assert torch.allclose(m.loss(z, batch(y.tolist()), 0), ref, atol=1e-6)
    with pytest.raises(SpecError, match="gamma must be in"):
        setup("ls", k, gamma="0.05")
    with pytest.raises(SpecError, match="eps or gamma, not both"):
        build_method("ls", {"eps": "0.1", "gamma": "0.9"})


def softmax(row):
    e = [math.exp(v) for v in row]
    return [v / sum(e) for v in e]


# K = 3 hand example. Labels 0, 0, 1, 2. Predictions: 0 (correct), 0 (correct, repeated label 0),
# 0 (wrong: label 1), 2 (correct). So A[0] = p0 + p1, c = [2, 0, 1]; class 1 has no correct sample.
LOGITS = [[2.0, 1.0, 0.0], [1.0, 0.0, 0.5], [0.3, 0.1, -1.0], [0.0, 1.0, 3.0]]
LABELS = [0, 0, 1, 2]


def ols_after_one_batch(**opts):
    m = setup("ols", 3, LABELS, **opts)
    z = torch.tensor(LOGITS)
    m.after_backward(batch(LABELS), StepOutput(torch.tensor(0.0), z))
    return m


def test_ols_accumulates_only_correct_predictions_and_counts_repeats():
    m = ols_after_one_batch()
    p = [softmax(r) for r in LOGITS]
    a0 = [p[0][j] + p[1][j] for j in range(3)]
    assert torch.allclose(m.A[0], torch.tensor(a0), atol=1e-6)  # both label-0 samples counted
    assert torch.all(m.A[1] == 0)  # sample 2 was wrong: nothing accumulated
    assert torch.allclose(m.A[2], torch.tensor(p[3]), atol=1e-6)
    assert m.c.tolist() == [2.0, 0.0, 1.0]
    m.on_epoch_start(0, None)  # epoch 0 starts with S0: no update
    assert torch.allclose(m.S, torch.full((3, 3), 1 / 3))
    m.on_epoch_start(1, None)  # end of epoch 0: S[y] = A[y] / c[y], empty class uniform
    expected = torch.tensor([[v / 2 for v in a0], [1 / 3] * 3, p[3]])
    assert torch.allclose(m.S, expected, atol=1e-6)
    assert torch.allclose(m.S.sum(1), torch.ones(3))
    assert torch.all(m.A == 0) and torch.all(m.c == 0)  # reset


@pytest.mark.parametrize("init, s0", [("uniform", 1 / 3), ("zeros", 0.0)])
def test_ols_loss_hand_computed(init, s0):
    m = setup("ols", 3, LABELS, alpha="0.5", init=init)
    logp = [[math.log(v) for v in softmax(r)] for r in LOGITS]
    ref = sum(-(0.5 * lp[y] + 0.5 * sum(s0 * v for v in lp)) for lp, y in zip(logp, LABELS)) / 4
    got = m.loss(torch.tensor(LOGITS), batch(LABELS), 0)
    assert got.item() == pytest.approx(ref, rel=1e-6)
    if init == "zeros":  # first epoch of the authors' CIFAR code: 0.5 * CE
        ce = F.cross_entropy(torch.tensor(LOGITS), torch.tensor(LABELS))
        assert got.item() == pytest.approx(0.5 * ce.item(), rel=1e-6)


def test_ols_loss_uses_the_learned_rows():
    m = ols_after_one_batch(alpha="0.3")
    m.on_epoch_start(1, None)
    S = m.S.clone()
    logp = F.log_softmax(torch.tensor(LOGITS), 1)
    y = torch.tensor(LABELS)
    ref = (0.3 * -logp[torch.arange(4), y] + 0.7 * -(S[y] * logp).sum(1)).mean()
    assert torch.allclose(m.loss(torch.tensor(LOGITS), batch(LABELS), 1), ref, atol=1e-6)


def test_ols_period_in_iterations():
    m = setup("ols", 3, LABELS, period="2")
    z = torch.tensor(LOGITS)
    m.after_backward(batch(LABELS), StepOutput(torch.tensor(0.0), z))
    assert torch.allclose(m.S, torch.full((3, 3), 1 / 3))  # 1 of 2 iterations: not yet
    m.after_backward(batch(LABELS), StepOutput(torch.tensor(0.0), z))
    assert m.S[2].argmax() == 2 and m.c.sum() == 0  # updated after 2 iterations, then reset
    m.on_epoch_start(1, None)  # with a period, epoch boundaries do not update
    assert m.S[2].argmax() == 2


def test_ols_state_resumes_exactly():
    m = ols_after_one_batch()
    m.on_epoch_start(1, None)
    m.after_backward(batch(LABELS), StepOutput(torch.tensor(0.0), torch.tensor(LOGITS) * 2))
    state = m.state_dict()
    fresh = setup("ols", 3, LABELS)
    fresh.load_state_dict(state)
    for a, b in ((m.S, fresh.S), (m.A, fresh.A), (m.c, fresh.c)):
        assert torch.equal(a, b)
    assert fresh.step == m.step == 2  # the iteration counter drives period= updates
    for x in (m, fresh):
        x.on_epoch_start(2, None)
    assert torch.equal(m.S, fresh.S)
    m.S += 1  # the loaded state is a copy, not shared
    assert not torch.equal(m.S, fresh.S)


def test_options_syntax_and_errors():
    assert parse_method("ols:alpha=0.5,init=zeros") == ("ols", {"alpha": "0.5", "init": "zeros"})
    _, resolved = build_method("ols", {"init": "zeros"})
    assert resolved == {"alpha": 0.5, "init": "zeros", "period": 0}
    with pytest.raises(SpecError, match=r"unknown option\(s\) beta for method 'ols'; valid: alpha"):
        build_method("ols", {"beta": "1"})
    with pytest.raises(SpecError, match="alpha='x' is not a valid float"):
        build_method("ols", {"alpha": "x"})
    with pytest.raises(SpecError, match="unknown method 'olz'; valid methods: .*hard.*ls.*ols"):
        build_method("olz")
    with pytest.raises(SpecError, match="key=value"):
        parse_method("ols:alpha")
    with pytest.raises(SpecError, match="init must be uniform or zeros"):
        build_method("ols", {"init": "ones"})


def test_fit_info_scan_gives_eval_mode_logits_in_index_order():
    from robustbench_ols.models import create_model
    torch.manual_seed(0)
    model = create_model("resnet8", 10)
    model.train()
    images = torch.randint(0, 256, (70, 3, 32, 32), dtype=torch.uint8)
    info = FitInfo(10, 70, torch.zeros(70, dtype=torch.long), 1, 1, torch.device("cpu"), "synthetic", 0,
                   train_images=images)
    logits = info.scan(model, batch_size=32)  # 3 chunks, the last one partial
    assert logits.shape == (70, 10) and model.training  # mode restored
    model.eval()
    with torch.no_grad():
        ref = model(images[40:50].float() / 255)
    assert torch.allclose(logits[40:50], ref, atol=1e-5)


def test_scan_output_can_weight_a_differentiable_loss():
    from robustbench_ols.models import create_model
    model = create_model("resnet8", 10)
    images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    info = FitInfo(10, 8, torch.zeros(8, dtype=torch.long), 1, 1, torch.device("cpu"), "synthetic", 0,
                   train_images=images)
    w = info.scan(model)[:, 0]  # used as it comes (a view of the scan's own tensor)
    loss = (w * F.cross_entropy(model(images.float() / 255), torch.zeros(8, dtype=torch.long),
                                reduction="none")).mean()
    loss.backward()  # an inference-mode tensor as w would raise "cannot be saved for backward"
    assert model.fc.weight.grad is not None
