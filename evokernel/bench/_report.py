"""The suite's results as a markdown table, JSON, and plots (when matplotlib is installed)."""

from __future__ import annotations

import json
from pathlib import Path

from ._roofline import Roofline

STATUS_TEXT = {"failed": "failed", "wrong": "wrong result", "skipped": "–"}


def markdown(results: dict) -> str:
    """The side-by-side table (median per call and ratio to evokernel per method),
    then the targets and, when GA and random search both ran, the search efficiency."""
    ops = results["operators"]
    return "\n".join(_methods_table(results) + _targets_table(ops) + _search_table(ops) + _peers_table(ops)) + "\n"


def _methods_table(results: dict) -> list[str]:
    ops = results["operators"]
    names = list(dict.fromkeys(name for op in ops for name in op["methods"]))
    m, c = results.get("machine", {}), results.get("config", {})
    lines = [f"Measured {results.get('date', '')} on {m.get('cpu', '?')} ({m.get('threads', '?')} threads); "
             f"evokernel budget {c.get('budget', '?')} per operator ({c.get('evaluator', '?')} evaluator, "
             f"seed {c.get('seed', '?')}). Medians per call, side by side in one process; in brackets each "
             "method's time over evokernel's (above 1×: evokernel is faster). Every output was checked "
             "against the NumPy reference before timing. evokernel-call is the same kernel as evokernel "
             "through its public Python call; the spread over placements is evokernel's slowest median over "
             "its fastest on copies of its arrays at other offsets from a page boundary.",
             *_roofline_text(m), "",
             "| operator | " + " | ".join(names) + " | evokernel rate | evokernel % of roofline (compute\\|memory) "
             "| best other % of roofline | evokernel spread over placements |",
             "|---|" + "---:|" * (len(names) + 4)]
    for op in ops:
        cells = [_cell(op["methods"].get(name)) for name in names]
        lines.append(f"| {op['title']} | " + " | ".join(cells) + f" | {_rate(op)} | {_roof(op)} | {_peer(op)} | "
                     f"{_placements(op)} |")
    return lines


def _roofline_text(machine: dict) -> list[str]:
    """The machine's roofline, as measured in the run, and how the table uses it."""
    if not machine.get("roofline"):
        return []
    return ["", f"Roofline measured in the same run: {Roofline.from_dict(machine['roofline'])}. "
                "An operator's roofline time is the longer of its flops at the peak of its dtype and its bytes "
                "(each array once) at the bandwidth of the smallest level that holds them; % of roofline is "
                "that time over the method's."]


def _roof(op: dict) -> str:
    roof = op.get("roofline") or {}
    if roof.get("evokernel") is None:
        return "–"
    where = "compute" if roof["bound"] == "compute" else f"memory, {roof['level']}"
    return f"{_percent(roof['evokernel'])} ({where})"


def _placements(op: dict) -> str:
    """evokernel's spread over placements of its arrays, and its median on the slowest."""
    entry = op["methods"].get("evokernel", {})
    if "placement_spread" not in entry:
        return "–"
    return f"{_percent(entry['placement_spread'])} (slowest {_ms(max(entry['placement_ms']))})"


def _peer(op: dict) -> str:
    roof = op.get("roofline") or {}
    if roof.get("best_peer") is None:
        return "–"
    return f"{roof['best_peer']} {_percent(roof['best_peer_fraction'])}"


def _percent(fraction: float) -> str:
    return f"{fraction:.0%}" if fraction >= 0.1 else f"{fraction:.1%}"


def _targets_table(ops: list[dict]) -> list[str]:
    goals = [(op, t) for op in ops for t in op.get("targets", [])]
    if not goals:
        return []
    return ["", "Targets (ratio: the other method's time over evokernel's; for the early-speed goal, "
                "the GA's best time at the end over its best after the first third of its budget):", "",
            "| operator | goal | ratio | needed | met |", "|---|---|---:|---:|---|"] + [
        f"| {op['title']} | {t['goal']} | {t['ratio']:.2f} | ≥ {t['needed']:.2f} | "
        f"{'yes' if t['met'] else '**no**'} |" for op, t in goals]


def _search_table(ops: list[dict]) -> list[str]:
    searched = [op for op in ops if {"ga", "random"} <= set(op.get("search", {}))]
    if not searched:
        return []
    lines = ["", "Search efficiency, same budget: best time found by the GA and by random search, and how "
                 "many evaluations the GA needed to match random search's final best.", "",
             "| operator | GA best | random best | random / GA | GA evaluations | random evaluations "
             "| GA evaluations to match random |", "|---|---:|---:|---:|---:|---:|---:|"]
    for op in searched:
        ga, rnd = op["search"]["ga"], op["search"]["random"]
        lines.append(f"| {op['title']} | {_ms(ga['best_ms'])} | {_ms(rnd['best_ms'])} | "
                     f"{rnd['best_ms'] / ga['best_ms']:.2f}× | {ga['evaluations']} | {rnd['evaluations']} | "
                     f"{_to_match(ga['history_ms'], rnd['best_ms'])} |")
    return lines


