"""Issue 14, condensation: the engine (batched classes, bf16, compile) changes how DM runs, not what it
computes. The batched fp32 path gives the per-class loop's images up to float reassociation; ``exact`` is the
per-class fp32 eager loop; every set records the resolved engine."""

from __future__ import annotations

import torch

from adapters.condense import create_condenser
from harness.data import load_dataset
from harness.engine.options import EngineOptions


def _run(engine: EngineOptions | None):
    real = load_dataset("digits", "train")
    cond = create_condenser("dm")
    cfg = cond.config_cls(iterations=3, batch_real=16, model="convnet_d2")
    return cond.condense(real, 2, cfg, seed=4, engine=engine)


def test_batched_fp32_equals_the_per_class_loop_and_the_engine_is_recorded():
    exact = _run(EngineOptions.exact())
    batched = _run(EngineOptions(path="auto", precision="fp32", compile=False))
    e, b = exact.provenance["engine"], batched.provenance["engine"]
    assert (e["path"], e["precision"], e["compile"]) == ("sequential", "fp32", False)
    assert (b["path"], b["precision"], b["compile"]) == ("batched", "fp32", False)
    torch.testing.assert_close(batched.images, exact.images, rtol=1e-4, atol=1e-5)
    again = _run(EngineOptions.exact())
    assert torch.equal(again.images, exact.images)  # exact is deterministic, bit for bit
    fast = _run(None)  # the default: resolved, never "auto"
    f = fast.provenance["engine"]
    assert f["precision"] in ("fp32", "bf16") and isinstance(f["compile"], bool) and f["path"] == "batched"
    assert f["requested"] == EngineOptions().as_dict()
    assert torch.isfinite(fast.images).all()
