"""`fastport bench --plot`: a bench run's results drawn one panel per question.

Each panel is drawn only where the results hold rows for it, so one load or many, one payload
or several, with or without open-loop rows, emulated or fanotify rows all give a full figure:

  Throughput against load (closed loop), one panel per transport and payload: a line per client
    and mode when a client ran at several loads of that mode (messages in flight on a linear
    axis; thread per message dashed with squares, asynchronous sends solid with circles), else
    bars grouped by load, each labelled with its rate.
  Latency against offered rate (open loop), one panel per transport, payload and load: p99
    solid, p50 dotted; each client's closed-loop throughput at that load, the rate where it
    saturates, marked by a triangle on the rate axis. A client that fell behind the offered rate
    (its latency then only says how long the run was) is a hollow marker in a band along the
    panel's top edge, one row per client, instead of a point off the scale.
  Client CPU per message (closed loop), bars grouped by case; the hatched part is the client's
    Python threads.

Colour is the client everywhere (one legend on top); transport, payload and load are in the
panel titles and axis labels. `fastport bench --plot-from RUN.json --plot RUN.png` redraws the
plot of a `--json` file.
"""
from __future__ import annotations

import json
from typing import Any, Callable, Optional

__all__ = ["plot", "load_results"]

_CLIENT_ORDER = ("pump", "pump-per-message", "c-reference", "python-loop")
_PALETTE = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown",
            "tab:pink", "tab:olive", "tab:cyan")
# load kinds: (x-axis order, line style, marker, legend text)
_KINDS = {
    "threads": (0, "--", "s", "thread per message"),
    "inflight": (1, "-", "o", "async sends"),
    "openers": (2, "-", "D", "opener processes"),
}
_NEEDED = {"client", "mode", "transport", "throughput", "latency_us"}
_BAND = 0.80  # share of a latency panel's height for the measured scale; above: fell behind


def load_results(path: str) -> tuple[list[dict], Optional[dict]]:
    """The result rows and the machine of a `fastport bench --json` file."""
    with open(path) as f:
        doc = json.load(f)
    if isinstance(doc, list):
        return doc, None
    if not isinstance(doc, dict) or not isinstance(doc.get("results"), list):
        raise ValueError(f"{path}: not a fastport bench --json file (no 'results' list)")
    return doc["results"], doc.get("machine")


def _rate(v: float, _: Any = None) -> str:
    """A rate as a tick reads it: 0, 950, 2.5k, 544k, 1.2M."""
    if v == 0:
        return "0"
    if abs(v) >= 1e6:
        return f"{v / 1e6:.3g}M"
    if abs(v) >= 1e3:
        return f"{v / 1e3:.3g}k"
    return f"{v:.3g}"


def _bytes(n: int) -> str:
    if n and n % 1024 == 0:
        return f"{n // 1024} KiB"
    return f"{n} B"


def _payload(p: Any) -> str:
    """'1 KiB', '1032 B', '16 B-4 KiB' (a range); '' for no payload (fanotify events)."""
    if isinstance(p, str) and ":" in p:
        lo, hi = p.split(":", 1)
        return f"{_bytes(int(lo))}-{_bytes(int(hi))}"
    return _bytes(int(p)) if p else ""


def _payload_key(p: Any) -> tuple:
    if isinstance(p, str) and ":" in p:
        lo, hi = p.split(":", 1)
        return (int(hi), int(lo))
    return (int(p or 0), int(p or 0))


def _kind(r: dict) -> str:
    if r.get("source") == "fanotify":
        return "openers"
    return "inflight" if r.get("inflight") else "threads"


def _count(r: dict) -> int:
    return int(r["inflight"]) if _kind(r) == "inflight" else int(r.get("senders") or 0)


def _load_key(r: dict) -> tuple:
    return (_KINDS[_kind(r)][0], _count(r))


def _load(r: dict) -> str:
    """'64 threads', '256 in flight', '4 openers'."""
    return {"threads": f"{_count(r)} threads", "inflight": f"{_count(r)} in flight",
            "openers": f"{_count(r)} openers"}[_kind(r)]


