"""The Python API: verify, check-and-fix, bench and certificate checks, one call each.

Every function takes the network first, then the property, then the rest. A network is an ONNX
file path (``str`` or ``os.PathLike``), an ``onnx.ModelProto`` or a loaded
`verirepair.network.Network`; a property is a VNN-LIB file path or a parsed `verirepair.spec.Spec`.

Errors: bad input (a missing or malformed file, a property that does not fit the network, an
unknown strategy or solver, a CUDA device that is not there) raises `verirepair.errors.InputError`
naming the file, the place and the reason; a setting out of its range raises
`verirepair.errors.SettingsError`; a capability not built yet raises `verirepair.errors.NotYet`;
an argument of the wrong type raises ``TypeError``. The command line is a thin layer over these
functions. torch and onnx are imported by the first call, not by ``import verirepair``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

from .errors import InputError, NotYet, SettingsError

if TYPE_CHECKING:
    import numpy as np
    import onnx

    from .bench import InstanceRecord, Summary
    from .checker import CheckResult
    from .network import Network
    from .repair import RepairReport
    from .spec import Spec
    from .verify import Verdict

__all__ = ["MODEL_PROTO_LABEL", "BenchResult", "bench", "check_and_fix", "check_certificate", "verify"]

PathLike = Union[str, "os.PathLike[str]"]
NetworkLike = Union[PathLike, "onnx.ModelProto", "Network"]
SpecLike = Union[PathLike, "Spec"]
# A `ModelProto` is written to a temporary file to be loaded (and replayed in onnxruntime); errors
# about that file name it as this instead.
MODEL_PROTO_LABEL = "<onnx.ModelProto>"


@dataclass(frozen=True)
class BenchResult:
    """One bench run: a record per instance (in the instances file's order), the scored summary,
    and where results.csv was written. ``truth``: the ground truth's answer per (onnx, vnnlib) of the
    records, for the instances it has one for."""

    records: list[InstanceRecord]
    summary: Summary
    results_csv: Path
    truth: dict[tuple[str, str], str]

    @property
    def judged(self) -> int:
        """How many instances the ground truth has an answer for."""
        return len(self.truth)


def verify(network: NetworkLike, spec: SpecLike, *, timeout: float = 60.0, device: str = "cpu",
           milp_solver: str = "auto", certificate: PathLike | None = None) -> Verdict:
    """Prove ``spec`` on ``network`` (``unsat``) or find a counterexample (``sat``, confirmed in
    onnxruntime on the ONNX file), within ``timeout`` seconds (loading included).

    ``device``: cpu, cuda, cuda:N or auto. ``milp_solver``: auto, highs or gurobi.
    ``certificate``: for an ``unsat``, write a proof certificate here (input-split and ReLU-split
    proofs of ReLU MLPs; `check_certificate` re-checks it). A certificate names its files by SHA-256, so it
    needs ``network`` and ``spec`` as file paths. Its outcome is the last of the verdict's notes.
    """
    from .devices import resolve_device
    from .milp.solvers import check_preference
    from .verify import (
        Deadline,
        VerifySettings,
        check_problem,
        verify_files,
        verify_with_certificate,
    )
    from .verify import verify as verify_loaded

    check_preference(milp_solver)
    settings = VerifySettings(timeout=timeout, device=resolve_device(device), milp_solver=milp_solver)
    as_files = _is_path(network) and _is_path(spec)
    if certificate is not None:
        _check_certificate_option(certificate, as_files)
        return verify_with_certificate(network, spec, settings, certificate)[0]  # type: ignore[arg-type]
    if as_files:
        return verify_files(network, spec, settings)  # type: ignore[arg-type]
    deadline = Deadline(settings.timeout)
    with _loaded(network) as loaded:
        problem = _spec_for(spec, loaded)
        check_problem(loaded, problem, settings)
        return verify_loaded(loaded, problem, settings, deadline)


def _check_certificate_option(certificate: PathLike, as_files: bool) -> None:
    from .files import check_writable

    if not as_files:
        raise InputError(certificate, None, "a certificate names its network and property files by SHA-256: "
                                            "give both as file paths")
    check_writable(certificate)


def check_and_fix(network: NetworkLike, spec: SpecLike | Sequence[SpecLike], *, strategy: str = "auto",
                  output: PathLike | None = None, budget: float = 600.0, domain: Any = None, decision: str | None = None,
                  data: PathLike | tuple[np.ndarray, np.ndarray | None] | None = None, seed: int = 0,
                  device: str = "cpu", certificate: PathLike | None = None, **settings: Any) -> RepairReport:
    """Verify ``spec`` on ``network``; when violated, repair with ``strategy`` (a name of
    `verirepair.repair.available()`) until the property is proven on the exported ONNX file, which
    is then written to ``output``; nothing is written unless proven. ``report.proven`` says whether
    the property holds now (``report.status``: held, repaired, not-proven or undecided).

    ``budget``: seconds for the whole run. ``data``: an .npz/.h5 file (or an ``(X, y)`` pair) for
    the accuracy figures. ``domain``: where the network is used (a `verirepair.spec.Box`, a
    VNN-LIB file, or ``"l1,...,ln:u1,...,un"``), holding the property's boxes; None: behaviour
    outside the boxes is not constrained. ``decision``: ``argmax``, ``argmin`` or ``ranking``
    (None: judged by ranking, the whole order of the outputs). Any other `RepairSettings` field (``verify_timeout``, ``max_iterations``,
    ``keep_unproven``, ``side_effect_samples``, ``polish_attempts``) may be passed by name; an
    unknown name is a `SettingsError`.

    A suite: ``spec`` may be a list, and a path in it (or ``spec`` itself) may be a folder (its
    ``*.vnnlib`` and ``*.vnnlib.gz`` files, sorted) or a VNN-COMP ``instances.csv`` (its rows'
    properties; the network it names must be ``network``, given as a file path). Every property is
    verified, the violated ones are repaired together, and ``output`` is written only when every
    property of the suite, those that held included, is proven on it; ``report.properties`` has
    one row per property and ``report.suite`` the totals. A suite of one is the single run.

    ``certificate`` (one property only): when proven, write a proof certificate of the property for the proven file
    (``output``, or ``network`` when the property held already; `check_certificate` re-checks it),
    from one more verification of that file within the budget. It names its files by SHA-256, so
    it needs ``network`` and ``spec`` as file paths. ``report.certificate`` is its path when it was
    written; otherwise a note says why, and the run is proven all the same.
    """
    from .devices import resolve_device
    from .files import check_writable
    from .repair import (
        RepairSettings,
        available,
        check_and_fix_suite_network,
        strategy_named,
    )
    from .repair.data import load_data
    from .verify import Deadline, VerifySettings, check_problem

    properties = _properties(network, spec)
    if strategy not in available():
        raise InputError(None, "strategy", f"unknown strategy {strategy!r} (available: {', '.join(available())})")
    known = {field.name for field in dataclasses.fields(RepairSettings)}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise SettingsError(f"unknown repair setting(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    if isinstance(domain, (str, os.PathLike)):
        from .repair.input_domain import parse_domain

        domain = parse_domain(str(domain))
    given = {name: value for name, value in (("domain", domain), ("decision", decision)) if value is not None}
    if settings.get("keep_unproven") is not None:
        settings["keep_unproven"] = Path(settings["keep_unproven"])
    if output is not None:
        check_writable(output)
    if certificate is not None:
        if len(properties) > 1:
            raise NotYet("a proof certificate of a property suite: give one property with certificate=")
        _check_certificate_option(certificate, _is_path(network) and _is_path(properties[0]))
    device = resolve_device(device)
    deadline = Deadline(budget)
    with _loaded(network) as loaded:
        suite = [_spec_for(item, loaded) for item in properties]
        table = load_data(data, loaded.n_inputs) if _is_path(data) else data
        repair_settings = RepairSettings(budget=budget, seed=seed, device=device, data=table,
                                         output=Path(output) if output is not None else None,
                                         certificate=Path(certificate) if certificate is not None else None,
                                         **given, **settings)
        for problem in suite:
            check_problem(loaded, problem, VerifySettings(timeout=budget, device=device, seed=seed))
        report = check_and_fix_suite_network(loaded, suite, strategy_named(strategy, len(suite) > 1),
                                             repair_settings, deadline)
    return dataclasses.replace(report, onnx=_label(network))


def bench(instances: PathLike, *, out: PathLike = "bench-out", timeout: float | None = None,
          timeout_scale: float = 1.0, workers: int = 1, threads: int | None = None,
          ground_truth: PathLike | None = None, device: str = "cpu", milp_solver: str = "auto",
          ray: str | None = None) -> BenchResult:
    """Run a VNN-COMP instances CSV (onnx,vnnlib,timeout per row; paths relative to the CSV), each
    instance in its own process, and score it. Records go to ``out`` (one JSON per instance; a
    rerun resumes, running only the instances without one), and the scored table to
    ``out/results.csv``. ``timeout`` replaces every instance's timeout, ``timeout_scale`` multiplies
    them; ``threads``: math threads per instance (default: the cores shared out among ``workers``);
    ``ground_truth``: a CSV with onnx,vnnlib,result columns to judge the answers. ``ray``: "auto" or
    the address of a Ray cluster to run the instances on, one task each (docs/cluster.md); then
    ``threads`` (default 1) is the CPUs per task and ``workers`` must stay 1.
    A signal (Ctrl-C) stops the run with `verirepair.bench.BenchInterrupted`; what finished is kept.
    """
    from .bench import (
        VerifyOptions,
        expected_results,
        read_ground_truth,
        read_instances,
        results_csv,
        run_instances,
        summarise,
    )
    from .devices import resolve_device
    from .files import atomic_write_text
    from .milp.solvers import check_preference

    for name, value in (("timeout", timeout), ("timeout_scale", timeout_scale), ("workers", workers),
                        ("threads", threads)):
        if value is not None and not value > 0:
            raise SettingsError(f"{name} must be positive, got {value}")
    check_preference(milp_solver)
    listed = read_instances(instances)
    truth = expected_results(listed, read_ground_truth(ground_truth)) if ground_truth else {}
    if ground_truth and not truth:
        raise InputError(ground_truth, None, f"matches none of the {len(listed)} instances of "
                         f"{instances} (paths are resolved relative to each CSV's folder)")
    if timeout is not None:
        listed = [dataclasses.replace(i, timeout=timeout) for i in listed]
    options = VerifyOptions(resolve_device(device), milp_solver)
    folder = Path(out)
    if ray is not None:
        from .bench.ray_runner import run_instances_on_ray

        if workers != 1:
            raise InputError(None, "--workers", "does not apply with --ray: the cluster's CPUs and --threads "
                             "(CPUs per instance) decide how many instances run at once")
        records = run_instances_on_ray(listed, folder, ray, timeout_scale, threads or 1, options)
    else:
        records = run_instances(listed, folder, timeout_scale, workers, threads, options)
    table = folder / "results.csv"
    atomic_write_text(table, results_csv(records, truth))
    return BenchResult(records, summarise(records, truth), table, truth)


def check_certificate(network: PathLike, spec: PathLike, certificate: PathLike) -> CheckResult:
    """Re-check a proof certificate written by `verify` with an independent implementation;
    ``result.ok`` says whether it holds, ``result.message`` why. The certificate names its files by
    SHA-256, so ``network`` and ``spec`` are the file paths it was made for."""
    from .checker import check_certificate as check

    for value, what in ((network, "network"), (spec, "spec")):
        if not _is_path(value):
            raise TypeError(f"check_certificate takes the {what} as a file path, got {type(value).__name__}")
    return check(network, spec, certificate)


def _is_path(value: object) -> bool:
    return isinstance(value, (str, os.PathLike))


@contextlib.contextmanager
def _loaded(network: NetworkLike) -> Iterator[Network]:
    """The network loaded; a `ModelProto` lives in a temporary file while the context is open
    (a counterexample is replayed on the file in onnxruntime), named as `MODEL_PROTO_LABEL` in errors."""
    import onnx

    from .network import Network, load_network

    if isinstance(network, Network):
        if network.path is None:
            raise InputError(None, "network", "a Network without its ONNX file (counterexamples are replayed "
                                              "on the file in onnxruntime)")
        yield network
    elif isinstance(network, onnx.ModelProto):
        with tempfile.TemporaryDirectory(prefix="verirepair-") as folder:
            path = Path(folder) / "network.onnx"
            path.write_bytes(network.SerializeToString())
            try:
                yield load_network(path)
            except InputError as error:
                if error.file != str(path):
                    raise
                raise type(error)(MODEL_PROTO_LABEL, error.place, error.reason) from None
    elif _is_path(network):
        yield load_network(network)  # type: ignore[arg-type]
    else:
        raise TypeError(f"network: expected an ONNX file path, an onnx.ModelProto or a verirepair Network, "
                        f"got {type(network).__name__}")


def _label(network: NetworkLike) -> str:
    """How reports name ``network``."""
    if _is_path(network):
        return str(network)
    path = getattr(network, "path", None)
    return str(path) if path is not None else MODEL_PROTO_LABEL


def _spec_for(spec: SpecLike, network: Network) -> Spec:
    from .spec import Spec, parse_vnnlib

    if isinstance(spec, Spec):
        return spec
    if _is_path(spec):
        return parse_vnnlib(spec, n_inputs=network.n_inputs, n_outputs=network.n_outputs)  # type: ignore[arg-type]
    raise TypeError(f"spec: expected a VNN-LIB file path or a verirepair Spec, got {type(spec).__name__}")


def _properties(network: NetworkLike, spec: SpecLike | Sequence[SpecLike]) -> list[SpecLike]:
    """The properties of ``spec``: each `Spec` and VNN-LIB path as it is, each folder and instance
    list opened (`suite_files`); an in-memory `Spec` of a suite is named by its place in it."""
    from .bench.suites import suite_files
    from .spec import Spec

    items = list(spec) if isinstance(spec, (list, tuple)) else [spec]
    if not items:
        raise InputError(None, "spec", "an empty list of properties")
    properties: list[SpecLike] = []
    for place, item in enumerate(items, start=1):
        if isinstance(item, Spec):
            properties.append(item if len(items) == 1 or item.source != "<memory>"
                              else dataclasses.replace(item, source=f"<spec {place}>"))
        elif _is_path(item) and not (Path(item).is_dir() or str(item).lower().endswith(".csv")):
            properties.append(item)
        elif _is_path(item):
            named = suite_files([item])
            if named.network is not None and not (_is_path(network) and _same_file(named.network, network)):
                raise InputError(item, None, f"names the network {named.network}, not the one given "
                                             f"({_label(network)})")
            properties += list(named.properties)
        else:
            raise TypeError(f"spec: expected a VNN-LIB file path or a verirepair Spec, got {type(item).__name__}")
    return properties


def _same_file(first: PathLike, second: PathLike) -> bool:
    return Path(first).resolve() == Path(second).resolve()
