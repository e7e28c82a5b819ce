"""The GPU check: three sections on one device, one JSON of results (``benchmarks/gpu_check.sh`` runs this).

1. ``ensemble_eval``: ``ddbench evaluate`` of the published DC CIFAR-10 IPC-10 set (imported with ``ddbench
   import vico --dataset cifar10-jpeg75``), protocol ``vico-dc`` (300 + 1 epochs), 10 runs on the
   ``--path auto`` engine (the vmap ensemble on CUDA), scored on the 10,000-image JPEG CIFAR-10 test split.
2. ``ddp_coreset``: the streamed (ImageNet-style) coreset flow, ``ddbench coreset --dataset imagenet``, on a few
   classes of the Tiny-ImageNet subset (``tiny-imagenet-200-subset.tar.gz``) laid out as
   ``<root>/imagenet/{train,val}/<wnid>/*.JPEG`` in the work folder: dynamics under torchrun, CCS selection,
   one training run on the kept images. One process per GPU with NCCL on CUDA; gloo CPU processes otherwise.
3. ``speed_suite``: ``pytest benchmarks --benchmark-only`` with short epochs (``DDBENCH_BENCH_*``) on the device.

Full scale (``--device cuda``, the default) is sized to finish in under 8 minutes on one GPU. ``--toy`` shrinks
every section so the script runs on a 2-core CPU in about a minute: the ensemble on 2 images per class of the
embedded ``digits`` (2 runs, 2 epochs, ``--path ensemble`` forced, the CUDA path); 4 classes x 8 images at
16 px for DDP (2 gloo processes); and two cases of ``benchmarks/test_bench_eval.py`` (IPC 1, reference-style
vs ours, 2 epochs) as the speed suite. Each section records what it ran (``command``, ``scale``), its wall
time and its numbers, or ``ok: false`` and the tail of its output; the script exits 1 if a section failed.

    benchmarks/gpu_check.sh --out gpu_check.json                       # on a GPU machine
    benchmarks/gpu_check.sh --device cpu --toy --out /tmp/check.json   # anywhere, ~1 minute
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(os.environ.get("DDBENCH_DATA", REPO.parent / "shared" / "data"))
DC_CIFAR10 = "condensed/vico-dc/res_DC_CIFAR10_ConvNet_10ipc.pt"
TINY = "tiny-imagenet-200-subset.tar.gz"

# section scales: full (one GPU, < 8 min in all) and toy (2-core CPU, ~1 min in all)
SCALES: dict[str, dict[str, dict[str, Any]]] = {
    "full": {
        "ensemble": {"runs": 10, "epochs": None, "timeout": 240},
        "ddp": {"classes": 20, "train_per_class": 100, "val_per_class": 50, "img_size": 64, "epochs_dynamics": 2,
                "epochs_train": 2, "nproc": None, "num_workers": 4, "timeout": 180},
        "speed": {"env": {"DDBENCH_BENCH_EPOCHS": "10", "DDBENCH_BENCH_RUNS": "2", "DDBENCH_BENCH_ITERS": "3",
                          "DDBENCH_BENCH_SHRINK_EPOCHS": "100", "DDBENCH_BENCH_RESNET_STEPS": "3"},
                  "args": ["benchmarks"], "timeout": 330},
    },
    "toy": {
        # generous timeouts: on a shared 2-core CPU a process start-up alone (torch, torchvision) can take 40 s
        "ensemble": {"runs": 2, "epochs": 1, "timeout": 600},
        "ddp": {"classes": 4, "train_per_class": 8, "val_per_class": 4, "img_size": 16, "epochs_dynamics": 1,
                "epochs_train": 1, "nproc": 2, "num_workers": 0, "timeout": 600},
        "speed": {"env": {"DDBENCH_BENCH_EPOCHS": "2"},
                  "args": ["benchmarks/test_bench_eval.py", "-k",
                           "test_bench_evaluate and (1-reference or 1-ours-fp32)"],
                  "timeout": 600},
    },
}


def _ddbench() -> list[str]:
    exe = Path(sys.executable).parent / "ddbench"
    return [str(exe)] if exe.is_file() else [sys.executable, "-m", "harness"]


def _run(cmd: list[str], env: dict[str, str], timeout: float, log: Path, check: bool = True
         ) -> tuple[float, str, int | None]:
    """Run ``cmd`` (output to ``log``); return wall seconds, the output and the exit code (None: timed out).
    ``check``: raise with the output's tail unless it exited 0."""
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        try:
            rc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=REPO, timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            rc = None
    wall = time.perf_counter() - t0
    out = log.read_text(errors="replace")
    if check and rc != 0:
        raise RuntimeError(f"{' '.join(cmd[:6])} ... {_why(rc, timeout)}; log {log}:\n{_tail(out)}")
    return wall, out, rc


def _why(rc: int | None, timeout: float) -> str:
    return f"timed out after {timeout:.0f} s" if rc is None else f"exited {rc}"


