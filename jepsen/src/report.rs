//! The run's report: a [`Summary`] (written as JSON by the runtime), a short
//! text summary for the terminal, and one self-contained HTML page with
//! latency and throughput charts.
//!
//! Fault windows come from the nemesis entries of the history
//! ([`fault_windows`]); write unavailability after leader faults is measured
//! from them ([`write_unavailability`]). Times are the history's milliseconds
//! since the test started, shown in seconds on the charts.
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;

use plotters::prelude::*;
use serde::Serialize;

use crate::checker::Verdict;
use crate::history::{self, Op, OpType, Value, F, NEMESIS};

/// What the runtime knows about the run, before looking at the history.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunInfo {
    /// The test's name, e.g. `silo-queue`.
    pub test_name: String,
    /// The generator's seed; the same seed replays the same schedule.
    pub seed: u64,
    /// The nodes, e.g. `["n1", "n2", "n3"]`.
    pub nodes: Vec<String>,
    /// How long the workload ran, in seconds (before heal and drain).
    pub time_limit_s: u64,
    /// The nemeses enabled, e.g. `["partition-majority", "kill"]`.
    pub nemeses: Vec<String>,
    /// The command line that reproduces the run (same seed and options).
    pub command: String,
}

/// How many history entries had one `f` and one type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OpCount {
    pub f: F,
    /// `invoke`, `ok`, `fail` or `info` (an entry's own type: an invoke that
    /// never completed counts once, as `invoke`).
    #[serde(rename = "type")]
    pub kind: OpType,
    pub count: usize,
}

/// One fault, from its StartFault to its StopFault.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FaultWindow {
    /// The nemesis, e.g. `kill`.
    pub nemesis: String,
    /// What was done, from the StartFault entry.
    pub detail: String,
    /// The node that led when the fault began, for leader faults.
    pub leader: Option<String>,
    /// The first StartFault entry's time (ms): the fault may act from then.
    pub start_ms: f64,
    /// The last StopFault entry's time (ms), None when never stopped (then the
    /// fault lasts to the end of the history).
    pub stop_ms: Option<f64>,
}

/// Writes unavailable after a fault aimed at the leader.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UnavailabilityWindow {
    /// The nemesis of the leader fault.
    pub nemesis: String,
    /// The leader it was aimed at.
    pub leader: String,
    /// The fault's start (ms).
    pub start_ms: f64,
    /// The completion (ms) of the first ok Enqueue invoked at or after the
    /// start (the earliest such completion); None if no enqueue succeeded
    /// after it.
    pub end_ms: Option<f64>,
    /// `end_ms - start_ms`, or up to the end of the history when `end_ms` is
    /// None (then a lower bound).
    pub duration_ms: f64,
}

/// Everything a run's report says, written by the runtime as `summary.json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// Name, seed, nodes, time limit, nemeses and the command to reproduce.
    #[serde(flatten)]
    pub run: RunInfo,
    /// The overall verdict: every checker valid.
    pub valid: bool,
    /// The checkers' verdicts, in the order they ran.
    pub verdicts: Vec<Verdict>,
    /// History entries by (f, type), sorted by f then type.
    pub op_counts: Vec<OpCount>,
    /// The faults applied, in start order.
    pub faults: Vec<FaultWindow>,
    /// Write unavailability after each leader fault.
    pub unavailability: Vec<UnavailabilityWindow>,
    /// Median of the unavailability durations (ms), None when there are none.
    pub unavailability_median_ms: Option<f64>,
    /// Maximum of the unavailability durations (ms).
    pub unavailability_max_ms: Option<f64>,
    /// The history's length in ms (time of its last entry).
    pub duration_ms: f64,
}

impl Summary {
    /// Builds the summary of `history` judged by `verdicts`.
    pub fn new(run: RunInfo, history: &[Op], verdicts: Vec<Verdict>) -> Summary {
        let unavailability = write_unavailability(history);
        Summary {
            run,
            valid: verdicts.iter().all(|v| v.valid),
            verdicts,
            op_counts: op_counts(history),
            faults: fault_windows(history),
            unavailability_median_ms: median_ms(&unavailability),
            unavailability_max_ms: max_ms(&unavailability),
            unavailability,
            duration_ms: end_ms(history),
        }
    }
}

fn end_ms(history: &[Op]) -> f64 {
    history.iter().map(|o| o.time_ms).fold(0.0, f64::max)
}

fn type_order(t: OpType) -> u8 {
    match t {
        OpType::Invoke => 0,
        OpType::Ok => 1,
        OpType::Fail => 2,
        OpType::Info => 3,
    }
}

/// Counts history entries by (f, type), sorted by f then type.
pub fn op_counts(history: &[Op]) -> Vec<OpCount> {
    let mut counts: BTreeMap<(F, u8), (OpType, usize)> = BTreeMap::new();
    for op in history {
        counts.entry((op.f, type_order(op.kind))).or_insert((op.kind, 0)).1 += 1;
    }
    counts.into_iter().map(|((f, _), (kind, count))| OpCount { f, kind, count }).collect()
}

