//! What the discriminator sees (`dfeatures`): D's hidden features of N real and N generated images, each
//! block's features projected onto their top two principal components, real and fake as two colours of dots.
//!
//! While the game is balanced, G's images land where the real ones are and the two clouds mix; a D that is
//! winning has found directions that tell them apart, and the clouds separate (most visibly in the deeper
//! blocks). Each panel also gives a number for it: how many points the nearer of the two class centroids in
//! the plotted plane classifies correctly (50 % = mixed, 100 % = separated).
//!
//! With a perplexity (`dfeatures --tsne`), each block also gets a t-SNE embedding ([`super::tsne`]) drawn in a
//! second row under its PCA panel: t-SNE keeps neighbourhoods, so clusters that a linear projection folds
//! together (generated images stuck in a few modes, say) come apart there.
//!
//! D runs in eval mode (BN with its running statistics). In training mode each forward normalises its own
//! batch, so an all-real batch and an all-fake batch would each be standardised per channel, hiding exactly
//! the shift between them that this view is meant to show.

use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
use image::RgbImage;
use plotters::prelude::*;

use crate::autograd::Tape;
use crate::checkpoint::{self, TensorFile, FORMAT_CHECKPOINT};
use crate::data::{open_dataset, DatasetOptions};
use crate::device::Device;
use crate::nn::models::{Discriminator, Generator};
use crate::ops::random::RngStream;
use crate::tensor::Tensor;
use crate::train::config::TrainConfig;
use crate::train::gan::{stream_seed, STREAM_FIXED_Z};
use crate::train::run::{TrainState, STATE_KEY, TRAIN_KEY};

use super::pca::{pca, Pca};
use super::plot::{draw_err, is_bce_loss, render, FONT};

/// What to compute.
#[derive(Clone, Debug)]
pub struct DFeaturesOptions {
    /// Images of each kind (real, generated).
    pub n: usize,
    /// Seed of the real-image choice and of the latents (the same latents as `sample --seed`).
    pub seed: u64,
    /// Dataset of the real images instead of the run's own.
    pub dataset: Option<String>,
    pub device: Device,
    /// Also a t-SNE embedding of each block, with this perplexity.
    pub tsne: Option<f64>,
}

/// One D block's view.
#[derive(Clone, Debug)]
pub struct LayerView {
    /// `main.<i>`.
    pub name: String,
    /// The block's output shape per image ([C, H, W] or [F]).
    pub shape: Vec<usize>,
    /// PCA of the 2N points, real first.
    pub pca: Pca,
    /// Fraction of points the nearer class centroid in the PC1–PC2 plane classifies correctly.
    pub separation: f64,
    /// The same in the block's full feature space: PCA keeps the directions of largest spread, which need
    /// not be the ones D separates along, so the plane can look mixed while the whole space is not.
    pub separation_full: f64,
    /// The t-SNE embedding of the 2N points (real first), when asked for.
    pub tsne: Option<Tsne>,
}

/// A block's t-SNE view.
#[derive(Clone, Debug)]
pub struct Tsne {
    pub points: Vec<[f64; 2]>,
    /// The perplexity used (the requested one, lowered for few points).
    pub perplexity: f64,
    /// Fraction of points whose nearest embedded neighbour is of their own kind (real or generated): about 50 %
    /// when the clouds mix, 100 % when they lie apart.
    pub neighbour_agreement: f64,
}

/// Everything `dfeatures` draws.
#[derive(Clone, Debug)]
pub struct DFeatures {
    pub layers: Vec<LayerView>,
    /// Images of each kind actually used.
    pub n: usize,
    /// Mean D output on the real and the generated images: probabilities for the BCE losses, raw otherwise.
    pub d_real: f64,
    pub d_fake: f64,
    pub probabilities: bool,
    pub model: String,
    pub dataset: String,
    pub step: u64,
}

/// Images per forward pass: bounds memory for large N without making small runs slower.
const CHUNK: usize = 128;

