"""The README's measured tables come from table specs at their ``cpu`` scale: each scale expands to exactly
the cells (rows, columns, seeds, protocols, flow settings) the table reports, as the ad-hoc scripts that
made them computed them (scripts/eval_vico_mnist.py, coreset_mnist_table.py, shrink_dc_cifar10.py,
condense_mnist_table.py, now replaced by these specs)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from condensed.shrink import resolve_rule
from harness.bench.cells import Cell, expand
from harness.bench.kinds import create_cell_kind
from harness.bench.spec import load_spec
from harness.engine.protocol import create_protocol
from harness.pruning.recipes import ccs_auto_cutoff

TABLES = Path(__file__).resolve().parents[1] / "benchmarks" / "tables"


def _cpu(name: str) -> dict[tuple[str, str], Cell]:
    cells = expand(load_spec(TABLES / f"{name}.yaml"), "cpu")
    out = {(c.row, c.column): c for c in cells}
    assert len(out) == len(cells) and all(c.role == "main" for c in cells)
    return out


def _units(cell: Cell) -> list[tuple[int | None, int]]:
    return [(u.experiment, u.seed) for u in cell.units()]


def _config(cell: Cell):
    return create_cell_kind(cell.config["kind"]).config(cell.config)


def test_published_dc_cpu_is_the_foundation_table():
    """6 architectures x the published DC MNIST IPC-1 set: all 5 experiments x 2 runs, seed 1000 * e + r,
    vico-dc at full length (1000 + 1 epochs, DC augmentation), the whole MNIST test split."""
    cells = _cpu("published-dc")
    models = {"ConvNet": "convnet", "LeNet": "dc_lenet", "MLP": "dc_mlp", "AlexNet": "dc_alexnet",
              "VGG11": "dc_vgg11", "ResNet18": "dc_resnet18"}
    assert set(cells) == {(f"DC set → {m}", "mnist IPC 1") for m in models}
    for (row, _), cell in cells.items():
        cfg = _config(cell)
        vico = row.removeprefix("DC set → ")
        assert cell.dataset == "mnist" and cfg.source == "published"
        assert (cfg.published.format, cfg.published.path) == ("vico", "condensed/vico-dc/res_DC_MNIST_ConvNet_1ipc.pt")
        assert _units(cell) == [(e, 1000 * e + r) for e in range(5) for r in range(2)]
        assert (cfg.train_per_class, cfg.test_per_class, cfg.upstream_seed) == (None, None, None)
        assert cfg.train_protocol() == create_protocol("vico-dc", "mnist", model=models[vico]).with_(runs=1)
        p = cfg.train_protocol()
        assert (p.epochs, p.extra_epoch, p.augment, p.dc_strategy) == (1000, True, "dc", "crop_scale_rotate")
        assert cell.published is not None  # the file's recorded accuracy for the architecture


def test_pruning_rate_cpu_is_the_mnist_coreset_table():
    """random / el2n / forgetting / ccs / dual at 50 and 90 % on MNIST: LeNet, one 10-epoch dynamics run
    under ccs with lr 0.05 (seed 0, shared), 10 epochs of subset training, 2 runs (seeds 0, 1)."""
    cells = _cpu("pruning-rate")
    recipes = ("random", "el2n", "forgetting", "ccs", "dual")
    assert set(cells) == {(r, c) for r in recipes for c in ("50%", "90%")}
    for (row, col), cell in cells.items():
        cfg = _config(cell)
        recipe, p_dyn, p_train = cfg.flow()
        assert (cell.dataset, cfg.recipe, cfg.budget.kind, cfg.budget.value) == \
            ("mnist", row, "prune_rate", {"50%": 0.5, "90%": 0.9}[col])
        assert _units(cell) == [(None, 0), (None, 1)] and cfg.upstream_seed == 0
        assert (cfg.train_per_class, cfg.test_per_class) == (None, None)
        # what scripts/coreset_mnist_table.py ran: run_coreset(..., protocol ccs, lr 0.05, 10 + 10 epochs)
        assert p_dyn == create_protocol("ccs", "mnist", lr=0.05, epochs=10, model="dc_lenet")
        assert p_train == create_protocol("ccs", "mnist", lr=0.05, epochs=10, iterations=None, model="dc_lenet")
        assert (p_train.batch_size, p_train.nesterov, p_train.schedule) == (256, True, "cosine")
        assert cfg.score_params == ({"T": 10, "J": 5} if row == "dual" else None) and cfg.rule_opts is None
        if row == "dual":
            assert recipe.score_params == {"T": 10, "J": 5}
        if row == "ccs":
            assert recipe.rule_opts["cutoff_ratio"] == "auto"  # by pruning rate, below
    assert (ccs_auto_cutoff(0.9), ccs_auto_cutoff(0.5)) == (0.3, 0.0)  # CCS README cut-offs the ccs rows get


def test_shrink_published_cpu_is_the_yoco_dc_cifar10_table():
    """The published DC CIFAR-10 IPC-10 set and its yoco / random / el2n (hard) shrinks to IPC 1 and 5: one
    dynamics run (yoco, 200 epochs, seed 0), one set per rule and IPC (seed 0), each evaluated with vico-dc
    (300 + 1 epochs) 3 times (seeds 1000-1002) on the full JPEG-copy test split."""
    cells = _cpu("shrink-published")
    rows = ("yoco", "random", "el2n (hard)")
    assert set(cells) == {("DC source (as published)", "IPC 10 (source)")} | \
        {(r, c) for r in rows for c in ("10→1", "10→5")}
    for (row, col), cell in cells.items():
        cfg = _config(cell)
        assert cell.dataset == "cifar10-jpeg75" and _units(cell) == [(None, 1000), (None, 1001), (None, 1002)]
        assert (cfg.published.path, cfg.published.experiment) == \
            ("condensed/vico-dc/res_DC_CIFAR10_ConvNet_10ipc.pt", 0)
        assert cfg.train_protocol() == create_protocol("vico-dc", "cifar10").with_(runs=1)
        assert (cfg.train_protocol().epochs, cfg.train_protocol().extra_epoch) == (300, True)
        assert cfg.test_per_class is None
        if row.startswith("DC source"):
            assert type(cfg).__name__ == "EvaluateConfig" and cell.published.value == 42.2
            continue
        assert (cfg.recipe, cfg.ipc, cfg.source_ipc) == \
            ({"el2n (hard)": "el2n_hard"}.get(row, row), int(col[-1]), 10)
        assert (cfg.dynamics_protocol, cfg.dynamics_epochs, cfg.upstream_seed) == ("yoco", 200, 0)
    # the script's rule "el2n" is el2n_hard (EL2N over epochs 0-9, keep the hardest, imbalanced)
    assert replace(resolve_rule("el2n_hard"), name="el2n") == resolve_rule("el2n")


def test_goldfromores_cpu_is_the_mnist_condensation_table():
    """MNIST IPC 10: random real, DM (200 its), DC (3 its, real init), DM after LossInit_large (LeNet) and
    Random drops of 0.5; batch_real 64; condensed with seed 0; vico-dc cut to 100 + 1 epochs, 2 runs."""
    cells = _cpu("goldfromores")
    assert set(cells) == {(r, "IPC 10") for r in ("random real", "DM", "DC", "DM LossInit_large", "DM Random")}
    proto = create_protocol("vico-dc", "mnist", epochs=100).with_(runs=1)
    expect = {"DM": ("dm", {"iterations": 200, "batch_real": 64}, None),
              "DC": ("dc", {"iterations": 3, "batch_real": 64, "init": "real"}, None),
              "DM LossInit_large": ("dm", {"iterations": 200, "batch_real": 64},
                                    ("LossInit_large", 0.5, {"model": "dc_lenet"})),
              "DM Random": ("dm", {"iterations": 200, "batch_real": 64}, ("Random", 0.5, {}))}
    for (row, _), cell in cells.items():
        cfg = _config(cell)
        assert cell.dataset == "mnist" and _units(cell) == [(None, 1000), (None, 1001)] and cfg.upstream_seed == 0
        assert cfg.train_protocol() == proto and (cfg.train_per_class, cfg.test_per_class) == (None, None)
        assert cfg.ipc == 10
        if row == "random real":
            assert (type(cfg).__name__, cfg.source) == ("EvaluateConfig", "random_real")
            continue
        method, params, pre = expect[row]
        assert (cfg.method, cfg.params) == (method, params)
        pp = cfg.pre_prune(0)
        assert (None if pp is None else (pp.criterion, pp.drop_ratio, pp.params)) == pre
        if pp is not None:
            assert (pp.seed, pp.scores) == (0, None)


def test_papers_numbers_only_beside_the_same_dataset():
    """A scale that runs a dataset's cells on another dataset (pruning-rate's cpu: CIFAR-10 -> MNIST) shows no
    paper number (the CIFAR figures are not MNIST's); a re-encoded copy (cifar10-jpeg75, ``copy_of``) keeps them."""
    assert all(c.published is None for c in _cpu("pruning-rate").values())
    smoke = expand(load_spec(TABLES / "pruning-rate.yaml"), "smoke")
    assert {c.dataset for c in smoke} == {"cifar10-jpeg75"} and any(c.published is not None for c in smoke)
