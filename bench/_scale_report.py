"""The rows of a scale run (issue #17), met or not with their figures, and its markdown.

Every row is always present: a step that failed, or never ran because an
earlier one failed, is "not met" with why. Rows without a threshold are
figures beside a target (the same lookups again, a workspace mount's memory).
"""

from __future__ import annotations

import json
from pathlib import Path

from . import _report

__all__ = ["ROWS", "check_targets", "markdown", "write"]

MiB = 1 << 20

# (id, what, threshold): the order of the table
ROWS = (
    ("live_mount_ready", "live mount ready (empty cache, no workspace)", "< 1 s"),
    ("live_mount_rss", "live mount: daemon RSS right after mount", "< 100 MiB"),
    ("first_lookup", "first lookup of a versionless name (os.stat)", "p99 < 10 ms"),
    ("again_lookup", "the same names again", "-"),
    ("publish_visible", "publish visible in a live mount using the product", "worst < 2 s"),
    ("workspace_mount", "workspace mount, closure of ~10,000 products", "< 3 s"),
    ("workspace_rss", "workspace mount: daemon RSS right after mount", "-"),
    ("burst_closure", "concurrent POST /closure {roots: [PRI], depth: 0, missing: omit}", "p99 < 100 ms"),
    ("burst_product", "concurrent GET /products/{pri} (until /closure takes depth)", "p99 < 100 ms"),
)


def _row(rid: str, figure: str, met: bool | None, why: str | None = None) -> dict:
    what, threshold = next((w, t) for i, w, t in ROWS if i == rid)
    return {"id": rid, "target": what, "figure": figure, "threshold": threshold, "met": met, "why": why}


def _failed(rid: str, step: dict | None, informational: bool = False) -> dict:
    why = (step or {}).get("error") or "not run"
    return _row(rid, "not measured", None if informational else False, why)


def _mib(v: int | None) -> str:
    return "?" if v is None else f"{v / MiB:.0f} MiB"


def check_targets(doc: dict) -> list[dict]:
    steps = doc.get("steps", {})
    before = doc.get("store", {}).get("error") or doc.get("service", {}).get("error")
    if before:
        # nothing could be measured: every row says why
        return [_row(rid, "not measured", None if t == "-" else False, before) for rid, _, t in ROWS]
    rows = []
    live = steps.get("live_mount")
    if live and "error" not in live:
        rows.append(_row("live_mount_ready", f"{live['seconds']:.2f} s (prodfs mount returned after "
                         f"{live['command_seconds']:.2f} s; {live.get('products') or 0:,} products loaded)",
                         live["seconds"] < 1))
        rss = live.get("rss_bytes")
        rows.append(_row("live_mount_rss", f"{_mib(rss)} (peak {_mib(live.get('peak_rss_bytes'))})",
                         rss is not None and rss < 100 * MiB, None if rss is not None else "no /proc reading"))
    else:
        rows += [_failed("live_mount_ready", live), _failed("live_mount_rss", live)]
    look = steps.get("lookups")
    if look and "error" not in look:
        for rid, phase in (("first_lookup", "first"), ("again_lookup", "again")):
            r = look[phase]
            errors = sum(r.get("errors", {}).values())
            if not r.get("n"):
                rows.append(_row(rid, "not measured", None if rid == "again_lookup" else False,
                                 f"every lookup failed: {r.get('errors')}"))
                continue
            fig = f"p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms, max {r['max_ms']:.1f} ms ({r['n']} names)"
            if rid == "again_lookup":
                rows.append(_row(rid, fig, None))
            else:
                rows.append(_row(rid, fig + (f", {errors} failed" if errors else ""), r["p99_ms"] < 10 and not errors,
                                 f"{errors} lookups failed: {r['errors']}" if errors else None))
    else:
        rows += [_failed("first_lookup", look), _failed("again_lookup", look, informational=True)]
    pub = steps.get("publish")
    if pub and "error" not in pub and pub.get("reps"):
        n, seen = len(pub["reps"]), pub["visible"]
        bad = [r["error"] for r in pub["reps"] if "error" in r]
        if seen:
            fig = f"worst {pub['worst_seconds']:.3f} s, median {pub['median_seconds']:.3f} s ({seen} of {n} shown)"
            rows.append(_row("publish_visible", fig, pub["worst_seconds"] < 2 and not bad,
                             f"{len(bad)} not shown: {bad[0]}" if bad else None))
        else:
            rows.append(_row("publish_visible", "not measured", False, bad[0] if bad else "no repetition"))
    else:
        rows.append(_failed("publish_visible", pub))
    ws = steps.get("workspace")
    if ws and "seconds" in ws:
        size, asked = ws["closure_products"], doc.get("options", {}).get("closure_products", 10_000)
        fig = (f"{ws['seconds']:.2f} s for a closure of {size:,} products ({ws['roots']:,} roots; "
               f"{ws.get('products') or 0:,} products loaded)")
        # a closure much smaller than asked says nothing about the target (a small store)
        comparable = size >= 0.9 * asked
        rows.append(_row("workspace_mount", fig, (ws["seconds"] < 3) if comparable else None,
                         None if comparable else f"the closure reached only {size:,} of the {asked:,} asked"))
        rows.append(_row("workspace_rss", f"{_mib(ws.get('rss_bytes'))} (peak {_mib(ws.get('peak_rss_bytes'))})",
                         None))
    else:
        why = dict(ws or {})
        if ws and "closure_products" in ws:
            why["error"] = f"{ws.get('error')} (closure of {ws['closure_products']:,} products)"
        rows += [_failed("workspace_mount", why), _failed("workspace_rss", why, informational=True)]
    for rid, key in (("burst_closure", "burst_closure"), ("burst_product", "burst_product")):
        b = steps.get(key)
        if b and "measured" in b:
            m = b["measured"]
            bad = {k: v for k, v in b["statuses"].items() if k != "200"}
            fig = (f"p50 {m['p50_ms']:.1f} ms, p99 {m['p99_ms']:.1f} ms, max {m['max_ms']:.0f} ms "
                   f"({b['concurrency']} at once x {len(b['rounds']) - 1} rounds; {_client(b)})")
            rows.append(_row(rid, fig, m["p99_ms"] < 100 and not bad, f"answers {bad}" if bad else None))
        else:
            rows.append(_failed(rid, b))
    return rows


