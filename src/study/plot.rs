//! Training curves of a run (`plot`, and `train --plot-every`): the losses, D's outputs and the throughput
//! recorded in `metrics.csv`, drawn as one PNG; or several runs overlaid, one panel (or PNG) per metric and one
//! colour per run (`plot --run A --run B`).
//!
//! Every series is drawn twice: the raw values as a thin pale line, and an exponential moving average as a bold
//! line (single GAN steps are noisy enough that the trend is invisible without it). For the BCE losses (`ns`,
//! `minimax`) the values of the game's equilibrium, D(x) = D(G(z)) = 1/2, are drawn as dashed reference lines:
//! the summed D loss −log D(x) − log(1 − D(G(z))) is then 2 ln 2 ≈ 1.386, each of its two terms ln 2 (the line
//! the lectures draw; both are drawn and labelled). For other
//! losses the CSV's "D(x)" columns are raw critic outputs and there is no such line.
//!
//! Text is drawn with the DejaVu Sans font embedded in the binary (assets/fonts), so plotting does not depend
//! on the fonts installed on the machine.

use std::path::Path;
use std::sync::OnceLock;

use anyhow::{anyhow, bail, ensure, Context, Result};
use image::RgbImage;
use plotters::prelude::*;

/// The embedded font (DejaVu Sans 2.37, Bitstream Vera license: assets/fonts/DejaVuSans-LICENSE.txt).
static FONT_TTF: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");

/// The font family name every text style here uses.
pub const FONT: &str = "sans-serif";

/// Registers the embedded font with plotters (once per process); every drawing function calls this first.
pub fn ensure_font() -> Result<()> {
    static DONE: OnceLock<bool> = OnceLock::new();
    let ok = *DONE
        .get_or_init(|| plotters::style::register_font(FONT, FontStyle::Normal, FONT_TTF).is_ok());
    ensure!(ok, "the embedded font could not be loaded");
    Ok(())
}

/// Plotters' errors carry the backend's error type; they all become one message.
pub(crate) fn draw_err<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow!("drawing the plot: {e}")
}

/// An RGB canvas of `width`×`height` drawn by `draw`, as an image.
pub(crate) fn render<F>(width: u32, height: u32, draw: F) -> Result<RgbImage>
where
    F: FnOnce(&DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>) -> Result<()>,
{
    ensure_font()?;
    ensure!(
        (64..=16384).contains(&width) && (64..=16384).contains(&height),
        "the image size {width}x{height} is out of range (64 to 16384 pixels a side)"
    );
    let mut buf = vec![0u8; width as usize * height as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        draw(&root)?;
        root.present().map_err(draw_err)?;
    }
    RgbImage::from_raw(width, height, buf).ok_or_else(|| anyhow!("internal: canvas size mismatch"))
}

/// The columns whose cells must be numbers; any other column may hold text (read as NaN).
const NUMERIC: &[&str] = &[
    "step",
    "loss_d",
    "loss_g",
    "d_x",
    "d_g_z1",
    "d_g_z2",
    "img_per_s",
    "elapsed_s",
    "fid",
];

/// The columns of a metrics CSV, by header name. Cells that are empty (a column only some rows fill, such as
/// an occasional FID) are NaN.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Metrics {
    pub names: Vec<String>,
    pub columns: Vec<Vec<f64>>,
}

