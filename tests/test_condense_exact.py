"""Condensation engine (issue 14): ``--exact`` keeps the old numbers bit for bit; the fast path keeps the math.

The exact-path tests re-implement the pre-issue-14 DM and DC iterations here (the per-class loops as they were,
built from the shared pieces: seeded real batches, siamese DSA, the ConvNet embedding, ``match_loss``) and
require ``Condenser.condense(engine=EngineOptions.exact())`` to give the *same bits*; loss values recorded from
the pre-issue-14 code (commit 2e592da; seed 5, digits) pin the numbers too. The batched-fp32 DM check is in
``tests/test_condense_engine.py``.
"""

from __future__ import annotations

import argparse

import pytest
import torch
import torch.nn.functional as F

from adapters.condense import create_condenser, match_loss
from adapters.condense.base import (
    CondenseEngine,
    derive_seed,
    fp32_thin_convs,
    make_context,
    new_generator,
    resolve_engine,
)
from adapters.condense.dm import embed_classes
from condensed import CondensedSet
from harness.augment import DSA
from harness.data import load_dataset
from harness.engine.options import EngineOptions, bf16_supported
from harness.errors import ConfigError
from harness.models import create_model
from harness.models import embed as model_embed

SMALL = {"width": 16, "depth": 2}
EXACT = EngineOptions.exact()
BF16 = bf16_supported(torch.device("cpu"))


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def cfg(name: str, **kw):
    return create_condenser(name).default_config(model_kwargs=SMALL, batch_real=32, **kw)


# --- the pre-issue-14 iterations, re-implemented -----------------------------------------------
def old_dm_step(ctx, syn, opt, g, seed):
    net = ctx.build_model(seed)
    net.train()
    for p in net.parameters():
        p.requires_grad_(False)
    dsa = DSA(ctx.dsa_strategy())
    loss = syn.new_zeros(())
    for c in range(ctx.num_classes):
        real = ctx.real_batch(c, ctx.config.batch_real, g)
        s = int(torch.randint(2**62, (1,), generator=g))
        r = dsa(real, torch.Generator().manual_seed(s), siamese=True)
        y = dsa(syn[c * ctx.ipc:(c + 1) * ctx.ipc], torch.Generator().manual_seed(s), siamese=True)
        loss = loss + torch.sum((model_embed(net, r).detach().mean(0) - model_embed(net, y).mean(0)) ** 2)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def old_dc_step(ctx, syn, opt, g, seed, outer, inner):
    net = ctx.build_model(seed)
    net.train()
    opt_net = torch.optim.SGD(net.parameters(), lr=ctx.config.lr_net)
    params = list(net.parameters())
    for ol in range(outer):
        loss = syn.new_zeros(())
        for c in range(ctx.num_classes):
            real = ctx.real_batch(c, ctx.config.batch_real, g)
            lab = torch.full((real.shape[0],), c)
            gw_real = [t.detach() for t in torch.autograd.grad(F.cross_entropy(net(real), lab), params)]
            ys = syn[c * ctx.ipc:(c + 1) * ctx.ipc]
            gw_syn = torch.autograd.grad(F.cross_entropy(net(ys), torch.full((ctx.ipc,), c)), params, create_graph=True)
            loss = loss + match_loss(gw_syn, gw_real, "ours")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if ol == outer - 1:
            break
        x, y = syn.detach(), ctx.labels()
        for _ in range(inner):
            order = torch.randperm(x.shape[0], generator=g)
            for s in range(0, x.shape[0], ctx.config.batch_train):
                idx = order[s:s + ctx.config.batch_train]
                lo = F.cross_entropy(net(x[idx]), y[idx])
                opt_net.zero_grad(set_to_none=True)
                lo.backward()
                opt_net.step()


def old_run(name, data, ipc, config, seed, step):
    cond = create_condenser(name)
    ctx = make_context(data, ipc, config, "digits", torch.device("cpu"))
    syn = cond.init_synthetic(ctx, new_generator(ctx.device, derive_seed(seed, 0xC0DE))).detach().clone()
    syn.requires_grad_(True)
    opt = torch.optim.SGD([syn], lr=config.lr_img, momentum=config.momentum_img)
    for it in range(config.iterations):
        step(ctx, syn, opt, new_generator(ctx.device, derive_seed(seed, it)), derive_seed(seed, it, 1))
    return syn.detach()


