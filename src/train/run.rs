//! The training loop around [`Gan`]: data, the fixed sample z, metrics CSV, sample grids, checkpoints, resume.
//!
//! Layout of a run directory:
//! ```text
//! out/metrics.csv                 step,loss_d,loss_g,d_x,d_g_z1,d_g_z2,img_per_s,elapsed_s[,fid]
//!                                 (d_x, d_g_z*: mean σ(D) for --loss ns/minimax, mean raw D output otherwise)
//! out/metrics.png                 the curves of metrics.csv, every --plot-every steps
//! out/fid_real_stats.safetensors  with --fid-every: the real images' Inception statistics (cache)
//! out/samples/step_000100.png     G(fixed z) in eval mode (the average's with --g-ema), every --sample-every steps
//! out/samples/real.png           the dataset's first --num-samples images, to compare the grids with
//! out/generator.safetensors       G alone (PyTorch state_dict names)
//! out/generator_ema.safetensors   with --g-ema: G's moving average, same layout
//! out/checkpoint.safetensors      everything needed to resume bit-exactly
//! ```

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};

use crate::autograd::Tape;
use crate::checkpoint::{
    self, TensorFile, CHECKPOINT_FILE, D_PREFIX, FORMAT_CHECKPOINT, GENERATOR_EMA_FILE,
    GENERATOR_FILE, G_EMA_PREFIX, G_PREFIX, MODEL_KEY, OPT_D_PREFIX, OPT_G_PREFIX, SAVED_DIR,
};
use crate::device::Device;
use crate::limits;
use crate::nn::models::Generator;
use crate::ops::random::RngStream;
use crate::tensor::Tensor;

use super::config::{Duration, TrainConfig};
use super::data::open_loader;
use super::gan::{stream_seed, Gan, StepMetrics, STREAM_FIXED_Z};
use super::graph::StepGraph;
use super::rundir::{same_dir, Claim};
use crate::data::{Loader, LoaderState};

pub const METRICS_FILE: &str = "metrics.csv";
pub const METRICS_HEADER: &str = "step,loss_d,loss_g,d_x,d_g_z1,d_g_z2,img_per_s,elapsed_s";
/// Metadata keys of the checkpoint (public for the tools that read a run: `dfeatures`).
pub const TRAIN_KEY: &str = "train";
pub const STATE_KEY: &str = "state";
/// The training curves `--plot-every` draws from metrics.csv.
pub const METRICS_PLOT_FILE: &str = "metrics.png";
/// The grid of training images written beside the sample grids.
pub const REAL_GRID_FILE: &str = "real.png";

/// The loop's position, saved in the checkpoint metadata.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Iterations completed.
    pub step: u64,
    /// The training-noise stream (its offset advances with every z drawn).
    pub noise: RngStream,
    /// The data loader's position (shuffle seed, epoch, batch in the epoch).
    pub data: LoaderState,
    /// Wall time spent in earlier sessions of this run.
    pub elapsed_s: f64,
}

/// The checkpoint `ck` and the generator files made from it, written into `out` as one unit.
fn save_run_files(out: &Path, ck: &TensorFile) -> Result<()> {
    let step = ck.get_json::<TrainState>(STATE_KEY, out)?.step;
    let mut files = vec![
        (CHECKPOINT_FILE, ck.to_bytes()?),
        (
            GENERATOR_FILE,
            checkpoint::generator_from(ck, G_PREFIX, step)?.to_bytes()?,
        ),
    ];
    let has_average = ck.tensors.keys().any(|k| k.starts_with(G_EMA_PREFIX));
    if has_average {
        files.push((
            GENERATOR_EMA_FILE,
            checkpoint::generator_from(ck, G_EMA_PREFIX, step)?.to_bytes()?,
        ));
    }
    crate::io::write_file_set(out, SAVED_DIR, &files)
        .with_context(|| format!("cannot save the run in {}", out.display()))?;
    // An average saved as a plain file before saves were sets (a symlink into the set went with it above)
    // would be taken for this run's.
    let ema_file = out.join(GENERATOR_EMA_FILE);
    if !has_average && ema_file.is_file() && !ema_file.is_symlink() {
        fs::remove_file(&ema_file)
            .with_context(|| format!("cannot remove the stale {}", ema_file.display()))?;
    }
    Ok(())
}

