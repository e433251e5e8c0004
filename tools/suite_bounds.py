"""How hard a suite's properties are to prove on some networks: per property, the CROWN lower bound
of the property margin over its box (> 0: proven by CROWN alone) and the ReLUs whose CROWN bounds
straddle 0 (what branch and bound must split), optionally with the verifier's verdict.

    OMP_NUM_THREADS=1 .venv/bin/python tools/suite_bounds.py SUITE NET.onnx [NET2.onnx ...]
        [--verify-timeout S] [--json out.json]

SUITE is a folder of ``specs/`` (e.g. ``mnist_cnn_robust``) or its path; its ``instances.csv``
names the properties. The bound is the one the verifier starts from and ArchRepair's
verifiability term raises (`verirepair.repair.birdnn.certified.certified_margins`); with
``--verify-timeout`` each property is also verified (`verirepair.verify`) within that time.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from repair_suites import ROOT, suite_properties

from verirepair.bounds import BoundEngine, build_graph
from verirepair.network import Network, load_network
from verirepair.repair.birdnn.certified import certified_margins
from verirepair.repair.birdnn.samples import PropertyMargin
from verirepair.repair.parameters import TrainableNetwork
from verirepair.spec import Spec, parse_vnnlib
from verirepair.verify import VerifySettings, verify


def margin_bound(module: TrainableNetwork, spec: Spec) -> float:
    """The smallest CROWN lower bound of the margin over the property's regions."""
    with torch.no_grad():
        return min(float(certified_margins(module, region, torch.tensor(region.box.lower).unsqueeze(0),
                                           torch.tensor(region.box.upper).unsqueeze(0))[0])
                   for region in PropertyMargin(spec, torch.float64).regions)


def unstable_relus(network: Network, spec: Spec) -> int:
    """ReLU inputs whose CROWN bounds over the property's boxes have lower < 0 < upper (summed over regions)."""
    engine = BoundEngine(build_graph(network))
    count = 0
    for region in spec.regions:
        bounds = engine.layer_bounds(torch.tensor(region.box.lower).unsqueeze(0), torch.tensor(region.box.upper).unsqueeze(0))
        count += sum(int(((low < 0) & (high > 0)).sum()) for low, high in bounds.pre_activation)
    return count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("suite", type=Path)
    parser.add_argument("networks", type=Path, nargs="+")
    parser.add_argument("--verify-timeout", type=float, help="also verify each property within this many seconds")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    suite = args.suite if args.suite.is_dir() else ROOT / "specs" / args.suite
    _, properties = suite_properties(suite, None)
    rows = []
    for path in args.networks:
        network = load_network(path)
        module = TrainableNetwork(network)
        module.requires_grad_(False)
        for prop in properties:
            spec = parse_vnnlib(prop, n_inputs=network.n_inputs, n_outputs=network.n_outputs)
            row: dict[str, object] = {"network": path.name, "property": prop.name.split(".")[0],
                                      "crown_margin": margin_bound(module, spec), "unstable_relus": unstable_relus(network, spec)}
            if args.verify_timeout:
                started = time.monotonic()
                row["verdict"] = verify(network, spec, VerifySettings(timeout=args.verify_timeout)).status
                row["verify_seconds"] = round(time.monotonic() - started, 1)
            rows.append(row)
            print(json.dumps(row), flush=True)
    names = [p.name for p in args.networks]
    print(f"\n{'property':<24} " + " ".join(f"{name[:30]:>42}" for name in names))
    print(f"{'':<24} " + " ".join(f"{'CROWN margin  unstable  verdict':>42}" for _ in names))
    for prop in dict.fromkeys(str(r["property"]) for r in rows):
        cells = []
        for name in names:
            row = next(r for r in rows if r["property"] == prop and r["network"] == name)
            verdict = f"{row.get('verdict', '-')} {row.get('verify_seconds', '')}"
            cells.append(f"{row['crown_margin']:>12.4f} {row['unstable_relus']:>9}  {verdict:>18}")
        print(f"{prop:<24} " + " ".join(f"{cell:>42}" for cell in cells))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