def _where(r: dict) -> str:
    """Transport and payload of a panel: 'inproc, 1 KiB', 'fanotify'."""
    if r.get("source") == "fanotify":
        return "fanotify"
    return ", ".join(x for x in (r["transport"], _payload(r.get("payload"))) if x)


def _fell_behind(r: dict) -> bool:
    if "saturated" in r:
        return bool(r["saturated"])
    return bool(r.get("rate")) and r["throughput"] < 0.95 * r["rate"]


def _group(rows: list[dict], key: Any) -> list[list[dict]]:
    out: dict[Any, list[dict]] = {}
    for r in rows:
        out.setdefault(key(r), []).append(r)
    return [out[k] for k in sorted(out)]


def _case(r: dict) -> tuple:
    return (r.get("source") or "", r["transport"], _payload_key(r.get("payload")))


def _series(rows: list[dict]) -> list[list[dict]]:
    """The rows of each client and load kind (mode)."""
    return _group(rows, lambda r: (r["client"], _KINDS[_kind(r)][0]))


def _several_loads(rows: list[dict]) -> bool:
    """Whether some client ran at several loads of one mode (then a line can be drawn)."""
    return any(len({_count(r) for r in s}) > 1 for s in _series(rows))


def _load_axis(ax: Any, rows: list[dict]) -> None:
    """A linear x axis of messages in flight, ticked at the loads measured."""
    right = max(_count(r) for r in rows) * 1.06
    ticks: list[int] = []
    for c in sorted({_count(r) for r in rows}, reverse=True):
        if not ticks or ticks[-1] - c >= 0.05 * right:  # labels that would touch are left out
            ticks.append(c)
    ax.set_xticks(sorted(ticks))
    ax.set_xticklabels([str(t) for t in sorted(ticks)])
    ax.set_xlim(0, right)
    ax.set_xlabel("opener processes" if rows[0].get("source") == "fanotify" else
                  "load: messages in flight (threads, or async sends)")


def _unit(rows: list[dict]) -> tuple[str, float]:
    """The latency unit fitting the rows' worst p99: ('s', 1e6), ('ms', 1e3) or ('us', 1.0)."""
    worst = max(r["latency_us"]["p99"] for r in rows)
    return ("s", 1e6) if worst >= 1e6 else ("ms", 1e3) if worst >= 1e3 else ("us", 1.0)


def _bars(ax: Any, groups: list[list[dict]], clients: list[str], colors: dict,
          value: Callable[[dict], float], label: Optional[Callable[[float], str]]
          ) -> tuple[list[float], float]:
    """Bars grouped along x, one group per list of rows and one bar per client in each, labelled
    label(value) above (no labels: None). Returns the x of each row's bar, in the order of
    `groups` flattened, and the bars' width."""
    here = [c for c in clients if any(r["client"] == c for g in groups for r in g)]
    width = 0.8 / len(here)
    where: dict[int, float] = {}
    for i, c in enumerate(here):
        pts = [(g - 0.4 + width * (i + 0.5), r) for g, grp in enumerate(groups) for r in grp
               if r["client"] == c]
        ys = [value(r) for _, r in pts]
        bars = ax.bar([x for x, _ in pts], ys, width * 0.92, color=colors[c])
        if label:
            ax.bar_label(bars, labels=[label(y) for y in ys], fontsize=8, padding=2)
        where.update((id(r), x) for x, r in pts)
    ax.set_xticks(range(len(groups)))
    pad = 0.6 if len(groups) == 1 else 0.0  # one group: bars of a readable width
    ax.set_xlim(-0.6 - pad, len(groups) - 0.4 + pad)
    return [where[id(r)] for g in groups for r in g], width * 0.92


