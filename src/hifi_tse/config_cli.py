"""``hifi-tse config``: print the resolved config, or the config reference as Markdown."""

from __future__ import annotations

import argparse

import yaml

from hifi_tse.config import load_config, schema_rows


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML config (defaults when omitted)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--reference", action="store_true", help="print the key reference table")


def reference_markdown() -> str:
    """The config reference (every key, type, default, description) as a Markdown table."""
    lines = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for key, type_name, default, doc in schema_rows():
        shown = (
            yaml.safe_dump(default, default_flow_style=True, width=10**6)
            .strip()
            .removesuffix("...")
        )
        shown = shown.strip().replace("|", "\\|")
        lines.append(f"| `{key}` | {type_name} | `{shown}` | {doc} |")
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    if args.reference:
        print(reference_markdown(), end="")
        return 0
    cfg = load_config(args.config, args.set)
    print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), end="")
    return 0