def _tail(text: str, n: int = 25) -> str:
    return "\n".join(text.splitlines()[-n:])


def ensemble_eval(args: argparse.Namespace, scale: dict[str, Any], work: Path, env: dict[str, str]) -> dict[str, Any]:
    out = work / "ensemble.json"
    if args.toy:
        what = "digits (embedded 8x8), random 2 per class; --path ensemble forced (the CUDA path, on this device)"
        cmd = [*_ddbench(), "evaluate", "--dataset", "digits", "--ipc", "2", "--path", "ensemble"]
    else:
        what = "published DC CIFAR-10 IPC-10 set (VICO), JPEG CIFAR-10 test split (10,000), --path auto"
        src = work / "dc_c10"
        if not (src / "meta.json").is_file():
            _run([*_ddbench(), "import", "vico", str(args.data_root / DC_CIFAR10), "--dataset", "cifar10-jpeg75",
                  "--out", str(src)], env, 120, work / "import.log")
        cmd = [*_ddbench(), "evaluate", "--set", str(src), "--path", "auto"]
    cmd += ["--protocol", "vico-dc", "--runs", str(scale["runs"]), "--device", args.device, "--out", str(out)]
    cmd += ["--epochs", str(scale["epochs"])] if scale["epochs"] else []
    wall, _, _ = _run(cmd, env, scale["timeout"], work / "ensemble.log")
    rep = json.loads(out.read_text())
    extra = rep["runs"][0]["extra"]
    return {"what": what, "command": cmd, "wall_s": wall, "runs": len(rep["accuracies"]),
            "epochs": rep["protocol"]["epochs"] + int(bool(rep["protocol"].get("extra_epoch"))),
            "mean": rep["mean"], "std": rep["std"], "accuracies": rep["accuracies"],
            "path": extra.get("path"), "precision": extra.get("precision"), "compile": extra.get("compile"),
            "per_run_s": wall / max(1, len(rep["accuracies"]))}


def imagenet_layout(tar_path: Path, root: Path, classes: int, train_per_class: int, val_per_class: int) -> dict:
    """Write the first ``classes`` wnids of a Tiny-ImageNet archive as ``root/imagenet/{train,val}/<wnid>/``:
    the first ``train_per_class`` training images of each (numeric order) and the first ``val_per_class`` of
    its val images (``val_annotations.txt`` order)."""
    base = "tiny-imagenet-200"
    with tarfile.open(tar_path) as tf:
        members = {m.name: m for m in tf.getmembers() if m.isfile()}
        wnids = sorted({n.split("/")[2] for n in members if n.startswith(f"{base}/train/")})[:classes]
        ann = tf.extractfile(members[f"{base}/val/val_annotations.txt"]).read().decode().splitlines()
        picked: list[tuple[str, str]] = []
        for w in wnids:
            pre = f"{base}/train/{w}/images/"
            files = sorted((n for n in members if n.startswith(pre)), key=lambda n: int(n.rsplit("_", 1)[1][:-5]))
            picked += [(n, f"train/{w}/{Path(n).name}") for n in files[:train_per_class]]
        per: dict[str, int] = {}
        for line in ann:
            name, w = line.split("\t")[:2]
            if w in wnids and per.get(w, 0) < val_per_class:
                per[w] = per.get(w, 0) + 1
                picked.append((f"{base}/val/images/{name}", f"val/{w}/{name}"))
        for src, dst in picked:
            p = root / "imagenet" / dst
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(tf.extractfile(members[src]).read())
    return {"classes": len(wnids), "train": len(wnids) * train_per_class, "val": sum(per.values())}


def ddp_coreset(args: argparse.Namespace, scale: dict[str, Any], work: Path, env: dict[str, str]) -> dict[str, Any]:
    root = work / "tiny-as-imagenet"
    if not (root / "imagenet").is_dir():
        layout = imagenet_layout(args.data_root / TINY, root, scale["classes"], scale["train_per_class"],
                                 scale["val_per_class"])
    else:
        layout = {"classes": scale["classes"], "train": scale["classes"] * scale["train_per_class"]}
    out = work / "coreset.json"
    cmd = [*_ddbench(), "coreset", "--dataset", "imagenet", "--data-root", str(root), "--recipe", "ccs",
           "--prune", "0.5", "--model", "convnet", "--protocol-dynamics", "ccs", "--protocol-train", "ccs",
           "--epochs-dynamics", str(scale["epochs_dynamics"]), "--epochs-train", str(scale["epochs_train"]),
           "--runs", "1", "--img-size", str(scale["img_size"]), "--num-workers", str(scale["num_workers"]),
           "--workdir", str(work / "coreset"), "--out", str(out), "--device", args.device]
    cmd += ["--nproc", str(scale["nproc"])] if scale["nproc"] else []
    wall, _, _ = _run(cmd, env, scale["timeout"], work / "coreset.log")
    rep = json.loads(out.read_text())
    return {"what": f"Tiny-ImageNet subset as imagenet folders: {layout}, {scale['img_size']} px, ConvNet-3, ccs "
                    f"protocol, {scale['epochs_dynamics']} dynamics + {scale['epochs_train']} training epochs, "
                    "CCS prune 0.5",
            "command": cmd, "wall_s": wall, "backend": rep["backend"], "world_size": rep["world_size"],
            "n_train": rep["n_train"], "n_kept": rep["n_kept"], "test_accuracy": rep["mean"],
            "img_size": rep["img_size"]}


