//! The report's SVG charts: the timeline of faults over the run's phases, and one chart per
//! probe, all on one time axis so that they line up on the page.
//!
//! Written by hand (rects, lines, polylines, text): the charts are simple, must carry class and
//! data attributes that tests and readers can find, and must not need fonts at build time. The
//! browser lays out the text, so sizes here are guesses of text width, used only to decide what
//! fits.

use crate::markup::{coord, millis, num, Markup};
use crate::model::{Breach, Fault, Report, Series, Steady};

/// Width of every chart, in SVG user units (about CSS pixels at the page's width).
pub(crate) const WIDTH: f64 = 1160.0;
/// Left gutter for row labels and the latency axis; the same in every chart so that times line up.
const LEFT: f64 = 190.0;
const RIGHT: f64 = 24.0;

/// Fill colours of faults, by index in the report: saturated, distinct from the pale phase
/// bands and from the green and red of probe samples.
const FAULT_COLOURS: [&str; 6] = [
    "#6741d9", "#1971c2", "#c2255c", "#0c8599", "#5c940d", "#862e9c",
];

pub(crate) fn fault_colour(idx: usize) -> &'static str {
    FAULT_COLOURS[idx % FAULT_COLOURS.len()]
}

/// Rough width of `text` at `size` px in a sans-serif font, to decide whether a label fits.
fn text_width(text: &str, size: f64) -> f64 {
    text.chars().count() as f64 * size * 0.6
}

/// Height of one fault's lane above a probe chart.
const LANE_H: f64 = 5.0;

/// `intervals` merged where they overlap, in order.
fn union(mut intervals: Vec<(f64, f64)>) -> Vec<(f64, f64)> {
    intervals.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut out: Vec<(f64, f64)> = Vec::new();
    for (from, to) in intervals {
        match out.last_mut() {
            Some(last) if from <= last.1 => last.1 = last.1.max(to),
            _ => out.push((from, to)),
        }
    }
    out
}

/// `text` cut to fit `width` at `size` px, with an ellipsis if it was cut.
fn fit(text: &str, width: f64, size: f64) -> String {
    let max = (width / (size * 0.6)).floor() as usize;
    if text.chars().count() <= max {
        text.to_string()
    } else {
        let mut s: String = text.chars().take(max.saturating_sub(1)).collect();
        s.push('…');
        s
    }
}

/// A step of 1, 2 or 5 × 10^k that cuts `range` into about `target` pieces.
fn nice_step(range: f64, target: f64) -> f64 {
    let raw = (range / target).max(f64::MIN_POSITIVE);
    let mag = 10f64.powf(raw.log10().floor());
    let norm = raw / mag;
    let nice = if norm <= 1.0 {
        1.0
    } else if norm <= 2.0 {
        2.0
    } else if norm <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * mag
}

fn ticks(max: f64, target: f64) -> Vec<f64> {
    let step = nice_step(max, target);
    let n = (max / step + 1e-9).floor() as usize;
    (0..=n).map(|i| i as f64 * step).collect()
}

/// Seconds since the run started ↦ x.
struct TimeScale {
    end: f64,
}

impl TimeScale {
    fn x(&self, t: f64) -> f64 {
        LEFT + (t.clamp(0.0, self.end) / self.end) * (WIDTH - LEFT - RIGHT)
    }

    fn width(&self, from: f64, to: f64) -> f64 {
        (self.x(to) - self.x(from)).max(1.0)
    }
}

fn phase_class(phase: &str) -> String {
    match phase {
        "baseline" | "chaos" | "recovery" => format!("phase-band phase-{phase}"),
        _ => "phase-band phase-other".into(),
    }
}

fn svg_open(m: &mut Markup, class: &str, height: f64, label: &str) {
    let view_box = format!("0 0 {} {}", coord(WIDTH), coord(height));
    m.open(
        "svg",
        &[
            ("xmlns", "http://www.w3.org/2000/svg"),
            ("class", class),
            ("viewBox", &view_box),
            ("role", "img"),
            ("aria-label", label),
        ],
    );
}