def test_exact_dm_is_the_old_loop_bit_for_bit(digits):
    config = cfg("dm", iterations=3)
    cs = create_condenser("dm").condense(digits, 2, config, seed=5, engine=EXACT)
    assert torch.equal(cs.images, old_run("dm", digits, 2, config, 5, old_dm_step))
    assert cs.provenance["engine"]["path"] == "sequential" and cs.provenance["engine"]["precision"] == "fp32"
    assert cs.provenance["engine"]["compile"] is False


def test_exact_dc_is_the_old_loop_bit_for_bit(digits):
    config = cfg("dc", iterations=2, init="noise", outer_loop=2, inner_loop=2)
    cs = create_condenser("dc").condense(digits, 2, config, seed=5, engine=EXACT)
    ref = old_run("dc", digits, 2, config, 5, lambda *a: old_dc_step(*a, outer=2, inner=2))
    assert torch.equal(cs.images, ref)


# loss_first_last of the pre-issue-14 code (commit 2e592da), digits, ipc 2, seed 5, SMALL ConvNet, batch_real 32
RECORDED = [
    ("dm", {"iterations": 3}, [0.6672188758850097, 0.5407277584075928]),
    ("dm", {"iterations": 2, "model": "convnet_bn"}, [0.8811320304870606, 0.5624699115753173]),
    ("dc", {"iterations": 2, "init": "noise", "outer_loop": 2, "inner_loop": 2}, [25.95400390625, 25.809724426269533]),
    ("dsa", {"iterations": 2, "outer_loop": 2, "inner_loop": 2}, [6.558632278442383, 6.217146492004394]),
]


@pytest.mark.parametrize("name,kw,losses", RECORDED)
def test_exact_engine_gives_the_recorded_pre_issue14_losses(digits, name, kw, losses):
    cs = create_condenser(name).condense(digits, 2, cfg(name, **kw), seed=5, engine=EXACT)
    assert cs.provenance["loss_first_last"] == pytest.approx(losses, rel=1e-6, abs=0)


# --- the fast path keeps the math --------------------------------------------------------------------
def test_embed_classes_groups_whole_classes_up_to_the_cap():
    torch.manual_seed(0)
    net = create_model("convnet", num_classes=10, in_chans=1, img_size=(8, 8), width=8, depth=2)
    xs = [torch.randn(n, 1, 8, 8) for n in (4, 4, 4, 9)]
    calls = []

    def emb(x):
        calls.append(x.shape[0])
        return model_embed(net, x)

    with torch.no_grad():
        per_class = [model_embed(net, x) for x in xs]
        for cap, sizes in ((0, [4, 4, 4, 9]), (8, [8, 4, 9]), (12, [12, 9]), (None, [21])):
            calls.clear()
            out = embed_classes(emb, xs, cap)
            assert calls == sizes, cap
            assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(out, per_class))


@pytest.mark.skipif(not BF16, reason="no native bf16 on this CPU")
@pytest.mark.parametrize("name,kw", [("dm", {"iterations": 3}), ("dc", {"iterations": 2, "outer_loop": 2,
                                                                         "inner_loop": 2, "init": "noise"})])
def test_default_engine_is_bf16_and_close_to_exact(digits, name, kw):
    config = cfg(name, **kw)
    fast = create_condenser(name).condense(digits, 2, config, seed=5)
    exact = create_condenser(name).condense(digits, 2, config, seed=5, engine=EXACT)
    eng = fast.provenance["engine"]
    assert eng["precision"] == "bf16" and eng["compile"] is False  # a tiny run: compiling would not pay
    assert eng["requested"] == {"path": "auto", "precision": "auto", "compile": "auto"}
    assert not torch.equal(fast.images, exact.images)
    assert fast.provenance["loss_first_last"] == pytest.approx(exact.provenance["loss_first_last"], rel=2e-2)
    rel = (fast.images - exact.images).norm() / (exact.images - exact.images.mean()).norm()
    assert float(rel) < 0.05


def test_fp32_thin_convs_runs_grey_input_layers_in_fp32():
    torch.manual_seed(0)
    net = create_model("convnet", num_classes=10, in_chans=1, img_size=(8, 8), width=8, depth=2)
    keys = sorted(net.state_dict())
    x = torch.randn(3, 1, 8, 8)
    ref = F.conv2d(x, net.features[0].weight, net.features[0].bias, padding=net.features[0].padding)
    assert fp32_thin_convs(net) == 1  # only the first layer has one input channel
    assert sorted(net.state_dict()) == keys
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net.features[0](x)
        second = net.features[4](torch.randn(3, 8, 4, 4))
    assert out.dtype == torch.float32 and torch.equal(out, ref)
    assert second.dtype == torch.bfloat16  # other layers keep autocast


