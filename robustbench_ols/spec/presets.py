"""The named grids (`--preset`), among them the OLS paper's tables and the cpu-regime tier, with what a
cell of them costs. Plain data, no torch: the command line lists them in its help."""
from __future__ import annotations

SYMMETRIC_0_80 = ["symmetric:0", "symmetric:0.2", "symmetric:0.4", "symmetric:0.6", "symmetric:0.8"]
# The OLS paper's Table VII rows that this suite implements (Ren et al.'s L2RW is not among them).
PAPER_METHODS = ["hard", "bootsoft", "boothard", "sce", "mwnet", "arazo", "pencil", "coteaching", "ls", "ols"]
# The comparison `quick` runs: the paper's methods, MW-Net last (its step costs 8x a hard-label step on a
# CPU; a quick cell about 3x: ~190 s against ~60 s; one seed of the ten methods takes about 67 min on 2 cores).
QUICK_METHODS = ["hard", "ls", "ols", "sce", "bootsoft", "boothard", "coteaching", "pencil", "arazo", "mwnet"]
# The cpu-regime tier: the core comparison, OLS's single-matrix variant and the four noisy-label baselines the
# project's mission names (bootstrapping and MW-Net stay in `quick`: the budget of 6 hours on 2 cores).
CPU_REGIME_METHODS = ["hard", "ls", "ols", "ols-single", "sce", "coteaching", "pencil", "arazo"]
# The grid `rbols audit` runs when given neither --preset nor --config.
AUDIT_PRESET = "quick"
# Seconds per cell (training + scoring) measured on the 2-core EPYC this suite is developed on, two one-thread
# workers (docs/results/<preset>/cost.csv): the cost estimate printed before a grid starts, until cells of the
# grid have finished in its folder (then those are used). Only for the preset's own settings.
CELL_SECONDS = {
    # quick: from docs/results/quick/cost.csv; a quiet machine gives about the same (hard 116-117 s a cell)
    "quick": {"hard": 121, "ls": 122, "ols": 113, "ols-single": 110, "sce": 122, "bootsoft": 118, "boothard": 126,
              "coteaching": 165, "pencil": 127, "arazo": 156, "mwnet": 320},
    # cpu-regime: from docs/results/cpu-regime/cost.csv, training plus the preset's scoring (5941e1bbdfab, with
    # AutoAttack); hard, ls and ols over the pilot, OLS's 105 confirmation cells and their 4 CIFAR-10N cells each;
    # gls (rate -0.2) over its 10 pilot cells (issue 28); elr, hard and ls also over ELR's 65 confirmation cells
    "cpu-regime": {"hard": 220, "ls": 210, "ols": 231, "ols-single": 315, "sce": 376, "coteaching": 582,
                   "pencil": 429, "arazo": 518, "gls": 140, "elr": 159},
}
TIER_ATTACKS = ["fgsm", "pgd", "autoattack", "fgsm:eps=2/255", "pgd:eps=2/255", "autoattack:eps=2/255",
                "fgsm:eps=1/255", "pgd:eps=1/255", "autoattack:eps=1/255"]
PAPER_RUN = {"epochs": 300}  # batch 128, SGD 0.9 Nesterov, wd 5e-4, lr 0.1, x0.1 at 150/225: the defaults

PRESETS = {
    "smoke": dict(
        about="synthetic data, seconds: for tests and for trying the commands; says nothing about CIFAR",
        datasets=["synthetic"], models=["resnet8"], methods=["hard", "ls", "ols"],
        noise=["symmetric:0", "symmetric:0.4"], seeds=[0],
        run=dict(epochs=2, batch_size=100, train_subset=300, milestones=()),
        eval=dict(attacks=["fgsm", "pgd:steps=2"], attack_examples=50, check_examples=10)),
    "quick": dict(
        about="CIFAR-10 at CPU scale: resnet8, 4,000 training images, 10 epochs (lr x0.1 at 5 and 8), "
              "FGSM and PGD-20 on 500 test images; hard, ls, ols, sce, bootsoft, boothard, coteaching, pencil, "
              "arazo and mwnet at five symmetric noise rates; seed 0 unless --seeds says otherwise",
        datasets=["cifar10"], models=["resnet8"], methods=QUICK_METHODS, noise=SYMMETRIC_0_80, seeds=[0],
        run=dict(epochs=10, train_subset=4000),
        eval=dict(attack_examples=500)),
    "cpu-regime": dict(
        about="CIFAR-10 in the memorisation regime on a 2-core CPU: resnet8, 4,000 training images without "
              "augmentation, 28 epochs (lr 0.1, x0.1 at 20 and 25), a test pass every 4 epochs, FGSM, PGD-20 and "
              "AutoAttack at 8/255, 2/255 and 1/255 on 100 test images with the gradient-masking and transfer "
              "checks; hard, ls, ols, ols-single, sce, coteaching, pencil and arazo at five symmetric noise rates, "
              "seeds 0 and 1 (hard, ls and ols first; the confirmation seeds of `rbols audit --confirm` after)",
        datasets=["cifar10"], models=["resnet8"], methods=CPU_REGIME_METHODS, core=["hard", "ls", "ols"],
        noise=SYMMETRIC_0_80, seeds=[0, 1],
        run=dict(epochs=28, milestones=[20, 25], train_subset=4000, augment=False, test_every=4),
        # the verdicts' scoring (docs/results/publish_autoattack.sh, eval 5941e1bbdfab): the paper's 8/255 drives
        # these small models to ~100% robust error (a floor where every method ties), so 2/255 and 1/255 are
        # scored too, FGSM, PGD-20 (step eps/4) and AutoAttack at each, with the masking checks, on 100 images
        eval=dict(attacks=TIER_ATTACKS, attack_examples=100)),
    "paper-table7": dict(
        about="OLS paper Table VII: CIFAR-100, ResNet-56 (bottleneck), 300 epochs, symmetric noise 0-80%, 3 seeds",
        datasets=["cifar100"], models=["resnet56b"], methods=PAPER_METHODS, noise=SYMMETRIC_0_80,
        seeds=[0, 1, 2], run=PAPER_RUN, eval={}),
    "paper-table8": dict(
        about="OLS paper Table VIII: CIFAR-10, ResNet-29 (bottleneck), clean labels, FGSM and PGD-20",
        datasets=["cifar10"], models=["resnet29b"], methods=["hard", "ls", "ols"], noise=["none"],
        seeds=[0, 1, 2], run=PAPER_RUN, eval={}),
    "paper-table11": dict(
        about="OLS paper Table XI: CIFAR-100, ResNet-56/74/110 (bottleneck), clean labels, error and ECE",
        datasets=["cifar100"], models=["resnet56b", "resnet74b", "resnet110b"], methods=["hard", "ls", "ols"],
        noise=["none"], seeds=[0, 1, 2], run=PAPER_RUN, eval={}),
    "paper-table12": dict(
        about="OLS paper Table XII: CIFAR-10, ResNet-29 (bottleneck), clean labels, CIFAR-10H KL "
              "(the same cells as paper-table8)",
        datasets=["cifar10"], models=["resnet29b"], methods=["hard", "ls", "ols"], noise=["none"],
        seeds=[0, 1, 2], run=PAPER_RUN, eval={}),
}

PRESET_NAMES = tuple(PRESETS)