def _client(b: dict) -> str:
    procs = b["client_processes"]
    who = "one client process" if procs == 1 else f"{procs} client processes"
    who += ", a client of one connection per request"
    share = b.get("client_cpu_share")
    return f"{who}, its CPU {share:.0%} of the wall time" if share is not None else who


def _met(row: dict) -> str:
    if row["met"] is True:
        return "met"
    if row["met"] is False:
        return f"not met ({row['why']})" if row.get("why") else "not met"
    if row["threshold"] == "-":
        return f"- ({row['why']})" if row.get("why") else "-"
    return f"not comparable ({row['why']})" if row.get("why") else "-"


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown(doc: dict) -> str:
    m = doc.get("machine", {})
    g = doc.get("generator", {})
    store = doc.get("store", {})
    lines = [
        f"# ProdFS at scale (issue #17), {doc['date']}: {g.get('products', 0):,} products on {doc['db']}",
        "",
        f"`{doc.get('command', 'python -m bench scale')}`. Machine: {m.get('cpu')} x{m.get('cpus')}, "
        f"{m.get('memory')}, kernel {m.get('kernel')}, {m.get('os')}; Python {m.get('python')}; "
        f"load average at start {doc.get('load_average_at_start')}, at end {doc.get('load_average_at_end')}. "
        f"Database: {doc.get('database_version') or doc['db']}. The whole run: {doc.get('seconds', 0):.0f} s.",
        "",
        "## Targets",
        "",
        "| target | figure | threshold | met |",
        "|---|---|---|---|",
    ]
    for row in doc["target_checks"]:
        lines.append(f"| {_cell(row['target'])} | {_cell(row['figure'])} | {_cell(row['threshold'])} | "
                     f"{_cell(_met(row))} |")
    lines += ["", "## Store", ""]
    if "error" in store:
        lines.append(f"Not built: {store['error']}")
    else:
        built = f"built {store.get('built')} in {store.get('build_seconds') or 0:.0f} s"
        lines += [
            f"`{store.get('path')}`: {g.get('products', 0):,} products x {g.get('versions_per_product')} versions, "
            f"{g.get('files')} files a version, seed {g.get('seed')} "
            f"(`gen_history` piped into `pvc import --allow-missing-blobs`). "
            f"{'Reused, ' + built if store.get('reused') else 'B' + built[1:]} "
            f"({(store.get('bytes') or 0) / MiB:,.0f} MiB on disk): {store.get('import_summary')}.",
        ]
    steps = doc.get("steps", {})
    lines += _details(steps)
    if doc.get("notes"):
        lines += ["", "## Notes", ""] + [f"- {n}" for n in doc["notes"]]
    problems = {k: v for k, v in (doc.get("daemon_log_problems") or {}).items() if v}
    if problems or doc.get("service_log_problems"):
        lines += ["", "## Problems in the logs", ""]
        for k, v in problems.items():
            lines += [f"- daemon ({k}): {_cell(x[:200])}" for x in v[:5]]
        lines += [f"- service: {_cell(x[:200])}" for x in (doc.get("service_log_problems") or [])[:5]]
    lines += ["", "What each row measures: docs/benchmarks.md, \"Scale (issue #17)\"."]
    return "\n".join(lines) + "\n"