/// One nemesis action: an invoke and its completion, or a lone entry.
struct NemesisAction<'a> {
    f: F,
    first: &'a Op,
    last: &'a Op,
}

impl NemesisAction<'_> {
    /// The Fault value: the last entry's, else the first's.
    fn fault(&self) -> Option<(&str, &str, Option<&str>)> {
        fn get(op: &Op) -> Option<(&str, &str, Option<&str>)> {
            match &op.value {
                Value::Fault { nemesis, detail, leader } => {
                    Some((nemesis.as_str(), detail.as_str(), leader.as_deref()))
                }
                _ => None,
            }
        }
        match (get(self.first), get(self.last)) {
            (Some(a), Some(b)) => Some((b.0, b.1, b.2.or(a.2))),
            (a, b) => b.or(a),
        }
    }
}

/// The fault windows of `history`, in start order.
///
/// Nemesis entries (process [`NEMESIS`], f StartFault / StopFault, value
/// [`Value::Fault`]) may be recorded as an invoke followed by a completion,
/// or as single entries; an invoke is paired with the next completion of the
/// same f and nemesis name. A StartFault whose completion is `fail` applied
/// nothing and is skipped. A window runs from the StartFault's first entry to
/// the last entry of the next StopFault of the same nemesis name, or to the
/// end of the history. A StartFault of a nemesis whose window is open changes
/// that fault (the clock nemesis jumps back half-way): its detail is appended
/// to the open window's. A StopFault with no open window of its name (a fault
/// that was not applied) is ignored.
pub fn fault_windows(history: &[Op]) -> Vec<FaultWindow> {
    let mut actions: Vec<NemesisAction<'_>> = Vec::new();
    let mut open: HashMap<(F, String), usize> = HashMap::new();
    for op in history.iter().filter(|o| o.process == NEMESIS && matches!(o.f, F::StartFault | F::StopFault)) {
        let name = match &op.value {
            Value::Fault { nemesis, .. } => nemesis.clone(),
            _ => String::new(),
        };
        if op.kind == OpType::Invoke {
            open.insert((op.f, name), actions.len());
            actions.push(NemesisAction { f: op.f, first: op, last: op });
        } else if let Some(i) = open.remove(&(op.f, name)) {
            actions[i].last = op;
        } else {
            actions.push(NemesisAction { f: op.f, first: op, last: op });
        }
    }
    let mut windows: Vec<FaultWindow> = Vec::new();
    let mut running: HashMap<String, usize> = HashMap::new();
    for a in &actions {
        let Some((nemesis, detail, leader)) = a.fault() else { continue };
        if a.f == F::StartFault {
            if a.last.kind == OpType::Fail {
                continue;
            }
            if let Some(&i) = running.get(nemesis) {
                // A change to the running fault (e.g. the clock jumping back).
                let w = &mut windows[i];
                let _ = write!(w.detail, "; then at {}: {detail}", secs(a.first.time_ms));
                continue;
            }
            running.insert(nemesis.to_string(), windows.len());
            windows.push(FaultWindow {
                nemesis: nemesis.to_string(),
                detail: detail.to_string(),
                leader: leader.map(String::from),
                start_ms: a.first.time_ms,
                stop_ms: None,
            });
        } else if let Some(i) = running.remove(nemesis) {
            windows[i].stop_ms = Some(a.last.time_ms);
        }
    }
    windows
}

/// Write unavailability after each fault aimed at the leader (a StartFault
/// whose [`Value::Fault`] names a `leader`): from the fault's start to the
/// earliest completion of an ok Enqueue invoked at or after that start; with
/// no such enqueue, open to the end of the history (`end_ms` None).
pub fn write_unavailability(history: &[Op]) -> Vec<UnavailabilityWindow> {
    let end = end_ms(history);
    // Ok enqueues as (invoke, completion) sorted by invoke, with suffix
    // minima of the completion time.
    let mut enq: Vec<(f64, f64)> = history::pairs(history)
        .into_iter()
        .filter_map(|(inv, comp)| match comp {
            Some(c) if inv.f == F::Enqueue && c.kind == OpType::Ok => Some((inv.time_ms, c.time_ms)),
            _ => None,
        })
        .collect();
    enq.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut suffix_min = vec![f64::INFINITY; enq.len() + 1];
    for i in (0..enq.len()).rev() {
        suffix_min[i] = suffix_min[i + 1].min(enq[i].1);
    }
    fault_windows(history)
        .into_iter()
        .filter_map(|w| {
            let leader = w.leader?;
            let i = enq.partition_point(|e| e.0 < w.start_ms);
            let end_ms = Some(suffix_min[i]).filter(|t| t.is_finite());
            Some(UnavailabilityWindow {
                nemesis: w.nemesis,
                leader,
                start_ms: w.start_ms,
                end_ms,
                duration_ms: end_ms.unwrap_or(end) - w.start_ms,
            })
        })
        .collect()
}