/// Loads the run in `checkpoint` (a run directory or its checkpoint.safetensors) and computes the views.
pub fn compute(checkpoint: &Path, o: &DFeaturesOptions) -> Result<DFeatures> {
    ensure!(
        o.n >= 2,
        "--n must be at least 2 (PCA of one point is meaningless)"
    );
    let file = checkpoint::resolve(checkpoint, true)?;
    let f = TensorFile::load(&file)?;
    checkpoint::model_config(&f, &file)?;
    if f.format() != Some(FORMAT_CHECKPOINT) {
        bail!(
            "{} holds only a generator; dfeatures needs the discriminator, which is in the run's {}",
            file.display(),
            checkpoint::CHECKPOINT_FILE
        );
    }
    let cfg: TrainConfig = f.get_json(TRAIN_KEY, &file)?;
    let state: TrainState = f.get_json(STATE_KEY, &file)?;
    let dev = &o.device;
    // The init draws are overwritten by the checkpoint's tensors right away.
    let mut rng = RngStream::new(0);
    checkpoint::check_gan_size(&f, &cfg.model, &file)?;
    let mut g = Generator::new(&cfg.model, dev, &mut rng)?;
    let mut d = Discriminator::new(&cfg.model, dev, &mut rng)?;
    checkpoint::load_gan_stores(&f, &mut g.store, &mut d.store, &file)?;

    let spec = o.dataset.clone().unwrap_or_else(|| cfg.dataset.clone());
    let (real, labels) =
        real_images(&spec, &cfg, o).with_context(|| format!("reading real images from {spec}"))?;
    let n = real.shape()[0];
    let mut zs = RngStream::new(stream_seed(o.seed, STREAM_FIXED_Z));
    let z = zs.normal(&[n, cfg.model.nz], 0.0, 1.0, dev)?;
    // A conditional G draws each fake with the label of the real image in the same row, so both sets have the
    // same classes and what D's features separate is real vs generated, not one class vs another.
    let labels = labels.as_deref();
    let fake =
        in_chunks(&z, labels, |z, l| g.generate_with_labels(z, l)).context("generating images")?;

    let (real_feats, real_logits) =
        features(&mut d, &real, labels).context("D on the real images")?;
    let (fake_feats, fake_logits) =
        features(&mut d, &fake, labels).context("D on the generated images")?;
    let probabilities = is_bce_loss(&cfg.loss.to_string());
    let mean_out = |l: &[f32]| {
        let s: f64 = l
            .iter()
            .map(|&x| {
                if probabilities {
                    1.0 / (1.0 + (-x as f64).exp())
                } else {
                    x as f64
                }
            })
            .sum();
        s / l.len() as f64
    };
    let mut layers = vec![];
    for ((name, shape, r), (_, _, fk)) in real_feats.into_iter().zip(fake_feats) {
        let dim: usize = shape.iter().product();
        let mut rows = r;
        rows.extend_from_slice(&fk);
        let p = pca(&rows, 2 * n, dim, 2).with_context(|| format!("PCA of {name}"))?;
        let separation = centroid_accuracy(&p.scores, n);
        let full: Vec<Vec<f64>> = rows
            .chunks_exact(dim)
            .map(|r| r.iter().map(|&v| v as f64).collect())
            .collect();
        let separation_full = centroid_accuracy(&full, n);
        let tsne = match o.tsne {
            Some(perplexity) => {
                let fit = super::tsne::tsne(&rows, 2 * n, dim, perplexity)
                    .with_context(|| format!("t-SNE of {name}"))?;
                Some(Tsne {
                    neighbour_agreement: neighbour_agreement(&fit.points, n),
                    perplexity: fit.perplexity,
                    points: fit.points,
                })
            }
            None => None,
        };
        layers.push(LayerView {
            name,
            shape,
            pca: p,
            separation,
            separation_full,
            tsne,
        });
    }
    ensure!(!layers.is_empty(), "the discriminator has no hidden blocks");
    Ok(DFeatures {
        layers,
        n,
        d_real: mean_out(&real_logits),
        d_fake: mean_out(&fake_logits),
        probabilities,
        model: cfg.model.describe(),
        dataset: spec,
        step: state.step,
    })
}