/// Phase bands from `top` to `bottom`, labelled at `label_y` if given and if the label fits.
fn phase_bands(
    m: &mut Markup,
    s: &TimeScale,
    steady: Option<&Steady>,
    top: f64,
    bottom: f64,
    label_y: Option<f64>,
) {
    let Some(steady) = steady else { return };
    for p in &steady.phases {
        let end = p.end.unwrap_or(s.end);
        let (x, w) = (s.x(p.start), s.width(p.start, end));
        let title = format!("{} phase: {} s → {} s", p.phase, num(p.start), num(end));
        m.open(
            "g",
            &[("class", &phase_class(&p.phase)), ("data-phase", &p.phase)],
        );
        m.elem("title", &[], &title);
        m.empty(
            "rect",
            &[
                ("x", &coord(x)),
                ("y", &coord(top)),
                ("width", &coord(w)),
                ("height", &coord(bottom - top)),
            ],
        );
        if let Some(y) = label_y {
            if text_width(&p.phase, 11.0) + 8.0 < w {
                m.elem(
                    "text",
                    &[
                        ("class", "phase-label"),
                        ("x", &coord(x + w / 2.0)),
                        ("y", &coord(y)),
                        ("text-anchor", "middle"),
                    ],
                    &p.phase,
                );
            }
        }
        m.close();
    }
}

/// Vertical grid lines and the time axis under the plot, with its labels.
fn time_axis(m: &mut Markup, s: &TimeScale, top: f64, axis_y: f64) {
    m.open("g", &[("class", "axis time-axis")]);
    for t in ticks(s.end, 10.0) {
        let x = coord(s.x(t));
        m.empty(
            "line",
            &[
                ("class", "grid"),
                ("x1", &x),
                ("x2", &x),
                ("y1", &coord(top)),
                ("y2", &coord(axis_y)),
            ],
        );
        m.empty(
            "line",
            &[
                ("class", "tick-mark"),
                ("x1", &x),
                ("x2", &x),
                ("y1", &coord(axis_y)),
                ("y2", &coord(axis_y + 5.0)),
            ],
        );
        m.elem(
            "text",
            &[
                ("class", "tick"),
                ("x", &x),
                ("y", &coord(axis_y + 18.0)),
                ("text-anchor", "middle"),
            ],
            &format!("{} s", num(t)),
        );
    }
    m.empty(
        "line",
        &[
            ("class", "axis-line"),
            ("x1", &coord(LEFT)),
            ("x2", &coord(WIDTH - RIGHT)),
            ("y1", &coord(axis_y)),
            ("y2", &coord(axis_y)),
        ],
    );
    m.elem(
        "text",
        &[
            ("class", "axis-title"),
            ("x", &coord(LEFT - 26.0)),
            ("y", &coord(axis_y + 18.0)),
            ("text-anchor", "end"),
        ],
        "seconds since start",
    );
    m.close();
}

/// A red vertical line per breach with a time: the moment the run was told to abort.
fn abort_markers(
    m: &mut Markup,
    s: &TimeScale,
    breaches: &[Breach],
    top: f64,
    bottom: f64,
    label_y: Option<f64>,
) {
    for b in breaches {
        let Some(t) = b.t else { continue };
        let x = s.x(t);
        m.open(
            "g",
            &[
                ("class", "abort-marker"),
                ("data-probe", &b.probe),
                ("data-t-seconds", &num(t)),
            ],
        );
        m.elem(
            "title",
            &[],
            &format!(
                "abort at {} s: probe {} breached: {}",
                num(t),
                b.probe,
                b.reason.as_deref().unwrap_or("")
            ),
        );
        m.empty(
            "line",
            &[
                ("x1", &coord(x)),
                ("x2", &coord(x)),
                ("y1", &coord(top)),
                ("y2", &coord(bottom)),
            ],
        );
        if let Some(y) = label_y {
            let label = format!("abort ({})", b.probe);
            // Keep the label inside the chart: to the left of the line near the right edge.
            let (lx, anchor) = if x + text_width(&label, 11.0) + 6.0 > WIDTH - RIGHT {
                (x - 4.0, "end")
            } else {
                (x + 4.0, "start")
            };
            m.elem(
                "text",
                &[("x", &coord(lx)), ("y", &coord(y)), ("text-anchor", anchor)],
                &label,
            );
        }
        m.close();
    }
}

fn target_title(
    fault: &Fault,
    label: &str,
    from: f64,
    to: Option<f64>,
    summary: Option<&str>,
) -> String {
    let to = to.map_or_else(|| "not recovered".to_string(), |t| format!("{} s", num(t)));
    let mut s = format!("{}: {label}: {} s → {to}", fault.name, num(from));
    if let Some(summary) = summary {
        s.push_str(": ");
        s.push_str(summary);
    }
    s
}