/// The median duration (ms) of `windows` (mean of the middle two for an even
/// count); None when empty.
pub fn median_ms(windows: &[UnavailabilityWindow]) -> Option<f64> {
    let mut d: Vec<f64> = windows.iter().map(|w| w.duration_ms).collect();
    if d.is_empty() {
        return None;
    }
    d.sort_by(f64::total_cmp);
    let n = d.len();
    Some(if n % 2 == 1 { d[n / 2] } else { (d[n / 2 - 1] + d[n / 2]) / 2.0 })
}

/// The longest duration (ms) of `windows`; None when empty.
pub fn max_ms(windows: &[UnavailabilityWindow]) -> Option<f64> {
    windows.iter().map(|w| w.duration_ms).reduce(f64::max)
}

/// How many errors of each verdict the text and HTML show.
const SHOWN_ERRORS: usize = 5;

fn secs(ms: f64) -> String {
    format!("{:.1} s", ms / 1000.0)
}

/// The op-count table as rows `(f, [invoke, ok, fail, info])`.
fn count_rows(summary: &Summary) -> Vec<(F, [usize; 4])> {
    let mut rows: BTreeMap<F, [usize; 4]> = BTreeMap::new();
    for c in &summary.op_counts {
        rows.entry(c.f).or_default()[type_order(c.kind) as usize] += c.count;
    }
    rows.into_iter().collect()
}

/// A short human-readable summary: the overall verdict, each checker with
/// its first errors, the op counts, the faults, the write unavailability,
/// and the seed and command to reproduce the run.
pub fn summary_text(s: &Summary) -> String {
    let mut t = String::new();
    let run = &s.run;
    let _ = writeln!(t, "{}: {}", run.test_name, if s.valid { "VALID" } else { "INVALID" });
    let _ = writeln!(
        t,
        "seed {}, nodes {}, time limit {} s, nemeses {}, history {}",
        run.seed,
        run.nodes.join(" "),
        run.time_limit_s,
        if run.nemeses.is_empty() { "none".to_string() } else { run.nemeses.join(" ") },
        secs(s.duration_ms)
    );
    let _ = writeln!(t, "\ncheckers:");
    for v in &s.verdicts {
        let state = if v.valid { "valid".to_string() } else { format!("INVALID, {} errors", v.error_count) };
        let _ = writeln!(t, "  {:<22} {state}", v.name);
        for e in v.errors.iter().take(SHOWN_ERRORS) {
            let _ = writeln!(t, "      - {e}");
        }
        if v.error_count > SHOWN_ERRORS {
            let _ = writeln!(t, "      ... {} more", v.error_count - SHOWN_ERRORS);
        }
        for n in &v.notes {
            let _ = writeln!(t, "      ({n})");
        }
    }
    let _ = writeln!(t, "\nops:\n  {:<13} {:>8} {:>8} {:>8} {:>8}", "f", "invoke", "ok", "fail", "info");
    for (f, c) in count_rows(s) {
        let _ = writeln!(t, "  {:<13} {:>8} {:>8} {:>8} {:>8}", crate::edn::f_name(f), c[0], c[1], c[2], c[3]);
    }
    let _ = writeln!(t, "\nfaults ({}):", s.faults.len());
    for w in &s.faults {
        let stop = w.stop_ms.map_or("end".to_string(), secs);
        let leader = w.leader.as_ref().map_or(String::new(), |l| format!(" (leader {l})"));
        let _ = writeln!(t, "  {:>8} .. {:>8}  {}{leader}: {}", secs(w.start_ms), stop, w.nemesis, w.detail);
    }
    let _ = write!(t, "\nwrite unavailability after leader faults: {} windows", s.unavailability.len());
    if let (Some(med), Some(max)) = (s.unavailability_median_ms, s.unavailability_max_ms) {
        let _ = write!(t, ", median {med:.0} ms, max {max:.0} ms");
    }
    t.push('\n');
    for u in &s.unavailability {
        let recovered = if u.end_ms.is_some() { "" } else { " (no write succeeded afterwards)" };
        let _ =
            writeln!(t, "  {} {} leader {}: {:.0} ms{recovered}", secs(u.start_ms), u.nemesis, u.leader, u.duration_ms);
    }
    let _ = writeln!(t, "\nreproduce (seed {}): {}", run.seed, run.command);
    t
}

