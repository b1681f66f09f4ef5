"""The datasets that ship with drover: `drover data list` (name, records, size, license)
and `drover data path NAME` (where the files are). Origins and licenses:
drover/resources/DATA_LICENSES.md."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="{list,path}")
    sub.add_parser("list", help="table of shipped datasets: name, records, size, license")
    path = sub.add_parser("path", help="print the file (or folder) of one shipped dataset")
    path.add_argument("name", help="a name from `drover data list`")


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def run(args: argparse.Namespace) -> int:
    from drover.shipped import DATASETS, data_dir, get_dataset

    if args.action == "path":
        print(get_dataset(args.name).path())
        return 0
    rows = [(d.name, f"{d.records():,} {d.unit if d.unit != 'records' else ''}".strip(), _size(d.size()), d.license)
            for d in DATASETS]
    header = ("name", "records", "size", "license")
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(4)]
    line = "  ".join(f"{{:<{widths[0]}}} {{:>{widths[1]}}} {{:>{widths[2]}}} {{}}".split(" ", 3)[:3]) + "  {}"
    print(line.format(*header))
    for row in rows:
        print(line.format(*row))
    print(f"\n{len(rows)} datasets under {data_dir()}; sources and licenses: "
          f"{data_dir().parent / 'DATA_LICENSES.md'}")
    return 0
