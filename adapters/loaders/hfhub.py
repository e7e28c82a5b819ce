"""Condensed sets published on the Hugging Face hub, read **offline** from the local hub cache.

Key scheme (confirmed from the README of ``ArmandXiao/Rethinking-Dataset-Compression``, the
``rethinkdc`` benchmark of Xiao et al., "Rethinking Large-scale Dataset Compression", 2025): one
*dataset* repository per method and IPC, ``he-yang/2025-rethinkdc-<dataset>-<method>-ipc-<IPC>``,
e.g. ``he-yang/2025-rethinkdc-imagenet-sre2l-ipc-10`` (methods random, sre2l, cda, gvbsm, lpld,
rded, dwa, forgetting, el2n, aum, ccs; images pre-processed to 224 x 224).

NOT confirmed: the file layout inside those repositories. This loader accepts the two layouts
``datasets`` writes or reads for image classification, in this order:

1. an image-folder tree anywhere in the snapshot: the shallowest folder whose sub-folders hold
   image files (``<class>/*.jpg|png|JPEG``), classes ordered by sorted folder names (ImageNet wnids
   sort into the standard order) or an explicit ``classes`` list;
2. Parquet shards (``**/*.parquet``) with an ``image`` column (``{'bytes': ..., 'path': ...}``
   structs) and an integer ``label`` column; this needs ``pyarrow``.

Nothing is downloaded: the snapshot is looked up with ``local_files_only=True`` (as with
``HF_HUB_OFFLINE=1``). When it is missing the error names the repository and the exact command
that fetches it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import torch

from adapters.loaders.imagefolder import check_class_counts, read_class_folders
from adapters.loaders.registry import register_loader
from condensed import CondensedSet
from harness.data import get_spec
from harness.data.formats import IMAGE_SUFFIXES, decode_image
from harness.errors import DatasetNotFoundError, FormatError

RETHINKDC_REPO = "he-yang/2025-rethinkdc-{dataset}-{method}-ipc-{ipc}"
RETHINKDC_PATTERN = re.compile(
    r"^he-yang/2025-rethinkdc-(?P<dataset>[a-z0-9]+)-(?P<method>[a-z0-9_]+)-ipc-(?P<ipc>\d+)$")
# rethinkdc dataset keys -> ddbench dataset names
DATASET_KEYS = {"imagenet": "imagenet"}


def rethinkdc_repo_id(dataset: str, method: str, ipc: int) -> str:
    """``he-yang/2025-rethinkdc-<dataset>-<method>-ipc-<ipc>`` (rethinkdc's dataset keys)."""
    return RETHINKDC_REPO.format(dataset=dataset, method=method.lower(), ipc=int(ipc))


REPO_ID = re.compile(r"^(?!.*(--|\.\.))(?:[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?/)?"
                     r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?$")


def check_repo_id(repo_id: str) -> str:
    """``[owner/]name`` as the hub allows it (letters, digits, '-', '_', '.'; at most 96 characters)."""
    if len(repo_id) > 96 or not REPO_ID.match(repo_id):
        raise FormatError(f"{repo_id!r}: not a Hugging Face repository id; expected [owner/]name of letters, digits, "
                          "'-', '_' and '.' (e.g. " + RETHINKDC_REPO.format(dataset="imagenet", method="sre2l", ipc=10)
                          + ")")
    return repo_id


def parse_repo_id(repo_id: str) -> dict[str, str]:
    m = RETHINKDC_PATTERN.match(repo_id)
    return m.groupdict() if m else {}


def download_command(repo_id: str, cache_dir: str | Path | None, revision: str | None = None) -> str:
    cmd = f"huggingface-cli download {repo_id} --repo-type dataset"
    if revision:
        cmd += f" --revision {revision}"
    if cache_dir:
        cmd += f" --cache-dir {cache_dir}"
    return cmd


def cached_snapshot(repo_id: str, *, cache_dir: str | Path | None = None, revision: str | None = None) -> Path:
    """The local snapshot folder of a hub dataset repository, never touching the network."""
    check_repo_id(repo_id)
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.constants import HF_HUB_CACHE
        from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError
    except ImportError:
        raise FormatError(f"{repo_id}: reading the Hugging Face cache needs huggingface_hub "
                          "(pip install huggingface_hub)") from None

    try:
        return Path(snapshot_download(repo_id, repo_type="dataset", revision=revision,
                                      cache_dir=str(cache_dir) if cache_dir else None, local_files_only=True))
    except HFValidationError as e:
        raise FormatError(f"{repo_id!r} (revision {revision!r}): {' '.join(str(e).split())}") from None
    except (LocalEntryNotFoundError, FileNotFoundError) as e:
        where = cache_dir or HF_HUB_CACHE
        raise DatasetNotFoundError(
            f"{repo_id}: dataset repository not in the local Hugging Face cache {where} (offline lookup: {e}). "
            f"Download it first with:\n  {download_command(repo_id, cache_dir, revision)}") from None


def _image_folder_root(snapshot: Path) -> Path | None:
    """The shallowest folder whose sub-folders hold image files."""
    candidates = sorted({f.parent.parent for f in snapshot.rglob("*")
                         if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES},
                        key=lambda p: (len(p.relative_to(snapshot).parts), str(p)))
    return candidates[0] if candidates else None


def _read_parquet(files: list[Path], dataset: str, snapshot: Path) -> tuple[torch.Tensor, torch.Tensor]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise FormatError(f"{snapshot}: holds Parquet shards; reading them needs pyarrow "
                          "(pip install pyarrow)") from None
    spec = get_spec(dataset)
    imgs, labels = [], []
    for f in files:
        table = pq.read_table(f)
        if not {"image", "label"} <= set(table.column_names):
            raise FormatError(f"{f}: expected columns 'image' and 'label', got {table.column_names}")
        for img, lab in zip(table.column("image").to_pylist(), table.column("label").to_pylist(), strict=True):
            data = img.get("bytes") if isinstance(img, dict) else img
            if not isinstance(data, (bytes, bytearray)):
                raise FormatError(f"{f}: 'image' entries must hold encoded image bytes")
            imgs.append(decode_image(bytes(data), spec.channels, str(f)))
            labels.append(int(lab))
    return torch.stack(imgs), torch.tensor(labels, dtype=torch.long)


@register_loader("hfhub")
def load_hfhub(path: Path | str, *, dataset: str | None = None, method: str | None = None,
               cache_dir: str | Path | None = None, revision: str | None = None,
               classes: Sequence[str] | str | None = None, resize: bool = False) -> list[CondensedSet]:
    """Read a hub dataset repository (``path`` = its repo id) from the local cache into one pixel-space set."""
    repo_id = str(path).strip("/")
    if repo_id.startswith("hf:"):
        repo_id = repo_id[3:].lstrip("/")
    check_repo_id(repo_id)
    info = parse_repo_id(repo_id)
    dataset = dataset or DATASET_KEYS.get(info.get("dataset", ""))
    if dataset is None:
        raise FormatError(f"{repo_id}: not a rethinkdc key ({RETHINKDC_REPO}); pass dataset=")
    method = method or info.get("method", "hfhub")
    snapshot = cached_snapshot(repo_id, cache_dir=cache_dir, revision=revision)
    prov = {"source_format": "hfhub", "repo_id": repo_id, "revision": revision or "main",
            "snapshot": snapshot.name, **({"ipc_in_key": int(info["ipc"])} if info else {})}
    root = _image_folder_root(snapshot)
    if root is not None:
        return [read_class_folders(root, dataset=dataset, classes=classes, resize=resize, method=method,
                                   source_format="hfhub", extra_provenance=prov)]
    shards = sorted(snapshot.rglob("*.parquet"))
    if not shards:
        raise FormatError(f"{snapshot}: neither <class>/ image folders nor *.parquet shards in {repo_id}")
    images, labels = _read_parquet(shards, dataset, snapshot)
    spec = get_spec(dataset)
    if tuple(images.shape[1:]) != spec.geometry:
        raise FormatError(f"{snapshot}: images are {tuple(images.shape[1:])}, {dataset} is {spec.geometry}")
    warnings = check_class_counts(labels, spec.num_classes, str(snapshot))
    return [CondensedSet(images=images.float() / 255.0, labels=labels, num_classes=spec.num_classes,
                         dataset=dataset, method=method, space="pixel", mean=spec.mean, std=spec.std,
                         provenance={**prov, "shards": [s.name for s in shards],
                                     **({"warnings": warnings} if warnings else {})})]
