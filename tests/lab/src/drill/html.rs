//! The drill's report as one self-contained HTML file: the verdict, the
//! summary tables and three charts drawn as inline SVG (no script, no
//! stylesheet or font from anywhere else), with the outage shaded:
//! latency of every request over time; lookup answers by source and writes
//! by status over time; the queue's depth and the deliveries over time.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::report::{Check, KindStats, Report, duration_text};
use super::traffic::{Kind, Phase, Record};

const W: f64 = 960.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 56.0;
const TOP: f64 = 30.0;
const BOTTOM: f64 = 34.0;

fn esc(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// A plot area with a time axis in seconds.
struct Plot {
    height: f64,
    t_end: f64,
    svg: String,
}

impl Plot {
    fn new(height: f64, t_end: f64) -> Self {
        let mut svg = String::new();
        let _ = write!(
            svg,
            r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {height}" width="100%" role="img" font-family="system-ui,sans-serif" font-size="11">"#
        );
        Self { height, t_end: t_end.max(1.0), svg }
    }

    fn x(&self, t: f64) -> f64 {
        LEFT + (t / self.t_end).clamp(0.0, 1.0) * (W - LEFT - RIGHT)
    }

    fn bottom(&self) -> f64 {
        self.height - BOTTOM
    }

    fn inner_height(&self) -> f64 {
        self.height - TOP - BOTTOM
    }

    /// The outage band and the end of the traffic.
    fn phases(&mut self, report: &Report) {
        let t = &report.timeline;
        let (x0, x1) = (self.x(t.outage_start_ms / 1000.0), self.x(t.recovery_ms / 1000.0));
        let label = match report.settings.mode.as_str() {
            "hang" => "CRM hung",
            "late" => "CRM late",
            _ => "CRM down",
        };
        let _ = write!(
            self.svg,
            r##"<rect x="{x0:.1}" y="{TOP}" width="{:.1}" height="{:.1}" fill="#ef4444" fill-opacity="0.12"/><text x="{:.1}" y="{:.1}" fill="#b91c1c" text-anchor="middle">{label}</text>"##,
            (x1 - x0).max(1.0),
            self.inner_height(),
            (x0 + x1) / 2.0,
            TOP - 4.0
        );
        let xe = self.x(t.traffic_end_ms / 1000.0);
        let _ = write!(
            self.svg,
            r##"<line x1="{xe:.1}" x2="{xe:.1}" y1="{TOP}" y2="{:.1}" stroke="#9ca3af" stroke-dasharray="3 3"/><text x="{:.1}" y="{:.1}" fill="#6b7280">drain</text>"##,
            self.bottom(),
            xe + 4.0,
            TOP - 4.0
        );
    }

    fn time_axis(&mut self) {
        let raw = self.t_end / 10.0;
        // Past half a minute, ticks on whole minutes read better.
        let step = if raw > 20.0 {
            [30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0].into_iter().find(|s| *s >= raw).unwrap_or(3600.0)
        } else {
            nice_step(raw)
        };
        let mut t = 0.0;
        let y = self.bottom();
        let _ = write!(self.svg, r##"<line x1="{LEFT}" x2="{:.1}" y1="{y}" y2="{y}" stroke="#374151"/>"##, W - RIGHT);
        while t <= self.t_end + 1e-9 {
            let x = self.x(t);
            let _ = write!(
                self.svg,
                r##"<line x1="{x:.1}" x2="{x:.1}" y1="{y}" y2="{:.1}" stroke="#374151"/><text x="{x:.1}" y="{:.1}" text-anchor="middle" fill="#374151">{}</text>"##,
                y + 4.0,
                y + 16.0,
                duration_text(t)
            );
            t += step;
        }
        let _ = write!(
            self.svg,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#6b7280">time since the drill started</text>"##,
            (LEFT + W - RIGHT) / 2.0,
            self.height - 4.0
        );
    }

    /// A linear left axis from 0 to `max`; returns the y of a value.
    fn linear_axis(&mut self, max: f64, label: &str, right: bool) -> impl Fn(f64) -> f64 + use<> {
        let max = nice_ceiling(max.max(1.0));
        let (bottom, inner) = (self.bottom(), self.inner_height());
        let y = move |v: f64| bottom - (v / max).clamp(0.0, 1.0) * inner;
        let step = nice_step(max / 5.0);
        let (x, anchor, dx) = if right { (W - RIGHT, "start", 6.0) } else { (LEFT, "end", -6.0) };
        let mut v = 0.0;
        while v <= max + 1e-9 {
            let yy = y(v);
            if !right {
                let _ = write!(
                    self.svg,
                    r##"<line x1="{LEFT}" x2="{:.1}" y1="{yy:.1}" y2="{yy:.1}" stroke="#e5e7eb"/>"##,
                    W - RIGHT
                );
            }
            let _ = write!(
                self.svg,
                r##"<text x="{:.1}" y="{:.1}" text-anchor="{anchor}" fill="#374151">{}</text>"##,
                x + dx,
                yy + 4.0,
                trim_number(v)
            );
            v += step;
        }
        let lx = if right { W - 8.0 } else { 12.0 };
        let _ = write!(
            self.svg,
            r##"<text transform="translate({lx},{:.1}) rotate(-90)" text-anchor="middle" fill="#6b7280">{}</text>"##,
            TOP + inner / 2.0,
            esc(label)
        );
        y
    }

    fn legend(&mut self, items: &[(&str, &str)]) {
        let mut x = LEFT + 8.0;
        for (color, name) in items {
            let _ = write!(
                self.svg,
                r##"<rect x="{x:.1}" y="4" width="10" height="10" fill="{color}"/><text x="{:.1}" y="13" fill="#111827">{}</text>"##,
                x + 14.0,
                esc(name)
            );
            x += 24.0 + name.len() as f64 * 6.2;
        }
    }

    fn finish(mut self) -> String {
        self.svg.push_str("</svg>");
        self.svg
    }
}

fn nice_step(raw: f64) -> f64 {
    let raw = raw.max(1e-9);
    let magnitude = 10f64.powf(raw.log10().floor());
    let norm = raw / magnitude;
    let nice = if norm <= 1.0 {
        1.0
    } else if norm <= 2.0 {
        2.0
    } else if norm <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * magnitude
}

fn nice_ceiling(v: f64) -> f64 {
    let step = nice_step(v / 5.0);
    (v / step).ceil() * step
}

fn trim_number(v: f64) -> String {
    if v.fract().abs() < 1e-9 { format!("{v:.0}") } else { format!("{v:.1}") }
}

/// Every request's latency (log scale) over time.
fn latency_chart(report: &Report, records: &[Record], t_end: f64) -> String {
    let mut plot = Plot::new(320.0, t_end);
    let (lo, hi) = (0.3f64.log10(), 15_000f64.log10());
    let (bottom, inner) = (plot.bottom(), plot.inner_height());
    let y = move |ms: f64| bottom - ((ms.max(0.3).log10() - lo) / (hi - lo)).clamp(0.0, 1.0) * inner;
    for (ms, label) in [(1.0, "1 ms"), (10.0, "10 ms"), (100.0, "100 ms"), (1_000.0, "1 s"), (10_000.0, "10 s")] {
        let yy = y(ms);
        let _ = write!(
            plot.svg,
            r##"<line x1="{LEFT}" x2="{:.1}" y1="{yy:.1}" y2="{yy:.1}" stroke="#e5e7eb"/><text x="{:.1}" y="{:.1}" text-anchor="end" fill="#374151">{label}</text>"##,
            W - RIGHT,
            LEFT - 6.0,
            yy + 4.0
        );
    }
    let deadline = report.settings.crm_deadline_ms as f64;
    for (ms, color, label) in [(10_000.0, "#dc2626", "Data Action timeout"), (deadline, "#9ca3af", "CRM deadline")] {
        let yy = y(ms);
        let _ = write!(
            plot.svg,
            r##"<line x1="{LEFT}" x2="{:.1}" y1="{yy:.1}" y2="{yy:.1}" stroke="{color}" stroke-dasharray="5 3"/><text x="{:.1}" y="{:.1}" text-anchor="end" fill="{color}">{label}</text>"##,
            W - RIGHT,
            W - RIGHT - 4.0,
            yy - 3.0
        );
    }
    let _ = write!(
        plot.svg,
        r##"<text transform="translate(12,{:.1}) rotate(-90)" text-anchor="middle" fill="#6b7280">latency (log)</text>"##,
        TOP + inner / 2.0
    );
    for kind in [Kind::Poll, Kind::Case, Kind::Lookup] {
        let color = match kind {
            Kind::Lookup => "#2563eb",
            Kind::Case => "#ea580c",
            Kind::Poll => "#6b7280",
        };
        let _ = write!(plot.svg, r##"<g fill="{color}" fill-opacity="0.45">"##);
        for r in records.iter().filter(|r| r.kind == kind && !r.failed()) {
            let _ = write!(
                plot.svg,
                r#"<circle cx="{:.1}" cy="{:.1}" r="1.7"/>"#,
                plot.x(r.start_ms / 1000.0),
                y(r.latency_ms)
            );
        }
        plot.svg.push_str("</g>");
    }
    plot.svg.push_str(r##"<g stroke="#b91c1c" stroke-width="1.5">"##);
    for r in records.iter().filter(|r| r.failed()) {
        let (cx, cy) = (plot.x(r.start_ms / 1000.0), y(r.latency_ms));
        let _ = write!(plot.svg, r#"<path d="M{:.1} {:.1}l6 6m0 -6l-6 6"/>"#, cx - 3.0, cy - 3.0);
    }
    plot.svg.push_str("</g>");
    plot.phases(report);
    plot.legend(&[
        ("#2563eb", "lookup"),
        ("#ea580c", "case creation"),
        ("#6b7280", "result poll"),
        ("#b91c1c", "failed"),
    ]);
    plot.time_axis();
    plot.finish()
}

/// The width of a bucket for `t_end` seconds: about 120 bars.
fn bucket_secs(t_end: f64) -> f64 {
    nice_step(t_end / 120.0).max(1.0)
}

/// Stacked bars of answers per second, by category, over time.
fn stacked_chart(
    report: &Report,
    records: &[&Record],
    categories: &[(&str, &str)],
    classify: impl Fn(&Record) -> &'static str,
    height: f64,
    label: &str,
    t_end: f64,
) -> String {
    let bucket = bucket_secs(t_end);
    let n = (t_end / bucket).ceil() as usize + 1;
    let mut counts: Vec<BTreeMap<&str, f64>> = vec![BTreeMap::new(); n];
    for r in records {
        let i = ((r.start_ms / 1000.0) / bucket) as usize;
        if i < n {
            *counts[i].entry(classify(r)).or_insert(0.0) += 1.0 / bucket;
        }
    }
    let max = counts.iter().map(|c| c.values().sum::<f64>()).fold(0.0, f64::max);
    let mut plot = Plot::new(height, t_end);
    let y = plot.linear_axis(max, label, false);
    for (i, c) in counts.iter().enumerate() {
        let (x0, x1) = (plot.x(i as f64 * bucket), plot.x((i + 1) as f64 * bucket));
        let mut acc = 0.0;
        for (name, color) in categories {
            let v = c.get(name).copied().unwrap_or(0.0);
            if v <= 0.0 {
                continue;
            }
            let (top, base) = (y(acc + v), y(acc));
            let _ = write!(
                plot.svg,
                r#"<rect x="{x0:.1}" y="{top:.1}" width="{:.1}" height="{:.1}" fill="{color}"><title>{name}: {v:.1}/s</title></rect>"#,
                (x1 - x0 - 0.6).max(0.5),
                (base - top).max(0.0)
            );
            acc += v;
        }
    }
    let legend: Vec<(&str, &str)> = categories.iter().map(|(name, color)| (*color, *name)).collect();
    plot.phases(report);
    plot.legend(&legend);
    plot.time_axis();
    plot.finish()
}

/// Queue depth and dead letters (lines, left axis), deliveries per second
/// (bars, right axis), and when the worker's breaker was open.
fn queue_chart(report: &Report, t_end: f64) -> String {
    let samples = &report.samples;
    let bucket = bucket_secs(t_end);
    let n = (t_end / bucket).ceil() as usize + 1;
    let mut writes = vec![0.0; n];
    let mut refreshes = vec![0.0; n];
    for (series, times) in
        [(&mut writes, &report.writes.deliveries_s), (&mut refreshes, &report.refreshes.deliveries_s)]
    {
        for t in times.iter().filter(|t| **t >= 0.0) {
            let i = (t / bucket) as usize;
            if i < n {
                series[i] += 1.0 / bucket;
            }
        }
    }
    let mut plot = Plot::new(300.0, t_end);
    // Worker breaker open: a strip along the top.
    for pair in samples.windows(2) {
        if pair[0].origin_breaker.as_deref().is_some_and(|b| b != "closed") {
            let (x0, x1) = (plot.x(pair[0].t_ms / 1000.0), plot.x(pair[1].t_ms / 1000.0));
            let _ = write!(
                plot.svg,
                r##"<rect x="{x0:.1}" y="{TOP}" width="{:.1}" height="5" fill="#7f1d1d"/>"##,
                (x1 - x0).max(0.5)
            );
        }
    }
    let max_rate = writes.iter().zip(&refreshes).map(|(a, b)| a + b).fold(0.0, f64::max);
    let yr = plot.linear_axis(max_rate, "deliveries per second", true);
    for i in 0..n {
        let (x0, x1) = (plot.x(i as f64 * bucket), plot.x((i + 1) as f64 * bucket));
        let mut acc = 0.0;
        for (v, color) in [(writes[i], "#86efac"), (refreshes[i], "#7dd3fc")] {
            if v > 0.0 {
                let (top, base) = (yr(acc + v), yr(acc));
                let _ = write!(
                    plot.svg,
                    r#"<rect x="{x0:.1}" y="{top:.1}" width="{:.1}" height="{:.1}" fill="{color}"/>"#,
                    (x1 - x0 - 0.6).max(0.5),
                    (base - top).max(0.0)
                );
                acc += v;
            }
        }
    }
    let max_depth = samples.iter().map(|s| (s.queue_visible + s.queue_in_flight).max(s.dlq)).max().unwrap_or(0);
    let y = plot.linear_axis(max_depth as f64, "messages in the queue", false);
    for (color, value) in [
        (
            "#7c3aed",
            Box::new(|s: &super::observe::Sample| s.queue_visible + s.queue_in_flight) as Box<dyn Fn(&_) -> u64>,
        ),
        ("#dc2626", Box::new(|s: &super::observe::Sample| s.dlq)),
    ] {
        let points: Vec<String> =
            samples.iter().map(|s| format!("{:.1},{:.1}", plot.x(s.t_ms / 1000.0), y(value(s) as f64))).collect();
        if !points.is_empty() {
            let _ = write!(
                plot.svg,
                r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="1.8"/>"#,
                points.join(" ")
            );
        }
    }
    plot.phases(report);
    plot.legend(&[
        ("#7c3aed", "queue depth (visible + in flight)"),
        ("#dc2626", "dead letters"),
        ("#86efac", "writes delivered/s"),
        ("#7dd3fc", "refreshes delivered/s"),
        ("#7f1d1d", "worker breaker open"),
    ]);
    plot.time_axis();
    plot.finish()
}

fn stats_rows(stats: &[KindStats]) -> String {
    let mut rows = String::new();
    for k in stats.iter().filter(|k| k.count > 0) {
        let answers: Vec<String> = k.answers.iter().map(|(a, n)| format!("{} {n}", esc(a))).collect();
        let bad = if k.failed > 0 { r#" class="bad""# } else { "" };
        let _ = write!(
            rows,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td{bad}>{}</td><td{bad}>{}</td><td>{:.1}</td><td>{:.1}</td><td>{:.1}</td><td>{:.1}</td><td>{}</td></tr>",
            k.phase.as_str(),
            k.kind.as_str(),
            k.count,
            k.non_200,
            k.slower_than_timeout,
            k.p50_ms,
            k.p95_ms,
            k.p99_ms,
            k.max_ms,
            answers.join(" · ")
        );
    }
    rows
}

fn checks(checks: &[Check]) -> String {
    let mut out = String::new();
    for c in checks {
        let (mark, class) = match c.kept {
            Some(true) => ("✓", "ok"),
            Some(false) => ("✗", "bad"),
            None => ("·", "na"),
        };
        let _ = write!(
            out,
            r#"<tr><td class="{class}">{mark}</td><td>{}</td><td>{}</td><td>{}</td></tr>"#,
            esc(&c.name),
            esc(&c.measured),
            esc(&c.limit)
        );
    }
    out
}

/// The report page.
pub fn render(report: &Report, records: &[Record], summary: &str) -> String {
    let t_end = (report.timeline.drain_end_ms / 1000.0).max(1.0);
    let s = &report.settings;
    let records: Vec<Record> = records.iter().filter(|r| r.phase != Phase::Warmup).cloned().collect();
    let records = records.as_slice();
    let lookups: Vec<&Record> = records.iter().filter(|r| r.kind == Kind::Lookup).collect();
    let cases: Vec<&Record> = records.iter().filter(|r| r.kind == Kind::Case).collect();
    let sources = [
        ("cache", "#16a34a"),
        ("live", "#2563eb"),
        ("stale_cache", "#f59e0b"),
        ("default", "#9ca3af"),
        ("failed", "#b91c1c"),
    ];
    let by_source = stacked_chart(
        report,
        &lookups,
        &sources,
        |r| {
            if r.failed() {
                return "failed";
            }
            match r.answer.as_deref() {
                Some("cache") => "cache",
                Some("live") => "live",
                Some("stale_cache") => "stale_cache",
                _ => "default",
            }
        },
        260.0,
        "lookups per second",
        t_end,
    );
    let statuses = [("COMPLETE", "#16a34a"), ("PENDING", "#f59e0b"), ("other", "#b91c1c")];
    let by_status = stacked_chart(
        report,
        &cases,
        &statuses,
        |r| match (r.failed(), r.answer.as_deref()) {
            (false, Some("COMPLETE")) => "COMPLETE",
            (false, Some("PENDING")) => "PENDING",
            _ => "other",
        },
        200.0,
        "case creations per second",
        t_end,
    );
    let verdict = if report.kept {
        r#"<p class="verdict ok">Every promise kept</p>"#
    } else {
        r#"<p class="verdict bad">A promise was broken</p>"#
    };
    let mut all_stats = vec![report.warm_up.clone()];
    all_stats.extend(report.phases.iter().cloned());
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>failsoft drill: {edge} edge, CRM {mode} for {outage}</title>
<style>
body{{font-family:system-ui,-apple-system,sans-serif;margin:2rem auto;max-width:1000px;padding:0 1rem;color:#111827;line-height:1.45}}
h1{{font-size:1.5rem;margin-bottom:.2rem}} h2{{font-size:1.15rem;margin-top:2rem}}
.sub{{color:#4b5563;margin-top:0}}
.verdict{{font-size:1.2rem;font-weight:600;padding:.5rem .8rem;border-radius:6px;display:inline-block}}
.verdict.ok{{background:#dcfce7;color:#14532d}} .verdict.bad{{background:#fee2e2;color:#7f1d1d}}
table{{border-collapse:collapse;font-size:.85rem;margin:.5rem 0}} td,th{{padding:.25rem .5rem;border-bottom:1px solid #e5e7eb;text-align:left;vertical-align:top}}
th{{background:#f9fafb}} td.ok{{color:#15803d;font-weight:700}} td.bad,.bad{{color:#b91c1c;font-weight:700}} td.na{{color:#9ca3af}}
pre{{background:#f9fafb;padding:.8rem;overflow-x:auto;font-size:.78rem}} .note{{color:#4b5563;font-size:.88rem}}
</style></head><body>
<h1>failsoft drill: the CRM {mode} for {outage}</h1>
<p class="sub">{edge} edge · {lookups}/s lookups, {cases}/s case creations, {polls}/s result polls · started {started} · {cpu} ({cores} cores)</p>
{verdict}
<h2>Promises</h2>
<p class="note">Any of these broken makes <code>failsoft drill</code> exit non-zero.</p>
<table><tr><th></th><th>promise</th><th>measured</th><th>limit</th></tr>{promises}</table>
<h2>Targets</h2>
<p class="note">Measured on every run; judged in <code>hang</code> mode where marked; enforced only with <code>--enforce-targets</code>.</p>
<table><tr><th></th><th>target</th><th>measured</th><th>target</th></tr>{targets}</table>
<h2>Latency of every request</h2>
<p class="note">Each dot is one request, at the time it started. The shaded band is the outage; the dashed lines are the CRM deadline the edge waits at most and the Data Action timeout after which Genesys takes the failure path.</p>
{latency}
<h2>How lookups were answered</h2>
<p class="note"><b>cache</b>: a fresh record; <b>live</b>: the CRM within the deadline; <b>stale_cache</b>: the last-known record, with a warning; <b>default</b>: no record at all (a number never seen), the default tier, with a warning.</p>
{by_source}
<h2>How case creations were answered</h2>
<p class="note"><b>COMPLETE</b>: created in the CRM on the spot; <b>PENDING</b>: queued write-ahead, delivered later by the origin worker.</p>
{by_status}
<h2>The queue and the deliveries</h2>
<p class="note">Messages in the work queue (visible plus in flight, sampled every second), the dead-letter queue, and the deliveries per second the CRM's ledger (writes) and the results table (refreshes) record. The dark strip marks the seconds the worker's breaker was open.</p>
{queue}
<h2>Per phase</h2>
<table><tr><th>phase</th><th>kind</th><th>count</th><th>non-200</th><th>&gt;10 s</th><th>p50 ms</th><th>p95 ms</th><th>p99 ms</th><th>max ms</th><th>answers</th></tr>{rows}</table>
<h2>Summary as printed</h2>
<pre>{summary}</pre>
<p class="note">Settings: before {before}, outage {outage}, after {after}; freshness window {freshness} s; CRM deadline {deadline} ms; drain limit {drain_limit} s; seed {seed}; stack {stack}. Every request is in <code>requests.jsonl</code> beside this file, the figures in <code>report.json</code>.</p>
</body></html>
"#,
        edge = esc(&s.edge),
        mode = esc(&s.mode),
        outage = duration_text(s.outage_secs),
        before = duration_text(s.before_secs),
        after = duration_text(s.after_secs),
        lookups = s.rates.lookups_per_sec,
        cases = s.rates.cases_per_sec,
        polls = s.rates.polls_per_sec,
        started = esc(&s.started_at),
        cpu = esc(&s.machine.cpu),
        cores = s.machine.cores,
        promises = checks(&report.promises),
        targets = checks(&report.targets),
        latency = latency_chart(report, records, t_end),
        queue = queue_chart(report, t_end),
        rows = stats_rows(&all_stats),
        summary = esc(summary),
        freshness = s.freshness_secs,
        deadline = s.crm_deadline_ms,
        drain_limit = s.drain_limit_secs,
        seed = s.seed,
        stack = esc(&s.stack),
    )
}