impl Metrics {
    /// Parses CSV text with a header line. Only the `step` column is required; unknown columns are kept (text
    /// in them reads as NaN), and rows shorter than the header leave the missing cells NaN. `what` names the
    /// source in messages.
    pub fn parse(text: &str, what: &str) -> Result<Metrics> {
        let mut lines = text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty());
        let Some((_, header)) = lines.next() else {
            bail!("{what} is empty (no header line)");
        };
        let names: Vec<String> = header.split(',').map(|s| s.trim().to_string()).collect();
        ensure!(
            names.iter().any(|n| n == "step"),
            "{what} has no 'step' column (header: {header})"
        );
        let mut columns = vec![Vec::new(); names.len()];
        // A line the training loop is still writing has no newline yet: skip it rather than fail.
        let complete = text.ends_with('\n');
        let rows: Vec<(usize, &str)> = lines.collect();
        let last = rows.len().saturating_sub(1);
        for (k, &(i, line)) in rows.iter().enumerate() {
            let cells: Vec<&str> = line.split(',').map(str::trim).collect();
            let parsed: Result<Vec<f64>, String> = cells
                .iter()
                .zip(&names)
                .map(|(c, name)| match c.parse::<f64>() {
                    Ok(v) => Ok(v),
                    Err(_) if c.is_empty() || !NUMERIC.contains(&name.as_str()) => Ok(f64::NAN),
                    Err(_) => Err(c.to_string()),
                })
                .collect();
            let ok = cells.len() <= names.len() && parsed.is_ok();
            if !ok && k == last && !complete {
                break;
            }
            ensure!(
                cells.len() <= names.len(),
                "{what}, line {}: {} values but the header has {} columns",
                i + 1,
                cells.len(),
                names.len()
            );
            let values =
                parsed.map_err(|c| anyhow!("{what}, line {}: '{c}' is not a number", i + 1))?;
            for (j, col) in columns.iter_mut().enumerate() {
                col.push(values.get(j).copied().unwrap_or(f64::NAN));
            }
        }
        let m = Metrics { names, columns };
        ensure!(
            m.step().iter().all(|s| s.is_finite()),
            "{what}: a row has no step number"
        );
        Ok(m)
    }

    /// Reads and parses a metrics CSV file.
    pub fn read(path: &Path) -> Result<Metrics> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read metrics file {}", path.display()))?;
        Metrics::parse(&text, &path.display().to_string())
    }

    /// Number of data rows.
    pub fn len(&self) -> usize {
        self.columns.first().map_or(0, Vec::len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The column named `name`, if the CSV has one.
    pub fn get(&self, name: &str) -> Option<&[f64]> {
        self.names
            .iter()
            .position(|n| n == name)
            .map(|i| self.columns[i].as_slice())
    }

    /// The column with at least one finite value, if any.
    fn series(&self, name: &str) -> Option<&[f64]> {
        self.get(name).filter(|c| c.iter().any(|v| v.is_finite()))
    }

    pub fn step(&self) -> &[f64] {
        self.get("step").unwrap_or(&[])
    }
}

/// Exponential moving average with weight `weight` on the past, bias-corrected (as TensorBoard's smoothing):
/// s_t = w·s_{t−1} + (1 − w)·x_t from s_0 = 0, reported as s_t / (1 − w^t), so the curve starts at the first
/// value instead of rising from zero. NaN inputs give NaN outputs and leave the average unchanged.
pub fn ema(values: &[f64], weight: f64) -> Vec<f64> {
    let w = weight.clamp(0.0, 1.0 - 1e-12);
    let mut acc = 0.0;
    let mut wt = 1.0; // w^t over the finite values seen
    values
        .iter()
        .map(|&x| {
            if !x.is_finite() {
                return f64::NAN;
            }
            acc = w * acc + (1.0 - w) * x;
            wt *= w;
            acc / (1.0 - wt)
        })
        .collect()
}

/// Whether the D loss of this loss kind is the BCE of a probability, so that D(x) and D(G(z)) are
/// probabilities and D(x) = D(G(z)) = 1/2 is the equilibrium. Compared by name so that loss kinds added later
/// are treated as "no equilibrium line" unless listed here.
pub fn is_bce_loss(kind: &str) -> bool {
    matches!(kind, "ns" | "minimax")
}

/// How a plot is drawn.
#[derive(Clone, Debug)]
pub struct PlotOptions {
    /// EMA weight of the bold curves, in [0, 1); 0 draws the raw values only.
    pub smooth: f64,
    /// The run's loss kind (`ns`, `minimax`, ...), or None when unknown: decides the reference lines and
    /// whether D's outputs are probabilities.
    pub loss: Option<String>,
    pub width: u32,
    pub height: u32,
    /// Title at the top (e.g. the run directory).
    pub title: String,
}

impl Default for PlotOptions {
    fn default() -> Self {
        PlotOptions {
            smooth: 0.9,
            loss: None,
            width: 1200,
            height: 1000,
            title: String::new(),
        }
    }
}

const BLUE: RGBColor = RGBColor(31, 119, 180);
const ORANGE: RGBColor = RGBColor(255, 127, 14);
const GREEN: RGBColor = RGBColor(44, 160, 44);
const RED: RGBColor = RGBColor(214, 39, 40);
const PURPLE: RGBColor = RGBColor(148, 103, 189);
const GREY: RGBColor = RGBColor(90, 90, 90);

/// One curve: a CSV column against its run's steps, its legend label and colour.
struct Curve<'a> {
    label: String,
    steps: &'a [f64],
    values: &'a [f64],
    color: RGBColor,
}