/// The timeline: one row per fault, the planned window outlined, each target's injected →
/// recovered window shaded, over the phase bands, with the abort moment if any.
pub(crate) fn timeline(m: &mut Markup, r: &Report) {
    let s = TimeScale { end: r.time_span() };
    let steady = r.steady.as_ref();
    let top = 8.0;
    // Phase labels, then abort labels, above the rows.
    let rows_top = top + 36.0;
    // Per fault: (row top, lane height, row height).
    let mut layout = Vec::with_capacity(r.faults.len());
    let mut y = rows_top;
    for f in &r.faults {
        let lanes = f.targets.len().max(1) as f64;
        let lane_h = if lanes <= 6.0 {
            18.0
        } else {
            (108.0 / lanes).max(3.0)
        };
        let row_h = (lanes * lane_h + 14.0).max(40.0);
        layout.push((y, lane_h, row_h));
        y += row_h;
    }
    if r.faults.is_empty() {
        y += 40.0;
    }
    let axis_y = y;
    let height = axis_y + 30.0;
    svg_open(
        m,
        "timeline",
        height,
        "Timeline of the faults over the phases of the run",
    );
    phase_bands(m, &s, steady, top, axis_y, Some(top + 13.0));
    time_axis(m, &s, rows_top, axis_y);
    if r.faults.is_empty() {
        m.elem(
            "text",
            &[
                ("class", "note"),
                ("x", &coord(LEFT + 10.0)),
                ("y", &coord(rows_top + 24.0)),
            ],
            "no faults in this report",
        );
    }
    for (idx, (f, &(row_top, lane_h, row_h))) in r.faults.iter().zip(&layout).enumerate() {
        let colour = fault_colour(idx);
        m.open("g", &[("class", "fault-row"), ("data-fault", &f.name)]);
        m.empty(
            "line",
            &[
                ("class", "row-sep"),
                ("x1", "0"),
                ("x2", &coord(WIDTH - RIGHT)),
                ("y1", &coord(row_top + row_h)),
                ("y2", &coord(row_top + row_h)),
            ],
        );
        // Row label: name, then kind and request.
        let mid = row_top + row_h / 2.0;
        m.open(
            "text",
            &[("class", "row-label"), ("x", "8"), ("y", &coord(mid - 3.0))],
        );
        m.elem("title", &[], &f.name);
        m.text(&fit(&f.name, LEFT - 16.0, 13.0));
        m.close();
        let sub = [f.kind.as_deref(), f.requested.as_deref()]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" · ");
        m.elem(
            "text",
            &[("class", "row-sub"), ("x", "8"), ("y", &coord(mid + 12.0))],
            &fit(&sub, LEFT - 16.0, 11.0),
        );
        // The planned window, outlined around the whole row.
        if let (Some(start), Some(dur)) = (f.start_offset_seconds, f.planned_duration_seconds) {
            m.open("g", &[("class", "planned-window"), ("data-fault", &f.name)]);
            m.elem(
                "title",
                &[],
                &format!(
                    "{} planned: {} s → {} s",
                    f.name,
                    num(start),
                    num(start + dur)
                ),
            );
            m.empty(
                "rect",
                &[
                    ("x", &coord(s.x(start))),
                    ("y", &coord(row_top + 3.0)),
                    ("width", &coord(s.width(start, start + dur))),
                    ("height", &coord(row_h - 6.0)),
                ],
            );
            m.close();
        }
        let lanes_top = row_top + (row_h - f.targets.len() as f64 * lane_h) / 2.0;
        for (ti, t) in f.targets.iter().enumerate() {
            let lane_y = lanes_top + ti as f64 * lane_h;
            let Some(from) = t.injected_at else {
                let x = f.start_offset_seconds.map_or(LEFT, |o| s.x(o));
                m.elem(
                    "text",
                    &[
                        ("class", "not-injected"),
                        ("data-fault", &f.name),
                        ("data-target", &t.label),
                        ("x", &coord(x + 4.0)),
                        ("y", &coord(lane_y + lane_h * 0.75)),
                    ],
                    &format!("{}: not injected", t.label),
                );
                continue;
            };
            let to = t.recovered_at.unwrap_or(s.end);
            let class = if t.recovered_at.is_some() {
                "fault-window"
            } else {
                "fault-window not-recovered"
            };
            let w = s.width(from, to);
            let (rect_y, rect_h) = (lane_y + 1.0, (lane_h - 2.0).max(1.0));
            m.open(
                "g",
                &[
                    ("class", class),
                    ("data-fault", &f.name),
                    ("data-target", &t.label),
                ],
            );
            m.elem(
                "title",
                &[],
                &target_title(f, &t.label, from, t.recovered_at, t.summary.as_deref()),
            );
            m.empty(
                "rect",
                &[
                    ("x", &coord(s.x(from))),
                    ("y", &coord(rect_y)),
                    ("width", &coord(w)),
                    ("height", &coord(rect_h)),
                    ("fill", colour),
                ],
            );
            let label = if t.recovered_at.is_some() {
                t.label.clone()
            } else {
                format!("{} (not recovered)", t.label)
            };
            if lane_h >= 14.0 && text_width(&label, 11.0) + 8.0 < w {
                m.elem(
                    "text",
                    &[
                        ("x", &coord(s.x(from) + 4.0)),
                        ("y", &coord(rect_y + rect_h / 2.0 + 4.0)),
                    ],
                    &label,
                );
            }
            m.close();
        }
        m.close();
    }
    if let Some(st) = steady {
        abort_markers(m, &s, &st.breaches, top + 18.0, axis_y, Some(top + 30.0));
    }
    m.close();
}