/// What the loop reports after each iteration.
#[derive(Clone, Copy, Debug)]
pub struct Progress {
    pub metrics: StepMetrics,
    pub total_steps: u64,
    /// Throughput over the last logging window.
    pub img_per_s: f64,
    pub elapsed_s: f64,
}

pub struct Trainer {
    pub cfg: TrainConfig,
    pub gan: Gan,
    pub data: Loader,
    /// The latents of every sample grid of the run.
    pub fixed_z: Tensor,
    /// A conditional run's labels of the sample grids: row r of the grid shows class r mod num_classes.
    pub fixed_labels: Option<Vec<u32>>,
    pub step: u64,
    pub total_steps: u64,
    /// G's exponential moving average (`--g-ema`).
    pub g_ema: Option<GeneratorAverage>,
    elapsed_before: f64,
    tape: Tape,
    /// The captured iteration of `--cuda-graph` (made by the first step).
    graph: Option<StepGraph>,
    /// The run directory, held for this training (the CLI's; a library caller may train without one).
    pub claim: Option<Claim>,
    /// Set (by a SIGINT / SIGTERM handler) to stop after the current step, with everything saved.
    pub stop: Option<Arc<AtomicBool>>,
    /// The step of the last checkpoint written or resumed from.
    saved_step: u64,
}

/// The error [`Trainer::run`] returns when it stopped early because [`Trainer::stop`] was set; the run was saved
/// at `step`.
#[derive(Debug, thiserror::Error)]
#[error("interrupted: the run is saved at step {step}; continue it with --resume {}", out.display())]
pub struct Interrupted {
    pub step: u64,
    pub out: PathBuf,
}

/// An exponential moving average of G's parameters, kept in a second generator: after every iteration
/// avg ← decay·avg + (1 − decay)·G, and the BN running statistics (buffers) are G's. Averaging the weights of a
/// GAN generator damps the oscillation of the game (Yazıcı et al. 2019); StyleGAN and BigGAN sample from such an
/// average.
pub struct GeneratorAverage {
    pub decay: f32,
    pub g: Generator,
}

impl GeneratorAverage {
    /// An average that starts at `g`'s current weights.
    pub fn starting_at(g: &Generator, decay: f32) -> Result<GeneratorAverage> {
        // The init draws are replaced right away; any stream will do.
        let mut avg = Generator::new(&g.cfg, &g.store.device, &mut RngStream::new(0))?;
        for (name, t) in g.store.named_tensors() {
            avg.store.set_by_name(name, t.clone())?;
        }
        Ok(GeneratorAverage { decay, g: avg })
    }

    /// One averaging step towards `g`.
    pub fn update(&mut self, g: &Generator) -> Result<()> {
        let xs: Vec<&Tensor> = g.store.values().iter().collect();
        let mut avgs: Vec<&mut Tensor> = self.g.store.values_mut().iter_mut().collect();
        g.store.device.backend().ema_(&mut avgs, &xs, self.decay)?;
        self.g.store.copy_buffers_from(&g.store)
    }
}

impl Trainer {
    /// A new run: fresh models from `cfg.seed`.
    pub fn new(cfg: TrainConfig) -> Result<Trainer> {
        cfg.validate()?;
        let device = Device::open(&cfg.device, cfg.precision)?;
        let data = open_loader(&cfg, &device, None)?;
        let gan = Gan::from_config(&cfg, &device)?;
        let g_ema = cfg
            .g_ema
            .map(|d| GeneratorAverage::starting_at(&gan.g, d))
            .transpose()?;
        Trainer::assemble(cfg, gan, data, g_ema, 0, 0.0)
    }

