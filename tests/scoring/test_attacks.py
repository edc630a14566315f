"""FGSM and PGD through torchattacks: budget and range invariants, mode restored, the closed form on a
linear model, the error ordering on a trained model, seeding, batch norm folding, and the spec syntax."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from robustbench_ols.attacks import AttackSpec, adversarial, fold_batchnorm, robust_error
from robustbench_ols.common.errors import SpecError
from robustbench_ols.models import create_model

EPS = 8 / 255


@pytest.fixture(scope="module")
def trained(tmp_path_factory, one_torch_thread):
    """A resnet8 trained for 3 epochs on the synthetic set, and its test images. One torch thread for the
    module, whatever earlier tests left: the float rounding of another thread count trains another model."""
    from robustbench_ols.data import load_dataset
    from robustbench_ols.scoring.evaluation import EvalSpec
    from robustbench_ols.spec import ExecOptions, RunSpec
    from robustbench_ols.train.run import execute
    r = execute(RunSpec(dataset="synthetic", model="resnet8", epochs=3, batch_size=64),
                ExecOptions(device="cpu", progress=False), tmp_path_factory.mktemp("attack"), EvalSpec(attacks=()))
    model = create_model("resnet8", 10)
    model.load_state_dict(torch.load(r.run_dir / "model.pt", weights_only=False)["models"][0])
    data = load_dataset("synthetic")
    return model, data.test_x[:256], torch.as_tensor(data.test_y[:256])


@pytest.mark.parametrize("text", ["fgsm", "pgd", "pgd:eps=4/255,steps=5,alpha=1/255"])
def test_budget_and_range(trained, text):
    model, images, labels = trained
    spec = AttackSpec.parse(text)
    x = images[:64].float() / 255
    adv = adversarial(model, x, labels[:64], spec, seed=0)
    assert (adv - x).abs().max() <= spec.eps + 1e-6
    assert adv.min() >= 0 and adv.max() <= 1
    assert (adv != x).any()


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_model_mode_restored(trained, mode):
    model, images, labels = trained
    model.train(mode == "train")
    robust_error(model, images[:32], labels[:32], AttackSpec.parse("pgd:steps=2"))
    assert model.training is (mode == "train")
    model.eval()


def test_fgsm_equals_closed_form_on_a_linear_model():
    torch.manual_seed(0)
    lin = nn.Linear(3 * 32 * 32, 10)
    model = nn.Sequential(nn.Flatten(), lin)
    x = 0.1 + 0.8 * torch.rand(16, 3, 32, 32)
    y = torch.randint(0, 10, (16,))
    adv = adversarial(model, x, y, AttackSpec.parse("fgsm"))
    with torch.no_grad():  # dCE/dx = W^T (softmax(Wx + b) - onehot(y)) per sample
        g = (F.softmax(lin(x.flatten(1)), 1) - F.one_hot(y, 10).float()) @ lin.weight
    expected = (x + EPS * g.sign().view_as(x)).clamp(0, 1)
    assert torch.allclose(adv, expected, atol=1e-6)


def test_error_ordering_on_a_trained_model(trained):
    model, images, labels = trained
    with torch.no_grad():
        clean = (model(images.float() / 255).argmax(1) != labels).float().mean().item()
    fgsm = robust_error(model, images, labels, AttackSpec.parse("fgsm"))["fgsm_err"]
    pgd = robust_error(model, images, labels, AttackSpec.parse("pgd"))["pgd20_err"]
    print(f"\nclean {clean:.3f} fgsm {fgsm:.3f} pgd20 {pgd:.3f}")
    assert clean < 0.5  # the model learned something
    assert pgd >= fgsm >= clean and pgd > clean


def test_seeded(trained):
    model, images, labels = trained
    x, y = images[:32].float() / 255, labels[:32]
    spec = AttackSpec.parse("pgd:steps=3")
    a, b = adversarial(model, x, y, spec, seed=1), adversarial(model, x, y, spec, seed=1)
    c = adversarial(model, x, y, spec, seed=2)
    assert torch.equal(a, b) and not torch.equal(a, c)  # the random start follows the seed
    state = torch.random.get_rng_state()
    r1 = robust_error(model, images, labels, spec, seed=3)
    assert torch.equal(state, torch.random.get_rng_state())  # the caller's random state is untouched
    assert r1 == robust_error(model, images, labels, spec, seed=3)


def test_pgd_starts_are_one_stream_over_the_images_whatever_the_batch_size(trained):
    """PGD's random starts come from a CPU generator, image after image (issue 27): the adversarial images and
    each image's outcome are the same at any attack batch size, and for images in one batch they are exactly
    what torchattacks drew from the global generator seeded with the seed, the records made before."""
    import torchattacks

    from robustbench_ols.attacks.robust import StartsFrom, attack_outcomes, start_stream
    model, images, labels = trained
    model.eval()
    spec = AttackSpec.parse("pgd:steps=2")
    x = (images[:96].float() / 255).contiguous(memory_format=torch.channels_last)
    y = labels[:96]

    def crafted(batch, per_image=True):
        stream = start_stream(spec, 5)
        return torch.cat([adversarial(model, x[i:i + batch], y[i:i + batch], spec, seed=5 + b,
                                      starts=stream if per_image else start_stream(spec, 5 + b))
                          for b, i in enumerate(range(0, len(x), batch))])

    one = crafted(96)
    assert torch.equal(crafted(32), one) and torch.equal(crafted(17), one)
    torch.manual_seed(5)  # torchattacks' own draw, as every record before per-image starts was made
    assert torch.equal(torchattacks.PGD(model, eps=spec.eps, alpha=spec.alpha, steps=2)(x, y), one)
    assert torch.equal(crafted(96, per_image=False), one) and not torch.equal(crafted(32, per_image=False), one)
    outcomes = [attack_outcomes(model, images[:96], y, spec, seed=5, batch_size=b, channels_last=True).fooled
                for b in (20, 96)]
    assert torch.equal(*outcomes)
    # the start is drawn NHWC whatever the layout, so a contiguous batch starts at the same point
    starts = []
    for t in (x, x.contiguous()):
        with StartsFrom(start_stream(spec, 5)):
            starts.append(torch.empty_like(t).uniform_(-spec.eps, spec.eps))
    assert torch.equal(*starts) and not starts[1].is_contiguous(memory_format=torch.channels_last)


def test_channels_last_gives_the_same_robust_error(trained):
    model, images, labels = trained
    spec = AttackSpec.parse("pgd:steps=5")
    a = robust_error(model, images, labels, spec)
    b = robust_error(model.to(memory_format=torch.channels_last), images, labels, spec, channels_last=True)
    # Float rounding differs between the layouts, and five PGD steps amplify it on borderline images: 4 of 256
    # flipped at one thread on the 2-core AVX2 EPYC (0 at two threads). A broken layout would differ far more.
    assert abs(a["pgd5_err"] - b["pgd5_err"]) <= 8 / len(images)


def _batchnorms(model) -> int:
    return sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_folded_batchnorm_is_the_same_function(trained, mode):
    """The folded copy has no batch norm left, gives the same logits and input gradients as the eval-mode
    model, and leaves the model itself (weights, statistics, mode) as it was."""
    model, images, labels = trained
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train(mode == "train")
    folded = fold_batchnorm(model)
    assert model.training is (mode == "train") and _batchnorms(model) == 7
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    model.eval()
    assert _batchnorms(folded) == 0 and not folded.training
    x = (images[:64].float() / 255).requires_grad_(True)
    a, b = model(x), folded(x)
    assert torch.allclose(a, b, rtol=1e-5, atol=1e-5)
    ga, = torch.autograd.grad(F.cross_entropy(a, labels[:64]), x)
    gb, = torch.autograd.grad(F.cross_entropy(b, labels[:64]), x)
    # float rounding, relative to the gradient's own scale: on an AVX2-only CPU with two threads the largest
    # difference was 4e-4 of the largest entry (9.7e-7 of 2.6e-3), more than an absolute 1e-7
    assert torch.allclose(ga, gb, rtol=1e-4, atol=1e-3 * ga.abs().max().item()), (ga - gb).abs().max()


def test_folding_keeps_the_robust_error(trained):
    model, images, labels = trained
    for text in ("fgsm", "pgd:steps=5"):
        spec = AttackSpec.parse(text)
        a = robust_error(model, images, labels, spec, seed=2, fold_bn=False)[spec.key]
        b = robust_error(model, images, labels, spec, seed=2)[spec.key]
        print(f"\n{text}: {a:.4f} as trained, {b:.4f} folded")
        assert abs(a - b) <= 2 / len(images)  # float rounding may flip a sample


def test_preactivation_batchnorms_stay_and_untraceable_models_are_attacked_as_they_are():
    torch.manual_seed(0)
    pre = create_model("preact_resnet18", 10).eval()
    folded = fold_batchnorm(pre)
    assert 0 < _batchnorms(folded) < _batchnorms(pre)  # only the BNs right after a convolution go
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(pre(x), folded(x), rtol=1e-5, atol=1e-5)

    class Branchy(nn.Module):  # data-dependent control flow: torch.fx can't trace it
        def __init__(self):
            super().__init__()
            self.conv, self.bn, self.fc = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Linear(4, 10)

        def forward(self, x):
            h = self.bn(self.conv(x))
            if h.mean() > 100:
                h = -h
            return self.fc(h.mean((2, 3)))
    model = Branchy().eval()
    assert fold_batchnorm(model) is None
    images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    out = robust_error(model, images, torch.randint(0, 10, (8,)), AttackSpec.parse("pgd:steps=2"))
    assert 0 <= out["pgd2_err"] <= 1


def test_top5_and_keys():
    assert AttackSpec.parse("pgd").key == "pgd20_err" and AttackSpec.parse("fgsm").key == "fgsm_err"
    assert AttackSpec.parse("pgd:eps=4/255,steps=50").key == "pgd50_eps4_err"
    model = create_model("resnet8", 100).eval()
    images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    out = robust_error(model, images, torch.randint(0, 100, (8,)), AttackSpec.parse("fgsm"), topk=5)
    assert set(out) == {"fgsm_err", "fgsm_err_top5"} and out["fgsm_err_top5"] <= out["fgsm_err"]


@pytest.mark.parametrize("text, fragment", [("cw", "unknown attack 'cw'"), ("pgd:eps=x", "eps='x' is not valid"),
                                            ("fgsm:steps=3", "fgsm takes eps"), ("pgd:eps=-1/255", "0 <= eps"),
                                            ("pgd:steps", "bad option")])
def test_bad_attack_specs(text, fragment):
    with pytest.raises(SpecError) as e:
        AttackSpec.parse(text)
    assert fragment in str(e.value)


@pytest.mark.parametrize("eps", ["1/255", "2/255", "4/255", "8/255", "16/255"])
def test_pgds_step_follows_its_budget_unless_given(eps):
    """Without alpha, PGD steps eps/4 (2/255 at 8/255, as before); the text (and so the eval_id) spells it; an
    explicit alpha is kept."""
    from fractions import Fraction
    spec = AttackSpec.parse(f"pgd:eps={eps}")
    assert spec.alpha == spec.eps / 4 <= spec.eps
    assert f"alpha={Fraction(eps) / 4}" in spec.text and AttackSpec.parse(spec.text) == spec
    assert AttackSpec.parse(f"pgd:eps={eps},alpha=2/255").alpha == 2 / 255


def test_rbols_run_records_the_resolved_step(tmp_path):
    import json

    from robustbench_ols.cli import main
    out = tmp_path / "r"
    assert main(["run", "--dataset", "synthetic", "--epochs", "1", "--train-subset", "100", "--device", "cpu",
                 "--no-progress", "--threads", "1", "--no-checks", "--attack", "pgd:eps=1/255,steps=2",
                 "--attack-examples", "20", "--out", str(out)]) == 0
    rec = json.loads(next((next(out.iterdir()) / "evals").glob("*.json")).read_text())
    (text,) = rec["eval"]["attacks"]
    step = AttackSpec.parse(text)
    assert text == "pgd:eps=1/255,alpha=1/1020,steps=2,random_start=true" and step.alpha <= step.eps
