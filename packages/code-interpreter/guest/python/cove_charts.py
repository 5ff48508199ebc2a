"""Chart data (`e2b/chart`) from a matplotlib Figure, as reference §5 describes e2b_charts.
Imported lazily, the first time a Figure is displayed."""
import math
import re

from matplotlib import dates as mdates
from matplotlib.collections import PathCollection
from matplotlib.lines import Line2D
from matplotlib.patches import PathPatch, Rectangle, Wedge
from matplotlib.text import Text

UNIT = re.compile(r"\s\((.+?)\)|\[(.+?)\]")


def _num(v):
    v = float(v)
    return v if math.isfinite(v) else None


def _sig(v):
    return float(f"{float(v):.8g}")


def _unit(label):
    m = UNIT.search(label or "")
    return (m.group(1) or m.group(2)) if m else None


def _is_date_axis(axis):
    conv = getattr(axis, "converter", None)
    fmt = axis.get_major_formatter()
    return isinstance(conv, (mdates.DateConverter, getattr(mdates, "_SwitchableDateConverter", mdates.DateConverter))) or isinstance(
        fmt, (mdates.AutoDateFormatter, mdates.DateFormatter, mdates.ConciseDateFormatter))


def _iso(v):
    return mdates.num2date(v).isoformat()


def _is_grid_line(line):
    x, y = line.get_xdata(), line.get_ydata()
    if len(x) != 2:
        return False
    return x[0] == x[1] or y[0] == y[1]


def _numeric(label):
    try:
        float(label.replace("\u2212", "-"))
        return True
    except ValueError:
        return False


def _base(ax, kind):
    title = ax.get_title() or None
    return {"type": kind, "title": title, "elements": []}


def _labels_2d(chart, ax, swap=False):
    xl, yl = ax.get_xlabel() or None, ax.get_ylabel() or None
    if swap:
        xl, yl = yl, xl
    chart.update({"x_label": xl, "y_label": yl, "x_unit": _unit(xl), "y_unit": _unit(yl)})


def _axis_fields(chart, ax, prefix, axis, ticks):
    date = _is_date_axis(axis)
    labels = [t.get_text() for t in (ax.get_xticklabels() if prefix == "x" else ax.get_yticklabels())]
    chart[f"{prefix}_ticks"] = [_iso(t) for t in ticks] if date else [_num(t) for t in ticks]
    chart[f"{prefix}_tick_labels"] = labels
    scale = (ax.get_xscale() if prefix == "x" else ax.get_yscale())
    if date:
        chart[f"{prefix}_scale"] = "datetime"
    elif scale != "linear":
        chart[f"{prefix}_scale"] = scale
    elif len(ticks) and all(float(t) == i for i, t in enumerate(ticks)) and any(l and not _numeric(l) for l in labels):
        chart[f"{prefix}_scale"] = "categorical"
    else:
        chart[f"{prefix}_scale"] = "linear"
    return date


def _point(v, date):
    return _iso(v) if date else _num(v)


def _xy_chart(ax, kind):
    chart = _base(ax, kind)
    _labels_2d(chart, ax)
    xdate = _axis_fields(chart, ax, "x", ax.xaxis, ax.get_xticks())
    ydate = _axis_fields(chart, ax, "y", ax.yaxis, ax.get_yticks())
    if kind == "line":
        for line in ax.get_lines():
            if _is_grid_line(line):
                continue
            label = line.get_label()
            if label.startswith("_child"):
                label = f"Line {label[6:]}"
            xy = line.get_xydata()
            chart["elements"].append({"label": label, "points": [[_point(x, xdate), _point(y, ydate)] for x, y in xy]})
    else:
        for coll in ax.collections:
            if not isinstance(coll, PathCollection):
                continue
            label = coll.get_label()
            if label.startswith("_child"):
                label = f"Scatter {label[6:]}"
            chart["elements"].append({"label": label, "points": [[_point(x, xdate), _point(y, ydate)] for x, y in coll.get_offsets()]})
    return chart


