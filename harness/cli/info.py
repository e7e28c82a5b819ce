"""Listings: ``ddbench datasets``, ``models``, ``protocols``."""

from __future__ import annotations

import argparse

from harness.data import get_spec, list_datasets
from harness.engine.protocol import create_protocol, list_protocols
from harness.models import list_models


def add_commands(sub: argparse._SubParsersAction) -> None:
    for name, fn, helptext in (("datasets", cmd_datasets, "list registered datasets"),
                               ("models", cmd_models, "list ddbench models"),
                               ("protocols", cmd_protocols, "list protocol presets")):
        s = sub.add_parser(name, help=helptext)
        s.add_argument("--dataset", default="cifar10", help=argparse.SUPPRESS if name != "protocols" else
                       "the dataset the presets are shown for")
        s.set_defaults(func=fn)


def cmd_datasets(args: argparse.Namespace) -> int:
    for name in list_datasets():
        s = get_spec(name)
        where = "embedded" if s.embedded else s.layout
        print(f"{name:16s} {s.num_classes:5d} classes {s.channels}x{s.size[0]}x{s.size[1]}  {where}")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    print("\n".join(list_models()))
    print("(any timm model name works too)")
    return 0


def cmd_protocols(args: argparse.Namespace) -> int:
    get_spec(args.dataset)  # presets depend on the dataset: an unknown one is an error, not a silent default
    for name in list_protocols():
        print(create_protocol(name, args.dataset).describe())
    return 0