def speed_suite(args: argparse.Namespace, scale: dict[str, Any], work: Path, env: dict[str, str]) -> dict[str, Any]:
    out = work / "speed.json"
    cmd = [sys.executable, "-m", "pytest", *scale["args"], "--benchmark-only", "-q", "-p", "no:cacheprovider",
           f"--benchmark-json={out}"]
    env = {**env, **scale["env"], "DDBENCH_BENCH_DEVICE": args.device}
    wall, text, rc = _run(cmd, env, scale["timeout"], work / "speed.log", check=False)
    if not out.is_file():  # pytest-benchmark writes the JSON at the end, also when some case failed
        raise RuntimeError(f"the speed suite wrote no results ({_why(rc, scale['timeout'])}); log "
                           f"{work / 'speed.log'}:\n{_tail(text)}")
    rep = json.loads(out.read_text())
    benches = [{"name": b["name"], "group": b.get("group"), "mean_s": b["stats"]["mean"],
                "rounds": b["stats"]["rounds"], "extra_info": b.get("extra_info", {})} for b in rep["benchmarks"]]
    if not benches:
        raise RuntimeError("the speed suite ran no benchmark")
    failed = [line.split(" ", 2)[1] for line in text.splitlines() if line.startswith(("FAILED ", "ERROR "))]
    return {"what": " ".join(scale["args"]), "env": scale["env"], "command": cmd, "wall_s": wall,
            "pytest_exit": rc, "failed_cases": failed, "count": len(benches), "benchmarks": benches}


SECTIONS = {"ensemble_eval": ("ensemble", ensemble_eval), "ddp_coreset": ("ddp", ddp_coreset),
            "speed_suite": ("speed", speed_suite)}


def _meta(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    meta: dict[str, Any] = {"device": args.device, "toy": args.toy, "torch": torch.__version__,
                            "python": platform.python_version(), "cpus": os.cpu_count(),
                            "load_1m_start": os.getloadavg()[0]}
    if torch.cuda.is_available():
        meta["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return meta


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="benchmarks/gpu_check.sh", description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    ap.add_argument("--toy", action="store_true", help="tiny scale: about a minute on a 2-core CPU")
    ap.add_argument("--out", default="gpu_check.json", help="the results JSON (default gpu_check.json)")
    ap.add_argument("--data-root", type=Path, default=DEFAULT_DATA, help="real data (default ../shared/data)")
    ap.add_argument("--workdir", type=Path, default=None, help="keep intermediate files here (default: a temp dir)")
    ap.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {list(SECTIONS)}")
    args = ap.parse_args(argv)
    wanted = [s.strip() for s in args.sections.split(",") if s.strip()]
    bad = [s for s in wanted if s not in SECTIONS]
    if bad:
        ap.error(f"--sections: unknown {bad}; expected some of {list(SECTIONS)}")
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            ap.error("--device cuda: no CUDA device here (use --device cpu)")
    scale = SCALES["toy" if args.toy else "full"]
    with tempfile.TemporaryDirectory(prefix="gpu_check-") as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "DDBENCH_DATA": str(args.data_root), "DDBENCH_CACHE": str(work / "cache"),
               "PYTHONUNBUFFERED": "1"}
        if args.device == "cpu":  # every section on the CPU: DDP then takes gloo (it picks NCCL whenever CUDA is seen)
            env["CUDA_VISIBLE_DEVICES"] = ""
        results: dict[str, Any] = {"meta": _meta(args)}
        t0 = time.perf_counter()
        failed = False
        for name in wanted:
            key, fn = SECTIONS[name]
            print(f"[gpu_check] {name} ...", flush=True)
            try:
                results[name] = {"ok": True, "scale": scale[key], **fn(args, scale[key], work, env)}
            except Exception as e:  # noqa: BLE001  a failed section is recorded, the others still run
                failed = True
                results[name] = {"ok": False, "scale": scale[key], "error": str(e)}
            print(f"[gpu_check] {name}: {'ok' if results[name]['ok'] else 'FAILED'} "
                  f"{results[name].get('wall_s', 0):.1f} s", flush=True)
        results["meta"].update(wall_s=time.perf_counter() - t0, load_1m_end=os.getloadavg()[0])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2, default=str))
    print(f"[gpu_check] wrote {args.out} ({results['meta']['wall_s']:.0f} s)")
    if failed:
        for name in wanted:
            if not results[name]["ok"]:
                print(f"[gpu_check] {name} failed: {results[name]['error']}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