/// A horizontal dashed reference line with its legend label.
struct RefLine {
    label: String,
    y: f64,
    color: RGBColor,
}

/// One panel of the figure.
struct Panel<'a> {
    title: String,
    y_desc: String,
    curves: Vec<Curve<'a>>,
    refs: Vec<RefLine>,
    /// Fixed y range (probabilities) instead of one fitted to the data.
    y_range: Option<(f64, f64)>,
    /// Also draw the smoothed curve.
    smooth: bool,
    /// Include 0 in the y range (throughput).
    from_zero: bool,
    /// Mark every value with a dot (sparse series such as FID).
    points: bool,
    /// Relative height.
    weight: u32,
}

/// The `q` quantile of the finite `v` (nearest rank).
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// A y range that shows the bulk of the raw values, all of the smoothed ones and the reference lines. The
/// extreme 0.5 % at each end is left out so one divergent step does not flatten the rest of the curve;
/// values outside are drawn at the edge.
fn fit_range(raw: &[f64], smoothed: &[f64], refs: &[f64], from_zero: bool) -> (f64, f64) {
    let mut v: Vec<f64> = raw.iter().copied().filter(|x| x.is_finite()).collect();
    v.sort_by(f64::total_cmp);
    let (mut lo, mut hi) = if v.is_empty() {
        (0.0, 1.0)
    } else {
        (quantile(&v, 0.005), quantile(&v, 0.995))
    };
    for &x in smoothed.iter().chain(refs).filter(|x| x.is_finite()) {
        lo = lo.min(x);
        hi = hi.max(x);
    }
    if from_zero {
        lo = lo.min(0.0);
    }
    let pad = if hi > lo {
        (hi - lo) * 0.05
    } else {
        lo.abs().max(1.0) * 0.1
    };
    (
        if from_zero && lo >= 0.0 {
            0.0
        } else {
            lo - pad
        },
        hi + pad,
    )
}