/// Escapes text for HTML.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const CHART_SIZE: (u32, u32) = (1100, 380);
/// Latency points drawn at most; above this, ok points are thinned evenly.
const MAX_POINTS: usize = 20_000;
const OK_COLOR: RGBColor = RGBColor(46, 139, 87);
const FAIL_COLOR: RGBColor = RGBColor(200, 40, 40);
const INFO_COLOR: RGBColor = RGBColor(230, 140, 0);
const UNAVAILABLE_COLOR: RGBColor = RGBColor(90, 40, 160);
const FAULT_COLORS: [RGBColor; 6] = [
    RGBColor(120, 150, 230),
    RGBColor(230, 120, 120),
    RGBColor(120, 200, 140),
    RGBColor(220, 180, 80),
    RGBColor(180, 120, 220),
    RGBColor(100, 190, 200),
];
const LINE_COLORS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

fn draw_err<E: std::fmt::Debug>(e: E) -> String {
    format!("{e:?}")
}

/// How a legend entry is drawn.
#[derive(Debug, Clone, Copy)]
enum Mark {
    /// A filled box (shaded windows).
    Box(RGBColor, f64),
    /// A dot (points).
    Dot(RGBColor),
    /// A line segment (series).
    Line(RGBColor),
}

/// Legend entries, laid out left to right in rows above the plot.
struct Legend {
    items: Vec<(Mark, String)>,
}

const LEGEND_ROW_PX: i32 = 20;
const LEGEND_FONT_PX: u32 = 13;

impl Legend {
    /// Item x positions and rows within `width` px: (x, row) per item.
    fn layout(&self, width: i32) -> (Vec<(i32, i32)>, i32) {
        let mut out = Vec::with_capacity(self.items.len());
        let (mut x, mut row) = (70, 0);
        for (_, label) in &self.items {
            // Browsers' sans-serif averages about 0.55 em per character.
            let w = 22 + (label.chars().count() as i32 * LEGEND_FONT_PX as i32 * 55) / 100 + 16;
            if x + w > width && x > 70 {
                x = 70;
                row += 1;
            }
            out.push((x, row));
            x += w;
        }
        let rows = if self.items.is_empty() { 0 } else { row + 1 };
        (out, rows)
    }

    fn height(&self, width: i32) -> u32 {
        (self.layout(width).1 * LEGEND_ROW_PX + 6) as u32
    }

    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, plotters::coord::Shift>) -> Result<(), String> {
        let width = area.dim_in_pixel().0 as i32;
        let (pos, _) = self.layout(width);
        for ((mark, label), (x, row)) in self.items.iter().zip(pos) {
            let y = row * LEGEND_ROW_PX + 10;
            match *mark {
                Mark::Box(c, alpha) => area.draw(&Rectangle::new([(x, y - 6), (x + 16, y + 6)], c.mix(alpha).filled())),
                Mark::Dot(c) => area.draw(&Circle::new((x + 8, y), 4, c.filled())),
                Mark::Line(c) => area.draw(&PathElement::new(vec![(x, y), (x + 16, y)], c.stroke_width(2))),
            }
            .map_err(draw_err)?;
            let style =
                ("sans-serif", LEGEND_FONT_PX).into_font().color(&BLACK).pos(plotters::style::text_anchor::Pos::new(
                    plotters::style::text_anchor::HPos::Left,
                    plotters::style::text_anchor::VPos::Center,
                ));
            area.draw(&Text::new(label.clone(), (x + 22, y), style)).map_err(draw_err)?;
        }
        Ok(())
    }
}

/// One nemesis's fault windows: its name, colour and spans in seconds.
type FaultGroup = (String, RGBColor, Vec<(f64, f64)>);

/// Fault windows (seconds) grouped by nemesis, each with its colour.
fn fault_groups(summary: &Summary, end_s: f64) -> Vec<FaultGroup> {
    let mut groups: Vec<FaultGroup> = Vec::new();
    for w in &summary.faults {
        let span = (w.start_ms / 1000.0, w.stop_ms.map_or(end_s, |s| s / 1000.0));
        match groups.iter_mut().find(|g| g.0 == w.nemesis) {
            Some(g) => g.2.push(span),
            None => {
                let color = FAULT_COLORS[groups.len() % FAULT_COLORS.len()];
                groups.push((w.nemesis.clone(), color, vec![span]));
            }
        }
    }
    groups
}

/// The unavailability windows in seconds.
fn unavailable_spans(summary: &Summary, end_s: f64) -> Vec<(f64, f64)> {
    summary.unavailability.iter().map(|u| (u.start_ms / 1000.0, u.end_ms.map_or(end_s, |e| e / 1000.0))).collect()
}

/// Legend entries for the fault and unavailability windows.
fn window_legend(summary: &Summary, end_s: f64) -> Vec<(Mark, String)> {
    let mut items: Vec<(Mark, String)> = fault_groups(summary, end_s)
        .into_iter()
        .map(|(name, c, _)| (Mark::Box(c, 0.45), format!("fault: {name}")))
        .collect();
    if !summary.unavailability.is_empty() {
        items.push((Mark::Box(UNAVAILABLE_COLOR, 0.8), "writes unavailable after a leader fault (top band)".into()));
    }
    items
}