/// `n` images of the dataset (fewer if it is smaller), chosen by `seed` without repetition, with their class
/// labels when the model is conditional.
fn real_images(
    spec: &str,
    cfg: &TrainConfig,
    o: &DFeaturesOptions,
) -> Result<(Tensor, Option<Vec<u32>>)> {
    use rand::SeedableRng;
    let opts = DatasetOptions {
        // The run's own balls: the same seed draws the same pictures it trained on.
        seed: cfg.seed,
        ..DatasetOptions::default()
    };
    let ds = open_dataset(spec, cfg.model.image_size, cfg.model.channels, &opts)?;
    ensure!(
        ds.len() >= 2,
        "the dataset has {} images; need at least 2",
        ds.len()
    );
    let n = o.n.min(ds.len());
    if n < o.n {
        eprintln!("note: the dataset has only {n} images; using {n} of each kind");
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(o.seed);
    let idx = rand::seq::index::sample(&mut rng, ds.len(), n).into_vec();
    let (images, labels) = crate::data::stack_images(ds.as_ref(), &idx, &o.device)?;
    let [c, h, w] = cfg.model.image_shape();
    ensure!(
        images.shape()[1..] == [c, h, w],
        "the dataset's images are not {c}x{h}x{w}"
    );
    let labels = match cfg.model.is_conditional() {
        false => None,
        true => Some(
            labels
                .into_iter()
                .map(|y| y.with_context(|| format!("{} has no class labels", ds.describe())))
                .collect::<Result<Vec<u32>>>()?,
        ),
    };
    Ok((images, labels))
}

/// `f` applied to row chunks of `x` (with the matching chunk of `labels`), the results stacked (on the host,
/// then moved to `x`'s device).
fn in_chunks(
    x: &Tensor,
    labels: Option<&[u32]>,
    mut f: impl FnMut(&Tensor, Option<&[u32]>) -> Result<Tensor>,
) -> Result<Tensor> {
    let mut out = vec![];
    let mut out_shape = vec![];
    for_chunks(x, labels, |part, l| {
        let y = f(part, l)?;
        out_shape = y.shape().to_vec();
        out.extend(y.to_vec()?);
        Ok(())
    })?;
    out_shape[0] = x.shape()[0];
    Tensor::from_vec(out, &out_shape, &x.device())
}

/// Calls `f` on consecutive row chunks of `x` (at most CHUNK rows), with the matching chunk of `labels`.
fn for_chunks(
    x: &Tensor,
    labels: Option<&[u32]>,
    mut f: impl FnMut(&Tensor, Option<&[u32]>) -> Result<()>,
) -> Result<()> {
    let n = x.shape()[0];
    let row: usize = x.shape()[1..].iter().product();
    let host = x.to_vec()?;
    for start in (0..n).step_by(CHUNK) {
        let m = CHUNK.min(n - start);
        let mut shape = x.shape().to_vec();
        shape[0] = m;
        let part = Tensor::from_vec(
            host[start * row..(start + m) * row].to_vec(),
            &shape,
            &x.device(),
        )?;
        f(&part, labels.map(|l| &l[start..start + m]))?;
    }
    Ok(())
}

type Features = Vec<(String, Vec<usize>, Vec<f32>)>;

/// D's block features (name, per-image shape, rows on the host) and logits for `x` (with `labels` for a
/// conditional D), chunk by chunk.
fn features(
    d: &mut Discriminator,
    x: &Tensor,
    labels: Option<&[u32]>,
) -> Result<(Features, Vec<f32>)> {
    let mut feats: Features = vec![];
    let mut logits = vec![];
    for_chunks(x, labels, |part, l| {
        let blocks = d.forward_features(part, l)?;
        if feats.is_empty() {
            feats = blocks
                .iter()
                .map(|(name, t)| (name.clone(), t.shape()[1..].to_vec(), vec![]))
                .collect();
        }
        for ((_, _, rows), (_, t)) in feats.iter_mut().zip(&blocks) {
            rows.extend(t.to_vec()?);
        }
        let mut tape = Tape::no_grad();
        let v = tape.constant(part.clone());
        let y = d.forward_labelled(&mut tape, v, l, false)?;
        logits.extend(tape.value(y).to_vec()?);
        Ok(())
    })?;
    Ok((feats, logits))
}

/// Fraction of the 2n points (real first) that lie nearer to their own class's centroid than to the other's
/// (a point exactly between the two counts as fake).
fn centroid_accuracy(points: &[Vec<f64>], n: usize) -> f64 {
    let centroid = |rows: &[Vec<f64>]| {
        let mut c = vec![0f64; rows[0].len()];
        for r in rows {
            c.iter_mut().zip(r).for_each(|(a, b)| *a += b);
        }
        c.iter_mut().for_each(|a| *a /= rows.len() as f64);
        c
    };
    let (cr, cf) = (centroid(&points[..n]), centroid(&points[n..]));
    let d2 = |r: &[f64], c: &[f64]| r.iter().zip(c).map(|(a, b)| (a - b).powi(2)).sum::<f64>();
    let correct = points
        .iter()
        .enumerate()
        .filter(|(i, r)| (d2(r, &cr) < d2(r, &cf)) == (*i < n))
        .count();
    correct as f64 / points.len() as f64
}

/// Fraction of the 2N points (real first) whose nearest other point is of the same kind.
fn neighbour_agreement(points: &[[f64; 2]], n: usize) -> f64 {
    let d2 = |a: [f64; 2], b: [f64; 2]| (a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2);
    let agree = (0..points.len())
        .filter(|&i| {
            let nearest = (0..points.len())
                .filter(|&j| j != i)
                .min_by(|&a, &b| d2(points[i], points[a]).total_cmp(&d2(points[i], points[b])));
            nearest.is_some_and(|j| (j < n) == (i < n))
        })
        .count();
    agree as f64 / points.len().max(1) as f64
}

/// The default image size for `layers` panels, with a second row when t-SNE is drawn too.
pub fn default_size(layers: usize, tsne: bool) -> (u32, u32) {
    (440 * layers.max(1) as u32, if tsne { 940 } else { 500 })
}

const REAL: RGBColor = RGBColor(31, 119, 180);
const FAKE: RGBColor = RGBColor(214, 39, 40);

/// The scatter plots, one panel per block, side by side.
pub fn render_dfeatures(df: &DFeatures, width: u32, height: u32) -> Result<RgbImage> {
    let raw = if df.probabilities { "" } else { "raw " };
    let out = format!(
        "mean {raw}D(x) = {:.2}, D(G(z)) = {:.2}",
        df.d_real, df.d_fake
    );
    let title = format!(
        "D's features at step {}: {} real vs {} generated images; {out}",
        df.step, df.n, df.n
    );
    let subtitle = format!("{} on {}", df.model, df.dataset);
    render(width, height, |root| {
        let (line1, rest) = root.split_vertically(30);
        let (line2, body) = rest.split_vertically(22);
        line1.titled(&title, (FONT, 17)).map_err(draw_err)?;
        line2.titled(&subtitle, (FONT, 13)).map_err(draw_err)?;
        let with_tsne = df.layers.iter().all(|l| l.tsne.is_some());
        let rows = if with_tsne { 2 } else { 1 };
        let panels = body.split_evenly((rows, df.layers.len()));
        let (pca_row, tsne_row) = panels.split_at(df.layers.len());
        for (area, l) in pca_row.iter().zip(&df.layers) {
            draw_layer(area, &pca_view(l), df.n)?;
        }
        for (area, l) in tsne_row.iter().zip(&df.layers) {
            if let Some(t) = &l.tsne {
                draw_layer(area, &tsne_view(l, t), df.n)?;
            }
        }
        Ok(())
    })
}

/// What one panel draws: 2N points (real first), its caption and axis names.
struct Panel {
    points: Vec<(f64, f64)>,
    caption: String,
    x_desc: String,
    y_desc: String,
}

fn block_label(l: &LayerView) -> String {
    let shape: Vec<String> = l.shape.iter().map(|d| d.to_string()).collect();
    format!("{} ({})", l.name, shape.join("×"))
}

fn pca_view(l: &LayerView) -> Panel {
    Panel {
        points: l.pca.scores.iter().map(|r| (r[0], r[1])).collect(),
        caption: format!(
            "{}: split {:.0}% here, {:.0}% in all dims",
            block_label(l),
            100.0 * l.separation,
            100.0 * l.separation_full
        ),
        x_desc: format!("PC1 ({:.1}% of variance)", 100.0 * l.pca.explained(0)),
        y_desc: format!("PC2 ({:.1}% of variance)", 100.0 * l.pca.explained(1)),
    }
}

fn tsne_view(l: &LayerView, t: &Tsne) -> Panel {
    Panel {
        points: t.points.iter().map(|p| (p[0], p[1])).collect(),
        caption: format!(
            "{} t-SNE: {:.0}% nearest of own kind",
            block_label(l),
            100.0 * t.neighbour_agreement
        ),
        x_desc: format!("t-SNE 1 (perplexity {:.0})", t.perplexity),
        y_desc: "t-SNE 2".into(),
    }
}

fn draw_layer(
    area: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    p: &Panel,
    n: usize,
) -> Result<()> {
    let range = |coord: fn(&(f64, f64)) -> f64| {
        let lo = p.points.iter().map(coord).fold(f64::INFINITY, f64::min);
        let hi = p.points.iter().map(coord).fold(f64::NEG_INFINITY, f64::max);
        if hi > lo {
            let pad = (hi - lo) * 0.06;
            (lo - pad, hi + pad)
        } else {
            (lo - 1.0, lo + 1.0)
        }
    };
    let ((x0, x1), (y0, y1)) = (range(|q| q.0), range(|q| q.1));
    let mut chart = ChartBuilder::on(area)
        .caption(&p.caption, (FONT, 15))
        .margin(10)
        .x_label_area_size(36)
        .y_label_area_size(52)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(draw_err)?;
    chart
        .configure_mesh()
        .x_desc(&p.x_desc)
        .y_desc(&p.y_desc)
        .x_labels(7)
        .y_labels(7)
        .label_style((FONT, 12))
        .axis_desc_style((FONT, 13))
        .light_line_style(TRANSPARENT)
        .bold_line_style(RGBColor(225, 225, 225))
        .draw()
        .map_err(draw_err)?;
    let (real, fake) = p.points.split_at(n);
    chart
        .draw_series(
            real.iter()
                .map(|&q| Circle::new(q, 3, REAL.mix(0.55).filled())),
        )
        .map_err(draw_err)?
        .label("real")
        .legend(|(x, y)| Circle::new((x + 6, y), 4, REAL.filled()));
    chart
        .draw_series(
            fake.iter()
                .map(|&q| Cross::new(q, 3, FAKE.mix(0.7).stroke_width(1))),
        )
        .map_err(draw_err)?
        .label("generated")
        .legend(|(x, y)| Cross::new((x + 6, y), 4, FAKE.stroke_width(2)));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .label_font((FONT, 12))
        .draw()
        .map_err(draw_err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::models::{ModelConfig, ModelKind};

    /// forward_features gives every hidden block in order, and finishing the network from the last one
    /// reproduces D's eval-mode logits.
    #[test]
    fn forward_features_are_d_blocks() {
        let cases = [
            (
                ModelConfig {
                    kind: ModelKind::Dcgan,
                    image_size: 32,
                    channels: 3,
                    nz: 4,
                    ngf: 3,
                    ndf: 5,
                    hidden: 1,
                    ..ModelConfig::default()
                },
                vec![
                    ("main.1", vec![5, 16, 16]),
                    ("main.4", vec![10, 8, 8]),
                    ("main.7", vec![20, 4, 4]),
                ],
            ),
            (
                ModelConfig {
                    kind: ModelKind::Mlp,
                    image_size: 5,
                    channels: 1,
                    nz: 4,
                    ngf: 1,
                    ndf: 1,
                    hidden: 3,
                    ..ModelConfig::default()
                },
                vec![("main.1", vec![12]), ("main.3", vec![6])],
            ),
        ];
        for (cfg, want) in cases {
            let dev = Device::Cpu;
            let mut rng = RngStream::new(11);
            let mut d = Discriminator::new(&cfg, &dev, &mut rng).unwrap();
            let [c, h, w] = cfg.image_shape();
            let x = rng.normal(&[3, c, h, w], 0.0, 1.0, &dev).unwrap();
            let feats = d.forward_features(&x, None).unwrap();
            let got: Vec<(&str, Vec<usize>)> = feats
                .iter()
                .map(|(n, t)| (n.as_str(), t.shape()[1..].to_vec()))
                .collect();
            assert_eq!(got, want, "{}", cfg.describe());

            let mut tape = Tape::no_grad();
            let (last_name, last) = feats.last().unwrap();
            let start: usize = last_name["main.".len()..].parse::<usize>().unwrap() + 1;
            let mut y = tape.constant(last.clone());
            for l in &d.net.layers[start..] {
                y = l.forward(&mut tape, &mut d.store, y, false).unwrap();
            }
            let from_features = tape.value(y).to_vec().unwrap();
            let xv = tape.constant(x);
            let logits = d.forward(&mut tape, xv, false).unwrap();
            assert_eq!(from_features, tape.value(logits).to_vec().unwrap());
        }
    }

    #[test]
    fn centroid_accuracy_of_mixed_and_separated_clouds() {
        let separated: Vec<Vec<f64>> = (0..8)
            .map(|i| vec![if i < 4 { -1.0 } else { 1.0 } + 0.01 * i as f64, 0.0])
            .collect();
        assert_eq!(centroid_accuracy(&separated, 4), 1.0);
        // The same points on both sides: the centroids coincide, so every point is "not nearer to real" — the
        // fake half counts as correct, the real half not: the chance level of 50 %.
        let mixed: Vec<Vec<f64>> = (0..8).map(|i| vec![(i % 4) as f64, 0.0]).collect();
        assert_eq!(centroid_accuracy(&mixed, 4), 0.5);
    }

    #[test]
    fn neighbour_agreement_of_mixed_and_separated_points() {
        let separated: Vec<[f64; 2]> = (0..8)
            .map(|i| [if i < 4 { -10.0 } else { 10.0 } + i as f64, 0.0])
            .collect();
        assert_eq!(neighbour_agreement(&separated, 4), 1.0);
        // Real and generated alternate along a line: every nearest neighbour is of the other kind.
        let mut interleaved = vec![[0.0, 0.0]; 8];
        for i in 0..4 {
            interleaved[i] = [(2 * i) as f64, 0.0];
            interleaved[4 + i] = [(2 * i + 1) as f64 + 0.1, 0.0];
        }
        assert_eq!(neighbour_agreement(&interleaved, 4), 0.0);
    }
}