/// The (step, value) runs of finite values, each clamped into `[lo, hi]`: NaN cells split a curve.
fn segments(steps: &[f64], values: &[f64], lo: f64, hi: f64) -> Vec<Vec<(f64, f64)>> {
    let mut out = vec![];
    let mut cur = vec![];
    for (&x, &y) in steps.iter().zip(values) {
        if y.is_finite() {
            cur.push((x, y.clamp(lo, hi)));
        } else if !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn draw_panel(
    area: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    p: &Panel,
    smooth_w: f64,
) -> Result<()> {
    let (x0, x1) = {
        let steps = || p.curves.iter().flat_map(|c| c.steps.iter().copied());
        let lo = steps().fold(f64::INFINITY, f64::min);
        let hi = steps().fold(f64::NEG_INFINITY, f64::max);
        if hi > lo {
            (lo, hi)
        } else {
            (lo - 1.0, lo + 1.0)
        }
    };
    let smoothed: Vec<Vec<f64>> = p
        .curves
        .iter()
        .map(|c| {
            if p.smooth && smooth_w > 0.0 {
                ema(c.values, smooth_w)
            } else {
                vec![]
            }
        })
        .collect();
    let (y0, y1) = p.y_range.unwrap_or_else(|| {
        let raw: Vec<f64> = p
            .curves
            .iter()
            .flat_map(|c| c.values.iter().copied())
            .collect();
        let sm: Vec<f64> = smoothed.iter().flatten().copied().collect();
        let refs: Vec<f64> = p.refs.iter().map(|r| r.y).collect();
        fit_range(&raw, &sm, &refs, p.from_zero)
    });
    let mut chart = ChartBuilder::on(area)
        .caption(&p.title, (FONT, 18))
        .margin(10)
        .x_label_area_size(32)
        .y_label_area_size(64)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(draw_err)?;
    chart
        .configure_mesh()
        .x_desc("step")
        .y_desc(p.y_desc.as_str())
        .x_label_formatter(&|x| format!("{x:.0}"))
        .x_labels(12)
        .y_labels(8)
        .label_style((FONT, 13))
        .axis_desc_style((FONT, 14))
        .light_line_style(TRANSPARENT)
        .bold_line_style(RGBColor(225, 225, 225))
        .draw()
        .map_err(draw_err)?;
    for r in &p.refs {
        let color = r.color;
        chart
            .draw_series(DashedLineSeries::new(
                vec![(x0, r.y), (x1, r.y)],
                8,
                5,
                color.stroke_width(2),
            ))
            .map_err(draw_err)?
            .label(r.label.as_str())
            .legend(move |(x, y)| {
                PathElement::new(
                    vec![(x, y), (x + 8, y), (x + 12, y), (x + 20, y)],
                    color.stroke_width(2),
                )
            });
    }
    for (c, sm) in p.curves.iter().zip(&smoothed) {
        let color = c.color;
        // With a smoothed curve on top, the raw one is pale context; alone, it is the curve.
        let raw_style = if sm.is_empty() {
            color.stroke_width(2)
        } else {
            color.mix(0.3).stroke_width(1)
        };
        let mut labelled = false;
        for seg in segments(c.steps, c.values, y0, y1) {
            if p.points {
                chart
                    .draw_series(seg.iter().map(|&pt| Circle::new(pt, 3, color.filled())))
                    .map_err(draw_err)?;
            }
            let s = chart
                .draw_series(LineSeries::new(seg, raw_style))
                .map_err(draw_err)?;
            if sm.is_empty() && !labelled {
                s.label(c.label.as_str()).legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
                labelled = true;
            }
        }
        for seg in segments(c.steps, sm, y0, y1) {
            let s = chart
                .draw_series(LineSeries::new(seg, color.stroke_width(3)))
                .map_err(draw_err)?;
            if !labelled {
                s.label(c.label.as_str()).legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(3))
                });
                labelled = true;
            }
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .label_font((FONT, 13))
        .draw()
        .map_err(draw_err)?;
    Ok(())
}

/// The BCE losses' equilibrium lines (D(x) = D(G(z)) = 1/2): for D's loss, the logged sum of its two terms at
/// 2 ln 2 and each term (−log D(x), −log(1 − D(G(z)))) at ln 2, the value the lectures draw; for G's, ln 2
/// (ns) or −ln 2 (minimax). One line where two values coincide (ns: G's and a D term's).
fn loss_refs(loss: &str, d: bool, g: bool) -> Vec<RefLine> {
    use std::f64::consts::LN_2;
    let mut refs = vec![];
    if d {
        refs.push(RefLine {
            label: "D loss at equilibrium: 2 ln 2 ≈ 1.386 (real + fake terms, as logged)".into(),
            y: 2.0 * LN_2,
            color: BLUE,
        });
    }
    let g_minimax = loss == "minimax";
    match (d, g, g_minimax) {
        (true, true, false) => refs.push(RefLine {
            label: "ln 2 ≈ 0.693: each D term, and G's loss (ns), at equilibrium".into(),
            y: LN_2,
            color: ORANGE,
        }),
        (d, g, _) => {
            if d {
                refs.push(RefLine {
                    label: "each D term at equilibrium: ln 2 ≈ 0.693".into(),
                    y: LN_2,
                    color: GREY,
                });
            }
            if g {
                let (y, label) = if g_minimax {
                    (-LN_2, "G loss at equilibrium: −ln 2 ≈ −0.693 (minimax)")
                } else {
                    (LN_2, "G loss at equilibrium: ln 2 ≈ 0.693 (ns)")
                };
                refs.push(RefLine {
                    label: label.into(),
                    y,
                    color: ORANGE,
                });
            }
        }
    }
    refs
}

/// Draws the training curves of `m`. Panels whose columns the CSV lacks are left out.
pub fn render_metrics(m: &Metrics, o: &PlotOptions) -> Result<RgbImage> {
    ensure!(!m.is_empty(), "no metrics rows to plot yet");
    ensure!(
        (0.0..1.0).contains(&o.smooth),
        "the smoothing weight must be in [0, 1), got {}",
        o.smooth
    );
    let bce = o.loss.as_deref().map(is_bce_loss);
    let loss_name = o.loss.as_deref().unwrap_or("unknown");
    let steps = m.step();
    let curve = |name: &str, label: &str, color| {
        m.series(name).map(|values| Curve {
            label: label.to_string(),
            steps,
            values,
            color,
        })
    };
    let mut panels = vec![];

    let refs = if bce == Some(true) {
        loss_refs(loss_name, true, true)
    } else {
        vec![]
    };
    let curves: Vec<Curve> = [
        curve("loss_d", "D loss", BLUE),
        curve("loss_g", "G loss", ORANGE),
    ]
    .into_iter()
    .flatten()
    .collect();
    if !curves.is_empty() {
        let smooth_note = if o.smooth > 0.0 {
            format!("thin: raw, bold: EMA {}", o.smooth)
        } else {
            "raw".into()
        };
        let eq_note = match bce {
            Some(true) => String::new(),
            Some(false) => " — no equilibrium line for this loss".into(),
            None => " — loss kind unknown (pass --loss to draw the equilibrium)".into(),
        };
        panels.push(Panel {
            title: format!("Losses ({loss_name}; {smooth_note}){eq_note}"),
            y_desc: "loss".into(),
            curves,
            refs,
            y_range: None,
            smooth: true,
            from_zero: false,
            points: false,
            weight: 4,
        });
    }

    let curves: Vec<Curve> = [
        curve("d_x", "D(x) real", GREEN),
        curve("d_g_z1", "D(G(z)) before D step", RED),
        curve("d_g_z2", "D(G(z)) after D step", PURPLE),
    ]
    .into_iter()
    .flatten()
    .collect();
    if !curves.is_empty() {
        let probs = bce == Some(true);
        panels.push(Panel {
            title: if probs {
                "D's mean output (probability); equilibrium 0.5".into()
            } else {
                format!("D's mean output (raw, loss {loss_name})")
            },
            y_desc: if probs { "D(·)" } else { "D(·) raw" }.into(),
            curves,
            refs: if probs {
                vec![RefLine {
                    label: "D = 0.5".into(),
                    y: 0.5,
                    color: GREY,
                }]
            } else {
                vec![]
            },
            y_range: probs.then_some((0.0, 1.0)),
            smooth: true,
            from_zero: false,
            points: false,
            weight: 3,
        });
    }

    if let Some(c) = curve("img_per_s", "images/s", GREY) {
        panels.push(Panel {
            title: "Throughput".into(),
            y_desc: "images/s".into(),
            curves: vec![c],
            refs: vec![],
            y_range: None,
            smooth: false,
            from_zero: true,
            points: false,
            weight: 2,
        });
    }
    if let Some(c) = curve("fid", "FID", PURPLE) {
        panels.push(Panel {
            title: "FID (lower is better)".into(),
            y_desc: "FID".into(),
            curves: vec![c],
            refs: vec![],
            y_range: None,
            smooth: false,
            from_zero: false,
            points: true,
            weight: 2,
        });
    }
    ensure!(
        !panels.is_empty(),
        "the metrics have none of the columns loss_d, loss_g, d_x, d_g_z1, d_g_z2, img_per_s, fid"
    );

    stack(&panels, o)
}

/// The panels one above the other, heights in proportion to their weights, under `o.title`.
fn stack(panels: &[Panel], o: &PlotOptions) -> Result<RgbImage> {
    render(o.width, o.height, |root| {
        let body = if o.title.is_empty() {
            root.clone()
        } else {
            root.titled(&o.title, (FONT, 22)).map_err(draw_err)?
        };
        let (_, h) = body.dim_in_pixel();
        let total: u32 = panels.iter().map(|p| p.weight).sum();
        let mut rest = body;
        for (i, p) in panels.iter().enumerate() {
            let area = if i + 1 == panels.len() {
                rest.clone()
            } else {
                let px = h * p.weight / total;
                let (a, b) = rest.split_vertically(px);
                rest = b;
                a
            };
            draw_panel(&area, p, o.smooth)?;
        }
        Ok(())
    })
}

/// One run of an overlay: its legend name and its metrics.
pub struct NamedRun {
    pub name: String,
    pub metrics: Metrics,
}

/// What an overlay compares, one panel (or one PNG) each: column, panel title, y label.
pub const OVERLAY_METRICS: &[(&str, &str, &str)] = &[
    ("loss_d", "D loss", "loss"),
    ("loss_g", "G loss", "loss"),
    ("d_x", "D(x) on real images", "D(x)"),
    ("d_g_z1", "D(G(z)) before the D step", "D(G(z))"),
    ("img_per_s", "Throughput", "images/s"),
    ("fid", "FID (lower is better)", "FID"),
];

/// Colours of the runs, in order (matplotlib's tab10, which readers know from PyTorch tutorials).
const RUN_COLORS: [RGBColor; 8] = [
    BLUE,
    ORANGE,
    GREEN,
    RED,
    PURPLE,
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(23, 190, 207),
];

/// The overlay's panels: each metric of [`OVERLAY_METRICS`] that some run has, with one curve per run. The
/// equilibrium lines are drawn when `o.loss` (the runs' common loss) is a BCE loss.
fn overlay_panels<'a>(runs: &'a [NamedRun], o: &PlotOptions) -> Vec<(&'static str, Panel<'a>)> {
    let loss = o.loss.as_deref().unwrap_or("unknown");
    let bce = o.loss.as_deref().is_some_and(is_bce_loss);
    OVERLAY_METRICS
        .iter()
        .filter_map(|&(col, title, y_desc)| {
            let curves: Vec<Curve> = runs
                .iter()
                .enumerate()
                .filter_map(|(i, r)| {
                    r.metrics.series(col).map(|values| Curve {
                        label: r.name.clone(),
                        steps: r.metrics.step(),
                        values,
                        color: RUN_COLORS[i % RUN_COLORS.len()],
                    })
                })
                .collect();
            if curves.is_empty() {
                return None;
            }
            let probability = bce && col.starts_with("d_");
            let mut refs = match col {
                "loss_d" if bce => loss_refs(loss, true, false),
                "loss_g" if bce => loss_refs(loss, false, true),
                _ if probability => vec![RefLine {
                    label: "D = 0.5".into(),
                    y: 0.5,
                    color: GREY,
                }],
                _ => vec![],
            };
            // The runs own the colours here: reference lines are greys.
            for (r, grey) in refs.iter_mut().zip([GREY, RGBColor(165, 165, 165)]) {
                r.color = grey;
            }
            let sparse = col == "fid";
            Some((
                col,
                Panel {
                    title: format!("{title} ({loss})"),
                    y_desc: y_desc.into(),
                    curves,
                    refs,
                    y_range: probability.then_some((0.0, 1.0)),
                    smooth: !sparse && col != "img_per_s",
                    from_zero: col == "img_per_s",
                    points: sparse,
                    weight: if col.starts_with("loss") { 3 } else { 2 },
                },
            ))
        })
        .collect()
}