/// Shades the fault windows over `[y0, y1]` and marks the unavailability
/// windows in the band `[u0, u1]`.
fn draw_windows<DB: DrawingBackend, Y: Ranged<ValueType = f64>>(
    chart: &mut ChartContext<'_, DB, Cartesian2d<plotters::coord::types::RangedCoordf64, Y>>,
    summary: &Summary,
    end_s: f64,
    (y0, y1): (f64, f64),
    (u0, u1): (f64, f64),
) -> Result<(), String> {
    for (_, color, spans) in fault_groups(summary, end_s) {
        chart
            .draw_series(
                spans.into_iter().map(move |(a, b)| Rectangle::new([(a, y0), (b, y1)], color.mix(0.22).filled())),
            )
            .map_err(draw_err)?;
    }
    let spans = unavailable_spans(summary, end_s);
    chart
        .draw_series(
            spans.into_iter().map(|(a, b)| Rectangle::new([(a, u0), (b, u1)], UNAVAILABLE_COLOR.mix(0.8).filled())),
        )
        .map_err(draw_err)?;
    Ok(())
}

/// A pixel-addressed area of an SVG drawing.
type SvgArea<'b> = DrawingArea<SVGBackend<'b>, plotters::coord::Shift>;

/// The root area of a chart: white, titled, with the legend drawn in a strip
/// under the title; returns the area left for the plot.
fn chart_root<'b>(buf: &'b mut String, title: &str, legend: &Legend) -> Result<(SvgArea<'b>, SvgArea<'b>), String> {
    let root = SVGBackend::with_string(buf, CHART_SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(draw_err)?;
    let titled = root.titled(title, ("sans-serif", 18)).map_err(draw_err)?;
    let (legend_area, plot_area) = titled.split_vertically(legend.height(CHART_SIZE.0 as i32));
    legend.draw(&legend_area)?;
    Ok((root, plot_area))
}

/// The latency chart: one point per completed client op at its invoke time,
/// y = completion − invoke in ms on a log scale (floored at 0.1 ms).
fn latency_svg(history: &[Op], summary: &Summary) -> Result<String, String> {
    let end_s = (summary.duration_ms / 1000.0).max(1.0);
    let mut points: Vec<(f64, f64, OpType)> = history::pairs(history)
        .into_iter()
        .filter_map(|(inv, comp)| comp.map(|c| (inv.time_ms / 1000.0, (c.time_ms - inv.time_ms).max(0.1), c.kind)))
        .collect();
    let kinds = [(OpType::Ok, OK_COLOR), (OpType::Info, INFO_COLOR), (OpType::Fail, FAIL_COLOR)];
    let counts: Vec<usize> = kinds.iter().map(|(k, _)| points.iter().filter(|p| p.2 == *k).count()).collect();
    let mut thinned = 1;
    if points.len() > MAX_POINTS {
        let oks = counts[0];
        let room = MAX_POINTS.saturating_sub(points.len() - oks).max(1);
        thinned = oks.div_ceil(room);
        let mut k = 0;
        points.retain(|p| {
            if p.2 != OpType::Ok {
                return true;
            }
            k += 1;
            k % thinned == 0
        });
    }
    let y_max = points.iter().map(|p| p.1).fold(10.0, f64::max) * 2.0;
    let title = if thinned > 1 {
        format!("Latency per client op (ms, log scale; 1 in {thinned} ok ops drawn)")
    } else {
        "Latency per client op (ms, log scale)".to_string()
    };
    let mut items: Vec<(Mark, String)> =
        kinds.iter().zip(&counts).map(|((k, c), n)| (Mark::Dot(*c), format!("{} ({n})", k.name()))).collect();
    items.extend(window_legend(summary, end_s));
    let legend = Legend { items };
    let mut buf = String::new();
    {
        let (root, plot) = chart_root(&mut buf, &title, &legend)?;
        let mut chart = ChartBuilder::on(&plot)
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..end_s, (0.1f64..y_max).log_scale())
            .map_err(draw_err)?;
        chart
            .configure_mesh()
            .x_desc("time since start (s), at the op's invoke")
            .y_desc("latency (ms)")
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(draw_err)?;
        draw_windows(&mut chart, summary, end_s, (0.1, y_max), (y_max / 1.6, y_max))?;
        for (kind, color) in kinds {
            chart
                .draw_series(
                    points.iter().filter(|p| p.2 == kind).map(|p| Circle::new((p.0, p.1), 2, color.mix(0.6).filled())),
                )
                .map_err(draw_err)?;
        }
        root.present().map_err(draw_err)?;
    }
    Ok(buf)
}

