"""``hifi-tse config``: print the resolved config, or the config reference as Markdown."""

from __future__ import annotations

import argparse

import yaml

from hifi_tse.config import (
    RENAMED_KEYS,
    RETIRED_KEYS,
    architecture_keys,
    load_config,
    schema_rows,
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML config (defaults when omitted)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--reference", action="store_true", help="print the key reference table")


def _inline(value: object) -> str:
    shown = yaml.safe_dump(value, default_flow_style=True, width=10**6).strip()
    return shown.removesuffix("...").strip().replace("|", "\\|")


def reference_markdown() -> str:
    """The config reference (every key, type, default, description) as a Markdown table,
    then the retired keys with the one value they still load at, then the renamed keys."""
    arch = set(architecture_keys())
    lines = [
        "Sections are grouped by who reads them: the model (`audio`, `stft`, `band_split`,",
        "`model`), the loss (`objective`), the mixer, datasets and DataLoader (`mixing`), corpus",
        "preparation (`prepare`, `make-demo-corpus`: `preparation`), training (`train`, `gan`)",
        "and the health monitor (`health`). Keys marked *arch* define the network: a resumed",
        "run takes them from its checkpoint.",
        "",
        "| key | type | default | meaning | |",
        "|---|---|---|---|---|",
    ]
    for key, type_name, default, doc in schema_rows():
        mark = "*arch*" if key in arch else ""
        lines.append(f"| `{key}` | {type_name} | `{_inline(default)}` | {doc} | {mark} |")
    lines += [
        "",
        "## Retired keys",
        "",
        "Older configs and checkpoints may hold these (named as they were then); they load",
        "when the value is the one shown (today's fixed behaviour) and are an error otherwise.",
        "",
        "| key | loads at | now |",
        "|---|---|---|",
    ]
    for key, (fixed, replacement) in RETIRED_KEYS.items():
        lines.append(f"| `{key}` | `{_inline(fixed)}` | {replacement} |")
    lines += [
        "",
        "## Renamed keys",
        "",
        "The sections `loss_weights` (now `objective`) and `data` (now `mixing` and",
        "`preparation`) had these keys. Configs, checkpoints and `--set` / `--mix-set`",
        "overrides that use the old names still load: each key is read as its new name.",
        "",
        "| old key | key |",
        "|---|---|",
    ]
    lines += [f"| `{old}` | `{new}` |" for old, new in RENAMED_KEYS.items()]
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    if args.reference:
        print(reference_markdown(), end="")
        return 0
    cfg = load_config(args.config, args.set)
    print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), end="")
    return 0