def _details(steps: dict) -> list[str]:
    lines: list[str] = []
    pub = steps.get("publish") or {}
    if pub.get("reps"):
        lines += ["", "## Publish repetitions", "",
                  "| product | version before | after | publish request s | shown after s |", "|---|---|---|---|---|"]
        for r in pub["reps"]:
            shown = f"{r['visible_seconds']:.3f}" if "visible_seconds" in r else _cell(r.get("error", "-"))
            lines.append(f"| `{r['pri']}` | {r.get('before', '-')} | {r.get('after', '-')} | "
                         f"{r.get('publish_seconds', '-')} | {shown} |")
    bursts = [(k, steps[k]) for k in ("burst_closure", "burst_product") if steps.get(k, {}).get("rounds")]
    if bursts:
        lines += ["", "## Concurrent requests, by round (the first opens the connections; not counted)", "",
                  "| request | round | p50 ms | p99 ms | max ms | wall s | requests/s | client CPU s | answers |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for k, b in bursts:
            for i, r in enumerate(b["rounds"]):
                lines.append(f"| {k.removeprefix('burst_')} | {i}{' (connect)' if r['first'] else ''} | "
                             f"{r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['max_ms']:.0f} | {r['wall_seconds']:.2f} | "
                             f"{r['requests_per_second']:,.0f} | {r['client_cpu_seconds']:.2f} | "
                             f"{_cell(json.dumps(r['statuses']))} |")
    ws = steps.get("workspace") or {}
    if "closure_products" in ws:
        lines += ["", f"Workspace `{ws['workspace']}`: {ws['roots']:,} shot comps as roots, a closure of "
                  f"{ws['closure_products']:,} products (`POST /closure` of the roots: "
                  f"{ws['closure_request_seconds']:.2f} s)"
                  + (f"; first lookup of a root after mounting {ws['first_root_lookup_ms']:.1f} ms."
                     if "first_root_lookup_ms" in ws else ".")]
    idx = steps.get("index_request") or {}
    if "bytes" in idx:
        lines += ["", f"`GET /index`, what the daemon loads before it mounts: {idx['bytes'] / MiB:,.1f} MiB in "
                  f"{idx['seconds']:.2f} s (first byte after {idx['first_byte_seconds']:.2f} s)."]
    elif idx:
        lines += ["", f"`GET /index` not measured: {idx.get('error')}"]
    for name, key in (("Live", "live_mount"), ("Workspace", "workspace")):
        st = steps.get(key) or {}
        if st.get("daemon_cpu_seconds") is not None:
            lines += ["", f"{name} mount: the daemon used {st['daemon_cpu_seconds']:.2f} s of CPU until ready "
                      f"(of {st['seconds']:.2f} s)."]
    times = {k: v["step_seconds"] for k, v in steps.items() if isinstance(v, dict) and "step_seconds" in v}
    if times:
        lines += ["", "Step times (s): " + ", ".join(f"{k} {v}" for k, v in times.items()) + "."]
    return lines


def write(doc: dict, out_dir: Path, stem: str) -> tuple[Path, Path]:
    return _report.write(doc, out_dir, stem, render=markdown)