def _peers_table(ops: list[dict]) -> list[str]:
    """Other tuners beside evokernel's GA: how many candidates each measured in the
    same budget, and the best time its own measurements found."""
    rows = [(op, name, entry) for op in ops for name, entry in op["methods"].items() if entry.get("kind") == "peer"]
    if not rows:
        return []
    lines = ["", "Other tuners, same budget: candidates measured, best time by their own measurement, and "
                 "evokernel's GA beside them.", "",
             "| operator | tuner | candidates | its best | GA evaluations | GA best |", "|---|---|---:|---:|---:|---:|"]
    for op, name, entry in rows:
        peer, ga = op.get("search", {}).get(name, {}), op.get("search", {}).get("ga", {})
        lines.append(f"| {op['title']} | {name} | {entry.get('trials', 0)} | {_ms(peer.get('best_ms'))} | "
                     f"{ga.get('evaluations', '–')} | {_ms(ga.get('best_ms'))} |")
    return lines


def _cell(entry: dict | None) -> str:
    if entry is None:
        return ""
    if "median_ms" not in entry:
        return STATUS_TEXT.get(entry.get("status"), entry.get("status", "?"))
    ratio = entry.get("ratio_to_evokernel")
    return _ms(entry["median_ms"]) + (f" ({ratio:.2f}×)" if ratio is not None else "")


def _ms(ms: float) -> str:
    return f"{ms * 1e3:.3g} µs" if ms < 0.1 else f"{ms:.3g} ms" if ms < 1000 else f"{ms / 1e3:.3g} s"


def _rate(op: dict) -> str:
    entry = op["methods"].get("evokernel", {})
    if "median_ms" not in entry:
        return "–"
    return f"{entry['gflops']:.1f} GFLOP/s" if op["metric"] == "flops" else f"{entry['gbps']:.1f} GB/s"


def _to_match(history_ms: list, target_ms: float) -> str:
    hit = next((i + 1 for i, t in enumerate(history_ms) if t is not None and t <= target_ms), None)
    return str(hit) if hit is not None else "not reached"


def write(results: dict, out: "str | Path", stem: str = "bench") -> list[Path]:
    """Write ``<stem>.json`` and ``<stem>.md`` (and ``<stem>.png``, ``<stem>_search.png``
    when matplotlib is installed) into ``out``; returns the paths written."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{stem}.json", out / f"{stem}.md"]
    paths[0].write_text(json.dumps(results, indent=1, allow_nan=False) + "\n")
    paths[1].write_text(markdown(results))
    return paths + _plots(results, out, stem)


def _plots(results: dict, out: Path, stem: str) -> list[Path]:
    try:
        import matplotlib
    except ImportError:
        return []
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = [_ratio_plot(plt, results, out / f"{stem}.png")]
    searched = [op for op in results["operators"] if op.get("search")]
    if searched:
        paths.append(_search_plot(plt, searched, out / f"{stem}_search.png"))
    return paths


def _ratio_plot(plt, results: dict, path: Path) -> Path:
    ops = results["operators"]
    names = [n for n in dict.fromkeys(n for op in ops for n in op["methods"]) if n != "evokernel"]
    fig, ax = plt.subplots(figsize=(10, 0.6 * len(ops) * max(1, len(names)) / 3 + 1.5))
    height = 0.8 / max(1, len(names))
    for i, name in enumerate(names):  # bars from 1 (evokernel) to each ratio, on a log scale
        bars = [(k + i * height, op["methods"].get(name, {}).get("ratio_to_evokernel")) for k, op in enumerate(ops)]
        bars = [(y, r) for y, r in bars if r]
        ax.barh([y for y, _ in bars], [r - 1 for _, r in bars], height, left=1, label=name)
    ax.axvline(1.0, color="black", linewidth=1)
    ax.set_xscale("log")
    ax.set_yticks([k + 0.4 - height / 2 for k in range(len(ops))], [op["title"] for op in ops])
    ax.invert_yaxis()
    ax.set_xlabel("time / evokernel time (right of 1: evokernel faster)")
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _search_plot(plt, ops: list[dict], path: Path) -> Path:
    fig, axes = plt.subplots(len(ops), 2, figsize=(10, 2.6 * len(ops)), squeeze=False)
    for row, op in zip(axes, ops):
        for strategy, curve in op["search"].items():
            best = [float("nan") if t is None else t for t in curve["history_ms"]]
            evaluations = curve.get("history_evaluations") or range(1, len(best) + 1)  # a peer's: per round
            row[0].plot(evaluations, best, label=strategy, drawstyle="steps-post")
            if curve.get("history_seconds"):
                row[1].plot(curve["history_seconds"], best, label=strategy, drawstyle="steps-post")
        row[0].set_title(f"{op['title']}: best vs evaluations", fontsize="small")
        row[1].set_title(f"{op['title']}: best vs wall seconds", fontsize="small")
        for ax in row:
            ax.set_yscale("log")
            ax.set_ylabel("best ms")
            ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