/// The throughput chart: ok completions per second, one line per client f.
fn throughput_svg(history: &[Op], summary: &Summary) -> Result<String, String> {
    let end_s = (summary.duration_ms / 1000.0).max(1.0);
    let buckets = end_s.ceil() as usize + 1;
    let mut per_f: BTreeMap<F, Vec<u32>> = BTreeMap::new();
    for op in history.iter().filter(|o| o.process != NEMESIS && o.kind == OpType::Ok) {
        let b = ((op.time_ms / 1000.0).floor().max(0.0) as usize).min(buckets - 1);
        per_f.entry(op.f).or_insert_with(|| vec![0; buckets])[b] += 1;
    }
    let y_max = per_f.values().flatten().copied().max().unwrap_or(0).max(1) as f64 * 1.15;
    let colors: Vec<RGBColor> = (0..per_f.len()).map(|i| LINE_COLORS[i % LINE_COLORS.len()]).collect();
    let mut items: Vec<(Mark, String)> =
        per_f.keys().zip(&colors).map(|(f, c)| (Mark::Line(*c), crate::edn::f_name(*f))).collect();
    items.extend(window_legend(summary, end_s));
    let legend = Legend { items };
    let mut buf = String::new();
    {
        let (root, plot) = chart_root(&mut buf, "Throughput (ok completions per second, by f)", &legend)?;
        let mut chart = ChartBuilder::on(&plot)
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..end_s, 0f64..y_max)
            .map_err(draw_err)?;
        chart
            .configure_mesh()
            .x_desc("time since start (s)")
            .y_desc("ok ops / s")
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(draw_err)?;
        draw_windows(&mut chart, summary, end_s, (0.0, y_max), (y_max * 0.96, y_max))?;
        for (counts, color) in per_f.values().zip(colors) {
            // Each one-second bucket drawn at its middle.
            let line = counts.iter().enumerate().map(|(b, &c)| (b as f64 + 0.5, c as f64)).filter(|p| p.0 <= end_s);
            chart.draw_series(LineSeries::new(line, color.stroke_width(2))).map_err(draw_err)?;
        }
        root.present().map_err(draw_err)?;
    }
    Ok(buf)
}