def _throughput(ax: Any, rows: list[dict], clients: list[str], colors: dict) -> None:
    from matplotlib.lines import Line2D

    if _several_loads(rows):
        # a line per client and mode, on a linear axis of messages in flight
        for s in _series(rows):
            pts = sorted((_count(r), r["throughput"]) for r in s)
            _, ls, mk, _ = _KINDS[_kind(s[0])]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], ls=ls, marker=mk, ms=6,
                    color=colors[s[0]["client"]])
        _load_axis(ax, rows)
        kinds = sorted({_kind(r) for r in rows}, key=lambda k: _KINDS[k][0])
        ax.legend([Line2D([], [], color="0.3", ls=_KINDS[k][1], marker=_KINDS[k][2])
                   for k in kinds], [_KINDS[k][3] for k in kinds], loc="best", fontsize=8)
        top = max(r["throughput"] for r in rows)
    else:
        # one load per mode: bars grouped by load, each labelled with its rate
        loads = _group(rows, _load_key)
        _bars(ax, loads, clients, colors, lambda r: r["throughput"], _rate)
        ax.set_xticklabels([_load(g[0]) if _kind(g[0]) == "openers" else
                            f"{_load(g[0])}\n({_KINDS[_kind(g[0])][3]})" for g in loads])
        top = max(r["throughput"] for r in rows) * 1.12  # room for the labels
    ax.set_ylim(0, max(top * 1.05, 1.0))
    ax.set_ylabel("open events / s" if rows[0].get("source") == "fanotify" else "messages / s")
    ax.set_title(f"Throughput against load, closed loop: {_where(rows[0])}")


def _latency(ax: Any, rows: list[dict], closed: list[dict], clients: list[str],
             colors: dict) -> None:
    from matplotlib.lines import Line2D

    behind = [r for r in rows if _fell_behind(r)]
    kept = [r for r in rows if not _fell_behind(r)]
    unit, scale = _unit(kept or rows)
    worst = max(r["latency_us"]["p99"] for r in kept or rows)
    top = max(worst / scale, 1e-3) / _BAND  # the measured points fill the lower _BAND
    here = [c for c in clients if any(r["client"] == c for r in rows)]
    for c in here:
        pts = sorted((r["rate"], r["latency_us"]["p50"] / scale, r["latency_us"]["p99"] / scale)
                     for r in kept if r["client"] == c)
        if pts:
            xs = [p[0] for p in pts]
            ax.plot(xs, [p[2] for p in pts], ls="-", marker="o", ms=6, color=colors[c])
            ax.plot(xs, [p[1] for p in pts], ls=":", marker=".", ms=5, color=colors[c])
    # fell behind: hollow markers in a band along the top edge, one row per client
    band = ax.get_xaxis_transform()
    for i, c in enumerate(here):
        xs = [r["rate"] for r in behind if r["client"] == c]
        if xs:
            y = 0.96 - i * (0.96 - _BAND - 0.04) / max(len(here) - 1, 1)
            ax.plot(xs, [y] * len(xs), ls="none", marker="o", ms=8, mfc="white", mew=1.8,
                    color=colors[c], transform=band, clip_on=False)
    if behind:
        ax.axhline(top * (_BAND + 0.02), color="0.6", lw=0.8, ls="--")
        ax.text(0.01, (1 + _BAND) / 2, "fell behind:\nlatency grows\nwith the run", fontsize=7,
                transform=ax.transAxes, color="0.35", va="center")
    # the saturation point: each client's closed-loop throughput at this load, on the axis
    # when it is within 2.2 times the highest offered rate, else named at the right edge
    load, case = _load_key(rows[0]), _case(rows[0])
    sat = {r["client"]: r["throughput"] for r in closed
           if _case(r) == case and _load_key(r) == load and r["client"] in here}
    highest = max(r["rate"] for r in rows)
    right = max([highest] + [v for v in sat.values() if v <= 2.2 * highest]) * 1.06
    for c, v in sat.items():
        if v <= right:
            ax.plot([v], [0.0], ls="none", marker="^", ms=9, color=colors[c],
                    transform=band, clip_on=False, zorder=5)
    beyond = [f"{c} {_rate(v)}" for c, v in sat.items() if v > right]
    if beyond:
        ax.text(0.99, 0.03, "closed-loop max off the axis:\n" + ", ".join(beyond),
                transform=ax.transAxes, fontsize=8, ha="right", va="bottom", color="0.35")
    ax.set_xlim(0, right)
    ax.set_ylim(0, top)
    ax.xaxis.set_major_formatter(_rate)
    ax.set_xlabel("offered rate, messages / s")
    ax.set_ylabel(f"latency seen by the kernel, {unit}")
    ax.set_title(f"Latency against offered rate, open loop: {_where(rows[0])}, {_load(rows[0])}")
    handles = [Line2D([], [], color="0.3", ls="-", marker="o"),
               Line2D([], [], color="0.3", ls=":", marker=".")]
    labels = ["p99", "p50"]
    if sat:
        handles.append(Line2D([], [], color="0.3", ls="none", marker="^", ms=8))
        labels.append("closed-loop max")
    if behind:
        handles.append(Line2D([], [], color="0.3", ls="none", marker="o", mfc="white", mew=1.8))
        labels.append("fell behind")
    ax.legend(handles, labels, loc="best", fontsize=8, ncol=2)


