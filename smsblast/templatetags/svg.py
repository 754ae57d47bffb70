"""Inline SVG drawings for pages: area boundaries from GeoJSON and delivery lines over time; no Django import.

Boundaries are projected equirectangularly with longitude scaled by cos(mid-latitude), which keeps shapes
true at Indonesia's latitudes without any tile server or map library.
"""

import math
from html import escape

MAP_WIDTH = 400
CHART_WIDTH, CHART_HEIGHT, CHART_PAD = 600, 220, 36
# Colour-blind friendly (Okabe-Ito) series colours.
SERIES_COLOURS = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")


def _rings(geometry: dict) -> list[list]:
    """Return every ring of a Polygon or MultiPolygon (a Feature or FeatureCollection is unwrapped)."""
    if not isinstance(geometry, dict):
        return []
    kind = geometry.get("type")
    if kind == "FeatureCollection":
        return [ring for feature in geometry.get("features") or [] for ring in _rings(feature)]
    if kind == "Feature":
        return _rings(geometry.get("geometry") or {})
    coordinates = geometry.get("coordinates") or []
    if kind == "Polygon":
        return [ring for ring in coordinates if len(ring) >= 3]
    if kind == "MultiPolygon":
        return [ring for polygon in coordinates for ring in polygon if len(ring) >= 3]
    return []


def boundary_svg(shapes: list[tuple[str, dict]], *, title: str = "") -> str:
    """Return an <svg> drawing each (label, GeoJSON geometry) pair as a path, or "" when none has a boundary."""
    drawn = [(label, _rings(geometry)) for label, geometry in shapes]
    drawn = [(label, rings) for label, rings in drawn if rings]
    if not drawn:
        return ""
    points = [(float(x), float(y)) for _, rings in drawn for ring in rings for x, y, *_ in ring]
    min_x, max_x = min(p[0] for p in points), max(p[0] for p in points)
    min_y, max_y = min(p[1] for p in points), max(p[1] for p in points)
    x_scale = math.cos(math.radians((min_y + max_y) / 2))
    span_x = max((max_x - min_x) * x_scale, 1e-6)
    span_y = max(max_y - min_y, 1e-6)
    scale = MAP_WIDTH / max(span_x, span_y)
    width, height = span_x * scale, span_y * scale
    pad = 6
    paths = []
    for label, rings in drawn:
        d = " ".join(
            "M"
            + " L".join(
                f"{(x - min_x) * x_scale * scale + pad:.1f},{(max_y - y) * scale + pad:.1f}" for x, y, *_ in ring
            )
            + " Z"
            for ring in rings
        )
        paths.append(f'<path d="{d}" fill-rule="evenodd"><title>{escape(label)}</title></path>')
    return (
        f'<svg class="map" role="img" aria-label="{escape(title)}"'
        f' viewBox="0 0 {width + 2 * pad:.0f} {height + 2 * pad:.0f}"'
        f' xmlns="http://www.w3.org/2000/svg">{"".join(paths)}</svg>'
    )


def line_chart_svg(
    series: dict[str, list[tuple[float, int]]], *, title: str = "", x_labels=("", ""), y_format=str
) -> str:
    """Return an <svg> line chart of cumulative counts; `series` maps a name to (seconds, count) points.

    The x axis runs from the first to the last point of any series; `x_labels` are shown at its ends, the
    highest count, written by `y_format`, at the top of the y axis.
    """
    points = [point for values in series.values() for point in values]
    if not points:
        return ""
    min_t = min(t for t, _ in points)
    max_t = max(max(t for t, _ in points), min_t + 1)
    max_v = max(max(v for _, v in points), 1)
    inner_w, inner_h = CHART_WIDTH - 2 * CHART_PAD, CHART_HEIGHT - 2 * CHART_PAD

    def x(t: float) -> float:
        return CHART_PAD + (t - min_t) / (max_t - min_t) * inner_w

    def y(v: float) -> float:
        return CHART_HEIGHT - CHART_PAD - v / max_v * inner_h

    lines = []
    for index, (name, values) in enumerate(sorted(series.items())):
        colour = SERIES_COLOURS[index % len(SERIES_COLOURS)]
        coords = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in sorted(values))
        lines.append(
            f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{coords}"><title>{escape(name)}</title>'
            "</polyline>"
        )
    axis = (
        f'<line x1="{CHART_PAD}" y1="{CHART_HEIGHT - CHART_PAD}" x2="{CHART_WIDTH - CHART_PAD}"'
        f' y2="{CHART_HEIGHT - CHART_PAD}" stroke="#999"/>'
        f'<line x1="{CHART_PAD}" y1="{CHART_PAD}" x2="{CHART_PAD}" y2="{CHART_HEIGHT - CHART_PAD}" stroke="#999"/>'
        f'<text x="{CHART_PAD + 4}" y="{CHART_PAD - 6}" font-size="11">{escape(y_format(max_v))}</text>'
        f'<text x="{CHART_PAD - 4}" y="{CHART_HEIGHT - CHART_PAD}" text-anchor="end" font-size="11">0</text>'
        f'<text x="{CHART_PAD}" y="{CHART_HEIGHT - 12}" font-size="11">{escape(x_labels[0])}</text>'
        f'<text x="{CHART_WIDTH - CHART_PAD}" y="{CHART_HEIGHT - 12}" text-anchor="end" font-size="11">'
        f"{escape(x_labels[1])}</text>"
    )
    return (
        f'<svg class="chart" role="img" aria-label="{escape(title)}" viewBox="0 0 {CHART_WIDTH} {CHART_HEIGHT}"'
        f' xmlns="http://www.w3.org/2000/svg">{axis}{"".join(lines)}</svg>'
    )


def series_colours(names) -> dict[str, str]:
    """Return the colour line_chart_svg gives each series name."""
    return {name: SERIES_COLOURS[index % len(SERIES_COLOURS)] for index, name in enumerate(sorted(names))}
