"""Inline SVG drawn on the server: the delivery chart."""

import re

from smsblast.templatetags.svg import line_chart_svg


def test_the_chart_shows_a_large_count_whole_inside_its_frame_in_the_given_format():
    svg = line_chart_svg(
        {"Telkomsel": [(0, 0), (60, 1_250_000)]}, x_labels=("a", "b"), y_format=lambda n: f"{n:,}".replace(",", ".")
    )
    label = re.search(r'<text x="([\d.]+)"[^>]*?(?: text-anchor="(\w+)")?[^>]*>1\.250\.000</text>', svg)
    assert label is not None
    # Anchored at its start inside the frame, a label of any length stays in view; anchored at its end left of
    # the axis, seven digits ran off the left edge.
    assert label.group(2) in (None, "start")
    assert float(label.group(1)) >= 0