def _latency_by_load(ax: Any, rows: list[dict], colors: dict) -> None:
    """Closed-loop latency against load, for results without open-loop rows."""
    from matplotlib.lines import Line2D

    unit, scale = _unit(rows)
    for s in _series(rows):
        pts = sorted((_count(r), r["latency_us"]["p50"] / scale, r["latency_us"]["p99"] / scale)
                     for r in s)
        mk, color = _KINDS[_kind(s[0])][2], colors[s[0]["client"]]
        ax.plot([p[0] for p in pts], [p[2] for p in pts], ls="-", marker=mk, ms=6, color=color)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], ls=":", marker=mk, ms=4, color=color)
    _load_axis(ax, rows)
    ax.set_ylim(0, max(max(r["latency_us"]["p99"] for r in rows) / scale * 1.08, 1e-3))
    who = "the opener" if rows[0].get("source") == "fanotify" else "the kernel"
    ax.set_ylabel(f"latency seen by {who}, {unit}")
    ax.set_title(f"Latency against load, closed loop: {_where(rows[0])}")
    kinds = sorted({_kind(r) for r in rows}, key=lambda k: _KINDS[k][0])
    handles = [Line2D([], [], color="0.3", ls="-"), Line2D([], [], color="0.3", ls=":")]
    labels = ["p99", "p50"]
    if len(kinds) > 1:
        handles += [Line2D([], [], color="0.3", ls="none", marker=_KINDS[k][2]) for k in kinds]
        labels += [_KINDS[k][3] for k in kinds]
    ax.legend(handles, labels, loc="best", fontsize=8)


def _cpu(ax: Any, rows: list[dict], clients: list[str], colors: dict) -> None:
    cases = _group(rows, lambda r: (_case(r), _load_key(r)))
    # a tick label names what differs between cases; what all share goes in the title
    parts = [(r["transport"], _load(r), _payload(r.get("payload"))) for r in (g[0] for g in cases)]
    varies = [len({p[i] for p in parts}) > 1 for i in range(3)]
    nbars = len(cases) * len({r["client"] for r in rows})
    xs, width = _bars(ax, cases, clients, colors, lambda r: r["cpu_us_per_msg"],
                      (lambda y: f"{y:.1f}" if y < 10 else f"{y:.0f}") if nbars <= 32 else None)
    ax.bar(xs, [min(r.get("python_us_per_msg") or 0.0, r["cpu_us_per_msg"])
                for g in cases for r in g], width, color="none", edgecolor="white",
           hatch="///", lw=0)
    if not any(varies):
        varies = [True] * 3  # one case: its tick names it
    ax.set_xticklabels([" ".join(x for x, v in zip(p, varies) if v) for p in parts],
                       rotation=0 if len(cases) <= 6 else 30,
                       ha="center" if len(cases) <= 6 else "right")
    ax.set_ylim(0, max(r["cpu_us_per_msg"] for r in rows) * 1.15 or 1.0)
    ax.set_ylabel("CPU us / message")
    shared = ", ".join(x for x, v in zip(parts[0], varies) if not v and x)
    ax.set_title("Client CPU per message, closed loop (all the client's threads; hatched: its "
                 f"Python threads){': ' + shared if shared else ''}")