/// One self-contained HTML page (inline CSS and SVG, no external assets):
/// the verdicts with their first errors, the run's parameters, the latency
/// and throughput charts with fault windows shaded and write-unavailability
/// windows marked, the op counts, the faults, and the unavailability windows.
pub fn html(history: &[Op], summary: &Summary) -> String {
    let run = &summary.run;
    let mut h = String::new();
    let title = format!("{} — {}", run.test_name, if summary.valid { "valid" } else { "INVALID" });
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{}</title>\n<style>\n{}\n</style></head><body>\n",
        esc(&title),
        CSS
    );
    let class = if summary.valid { "ok" } else { "bad" };
    let _ = writeln!(
        h,
        "<h1>{} <span class=\"{class}\">{}</span></h1>",
        esc(&run.test_name),
        if summary.valid { "VALID" } else { "INVALID" }
    );
    let _ = writeln!(
        h,
        "<p class=\"meta\">seed <b>{}</b> · nodes {} · time limit {} s · history {} · nemeses {}</p>",
        run.seed,
        esc(&run.nodes.join(" ")),
        run.time_limit_s,
        secs(summary.duration_ms),
        esc(&if run.nemeses.is_empty() { "none".to_string() } else { run.nemeses.join(", ") })
    );
    let _ = writeln!(h, "<p class=\"meta\">reproduce: <code>{}</code></p>", esc(&run.command));

    h.push_str("<h2>Checkers</h2>\n<table><tr><th>checker</th><th>verdict</th><th>errors</th><th>details</th></tr>\n");
    for v in &summary.verdicts {
        let (class, word) = if v.valid { ("ok", "valid") } else { ("bad", "INVALID") };
        let _ = write!(
            h,
            "<tr><td><b>{}</b></td><td class=\"{class}\">{word}</td><td>{}</td><td>",
            esc(&v.name),
            v.error_count
        );
        if !v.errors.is_empty() {
            h.push_str("<ul class=\"errors\">");
            for e in v.errors.iter().take(SHOWN_ERRORS) {
                let _ = write!(h, "<li>{}</li>", esc(e));
            }
            h.push_str("</ul>");
            if v.errors.len() > SHOWN_ERRORS {
                let _ = write!(
                    h,
                    "<details><summary>{} more kept errors</summary><ul class=\"errors\">",
                    v.errors.len() - SHOWN_ERRORS
                );
                for e in v.errors.iter().skip(SHOWN_ERRORS) {
                    let _ = write!(h, "<li>{}</li>", esc(e));
                }
                h.push_str("</ul></details>");
            }
        }
        for n in &v.notes {
            let _ = write!(h, "<div class=\"note\">{}</div>", esc(n));
        }
        h.push_str("</td></tr>\n");
    }
    h.push_str("</table>\n");

    h.push_str("<h2>Latency</h2>\n<div class=\"chart\">");
    match latency_svg(history, summary) {
        Ok(svg) => h.push_str(&svg),
        Err(e) => {
            let _ = write!(h, "<p class=\"bad\">chart failed: {}</p>", esc(&e));
        }
    }
    h.push_str("</div>\n<h2>Throughput</h2>\n<div class=\"chart\">");
    match throughput_svg(history, summary) {
        Ok(svg) => h.push_str(&svg),
        Err(e) => {
            let _ = write!(h, "<p class=\"bad\">chart failed: {}</p>", esc(&e));
        }
    }
    h.push_str("</div>\n");

    h.push_str("<div class=\"cols\"><div><h2>Operations</h2>\n<table><tr><th>f</th><th>invoke</th><th>ok</th><th>fail</th><th>info</th></tr>\n");
    for (f, c) in count_rows(summary) {
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            esc(&crate::edn::f_name(f)),
            c[0],
            c[1],
            c[2],
            c[3]
        );
    }
    h.push_str("</table></div>\n<div><h2>Write unavailability</h2>\n");
    match (summary.unavailability_median_ms, summary.unavailability_max_ms) {
        (Some(med), Some(max)) => {
            let _ = writeln!(
                h,
                "<p>{} leader faults · median <b>{med:.0} ms</b> · max <b>{max:.0} ms</b></p>",
                summary.unavailability.len()
            );
        }
        _ => h.push_str("<p>no leader faults</p>\n"),
    }
    if !summary.unavailability.is_empty() {
        h.push_str("<table><tr><th>start</th><th>nemesis</th><th>leader</th><th>until first ok write</th></tr>\n");
        for u in &summary.unavailability {
            let dur = match u.end_ms {
                Some(_) => format!("{:.0} ms", u.duration_ms),
                None => format!("&ge; {:.0} ms (none succeeded)", u.duration_ms),
            };
            let _ = writeln!(
                h,
                "<tr><td class=\"n\">{}</td><td>{}</td><td>{}</td><td class=\"n\">{dur}</td></tr>",
                secs(u.start_ms),
                esc(&u.nemesis),
                esc(&u.leader)
            );
        }
        h.push_str("</table>\n");
    }
    h.push_str("</div></div>\n");

    let _ = writeln!(h, "<h2>Faults ({})</h2>", summary.faults.len());
    if !summary.faults.is_empty() {
        h.push_str("<table><tr><th>start</th><th>stop</th><th>nemesis</th><th>leader</th><th>detail</th></tr>\n");
        for w in &summary.faults {
            let _ = writeln!(
                h,
                "<tr><td class=\"n\">{}</td><td class=\"n\">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                secs(w.start_ms),
                w.stop_ms.map_or("end".to_string(), secs),
                esc(&w.nemesis),
                esc(w.leader.as_deref().unwrap_or("")),
                esc(&w.detail)
            );
        }
        h.push_str("</table>\n");
    }
    h.push_str("</body></html>\n");
    h
}