/// A fault that took effect, in the lanes above a probe chart.
struct FaultLane<'a> {
    /// Its index in the report, which picks its colour.
    colour: usize,
    fault: &'a Fault,
    /// When it was in effect on any of its targets.
    windows: Vec<(f64, f64)>,
}

/// One probe's chart: latency over time as a line and points (green ok, red failed), a strip
/// of ok/failed marks under it, over the phase bands with every fault window shaded behind.
pub(crate) fn probe_chart(m: &mut Markup, r: &Report, steady: &Steady, series: &Series) {
    let s = TimeScale { end: r.time_span() };
    let lanes: Vec<FaultLane> = r
        .faults
        .iter()
        .enumerate()
        .filter_map(|(idx, f)| {
            let windows: Vec<(f64, f64)> = f
                .targets
                .iter()
                .filter_map(|t| Some((t.injected_at?, t.recovered_at.unwrap_or(s.end))))
                .collect();
            (!windows.is_empty()).then(|| FaultLane {
                colour: idx,
                fault: f,
                windows: union(windows),
            })
        })
        .collect();
    let lanes_top = 6.0;
    let plot_top = lanes_top + lanes.len() as f64 * (LANE_H + 1.0) + 4.0;
    let plot_h = 150.0;
    let plot_bottom = plot_top + plot_h;
    let strip_top = plot_bottom + 8.0;
    let strip_h = 14.0;
    let axis_y = strip_top + strip_h + 4.0;
    let height = axis_y + 30.0;
    let max_latency = series
        .samples
        .iter()
        .filter_map(|x| x.latency_ms)
        .fold(0.0, f64::max);
    let top_value = if max_latency > 0.0 {
        max_latency * 1.05
    } else {
        1.0
    };
    let step = nice_step(top_value, 4.0);
    let y_max = (top_value / step).ceil() * step;
    let y_ticks: Vec<f64> = (0..=(y_max / step).round() as usize)
        .map(|i| i as f64 * step)
        .collect();
    let y = |ms: f64| plot_bottom - (ms.clamp(0.0, y_max) / y_max) * plot_h;

    svg_open(
        m,
        "probe-chart",
        height,
        &format!("Latency and outcome of probe {} over time", series.probe),
    );
    phase_bands(m, &s, Some(steady), plot_top, plot_bottom, None);
    // Every moment a fault was in effect, shaded behind the samples; which fault, in the lanes
    // above the plot.
    let mut all = Vec::new();
    for (i, lane) in lanes.iter().enumerate() {
        let (f, lane_y) = (lane.fault, lanes_top + i as f64 * (LANE_H + 1.0));
        for &(from, to) in &lane.windows {
            m.open("g", &[("class", "fault-lane"), ("data-fault", &f.name)]);
            m.elem(
                "title",
                &[],
                &format!("{} in effect: {} s → {} s", f.name, num(from), num(to)),
            );
            m.empty(
                "rect",
                &[
                    ("x", &coord(s.x(from))),
                    ("y", &coord(lane_y)),
                    ("width", &coord(s.width(from, to))),
                    ("height", &coord(LANE_H)),
                    ("fill", fault_colour(lane.colour)),
                ],
            );
            m.close();
            all.push((from, to));
        }
    }
    for (from, to) in union(all) {
        m.open("g", &[("class", "fault-shade")]);
        m.elem(
            "title",
            &[],
            &format!("faults in effect: {} s → {} s", num(from), num(to)),
        );
        m.empty(
            "rect",
            &[
                ("x", &coord(s.x(from))),
                ("y", &coord(plot_top)),
                ("width", &coord(s.width(from, to))),
                ("height", &coord(plot_h)),
            ],
        );
        m.close();
    }
    time_axis(m, &s, plot_top, axis_y);
    // Latency axis.
    m.open("g", &[("class", "axis latency-axis")]);
    for &v in &y_ticks {
        let yy = coord(y(v));
        m.empty(
            "line",
            &[
                ("class", "grid"),
                ("x1", &coord(LEFT)),
                ("x2", &coord(WIDTH - RIGHT)),
                ("y1", &yy),
                ("y2", &yy),
            ],
        );
        m.elem(
            "text",
            &[
                ("class", "tick"),
                ("x", &coord(LEFT - 8.0)),
                ("y", &coord(y(v) + 4.0)),
                ("text-anchor", "end"),
            ],
            &millis_tick(v),
        );
    }
    m.empty(
        "line",
        &[
            ("class", "axis-line"),
            ("x1", &coord(LEFT)),
            ("x2", &coord(LEFT)),
            ("y1", &coord(plot_top)),
            ("y2", &coord(plot_bottom)),
        ],
    );
    let title_x = coord(LEFT - 78.0);
    let title_y = coord(plot_top + plot_h / 2.0);
    m.elem(
        "text",
        &[
            ("class", "axis-title"),
            ("x", &title_x),
            ("y", &title_y),
            ("text-anchor", "middle"),
            ("transform", &format!("rotate(-90 {title_x} {title_y})")),
        ],
        "latency (ms)",
    );
    m.elem(
        "text",
        &[
            ("class", "axis-title"),
            ("x", &coord(LEFT - 8.0)),
            ("y", &coord(strip_top + 11.0)),
            ("text-anchor", "end"),
        ],
        "ok / failed",
    );
    m.close();

    // The samples: a line through them, a point each, and a mark each in the strip.
    let points: Vec<String> = series
        .samples
        .iter()
        .filter_map(|x| Some(format!("{},{}", coord(s.x(x.t)), coord(y(x.latency_ms?)))))
        .collect();
    m.open(
        "g",
        &[("class", "probe-series"), ("data-probe", &series.probe)],
    );
    if points.len() > 1 {
        m.empty(
            "polyline",
            &[("class", "probe-line"), ("points", &points.join(" "))],
        );
    }
    let mark_w = series
        .interval_ms
        .map_or(2.0, |i| (s.width(0.0, i / 1000.0) * 0.7).clamp(1.0, 6.0));
    for x in &series.samples {
        let class = if x.ok { "sample ok" } else { "sample fail" };
        let cx = s.x(x.t);
        m.open("g", &[("class", class), ("data-t-seconds", &num(x.t))]);
        m.elem("title", &[], &sample_title(x));
        m.empty(
            "circle",
            &[
                ("cx", &coord(cx)),
                ("cy", &coord(y(x.latency_ms.unwrap_or(0.0)))),
                ("r", if x.ok { "3" } else { "3.5" }),
            ],
        );
        m.empty(
            "rect",
            &[
                ("class", "sample-mark"),
                ("x", &coord(cx - mark_w / 2.0)),
                ("y", &coord(strip_top)),
                ("width", &coord(mark_w)),
                ("height", &coord(strip_h)),
            ],
        );
        m.close();
    }
    m.close();
    abort_markers(m, &s, &steady.breaches, plot_top, axis_y, None);
    m.close();
}