def plot(path: str, results: list[dict], machine: Optional[dict] = None) -> list[str]:
    """Draw `results` (rows of `fastport bench`, emulated or fanotify) into the PNG at `path`:
    the panels of this module's docstring that the rows hold data for. `machine` (the JSON's)
    dates the figure. Returns the panels' titles, in order. ValueError when no row is a bench
    result (e.g. a --scan file)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    rows = [r for r in results if isinstance(r, dict) and _NEEDED <= r.keys()]
    if not rows:
        raise ValueError("no bench results to plot (rows need client, mode, throughput and "
                         "latency_us; a --scan file has none)")
    clients = [c for c in _CLIENT_ORDER if any(r["client"] == c for r in rows)]
    extra = sorted({r["client"] for r in rows} - set(clients))
    # a client has the same colour in every plot, whichever clients a run has
    colors = {c: _PALETTE[_CLIENT_ORDER.index(c)] for c in clients}
    colors.update((c, _PALETTE[len(_CLIENT_ORDER) + i % 5]) for i, c in enumerate(extra))
    clients += extra
    closed = [r for r in rows if r["mode"] != "open"]
    opened = [r for r in rows if r["mode"] == "open" and r.get("rate")]
    cpu = [r for r in closed if r.get("cpu_us_per_msg") is not None]

    panels: list[tuple] = [("throughput", g) for g in _group(closed, _case)]
    panels += [("latency", g) for g in _group(opened, lambda r: (_case(r), _load_key(r)))]
    if not opened:  # no offered rates: latency against load where there are several loads
        panels += [("latency_by_load", g) for g in _group(closed, _case) if _several_loads(g)]
    cols = 2 if len(panels) > 1 else 1
    grid = (len(panels) + cols - 1) // cols
    nrows = grid + (1 if cpu else 0)
    with plt.rc_context({"font.size": 10, "axes.titlesize": 10.5, "xtick.labelsize": 9,
                         "ytick.labelsize": 9, "axes.grid": True, "grid.alpha": 0.3}):
        fig = plt.figure(figsize=(12 if cols == 2 or cpu else 8, 0.7 + 3.6 * nrows),
                         constrained_layout=True)
        gs = fig.add_gridspec(nrows + 1, 2, height_ratios=[0.7 / 3.6] + [1.0] * nrows)
        for i, (kind, g) in enumerate(panels):
            row, col = divmod(i, cols)
            last_alone = i == len(panels) - 1 and cols == 2 and col == 0
            ax = fig.add_subplot(gs[row + 1, :] if cols == 1 or last_alone else gs[row + 1, col])
            ax.yaxis.set_major_formatter(_rate)
            if kind == "throughput":
                _throughput(ax, g, clients, colors)
            elif kind == "latency":
                _latency(ax, g, closed, clients, colors)
            else:
                _latency_by_load(ax, g, colors)
        if cpu:
            _cpu(fig.add_subplot(gs[nrows, :]), cpu, clients, colors)
        head = fig.add_subplot(gs[0, :])
        head.axis("off")
        title = "fastport bench"
        if machine:
            title += (f", {str(machine.get('date', ''))[:16].replace('T', ' ')} UTC: "
                      f"{machine.get('cpu', '?')}, {machine.get('cores', '?')} cores")
        head.set_title(title, fontsize=12)
        head.legend([Patch(color=colors[c]) for c in clients], clients, loc="center",
                    ncol=len(clients), frameon=False, fontsize=10)
        titles = [ax.get_title() for ax in fig.axes if ax is not head]
        fig.savefig(path, dpi=110)
        plt.close(fig)
    return titles
