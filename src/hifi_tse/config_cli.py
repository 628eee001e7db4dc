"""``hifi-tse config``: print the resolved config, or the config reference as Markdown."""

from __future__ import annotations

import argparse

import yaml

from hifi_tse.config import RETIRED_KEYS, architecture_keys, load_config, schema_rows


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML config (defaults when omitted)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--reference", action="store_true", help="print the key reference table")


def _inline(value: object) -> str:
    shown = yaml.safe_dump(value, default_flow_style=True, width=10**6).strip()
    return shown.removesuffix("...").strip().replace("|", "\\|")


def reference_markdown() -> str:
    """The config reference (every key, type, default, description) as a Markdown table,
    then the retired keys with the one value they still load at."""
    arch = set(architecture_keys())
    lines = [
        "Keys marked *arch* define the network: a resumed run takes them from its checkpoint.",
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
        "Older configs and checkpoints may hold these; they load when the value is the one",
        "shown (today's fixed behaviour) and are an error otherwise.",
        "",
        "| key | loads at | now |",
        "|---|---|---|",
    ]
    for key, (fixed, replacement) in RETIRED_KEYS.items():
        lines.append(f"| `{key}` | `{_inline(fixed)}` | {replacement} |")
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    if args.reference:
        print(reference_markdown(), end="")
        return 0
    cfg = load_config(args.config, args.set)
    print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), end="")
    return 0