/// Several runs' curves overlaid, one panel per metric, each run in its own colour with its name in the
/// legends (the lectures' comparisons: two learning rates, k, a trick switched off).
pub fn render_overlay(runs: &[NamedRun], o: &PlotOptions) -> Result<RgbImage> {
    ensure!(
        runs.iter().any(|r| !r.metrics.is_empty()),
        "no metrics rows to plot yet"
    );
    let panels: Vec<Panel> = overlay_panels(runs, o)
        .into_iter()
        .map(|(_, p)| p)
        .collect();
    ensure!(
        !panels.is_empty(),
        "the runs share none of the plotted columns"
    );
    stack(&panels, o)
}

/// Each overlaid metric as a PNG of its own: (column, image).
pub fn render_overlay_split(
    runs: &[NamedRun],
    o: &PlotOptions,
) -> Result<Vec<(&'static str, RgbImage)>> {
    ensure!(
        runs.iter().any(|r| !r.metrics.is_empty()),
        "no metrics rows to plot yet"
    );
    overlay_panels(runs, o)
        .into_iter()
        .map(|(col, p)| Ok((col, stack(std::slice::from_ref(&p), o)?)))
        .collect()
}

/// Reads `csv`, draws it and writes the PNG `out` (atomically, so a viewer never sees half a file).
pub fn plot_metrics_file(csv: &Path, out: &Path, o: &PlotOptions) -> Result<()> {
    let m = Metrics::read(csv)?;
    ensure!(
        !m.is_empty(),
        "{} has a header but no rows yet: nothing to plot",
        csv.display()
    );
    let img = render_metrics(&m, o).with_context(|| format!("plotting {}", csv.display()))?;
    crate::io::save_png(&img, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ema_known_values() {
        // s1 = 0.5·0 + 0.5·0 = 0 → 0 / (1 − 0.5) = 0; s2 = 0.5·0 + 0.5·1 = 0.5 → 0.5 / (1 − 0.25) = 2/3.
        let s = ema(&[0.0, 1.0], 0.5);
        assert_eq!(s[0], 0.0);
        assert!((s[1] - 2.0 / 3.0).abs() < 1e-12, "{s:?}");
        // Bias correction: a constant stays exactly itself from the first value on.
        assert!(ema(&[3.0; 5], 0.9).iter().all(|&v| (v - 3.0).abs() < 1e-12));
        // Weight 0 is the identity.
        assert_eq!(ema(&[1.0, -2.0, 5.0], 0.0), [1.0, -2.0, 5.0]);
        // NaN passes through without disturbing the average.
        let s = ema(&[2.0, f64::NAN, 2.0], 0.8);
        assert!(s[1].is_nan() && (s[2] - 2.0).abs() < 1e-12, "{s:?}");
        // A step is followed smoothly, monotonically, and approached.
        let mut x = vec![0.0; 3];
        x.extend([1.0; 60]);
        let s = ema(&x, 0.9);
        assert!(s.windows(2).all(|w| w[1] >= w[0]));
        assert!(s[4] > 0.0 && s[4] < 0.5 && s[62] > 0.99, "{s:?}");
    }

    #[test]
    fn csv_with_extra_and_missing_columns() {
        let text = "step,loss_d,fid,loss_g,note\n10,1.5,,0.7,3\n20,1.25,88.5,0.75,ok\n30,1.0\n";
        let m = Metrics::parse(text, "t.csv").unwrap();
        assert_eq!(m.len(), 3);
        assert_eq!(m.step(), [10.0, 20.0, 30.0]);
        assert_eq!(m.get("loss_d").unwrap(), [1.5, 1.25, 1.0]);
        let fid = m.get("fid").unwrap();
        assert!(fid[0].is_nan() && fid[1] == 88.5 && fid[2].is_nan());
        assert!(m.get("loss_g").unwrap()[2].is_nan());
        assert!(m.get("d_x").is_none());
        let note = m.get("note").unwrap();
        assert!(note[0] == 3.0 && note[1].is_nan());
        // The real header, with no rows yet.
        let m =
            Metrics::parse(&format!("{}\n", crate::train::run::METRICS_HEADER), "m.csv").unwrap();
        assert!(m.is_empty() && m.get("img_per_s").is_some());
    }

    #[test]
    fn csv_line_being_written_is_skipped_but_garbage_is_an_error() {
        let m = Metrics::parse("step,loss_d\n1,0.5\n2,0.", "t").unwrap();
        assert_eq!(m.len(), 2, "a complete last value still counts");
        let m = Metrics::parse("step,loss_d\n1,0.5\n2,0.4,", "t").unwrap();
        assert_eq!(m.len(), 1, "a longer unfinished last line is dropped");
        let m = Metrics::parse("step,loss_d\n1,0.5\n2,0.4e", "t").unwrap();
        assert_eq!(m.len(), 1, "an unfinished last line is dropped");
        let e = Metrics::parse("step,loss_d\n1,abc\n2,0.4\n", "t.csv")
            .unwrap_err()
            .to_string();
        assert!(e.contains("t.csv, line 2: 'abc' is not a number"), "{e}");
        let e = Metrics::parse("step,loss_d\n1,0.5,7\n", "t.csv")
            .unwrap_err()
            .to_string();
        assert!(e.contains("3 values but the header has 2"), "{e}");
        let e = Metrics::parse("", "t.csv").unwrap_err().to_string();
        assert!(e.contains("empty"), "{e}");
        let e = Metrics::parse("loss_d,loss_g\n1,2\n", "t.csv")
            .unwrap_err()
            .to_string();
        assert!(e.contains("no 'step' column"), "{e}");
        let e = Metrics::parse("step,loss_d\n,2\n", "t.csv")
            .unwrap_err()
            .to_string();
        assert!(e.contains("no step number"), "{e}");
    }

    #[test]
    fn bce_losses_get_the_equilibrium() {
        assert!(is_bce_loss("ns") && is_bce_loss("minimax"));
        assert!(!is_bce_loss("wgan") && !is_bce_loss("hinge") && !is_bce_loss("ls"));
    }

    fn metrics(rows: usize, with_fid: bool) -> Metrics {
        let mut text = String::from("step,loss_d,loss_g,d_x,d_g_z1,d_g_z2,img_per_s,elapsed_s");
        text.push_str(if with_fid { ",fid\n" } else { "\n" });
        for i in 1..=rows {
            let t = i as f64;
            text.push_str(&format!(
                "{},{},{},{},{},{},{},{}",
                i * 10,
                1.4 + 0.3 * (t * 0.7).sin(),
                0.7 + 0.5 * (t * 0.3).cos(),
                0.5 + 0.3 * (t * 0.2).sin(),
                0.4,
                0.45,
                900.0 + t,
                t
            ));
            if with_fid {
                text.push_str(if i % 5 == 0 { ",42.0" } else { "," });
            }
            text.push('\n');
        }
        Metrics::parse(&text, "t").unwrap()
    }

    #[test]
    fn renders_at_the_requested_size_with_ink_on_it() {
        for (loss, fid) in [(Some("ns"), false), (Some("wgan"), true), (None, false)] {
            let o = PlotOptions {
                loss: loss.map(str::to_string),
                width: 640,
                height: 500,
                title: "test run".into(),
                ..PlotOptions::default()
            };
            let img = render_metrics(&metrics(37, fid), &o).unwrap();
            assert_eq!(img.dimensions(), (640, 500));
            // Curves in their colours: the D loss blue and the D(x) green are somewhere on the canvas.
            let has = |c: [u8; 3]| img.pixels().any(|p| p.0 == c);
            assert!(has([31, 119, 180]) && has([44, 160, 44]), "{loss:?}");
        }
        // One row (a fresh run) still draws.
        let img = render_metrics(&metrics(1, false), &PlotOptions::default()).unwrap();
        assert_eq!(img.dimensions(), (1200, 1000));
    }

    #[test]
    fn render_rejects_bad_options() {
        let m = metrics(3, false);
        let o = PlotOptions {
            smooth: 1.0,
            ..PlotOptions::default()
        };
        assert!(render_metrics(&m, &o)
            .unwrap_err()
            .to_string()
            .contains("[0, 1)"));
        let o = PlotOptions {
            width: 10,
            ..PlotOptions::default()
        };
        assert!(render_metrics(&m, &o)
            .unwrap_err()
            .to_string()
            .contains("out of range"));
        let empty = Metrics::parse("step,loss_d\n", "t").unwrap();
        assert!(render_metrics(&empty, &PlotOptions::default()).is_err());
        let none = Metrics::parse("step,other\n1,2\n", "t").unwrap();
        let e = render_metrics(&none, &PlotOptions::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("none of the columns"), "{e}");
    }
}