    fn assemble(
        cfg: TrainConfig,
        gan: Gan,
        data: Loader,
        g_ema: Option<GeneratorAverage>,
        step: u64,
        elapsed_before: f64,
    ) -> Result<Trainer> {
        check_dataset_classes(&cfg, &data)?;
        let mut zs = RngStream::new(stream_seed(cfg.seed, STREAM_FIXED_Z));
        let fixed_z = zs.normal(&[cfg.num_samples, cfg.model.nz], 0.0, 1.0, &gan.device)?;
        let fixed_labels = cfg.model.is_conditional().then(|| {
            crate::nn::models::row_labels(
                cfg.num_samples,
                grid_columns(cfg.num_samples),
                cfg.model.num_classes,
            )
        });
        let total_steps = match cfg.duration {
            Duration::Steps(n) => n,
            Duration::Epochs(e) => {
                // An iteration consumes k batches.
                let per_epoch = data.batches_per_epoch() as u64;
                (e * per_epoch).div_ceil(cfg.k as u64).max(1)
            }
        };
        Ok(Trainer {
            cfg,
            gan,
            data,
            fixed_z,
            fixed_labels,
            step,
            total_steps,
            g_ema,
            elapsed_before,
            tape: Tape::new(),
            graph: None,
            claim: None,
            stop: None,
            saved_step: step,
        })
    }

    /// Reopens the run saved in `path` (a run directory or its `checkpoint.safetensors`). `cfg` is the
    /// checkpoint's own config with the caller's allowed overrides already applied (see
    /// [`read_checkpoint_config`]); its model must equal the checkpoint's.
    pub fn resume(path: &Path, cfg: TrainConfig) -> Result<Trainer> {
        let ck = read_checkpoint(path)?;
        let diff = ck.cfg.model.differences(&cfg.model);
        if !diff.is_empty() {
            bail!(
                "checkpoint {} is for {} but {} was given",
                ck.file.display(),
                ck.cfg.model.describe(),
                diff.join(" ")
            );
        }
        Trainer::resume_from(ck, cfg)
    }

    /// [`resume`](Trainer::resume) from a checkpoint already read, whose model `cfg` has been checked to
    /// match (the CLI reads the checkpoint once, for its config and then for this).
    pub fn resume_from(ck: SavedRun, cfg: TrainConfig) -> Result<Trainer> {
        let SavedRun {
            file, tensors: f, ..
        } = ck;
        cfg.validate()?;
        let state: TrainState = f.get_json(STATE_KEY, &file)?;
        let device = Device::open(&cfg.device, cfg.precision)?;
        let data = open_loader(&cfg, &device, Some(&state.data))
            .with_context(|| format!("resuming from {}", file.display()))?;
        checkpoint::check_gan_size(&f, &cfg.model, &file)?;
        let mut gan = Gan::from_config(&cfg, &device)?;
        checkpoint::load_gan_stores(&f, &mut gan.g.store, &mut gan.d.store, &file)?;
        super::optstate::load(&f, OPT_G_PREFIX, &mut gan.opt_g, &gan.g.store, &file)?;
        super::optstate::load(&f, OPT_D_PREFIX, &mut gan.opt_d, &gan.d.store, &file)?;
        super::optstate::load_scaler(&f, OPT_G_PREFIX, gan.scaler_g.as_mut(), &file)?;
        super::optstate::load_scaler(&f, OPT_D_PREFIX, gan.scaler_d.as_mut(), &file)?;
        gan.noise = state.noise;
        // The saved average if the run kept one; else, with --g-ema given now, one starting here.
        let g_ema = match cfg.g_ema {
            None => None,
            Some(d) => {
                let mut avg = GeneratorAverage::starting_at(&gan.g, d)?;
                if f.tensors.keys().any(|k| k.starts_with(G_EMA_PREFIX)) {
                    f.load_store(G_EMA_PREFIX, &mut avg.g.store, "generator average", &file)?;
                }
                Some(avg)
            }
        };
        let t = Trainer::assemble(cfg, gan, data, g_ema, state.step, state.elapsed_s)?;
        // A run saved before saves were one unit (or on a file system that cannot exchange directories) can hold
        // generators a save behind the checkpoint: save the set again at the checkpoint's step (only in the
        // run's own directory; another --out is written from the first step).
        let own_dir = same_dir(&run_dir_of(&file), &t.cfg.out);
        if own_dir && checkpoint::saved_step(&t.cfg.out.join(GENERATOR_FILE)) != Some(state.step) {
            save_run_files(&t.cfg.out, &f)?;
        }
        if t.step >= t.total_steps {
            bail!(
                "the run in {} is already at step {} of {}; give a larger --steps (the total) to train further",
                file.display(),
                t.step,
                t.total_steps
            );
        }
        Ok(t)
    }