def test_resolve_engine(digits):
    cpu = torch.device("cpu")
    exact = resolve_engine(EXACT, cpu, batchable=True)
    assert exact.is_exact and exact.key() == {"path": "sequential", "precision": "fp32", "compile": False}
    d = resolve_engine(None, cpu, batchable=True, run_flops=1e9)
    assert d.precision == ("bf16" if BF16 else "fp32") and d.batched and d.compile is False
    assert resolve_engine(None, cpu, batchable=True, run_flops=1e16).compile is True  # a long run compiles
    assert resolve_engine(None, cpu, batchable=False).path == "sequential"
    assert resolve_engine(EngineOptions(path="sequential"), cpu, batchable=True).path == "sequential"
    assert resolve_engine(EngineOptions(precision=None), cpu).precision == "fp32"
    idc = resolve_engine(EngineOptions(compile=True), cpu, supported=False)
    assert idc.is_exact and "fp32, eager" in idc.notes["precision_reason"]
    assert CondenseEngine().is_exact
    cond = create_condenser("idc")
    assert cond.context(digits, 1, cond.default_config(), engine=EngineOptions()).engine.is_exact  # IDC: fp32 only


def test_checkpoint_of_one_engine_does_not_resume_another(digits, tmp_path):
    config = cfg("dm", iterations=2, checkpoint_every=1)
    create_condenser("dm").condense(digits, 1, config, seed=0, checkpoint_dir=tmp_path,
                                    engine=EngineOptions(path="auto", precision="fp32", compile=False))
    with pytest.raises(ConfigError, match="different run"):
        create_condenser("dm").condense(digits, 1, config, seed=0, checkpoint_dir=tmp_path, engine=EXACT)


@pytest.mark.slow
@pytest.mark.skipif(not BF16, reason="no native bf16 on this CPU")
def test_compiled_engine_matches_eager_and_compiles_once(digits):
    """DM and DC with compile on: close to the eager bf16 run; one persistent compiled network per run.
    ~4 s with inductor's on-disk cache warm, ~35 s the first time on a machine (cold compile)."""
    for name, kw in (("dm", {"iterations": 3}), ("dc", {"iterations": 2, "outer_loop": 2, "inner_loop": 2})):
        cond = create_condenser(name)
        config = cfg(name, **kw)
        comp = cond.condense(digits, 2, config, seed=5, engine=EngineOptions(compile=True))
        eager = cond.condense(digits, 2, config, seed=5, engine=EngineOptions(compile=False))
        assert comp.provenance["engine"]["compile"] is True
        assert comp.provenance["loss_first_last"] == pytest.approx(eager.provenance["loss_first_last"], rel=2e-2)
        ctx = cond.context(digits, 2, config, engine=EngineOptions(compile=True))
        net1, f1 = ctx.network(1, "embed")
        w1 = net1.features[0].weight.detach().clone()
        net2, f2 = ctx.network(2, "embed")
        assert net1 is net2 and f1 is f2  # the same module and compiled function ...
        assert not torch.equal(w1, net2.features[0].weight)  # ... with the new draw's weights
        assert torch.equal(net2.features[0].weight, ctx.build_model(2).features[0].weight)


# --- the CLI ------------------------------------------------------------------------------------------
def parse(argv):
    from harness.cli.condense import add_commands

    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers())
    return parser.parse_args(argv)


def test_cli_exact_and_default_engines(tmp_path):
    base = ["condense", "--method", "dm", "--dataset", "digits", "--ipc", "1", "--iterations", "2",
            "--param", 'model_kwargs={"width": 8}', "--param", "batch_real=16"]
    args = parse([*base, "--out", str(tmp_path / "exact"), "--exact"])
    assert args.func(args) == 0
    eng = CondensedSet.load(tmp_path / "exact").provenance["engine"]
    assert (eng["path"], eng["precision"], eng["compile"]) == ("sequential", "fp32", False)
    args = parse([*base, "--out", str(tmp_path / "fast")])
    assert args.func(args) == 0
    eng = CondensedSet.load(tmp_path / "fast").provenance["engine"]
    assert (eng["path"], eng["precision"], eng["compile"]) == ("batched", "bf16" if BF16 else "fp32", False)
    args = parse([*base, "--out", str(tmp_path / "x"), "--exact", "--precision", "bf16"])
    with pytest.raises(ConfigError, match="--exact"):
        args.func(args)
    assert not (tmp_path / "x").exists()  # refused before any work