def _bar_chart(ax):
    chart = _base(ax, "bar")
    swap = False
    for container in ax.containers:
        group = container.get_label() or ""
        if group.startswith("_container"):
            group = f"Group {group[10:]}"
        rects = [r for r in container if isinstance(r, Rectangle)]
        heights = [r.get_height() for r in rects]
        if heights and all(h == heights[0] for h in heights):
            # Equal heights: horizontal bars (barh); the category axis is y.
            swap = True
            labels = [t.get_text() for t in ax.get_yticklabels()]
            values = [r.get_width() for r in rects]
        else:
            labels = [t.get_text() for t in ax.get_xticklabels()]
            values = heights
        for label, value in zip(labels, values):
            chart["elements"].append({"label": label, "value": _num(value), "group": group})
    _labels_2d(chart, ax, swap=swap)
    return chart


def _box_chart(ax):
    chart = _base(ax, "box_and_whisker")
    _labels_2d(chart, ax)
    labels = [t.get_text() for t in ax.get_xticklabels()]
    boxes = []
    for patch in ax.patches:
        if not isinstance(patch, PathPatch):
            continue
        v = patch.get_path().vertices
        boxes.append((float(v[:, 0].min()), float(v[:, 0].max()), float(v[:, 1].min()), float(v[:, 1].max())))
    boxes.sort()
    for i, (x0, x1, y0, y1) in enumerate(boxes):
        median, ends, outliers = None, [], []
        for line in ax.get_lines():
            xs, ys = line.get_xdata(), line.get_ydata()
            if len(xs) == 0 or min(xs) < x0 - 1e-9 or max(xs) > x1 + 1e-9:
                continue
            if line.get_linestyle() in ("None", "", " ") and line.get_marker() not in (None, "", "None"):
                outliers.extend(_sig(y) for y in ys)
            elif len(ys) == 2 and ys[0] == ys[1] and abs(min(xs) - x0) < 1e-9 and abs(max(xs) - x1) < 1e-9:
                median = float(ys[0])
            else:
                ends.extend(float(y) for y in ys)
        chart["elements"].append({
            "label": labels[i] if i < len(labels) else str(i + 1),
            "min": _sig(min(ends + [y0])),
            "first_quartile": _sig(y0),
            "median": _sig(median) if median is not None else None,
            "third_quartile": _sig(y1),
            "max": _sig(max(ends + [y1])),
            "outliers": outliers,
        })
    return chart


def _pie_chart(ax):
    chart = _base(ax, "pie")
    for w in ax.patches:
        if isinstance(w, Wedge):
            chart["elements"].append({"label": w.get_label(), "angle": round(abs(w.theta2 - w.theta1)), "radius": _num(w.r)})
    return chart


def axes_chart(ax):
    objects = [o for o in ax._children if not isinstance(o, Text)]
    if all(isinstance(o, Line2D) for o in objects):
        return _xy_chart(ax, "line")
    if all(isinstance(o, (PathPatch, Line2D)) for o in objects):
        return _box_chart(ax)
    objects = [o for o in objects if not (isinstance(o, Line2D) and _is_grid_line(o))]
    if objects and all(isinstance(o, PathCollection) for o in objects):
        return _xy_chart(ax, "scatter")
    if objects and all(isinstance(o, Wedge) for o in objects):
        return _pie_chart(ax)
    if objects and all(isinstance(o, Rectangle) for o in objects):
        return _bar_chart(ax)
    return _base(ax, "unknown")


def figure_chart(fig):
    try:
        axes = fig.get_axes()
        if not axes:
            return {}
        if fig.canvas is not None:
            fig.canvas.draw()  # tick labels exist only after a draw
        if len(axes) > 1:
            sup = getattr(fig, "_suptitle", None)
            return {"type": "superchart", "title": sup.get_text() if sup is not None else "", "elements": [axes_chart(a) for a in axes]}
        return axes_chart(axes[0])
    except Exception:
        return {}
