"""Results: the JSON document of a run, the targets it checks, and its markdown table.

Ratios are the ProdFS figure divided by the other's, in the measurement's own
unit: for times (lower is better) 1.10 means 10% slower; for throughputs
(higher is better) 0.90 means 90% of the other's speed.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from pathlib import Path

from ._measure import MEASURES
from ._run import summarize

__all__ = ["build_document", "check_targets", "markdown", "write"]

CHECKED_MODES = ("prodfs-snapshot", "prodfs-live")  # warm local cache; "empty" is about the network


def _figures() -> dict[str, tuple[str, str, str]]:
    """figure -> (title, unit, better)"""
    out = {}
    for m in MEASURES:
        for fig in m.keys:
            title = m.title if len(m.keys) == 1 else f"{m.title} ({fig.rsplit('_', 1)[-1]})"
            out[fig] = (title, m.unit, m.better)
    return out


def build_document(*, samples: dict, targets: list[dict], **parts: object) -> dict:
    figs = _figures()
    measurements = {}
    for fig, by_target in samples.items():
        title, unit, better = figs[fig]
        results = {name: summarize(values) for name, values in by_target.items()}
        measurements[fig] = {"title": title, "unit": unit, "better": better, "results": results,
                             "ratios": _ratios(results, targets, better)}
    doc = {"targets": targets, "measurements": measurements, **parts}
    doc["target_checks"] = check_targets(doc)
    return doc


def _median(results: dict, name: str) -> float | None:
    return results.get(name, {}).get("median")


def _best_c(results: dict, targets: list[dict], better: str) -> tuple[str, float] | None:
    peers = [(t["name"], _median(results, t["name"])) for t in targets if t["kind"] == "c"]
    peers = [(n, v) for n, v in peers if v]
    if not peers:
        return None
    pick = min if better == "lower" else max
    return pick(peers, key=lambda p: p[1])


def _ratios(results: dict, targets: list[dict], better: str) -> dict:
    native = _median(results, "native")
    best = _best_c(results, targets, better)
    out = {}
    for t in targets:
        if t["kind"] != "prodfs":
            continue
        v = _median(results, t["name"])
        if v is None:
            continue
        out[t["name"]] = {
            "to_native": round(v / native, 3) if native else None,
            "to_best_c": round(v / best[1], 3) if best else None,
            "best_c": best[0] if best else None,
        }
    return out


def _check(what: str, mode: str, figure: str, threshold: str, met: bool | None) -> dict:
    return {"target": what, "mode": mode, "figure": figure, "threshold": threshold, "met": met}


def check_targets(doc: dict) -> list[dict]:
    """Every target of the issue, met or not, with its figure (None: not measured in this run)."""
    ms = doc["measurements"]
    checks: list[dict] = []

    def med(fig: str, name: str) -> float | None:
        return _median(ms[fig]["results"], name) if fig in ms else None

    modes = [t["name"] for t in doc["targets"] if t["name"] in CHECKED_MODES]
    for fig in ("walk_find_warm", "walk_py_warm"):
        for mode in modes:
            v, nat = med(fig, mode), med(fig, "native")
            best = _best_c(ms[fig]["results"], doc["targets"], "lower") if fig in ms else None
            if v is None or not nat or best is None:
                checks.append(_check(f"warm metadata walk ({fig})", mode, "not measured", "", None))
                continue
            checks.append(_check(
                f"warm metadata walk ({fig})", mode,
                f"{v:.1f} ms = {v / nat:.2f}x native, {v / best[1]:.2f}x {best[0]}",
                "<= 1.2x native and <= best C peer", v / nat <= 1.2 and v <= best[1]))
    for mode in modes:
        v, sq = med("small_read_warm", mode), med("small_read_warm", "squashfuse")
        checks.append(_check("warm open+read of small files", mode,
                             f"{v:.1f} ms per 1,000 = {v / sq:.2f}x squashfuse" if v and sq else "not measured",
                             "<= squashfuse", (v <= sq) if v and sq else None))
        v, nat = med("seq_read_warm", mode), med("seq_read_warm", "native")
        checks.append(_check("warm sequential read", mode,
                             f"{v:.2f} GB/s = {v / nat:.2f}x native" if v and nat else "not measured",
                             ">= 0.9x native", (v >= 0.9 * nat) if v and nat else None))
        v, bf = med("seq_read_cold", mode), med("seq_read_cold", "bindfs")
        checks.append(_check("cold sequential read (payload in the local cache)", mode,
                             f"{v:.2f} GB/s = {v / bf:.2f}x bindfs" if v and bf else "not measured",
                             ">= 0.8x bindfs", (v >= 0.8 * bf) if v and bf else None))
        p50, p99 = med("lookup_p50", mode), med("lookup_p99", mode)
        checks.append(_check("versionless lookup, index loaded", mode,
                             f"p50 {p50:.3f} ms, p99 {p99:.3f} ms" if p50 and p99 else "not measured",
                             "p50 < 0.2 ms, p99 < 2 ms", (p50 < 0.2 and p99 < 2) if p50 and p99 else None))
    checks += _cold_path_checks(med)
    checks += _transfer_checks(doc.get("transfers"))
    rows = [r for r in doc.get("resolver", {}).get("rows", []) if r["products"] == 100_000]
    if rows:
        worst = max(rows, key=lambda r: r["seconds"])
        checks.append(_check("resolver, 100k products", "-", f"{worst['seconds']:.2f} s wall, "
                             f"{worst['cpu_seconds']:.2f} s CPU ({worst['strategy']})", "< 2 s", worst["seconds"] < 2))
    else:
        checks.append(_check("resolver, 100k products", "-", "not measured", "< 2 s", None))
    steps = doc.get("memory", {}).get("steps", [])
    if steps:
        last = steps[-1]
        checks.append(_check(f"daemon memory after {last['files']:,} files", "prodfs-live",
                             f"{last['bytes_per_file']:.0f} B/file ({last['rss'] / 2**20:.0f} MiB; "
                             f"{last['bytes_per_file_over_mount']:.0f} B/file over the freshly mounted daemon)",
                             "< 600 B/file", last["bytes_per_file"] < 600))
    else:
        checks.append(_check("daemon memory", "prodfs-live", "not measured", "< 600 B/file", None))
    return checks


def _cold_path_checks(med) -> list[dict]:  # noqa: ANN001 - (figure, target) -> median or None
    """A render node starts cold: payloads from PVC (empty cache), or a fresh daemon over a filled one."""
    checks = []
    rows = [("open+read of 1,000 small files, empty cache", "prodfs-empty", "small_read_cold", "squashfuse", 3.0),
            ("open+read of 1,000 small files, fresh daemon over a filled cache", "prodfs-snapshot",
             "small_read_cold", "squashfuse", 1.5)]
    for what, mode, fig, peer, most in rows:
        v, ref = med(fig, mode), med(fig, peer)
        checks.append(_check(what, mode, f"{v:.1f} ms per 1,000 = {v / ref:.2f}x {peer} cold" if v and ref
                             else "not measured", f"<= {most:g}x {peer} cold", (v <= most * ref) if v and ref else None))
    v, bf = med("seq_read_cold", "prodfs-empty"), med("seq_read_cold", "bindfs")
    checks.append(_check("cold sequential read, empty cache", "prodfs-empty",
                         f"{v:.2f} GB/s = {v / bf:.2f}x bindfs" if v and bf else "not measured",
                         ">= 0.8x bindfs", (v >= 0.8 * bf) if v and bf else None))
    return checks


def transfer_rates(transfers: dict) -> dict[str, float]:
    """kind -> MB/s (the median sample)."""
    return {kind: transfers["bytes"] / statistics.median(secs) / 1e6
            for kind, secs in transfers["seconds"].items() if secs}


def _transfer_checks(transfers: dict | None) -> list[dict]:
    checks = []
    rates = transfer_rates(transfers) if transfers else {}
    for kind in ("publish", "prefetch"):
        v, tar = rates.get(kind), rates.get("tar")
        checks.append(_check(f"{kind} of the whole tree", "-",
                             f"{v:.0f} MB/s = {v / tar:.2f}x tar ({tar:.0f} MB/s)" if v and tar else "not measured",
                             ">= 0.5x tar", (v >= 0.5 * tar) if v and tar else None))
    return checks


def _fmt(v: float | None) -> str:
    if v is None:
        return "-"
    if v >= 1000:
        return f"{v:,.0f}"
    if v >= 10:
        return f"{v:.1f}"
    if v >= 0.1:
        return f"{v:.2f}"
    return f"{v:.3f}"


def markdown(doc: dict) -> str:
    names = [t["name"] for t in doc["targets"]]
    prodfs = [t["name"] for t in doc["targets"] if t["kind"] == "prodfs"]
    m = doc["machine"]
    lines = [
        f"# ProdFS benchmarks, {doc['date']}",
        "",
        f"`{doc['command']}`: {doc['reps']} repetitions, targets interleaved; median (± half the range, % of "
        f"the median). Machine: {m.get('cpu')} x{m.get('cpus')}, {m.get('memory')}, kernel {m.get('kernel')}, "
        f"{m.get('os')}; Python {m.get('python')}{_python_build(m.get('python_build'))}; load average at start "
        f"{m.get('load_average_at_start')}, at end {doc.get('load_average_at_end')}.",
        "",
        f"Tree: {doc['dataset']['products']} products, {doc['dataset']['small_files']:,} small files of "
        f"{doc['dataset']['spec']['file_size']} B, {doc['dataset']['big_files']} x "
        f"{doc['dataset']['spec']['big_size'] >> 20} MiB, demo show: {'yes' if doc['dataset']['usd_layer'] else 'no'}.",
        "",
        "## Targets",
        "",
        "| target | mode | figure | threshold | met |",
        "|---|---|---|---|---|",
    ]
    for c in doc["target_checks"]:
        met = {True: "yes", False: "**no**", None: "-"}[c["met"]]
        lines.append(f"| {c['target']} | {c['mode']} | {c['figure']} | {c['threshold']} | {met} |")
    lines += ["", "## Absolute figures", "", "| measurement | unit | " + " | ".join(names) + " |",
              "|---|---|" + "---|" * len(names)]
    for fig, meas in doc["measurements"].items():
        cells = []
        for n in names:
            r = meas["results"].get(n, {})
            cells.append(f"{_fmt(r.get('median'))} ±{r['spread_pct']}%" if r.get("n") and r.get("spread_pct") is not None
                         else _fmt(r.get("median")))
        better = "lower" if meas["better"] == "lower" else "higher"
        lines.append(f"| {meas['title']} | {meas['unit']} ({better} is better) | " + " | ".join(cells) + " |")
    lines += ["", "## Ratios (ProdFS / native, ProdFS / best C peer)", "",
              "| measurement | " + " | ".join(prodfs) + " |", "|---|" + "---|" * len(prodfs)]
    for fig, meas in doc["measurements"].items():
        cells = []
        for n in prodfs:
            r = meas["ratios"].get(n)
            if not r:
                cells.append("-")
                continue
            nat = f"{r['to_native']:.2f}" if r["to_native"] is not None else "-"
            best = f"{r['to_best_c']:.2f} ({r['best_c']})" if r["to_best_c"] is not None else "-"
            cells.append(f"{nat} / {best}")
        lines.append(f"| {meas['title']} | " + " | ".join(cells) + " |")
    if doc.get("pvc_requests"):
        lines += ["", "## PVC requests per 1,000 opens (fresh mount)", "",
                  "| mode | requests | manifests fetched | manifest requests | payloads fetched |",
                  "|---|---|---|---|---|"]
        for n, r in doc["pvc_requests"].items():
            lines.append(f"| {n} | {r['pvc_requests_per_1000_opens']} | {r['manifests_fetched_per_1000_opens']} | "
                         f"{r.get('manifest_requests_per_1000_opens', '-')} | {r['blobs_fetched_per_1000_opens']} |")
    transfers = doc.get("transfers")
    if transfers:
        rates = transfer_rates(transfers)
        lines += ["", f"## Whole-tree transfers ({transfers['files']:,} files, {transfers['bytes'] / 2**20:.0f} MiB; "
                  "page cache dropped before each)", "",
                  "| transfer | median s | samples s | MB/s | files/s | / tar |", "|---|---|---|---|---|---|"]
        for kind, secs in transfers["seconds"].items():
            if not secs:
                continue
            med_s = statistics.median(secs)
            ratio = f"{rates[kind] / rates['tar']:.2f}" if rates.get("tar") else "-"
            lines.append(f"| {kind} | {med_s:.2f} | {', '.join(f'{x:.2f}' for x in secs)} | {rates[kind]:.0f} | "
                         f"{transfers['files'] / med_s:,.0f} | {ratio} |")
    res = doc.get("resolver") or {}
    if res:
        lines += ["", "## Resolver alone (generated graphs with diamonds; best of the repeats)", ""]
        if res.get("error"):
            lines.append(f"failed: {res['error'][:300]}")
        lines += ["| products | strategy | wall s | CPU s | in graph | conflicts |", "|---|---|---|---|---|---|"]
        for r in res.get("rows", []):
            lines.append(f"| {r['products']:,} | {r['strategy']} | {r['seconds']:.3f} | {r['cpu_seconds']:.3f} | "
                         f"{r.get('in_graph', '-')} | {r.get('conflicts', '-')} |")
    mem = doc.get("memory") or {}
    if mem.get("steps"):
        lines += ["", "## Daemon memory (live mount, synthetic store)", "",
                  f"RSS after mounting: {mem['rss_after_mount'] / 2**20:.1f} MiB.", "",
                  "| files served | RSS MiB | bytes per file | over the mounted daemon |", "|---|---|---|---|"]
        for s in mem["steps"]:
            lines.append(f"| {s['files']:,} | {s['rss'] / 2**20:.1f} | {s['bytes_per_file']:.0f} | "
                         f"{s['bytes_per_file_over_mount']:.0f} |")
    if doc.get("daemon_rss"):
        lines += ["", "Daemon RSS at the end of the run: " + ", ".join(
            f"{n} {v / 2**20:.1f} MiB" for n, v in doc["daemon_rss"].items() if v) + "."]
    if doc.get("skipped") or doc.get("errors"):
        lines += ["", "## Not measured", ""]
        for name, why in (doc.get("skipped") or {}).items():
            lines.append(f"- {name}: {why}")
        for e in doc.get("errors") or []:
            lines.append(f"- {e['measure']} on {e['target']} (repetition {e['rep'] + 1}): {e['error'][:200]}")
    lines += ["", "## Targets measured", ""]
    for t in doc["targets"]:
        lines.append(f"- `{t['name']}`: {t['description']}")
    for note in doc.get("notes", []):
        lines += ["", note]
    return "\n".join(lines) + "\n"


def write(doc: dict, out_dir: Path, stem: str, render: Callable[[dict], str] | None = None) -> tuple[Path, Path]:
    """``STEM.json`` and ``STEM.md`` (``render``, default this module's `markdown`) in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    js, md = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
    js.write_text(json.dumps(doc, indent=1, sort_keys=True, default=str) + "\n")
    md.write_text((render or markdown)(doc))
    return js, md


def _python_build(build: dict | None) -> str:
    if not build:
        return ""
    notes = [] if build.get("pgo") else ["no PGO"]
    if build.get("shared_libpython"):
        notes.append("shared libpython")
    return f" ({', '.join(notes)})" if notes else ""