    pub fn elapsed_s(&self, session: &Instant) -> f64 {
        self.elapsed_before + session.elapsed().as_secs_f64()
    }

    /// One iteration (no files written).
    pub fn train_step(&mut self) -> Result<StepMetrics> {
        let step = self.step + 1;
        let m = if self.cfg.cuda_graph {
            let real = self.data.next_batch()?.images;
            match &mut self.graph {
                Some(g) => g.step(&mut self.gan, &real, step)?,
                None => {
                    let (g, m) = StepGraph::capture(&mut self.gan, &mut self.tape, &real, step)?;
                    self.graph = Some(g);
                    m
                }
            }
        } else {
            let data = &mut self.data;
            let dev = self.gan.device.clone();
            // An unconditional model ignores the labels a dataset may have.
            let conditional = self.cfg.model.is_conditional();
            self.gan.train_step(&mut self.tape, self.cfg.k, step, || {
                let b = data.next_batch()?;
                let labels = if conditional { b.labels } else { None };
                let images = b.images.to_device(&dev)?;
                Ok(super::gan::Batch { images, labels })
            })?
        };
        if let Some(avg) = &mut self.g_ema {
            avg.update(&self.gan.g)?;
        }
        self.step = step;
        Ok(m)
    }

    /// The generator samples and FID come from: G's average if kept, else G.
    pub fn sampling_generator(&mut self) -> &mut Generator {
        match &mut self.g_ema {
            Some(avg) => &mut avg.g,
            None => &mut self.gan.g,
        }
    }

    /// G(fixed z) in eval mode (the average's with --g-ema).
    pub fn samples(&mut self) -> Result<Tensor> {
        let (z, labels) = (self.fixed_z.clone(), self.fixed_labels.clone());
        self.sampling_generator()
            .generate_with_labels(&z, labels.as_deref())
    }

    pub fn sample_path(&self, step: u64) -> PathBuf {
        self.cfg
            .out
            .join("samples")
            .join(format!("step_{step:06}.png"))
    }

    pub fn save_samples(&mut self) -> Result<PathBuf> {
        let imgs = self.samples()?;
        let path = self.sample_path(self.step);
        crate::io::save_grid(&imgs, &path, grid_columns(self.cfg.num_samples))?;
        Ok(path)
    }

    /// A grid of the dataset's first images, as many as a sample grid has: what G is learning to draw.
    pub fn save_real_grid(&self) -> Result<PathBuf> {
        let ds = self.data.dataset();
        let ids: Vec<usize> = (0..self.cfg.num_samples.min(ds.len())).collect();
        let (images, _) = crate::data::stack_images(ds.as_ref(), &ids, &Device::Cpu)
            .context("reading the images of samples/real.png")?;
        let path = self.cfg.out.join("samples").join(REAL_GRID_FILE);
        crate::io::save_grid(&images, &path, grid_columns(ids.len()))?;
        Ok(path)
    }