fn millis_tick(v: f64) -> String {
    format!("{} ms", num(v))
}

fn sample_title(x: &crate::model::Sample) -> String {
    let mut s = format!("{} s", num(x.t));
    if let Some(p) = &x.phase {
        s.push_str(&format!(" ({p})"));
    }
    s.push_str(if x.ok { ": ok" } else { ": FAILED" });
    if let Some(l) = x.latency_ms {
        s.push_str(&format!(" in {}", millis(l)));
    }
    if let Some(v) = x.value {
        s.push_str(&format!(", value {}", num(v)));
    }
    if let Some(e) = &x.error {
        s.push_str(": ");
        s.push_str(e);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_numbers() {
        assert_eq!(ticks(6.02, 10.0), vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        assert_eq!(ticks(95.0, 10.0).last(), Some(&90.0));
        assert_eq!(nice_step(0.3, 4.0), 0.1);
    }

    #[test]
    fn windows_merge_where_they_overlap() {
        let u = union(vec![(3.0, 4.0), (1.0, 2.0), (1.5, 2.5), (2.5, 2.6)]);
        assert_eq!(u, vec![(1.0, 2.6), (3.0, 4.0)]);
    }

    #[test]
    fn long_labels_are_cut_with_an_ellipsis() {
        assert_eq!(fit("short", 100.0, 10.0), "short");
        let cut = fit("a-very-long-fault-name-that-does-not-fit", 60.0, 10.0);
        assert_eq!(cut.chars().count(), 10);
        assert!(cut.ends_with('…'));
    }
}