const CSS: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:1.5em auto;max-width:1160px;\
padding:0 1em;color:#222;font-size:14px}\
h1{font-size:1.5em;margin-bottom:.2em}h2{font-size:1.15em;margin:1.2em 0 .4em}\
.ok{color:#2e8b57;font-weight:600}.bad{color:#c82828;font-weight:600}\
.meta{color:#555;margin:.2em 0}code{background:#f3f3f3;padding:.1em .3em;border-radius:3px}\
table{border-collapse:collapse;margin:.3em 0}th,td{border-bottom:1px solid #ddd;padding:.25em .6em;\
text-align:left;vertical-align:top}th{background:#f6f6f6}td.n{text-align:right;font-variant-numeric:tabular-nums}\
ul.errors{margin:0;padding-left:1.2em;font-family:ui-monospace,monospace;font-size:12px}\
.note{color:#666;font-size:12px}.chart svg{max-width:100%;height:auto;border:1px solid #eee}\
.cols{display:flex;gap:3em;flex-wrap:wrap}";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::testing::*;
    use crate::checker::{check_all, CheckContext};
    use crate::history::Status;

    /// A leader kill at 1000 ms stopped at 3000 ms; one enqueue before it,
    /// one invoked during it that fails, one that succeeds at 2500 ms and
    /// another at 2200 ms (invoked later, completed earlier).
    fn tiny() -> Vec<Op> {
        H::new()
            .call(1, F::Enqueue, enq(Some("a"), "1:0"), 100.0, 110.0)
            .nemesis(OpType::Invoke, F::StartFault, fault("kill", None), 1000.0)
            .nemesis(OpType::Info, F::StartFault, fault("kill", Some("n1")), 1010.0)
            .invoke(1, F::Enqueue, enq(Some("b"), "1:2"), 1100.0)
            .fail(1, 1150.0)
            .invoke(1, F::Enqueue, enq(Some("c"), "1:4"), 1200.0)
            .invoke(2, F::Enqueue, enq(Some("d"), "2:0"), 1300.0)
            .ok_same(2, 2200.0)
            .ok_same(1, 2500.0)
            .nemesis(OpType::Invoke, F::StopFault, fault("kill", None), 3000.0)
            .nemesis(OpType::Info, F::StopFault, fault("kill", None), 3005.0)
            // A clock fault that jumps back half-way, and one not applied.
            .nemesis(OpType::Info, F::StartFault, fault("clock", None), 3100.0)
            .nemesis(OpType::Info, F::StartFault, fault("clock", None), 3200.0)
            .nemesis(OpType::Info, F::StopFault, fault("clock", None), 3300.0)
            .nemesis(OpType::Info, F::StopFault, fault("kill", None), 3400.0)
            // A second leader fault after which no write succeeds.
            .nemesis(OpType::Info, F::StartFault, fault("pause", Some("n2")), 4000.0)
            .invoke(1, F::Read, job("a"), 4100.0)
            .ok(1, read("a", Status::Scheduled, 0, 105), 4200.0)
            .build()
    }

    fn run() -> RunInfo {
        RunInfo {
            test_name: "silo-queue".into(),
            seed: 42,
            nodes: vec!["n1".into(), "n2".into(), "n3".into()],
            time_limit_s: 60,
            nemeses: vec!["kill".into(), "pause".into()],
            command: "jepsen test --seed 42".into(),
        }
    }

    #[test]
    fn fault_windows_pair_start_and_stop() {
        let w = fault_windows(&tiny());
        assert_eq!(w.len(), 3);
        assert_eq!((w[0].nemesis.as_str(), w[0].start_ms, w[0].stop_ms), ("kill", 1000.0, Some(3005.0)));
        assert_eq!(w[0].leader.as_deref(), Some("n1"));
        assert_eq!((w[1].nemesis.as_str(), w[1].start_ms, w[1].stop_ms), ("clock", 3100.0, Some(3300.0)));
        assert!(w[1].detail.contains("then at 3.2 s"), "{}", w[1].detail);
        assert_eq!((w[2].nemesis.as_str(), w[2].start_ms, w[2].stop_ms), ("pause", 4000.0, None));
    }

    #[test]
    fn unavailability_ends_at_first_ok_write() {
        let u = write_unavailability(&tiny());
        assert_eq!(u.len(), 2);
        assert_eq!(u[0].leader, "n1");
        assert_eq!(u[0].end_ms, Some(2200.0));
        assert_eq!(u[0].duration_ms, 1200.0);
        assert_eq!(u[1].end_ms, None);
        assert_eq!(u[1].duration_ms, 200.0); // to the end of the history
        assert_eq!(median_ms(&u), Some(700.0));
        assert_eq!(max_ms(&u), Some(1200.0));
        assert_eq!(median_ms(&u[..1]), Some(1200.0));
        assert_eq!(median_ms(&[]), None);
    }

    #[test]
    fn summary_counts_and_text() {
        let h = tiny();
        let verdicts = check_all(&h, &CheckContext { lease_ms: 10_000 });
        let s = Summary::new(run(), &h, verdicts);
        assert!(!s.valid, "no final reads: lost-and-phantom must fail");
        let enq_ok = s.op_counts.iter().find(|c| c.f == F::Enqueue && c.kind == OpType::Ok).unwrap();
        assert_eq!(enq_ok.count, 3);
        let text = summary_text(&s);
        for needle in
            ["INVALID", "lost-and-phantom", "seed 42", "jepsen test --seed 42", "median 700 ms", "max 1200 ms"]
        {
            assert!(text.contains(needle), "{needle} missing from:\n{text}");
        }
        let json = serde_json::to_string(&s).unwrap();
        assert!(json.contains("\"seed\":42") && json.contains("\"verdicts\""));
    }

    #[test]
    fn html_has_charts_and_verdicts() {
        let h = tiny();
        let verdicts = check_all(&h, &CheckContext { lease_ms: 10_000 });
        let names: Vec<String> = verdicts.iter().map(|v| v.name.clone()).collect();
        let s = Summary::new(run(), &h, verdicts);
        let page = html(&h, &s);
        assert_eq!(page.matches("<svg").count(), 2, "two charts");
        for n in &names {
            assert!(page.contains(n.as_str()), "{n} missing");
        }
        assert!(page.contains("fault: kill"));
        assert!(page.contains("writes unavailable after a leader fault"));
        assert!(!page.contains("chart failed"));
        assert!(
            !page.contains("http://")
                || page.matches("http://").count() == page.matches("xmlns=\"http://www.w3.org/2000/svg\"").count()
        );
    }

    #[test]
    fn html_of_empty_history() {
        let s = Summary::new(run(), &[], vec![]);
        let page = html(&[], &s);
        assert_eq!(page.matches("<svg").count(), 2);
        assert!(s.valid);
    }
}