    /// The whole resumable state as one safetensors file.
    pub fn checkpoint_file(&self, elapsed_s: f64) -> Result<TensorFile> {
        let mut f = TensorFile::new(FORMAT_CHECKPOINT);
        f.set_json(MODEL_KEY, &self.cfg.model)?;
        f.set_json(TRAIN_KEY, &self.cfg)?;
        f.set_json(
            STATE_KEY,
            &TrainState {
                step: self.step,
                noise: self.gan.noise,
                data: self.data.state(),
                elapsed_s,
            },
        )?;
        f.insert_store(G_PREFIX, &self.gan.g.store)?;
        f.insert_store(D_PREFIX, &self.gan.d.store)?;
        if let Some(avg) = &self.g_ema {
            f.insert_store(G_EMA_PREFIX, &avg.g.store)?;
        }
        super::optstate::save(&mut f, OPT_G_PREFIX, &self.gan.opt_g, &self.gan.g.store)?;
        super::optstate::save(&mut f, OPT_D_PREFIX, &self.gan.opt_d, &self.gan.d.store)?;
        super::optstate::save_scaler(&mut f, OPT_G_PREFIX, self.gan.scaler_g.as_ref());
        super::optstate::save_scaler(&mut f, OPT_D_PREFIX, self.gan.scaler_d.as_ref());
        Ok(f)
    }

    /// Writes `checkpoint.safetensors`, `generator.safetensors` and, with --g-ema, `generator_ema.safetensors`,
    /// all stamped with the step, as one unit (see [`crate::io::fileset`]): a crash at any instant leaves the
    /// three at the same step. Nothing is written if any value is not finite or beyond
    /// [`limits::MAX_SAVED_ABS`]: the last good checkpoint stays, and the error names the tensor.
    pub fn save_checkpoint(&mut self, elapsed_s: f64) -> Result<()> {
        let ck = self.checkpoint_file(elapsed_s)?;
        if let Some((name, v)) = first_diverged(&ck) {
            bail!(
                "step {}: {name} holds {v}; the training diverged (try a lower learning rate). Nothing was saved: \
                 {} keeps step {}",
                self.step,
                self.cfg.out.join(CHECKPOINT_FILE).display(),
                self.saved_step
            );
        }
        save_run_files(&self.cfg.out, &ck)?;
        self.saved_step = self.step;
        Ok(())
    }

    /// Trains to `total_steps`, writing metrics, samples and checkpoints on schedule and at the end.
    /// `on_step` sees every iteration (the CLI's progress bar). A failing step (e.g. a non-finite loss)
    /// returns its error before anything of that step is written, so the last checkpoint stays good.
    pub fn run(&mut self, mut on_step: impl FnMut(&Progress)) -> Result<()> {
        let out = self.cfg.out.clone();
        fs::create_dir_all(out.join("samples"))
            .with_context(|| format!("cannot create output directory {}", out.display()))?;
        let fid = match self.cfg.fid_every {
            0 => None,
            _ => Some(crate::fid::FidMonitor::new(&self.cfg, &self.gan.device)?),
        };
        // Opened after the first step succeeds, so a run that fails at once leaves the directory as it was.
        let mut csv = None;
        let result = self.run_steps(&out, fid, &mut csv, &mut on_step);
        if let Some(p) = self.data.dataset().problems() {
            eprintln!("warning: {p}");
        }
        result
    }

    fn run_steps(
        &mut self,
        out: &Path,
        fid: Option<crate::fid::FidMonitor>,
        csv: &mut Option<MetricsCsv>,
        on_step: &mut impl FnMut(&Progress),
    ) -> Result<()> {
        let session = Instant::now();
        let mut window_start = Instant::now();
        let mut window_images = 0usize;
        let mut session_images = 0usize;
        let mut img_per_s = None;
        let mut plot_warned = false;
        while self.step < self.total_steps {
            let m = self.train_step()?;
            let csv = match csv {
                Some(c) => c,
                None => {
                    if let Some(c) = &mut self.claim {
                        c.clear_replaced()?;
                    }
                    let c = MetricsCsv::open(&out.join(METRICS_FILE), m.step - 1, fid.is_some())?;
                    self.save_real_grid()?;
                    csv.insert(c)
                }
            };
            window_images += m.images;
            session_images += m.images;
            let dt = window_start.elapsed().as_secs_f64();
            // Throughput over windows of at least a second, so the number is steady; before the first window
            // closes, the average so far.
            if dt >= 1.0 {
                img_per_s = Some(window_images as f64 / dt);
                window_start = Instant::now();
                window_images = 0;
            }
            let img_per_s = img_per_s.unwrap_or_else(|| {
                session_images as f64 / session.elapsed().as_secs_f64().max(1e-9)
            });
            let stopping = self.stop.as_ref().is_some_and(|s| s.load(Ordering::SeqCst));
            // An interrupted session ends like a finished one: a metrics row, a grid and a checkpoint.
            let last = self.step == self.total_steps || stopping;
            let elapsed = self.elapsed_s(&session);
            let fid_now = match &fid {
                Some(f) if m.step % self.cfg.fid_every == 0 || last => {
                    Some(f.measure(self.sampling_generator())?)
                }
                _ => None,
            };
            if m.step % self.cfg.log_every == 0 || last || fid_now.is_some() {
                csv.row(&m, img_per_s, elapsed, fid_now)?;
            }
            if m.step % self.cfg.sample_every == 0 || last {
                self.save_samples()?;
            }
            if m.step % self.cfg.checkpoint_every == 0 || last {
                self.save_checkpoint(elapsed)?;
            }
            if self.cfg.plot_every > 0 && (m.step % self.cfg.plot_every == 0 || last) {
                self.plot_metrics(&mut plot_warned);
            }
            on_step(&Progress {
                metrics: m,
                total_steps: self.total_steps,
                img_per_s,
                elapsed_s: elapsed,
            });
            if stopping {
                return Err(Interrupted {
                    step: self.step,
                    out: self.cfg.out.clone(),
                }
                .into());
            }
        }
        Ok(())
    }
}

/// The first value of a checkpoint that is not finite or beyond [`limits::MAX_SAVED_ABS`] (a diverged run), with
/// the name of its tensor.
fn first_diverged(f: &TensorFile) -> Option<(&str, f32)> {
    f.tensors.iter().find_map(|(name, t)| {
        t.data
            .iter()
            .find(|v| v.is_nan() || v.abs() > limits::MAX_SAVED_ABS)
            .map(|&v| (name.as_str(), v))
    })
}

/// Images per row of a sample grid of `n` images: a square as near as can be.
pub fn grid_columns(n: usize) -> usize {
    ((n as f64).sqrt().ceil() as usize).max(1)
}

/// A conditional model needs a labelled dataset whose labels it can take.
fn check_dataset_classes(cfg: &TrainConfig, data: &Loader) -> Result<()> {
    if !cfg.model.is_conditional() {
        return Ok(());
    }
    let ds = data.dataset();
    match ds.num_classes() {
        None => bail!(
            "the model is class-conditional but {} has no class labels",
            ds.describe()
        ),
        Some(c) if c > cfg.model.num_classes => bail!(
            "{} has {c} classes but the conditional model was built for {}",
            ds.describe(),
            cfg.model.num_classes
        ),
        Some(_) => Ok(()),
    }
}

impl Trainer {
    /// Redraws metrics.png from metrics.csv. The curves are a convenience: a failure to draw them is reported
    /// once per session and never stops training.
    fn plot_metrics(&self, warned: &mut bool) {
        let out = &self.cfg.out;
        let o = crate::study::plot::PlotOptions {
            loss: Some(self.cfg.loss.to_string()),
            title: out.display().to_string(),
            ..Default::default()
        };
        let r = crate::study::plot::plot_metrics_file(
            &out.join(METRICS_FILE),
            &out.join(METRICS_PLOT_FILE),
            &o,
        );
        if let Err(e) = r {
            if !std::mem::replace(warned, true) {
                eprintln!("warning: cannot draw {METRICS_PLOT_FILE} (training goes on): {e:#}");
            }
        }
    }
}

/// The checkpoint file of a run directory or file argument, for resuming.
pub fn resolve_full(path: &Path) -> Result<PathBuf> {
    let file = checkpoint::resolve(path, true)?;
    Ok(file)
}

fn ensure_full(f: &TensorFile, file: &Path) -> Result<()> {
    checkpoint::model_config(f, file)?;
    ensure!(
        f.format() == Some(FORMAT_CHECKPOINT),
        "{} holds only a generator; resuming needs the full {CHECKPOINT_FILE}",
        file.display()
    );
    Ok(())
}

/// The run directory a checkpoint file belongs to (`.` for a bare file name).
pub fn run_dir_of(file: &Path) -> PathBuf {
    match file.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// A full checkpoint as read for `--resume`: its file, its tensors and its training config.
pub struct SavedRun {
    pub file: PathBuf,
    pub tensors: TensorFile,
    pub cfg: TrainConfig,
}

/// Reads the full checkpoint of a run directory or file, checking its format and model.
pub fn read_checkpoint(path: &Path) -> Result<SavedRun> {
    let file = resolve_full(path)?;
    let tensors = TensorFile::load(&file)?;
    ensure_full(&tensors, &file)?;
    let cfg = tensors.get_json(TRAIN_KEY, &file)?;
    Ok(SavedRun { file, tensors, cfg })
}

/// The training config stored in a checkpoint (the starting point for `--resume`, before overrides).
pub fn read_checkpoint_config(path: &Path) -> Result<(PathBuf, TrainConfig)> {
    let ck = read_checkpoint(path)?;
    Ok((ck.file, ck.cfg))
}

/// metrics.csv, appended to; on resume, rows after the resumed step (written by a session that crashed
/// before its next checkpoint) are dropped so the file has one row per logged step.
struct MetricsCsv {
    file: fs::File,
    with_fid: bool,
}

impl MetricsCsv {
    /// `with_fid` adds the `fid` column (empty on rows without a measurement); kept rows of an earlier session
    /// are padded or cut to the same number of columns.
    fn open(path: &Path, resumed_step: u64, with_fid: bool) -> Result<MetricsCsv> {
        let header = if with_fid {
            format!("{METRICS_HEADER},fid")
        } else {
            METRICS_HEADER.to_string()
        };
        let columns = header.split(',').count();
        let mut lines = vec![header];
        if resumed_step > 0 {
            if let Ok(old) = fs::read_to_string(path) {
                lines.extend(
                    old.lines()
                        .skip(1)
                        .filter(|l| {
                            l.split(',')
                                .next()
                                .and_then(|s| s.parse::<u64>().ok())
                                .is_some_and(|s| s <= resumed_step)
                        })
                        .map(|l| {
                            let mut f: Vec<&str> = l.split(',').collect();
                            f.resize(columns, "");
                            f.join(",")
                        }),
                );
            }
        }
        let mut text = lines.join("\n");
        text.push('\n');
        crate::io::write_atomic(path, text.as_bytes())?;
        let file = fs::OpenOptions::new()
            .append(true)
            .open(path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        Ok(MetricsCsv { file, with_fid })
    }

    fn row(
        &mut self,
        m: &StepMetrics,
        img_per_s: f64,
        elapsed_s: f64,
        fid: Option<f64>,
    ) -> Result<()> {
        let fid = match (self.with_fid, fid) {
            (false, _) => String::new(),
            (true, Some(f)) => format!(",{f:.4}"),
            (true, None) => ",".to_string(),
        };
        writeln!(
            self.file,
            "{},{},{},{},{},{},{:.1},{:.3}{fid}",
            m.step, m.loss_d, m.loss_g, m.d_x, m.d_g_z1, m.d_g_z2, img_per_s, elapsed_s
        )
        .context("cannot write metrics.csv")
    }
}
