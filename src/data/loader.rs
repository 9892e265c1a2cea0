//! Shuffled mini-batches from any [`Dataset`], decoded ahead of time in background threads.
//!
//! Order: epoch `e` visits the dataset in a permutation drawn from a ChaCha8 stream keyed by `(seed, e)`, so
//! any epoch's order can be recomputed without replaying the ones before it. That makes the loader's whole
//! position three numbers — seed, epoch, batch within the epoch — which [`Loader::state`] hands out for a
//! checkpoint and [`Loader::resume`] turns back into a loader that yields exactly the batches the original
//! would have yielded next.
//!
//! Prefetch: a producer thread walks the same sequence of batches ahead of the training loop, decoding the
//! images of each batch in parallel on the loader's own thread pool (not rayon's global pool, which the CPU
//! backend's ops use), and queues finished host batches in a bounded channel. At most `prefetch` batches wait
//! in the queue, plus one being decoded. The upload to the device happens in [`Loader::next_batch`], on the
//! caller's thread, because GPU contexts are bound to the thread that uses them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::{anyhow, bail, ensure, Context, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::{default_threads, Dataset};
use crate::device::Device;
use crate::tensor::Tensor;

/// How batches are drawn.
#[derive(Clone, Debug)]
pub struct LoaderConfig {
    pub batch_size: usize,
    /// Seed of the shuffle (independent of any dataset or model seed).
    pub seed: u64,
    /// Visit images in a fresh random order each epoch (otherwise in dataset order).
    pub shuffle: bool,
    /// Drop the last, smaller batch of an epoch (usual for GANs: BatchNorm statistics of a tiny batch are
    /// noisy, and a constant batch size keeps kernels and buffers the same shape).
    pub drop_last: bool,
    /// Batches decoded ahead of the training loop; 0 decodes each batch synchronously in `next_batch`.
    pub prefetch: usize,
    /// Decoding threads.
    pub workers: usize,
    /// Where `Batch::images` is put.
    pub device: Device,
}

impl LoaderConfig {
    /// Shuffled, drop-last, 2 batches of prefetch, [`default_threads`] workers.
    pub fn new(batch_size: usize, seed: u64, device: Device) -> LoaderConfig {
        LoaderConfig {
            batch_size,
            seed,
            shuffle: true,
            drop_last: true,
            prefetch: 2,
            workers: default_threads(),
            device,
        }
    }
}

/// A loader's position, for checkpoints. `batch` is the index, within `epoch`, of the next batch to be
/// returned. The other fields let [`Loader::resume`] refuse a state that belongs to a different setup.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoaderState {
    pub seed: u64,
    pub epoch: u64,
    pub batch: usize,
    pub dataset_len: usize,
    pub batch_size: usize,
    pub shuffle: bool,
    pub drop_last: bool,
}

/// One mini-batch.
#[derive(Debug)]
pub struct Batch {
    /// `[B, C, H, W]` in `[-1, 1]` on the configured device.
    pub images: Tensor,
    /// Labels, if every image in the batch has one.
    pub labels: Option<Vec<u32>>,
    /// Which epoch and which batch within it this is.
    pub epoch: u64,
    pub index: usize,
}

/// A batch decoded on the host, before upload.
struct HostBatch {
    epoch: u64,
    index: usize,
    len: usize,
    data: Vec<f32>,
    labels: Option<Vec<u32>>,
}

/// Everything the decoding side needs, shared between the loader and its producer thread.
struct Plan {
    dataset: Arc<dyn Dataset>,
    pool: rayon::ThreadPool,
    seed: u64,
    shuffle: bool,
    batch_size: usize,
    batches_per_epoch: usize,
}

impl Plan {
    /// The visiting order of epoch `epoch`.
    fn order(&self, epoch: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.dataset.len()).collect();
        if self.shuffle {
            let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
            rng.set_stream(epoch);
            order.shuffle(&mut rng);
        }
        order
    }

    /// Decodes batch `index` of an epoch whose order is `order`.
    fn decode(&self, order: &[usize], epoch: u64, index: usize) -> Result<HostBatch> {
        let start = index * self.batch_size;
        let ids = &order[start..(start + self.batch_size).min(order.len())];
        let (c, h, w) = self.dataset.image_shape();
        let per = c * h * w;
        let samples: Vec<(Vec<f32>, Option<u32>)> = self
            .pool
            .install(|| {
                ids.par_iter()
                    .map(|&i| {
                        let (x, l) = self.dataset.get(i)?;
                        ensure!(
                            x.len() == per,
                            "image {i} has {} values, expected {per} for {c}x{h}x{w}",
                            x.len()
                        );
                        Ok((x, l))
                    })
                    .collect::<Result<_>>()
            })
            .with_context(|| {
                format!(
                    "loading batch {index} of epoch {epoch} from {}",
                    self.dataset.describe()
                )
            })?;
        let mut data = Vec::with_capacity(ids.len() * per);
        let mut labels = Some(Vec::with_capacity(ids.len()));
        for (x, l) in samples {
            data.extend_from_slice(&x);
            labels = match (labels, l) {
                (Some(mut v), Some(l)) => {
                    v.push(l);
                    Some(v)
                }
                _ => None,
            };
        }
        Ok(HostBatch {
            epoch,
            index,
            len: ids.len(),
            data,
            labels,
        })
    }
}

/// The background producer: its queue, its stop flag and its thread.
struct Producer {
    rx: Option<Receiver<Result<HostBatch>>>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Producer {
    fn start(
        plan: Arc<Plan>,
        capacity: usize,
        mut epoch: u64,
        mut index: usize,
    ) -> Result<Producer> {
        let (tx, rx) = sync_channel(capacity);
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let handle = std::thread::Builder::new()
            .name("data-prefetch".into())
            .spawn(move || {
                let mut order = plan.order(epoch);
                while !stop2.load(Ordering::Relaxed) {
                    let item = plan.decode(&order, epoch, index);
                    let failed = item.is_err();
                    // A send error means the loader is gone; a decode error ends this producer (the loader
                    // starts a new one at the failed batch if it is asked again).
                    if tx.send(item).is_err() || failed {
                        return;
                    }
                    index += 1;
                    if index == plan.batches_per_epoch {
                        index = 0;
                        epoch += 1;
                        order = plan.order(epoch);
                    }
                }
            })
            .context("cannot start the data prefetch thread")?;
        Ok(Producer {
            rx: Some(rx),
            stop,
            handle: Some(handle),
        })
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Dropping the receiver wakes a producer blocked on a full queue; it then sees the send fail and exits.
        drop(self.rx.take());
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Endless stream of shuffled batches (epochs roll over by themselves); see the module docs.
pub struct Loader {
    plan: Arc<Plan>,
    device: Device,
    drop_last: bool,
    prefetch: usize,
    epoch: u64,
    batch: usize,
    producer: Option<Producer>,
    /// Order of the current epoch for synchronous (prefetch 0) decoding.
    sync_order: Option<(u64, Vec<usize>)>,
}

impl Loader {
    /// A loader at the start of epoch 0.
    pub fn new(dataset: Arc<dyn Dataset>, cfg: LoaderConfig) -> Result<Loader> {
        let n = dataset.len();
        ensure!(
            n > 0,
            "cannot load batches from an empty dataset ({})",
            dataset.describe()
        );
        ensure!(cfg.batch_size > 0, "batch size must be at least 1");
        let batches_per_epoch = if cfg.drop_last {
            n / cfg.batch_size
        } else {
            n.div_ceil(cfg.batch_size)
        };
        ensure!(
            batches_per_epoch > 0,
            "batch size {} is larger than the dataset ({} images) and drop_last is set, so there would be no \
             batches at all",
            cfg.batch_size,
            n
        );
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(cfg.workers.max(1))
            .thread_name(|i| format!("data-worker-{i}"))
            .build()
            .context("cannot start the data loader threads")?;
        Ok(Loader {
            plan: Arc::new(Plan {
                dataset,
                pool,
                seed: cfg.seed,
                shuffle: cfg.shuffle,
                batch_size: cfg.batch_size,
                batches_per_epoch,
            }),
            device: cfg.device,
            drop_last: cfg.drop_last,
            prefetch: cfg.prefetch,
            epoch: 0,
            batch: 0,
            producer: None,
            sync_order: None,
        })
    }

    /// A loader positioned where `state` was taken. `cfg.seed` is ignored in favour of the state's seed (the
    /// point is to continue the same sequence); batch size, shuffle, drop-last and the dataset's length must
    /// match what the state was saved with.
    pub fn resume(
        dataset: Arc<dyn Dataset>,
        cfg: LoaderConfig,
        state: &LoaderState,
    ) -> Result<Loader> {
        let n = dataset.len();
        ensure!(
            state.dataset_len == n,
            "cannot resume the data loader: the saved position is for a dataset of {} images, but {} has {n}",
            state.dataset_len,
            dataset.describe()
        );
        let check = |what: &str, saved: String, now: String| -> Result<()> {
            if saved != now {
                bail!("cannot resume the data loader: it was saved with {what} {saved}, now {now}");
            }
            Ok(())
        };
        check(
            "batch size",
            state.batch_size.to_string(),
            cfg.batch_size.to_string(),
        )?;
        check(
            "shuffle",
            state.shuffle.to_string(),
            cfg.shuffle.to_string(),
        )?;
        check(
            "drop_last",
            state.drop_last.to_string(),
            cfg.drop_last.to_string(),
        )?;
        let mut loader = Loader::new(
            dataset,
            LoaderConfig {
                seed: state.seed,
                ..cfg
            },
        )?;
        let bpe = loader.plan.batches_per_epoch;
        ensure!(
            state.batch <= bpe,
            "cannot resume the data loader: batch {} is past the end of an epoch of {bpe} batches",
            state.batch
        );
        // A state taken right after an epoch's last batch points one past it: that is the next epoch's start.
        (loader.epoch, loader.batch) = if state.batch == bpe {
            (state.epoch + 1, 0)
        } else {
            (state.epoch, state.batch)
        };
        Ok(loader)
    }

    /// The position of the next batch, to be saved with a checkpoint.
    pub fn state(&self) -> LoaderState {
        LoaderState {
            seed: self.plan.seed,
            epoch: self.epoch,
            batch: self.batch,
            dataset_len: self.plan.dataset.len(),
            batch_size: self.plan.batch_size,
            shuffle: self.plan.shuffle,
            drop_last: self.drop_last,
        }
    }

    pub fn batches_per_epoch(&self) -> usize {
        self.plan.batches_per_epoch
    }

    /// Epoch of the next batch.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Index within its epoch of the next batch.
    pub fn batch_in_epoch(&self) -> usize {
        self.batch
    }

    pub fn dataset(&self) -> &Arc<dyn Dataset> {
        &self.plan.dataset
    }

    /// The next batch. After the last batch of an epoch comes batch 0 of the next one. On an error (a dataset
    /// that cannot produce an image) the position does not move, so calling again retries the same batch.
    pub fn next_batch(&mut self) -> Result<Batch> {
        let host = if self.prefetch == 0 {
            let order = match &self.sync_order {
                Some((e, o)) if *e == self.epoch => o,
                _ => {
                    &self
                        .sync_order
                        .insert((self.epoch, self.plan.order(self.epoch)))
                        .1
                }
            };
            self.plan.decode(order, self.epoch, self.batch)?
        } else {
            self.receive()?
        };
        ensure!(
            (host.epoch, host.index) == (self.epoch, self.batch),
            "internal error: data loader expected batch {} of epoch {}, got batch {} of epoch {}",
            self.batch,
            self.epoch,
            host.index,
            host.epoch
        );
        let (c, h, w) = self.plan.dataset.image_shape();
        let images = Tensor::from_vec(host.data, &[host.len, c, h, w], &self.device)
            .context("uploading a batch of images")?;
        let batch = Batch {
            images,
            labels: host.labels,
            epoch: host.epoch,
            index: host.index,
        };
        self.batch += 1;
        if self.batch == self.plan.batches_per_epoch {
            self.batch = 0;
            self.epoch += 1;
        }
        Ok(batch)
    }

    fn receive(&mut self) -> Result<HostBatch> {
        if self.producer.is_none() {
            self.producer = Some(Producer::start(
                self.plan.clone(),
                self.prefetch,
                self.epoch,
                self.batch,
            )?);
        }
        let rx = self
            .producer
            .as_ref()
            .and_then(|p| p.rx.as_ref())
            .expect("a running producer has a receiver");
        let item = rx
            .recv()
            .map_err(|_| anyhow!("the data prefetch thread stopped unexpectedly"));
        match item {
            Ok(Ok(host)) => Ok(host),
            Ok(Err(e)) | Err(e) => {
                // Restart from the current position on the next call.
                self.producer = None;
                Err(e)
            }
        }
    }
}

impl Iterator for Loader {
    type Item = Result<Batch>;

    /// Never `None`: the stream of epochs is endless; take as many batches as the training needs.
    fn next(&mut self) -> Option<Result<Batch>> {
        Some(self.next_batch())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::time::{Duration, Instant};

    /// Image `i` is a 1x2x3 image filled with `i`, labelled `i % 7`; counts `get` calls; can be made slow or
    /// made to fail at one index.
    struct Numbers {
        n: usize,
        calls: AtomicUsize,
        fail_at: Option<usize>,
        delay: Duration,
    }

    impl Numbers {
        fn new(n: usize) -> Arc<Numbers> {
            Arc::new(Numbers {
                n,
                calls: AtomicUsize::new(0),
                fail_at: None,
                delay: Duration::ZERO,
            })
        }
    }

    impl Dataset for Numbers {
        fn len(&self) -> usize {
            self.n
        }
        fn image_shape(&self) -> (usize, usize, usize) {
            (1, 2, 3)
        }
        fn num_classes(&self) -> Option<usize> {
            Some(7)
        }
        fn get(&self, i: usize) -> Result<(Vec<f32>, Option<u32>)> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(self.delay);
            ensure!(Some(i) != self.fail_at, "image {i} is broken");
            Ok((vec![i as f32; 6], Some((i % 7) as u32)))
        }
        fn describe(&self) -> String {
            format!("numbers({})", self.n)
        }
    }

    fn cfg(b: usize, seed: u64, prefetch: usize, workers: usize) -> LoaderConfig {
        LoaderConfig {
            prefetch,
            workers,
            ..LoaderConfig::new(b, seed, Device::Cpu)
        }
    }

    /// The dataset indices in a batch, checking the images and labels agree with them.
    fn ids(b: &Batch) -> Vec<usize> {
        let x = b.images.to_vec().unwrap();
        let ids: Vec<usize> = x.chunks(6).map(|c| c[0] as usize).collect();
        for (k, c) in x.chunks(6).enumerate() {
            assert!(
                c.iter().all(|v| *v == c[0]),
                "image {k} mixes values: {c:?}"
            );
        }
        let want: Vec<u32> = ids.iter().map(|i| (i % 7) as u32).collect();
        assert_eq!(b.labels.as_ref().unwrap(), &want);
        ids
    }

    fn take(l: &mut Loader, k: usize) -> Vec<(u64, usize, Vec<usize>)> {
        (0..k)
            .map(|_| {
                let b = l.next_batch().unwrap();
                (b.epoch, b.index, ids(&b))
            })
            .collect()
    }

    #[test]
    fn epochs_are_permutations_and_drop_last_works() {
        let ds = Numbers::new(23);
        // drop_last: 4 batches of 5 per epoch, 3 images unseen each epoch, different ones each time.
        let mut l = Loader::new(ds.clone(), cfg(5, 1, 2, 2)).unwrap();
        assert_eq!(l.batches_per_epoch(), 4);
        let e0 = take(&mut l, 4);
        let e1 = take(&mut l, 4);
        for (e, epoch) in [(0u64, &e0), (1, &e1)] {
            let mut seen: Vec<usize> = epoch.iter().flat_map(|b| b.2.clone()).collect();
            assert!(epoch
                .iter()
                .enumerate()
                .all(|(k, b)| b.0 == e && b.1 == k && b.2.len() == 5));
            seen.sort();
            seen.dedup();
            assert_eq!(seen.len(), 20, "no repeats within an epoch");
        }
        assert_ne!(
            e0,
            e1.iter().map(|b| (0, b.1, b.2.clone())).collect::<Vec<_>>()
        );

        // Keep the last batch: 5 batches, the last of 3, covering everything exactly once.
        let mut l = Loader::new(
            ds.clone(),
            LoaderConfig {
                drop_last: false,
                ..cfg(5, 1, 2, 2)
            },
        )
        .unwrap();
        assert_eq!(l.batches_per_epoch(), 5);
        let e = take(&mut l, 5);
        assert_eq!(e[4].2.len(), 3);
        assert_eq!(l.next_batch().unwrap().images.shape(), &[5, 1, 2, 3]);
        let mut all: Vec<usize> = e.iter().flat_map(|b| b.2.clone()).collect();
        all.sort();
        assert_eq!(all, (0..23).collect::<Vec<_>>());

        // No shuffle: dataset order.
        let mut l = Loader::new(
            ds,
            LoaderConfig {
                shuffle: false,
                ..cfg(4, 1, 0, 1)
            },
        )
        .unwrap();
        assert_eq!(take(&mut l, 2)[1].2, vec![4, 5, 6, 7]);
    }

    #[test]
    fn same_seed_same_batches_other_seed_other_batches() {
        let ds = Numbers::new(37);
        let a = take(&mut Loader::new(ds.clone(), cfg(6, 9, 2, 3)).unwrap(), 14);
        let b = take(&mut Loader::new(ds.clone(), cfg(6, 9, 1, 1)).unwrap(), 14);
        let c = take(&mut Loader::new(ds, cfg(6, 10, 2, 3)).unwrap(), 14);
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn prefetch_gives_the_same_batches_as_synchronous_loading() {
        let ds = Numbers::new(31);
        let sync = take(&mut Loader::new(ds.clone(), cfg(4, 3, 0, 1)).unwrap(), 20);
        for (prefetch, workers) in [(1, 1), (3, 4), (8, 2)] {
            let pre = take(
                &mut Loader::new(ds.clone(), cfg(4, 3, prefetch, workers)).unwrap(),
                20,
            );
            assert_eq!(pre, sync, "prefetch {prefetch} workers {workers}");
        }
    }

    #[test]
    fn resume_yields_exactly_the_batches_the_original_would_have() {
        let ds = Numbers::new(29);
        for (k, prefetch) in [(0usize, 2usize), (3, 2), (6, 0), (7, 3), (13, 1)] {
            let mut orig = Loader::new(ds.clone(), cfg(4, 77, prefetch, 2)).unwrap();
            take(&mut orig, k);
            let state = orig.state();
            // Through JSON, as a checkpoint would store it.
            let json = serde_json::to_string(&state).unwrap();
            let state: LoaderState = serde_json::from_str(&json).unwrap();
            let expected = take(&mut orig, 10); // crosses at least one epoch boundary (7 batches per epoch)

            // A different seed in the config is overridden by the saved one.
            let mut resumed = Loader::resume(ds.clone(), cfg(4, 12345, 2, 3), &state).unwrap();
            assert_eq!(resumed.state(), state);
            assert_eq!(
                take(&mut resumed, 10),
                expected,
                "resumed after {k} batches"
            );
        }
    }

    #[test]
    fn resume_at_epoch_end_and_mismatches() {
        let ds = Numbers::new(10);
        let state = LoaderState {
            seed: 5,
            epoch: 2,
            batch: 3,
            dataset_len: 10,
            batch_size: 3,
            shuffle: true,
            drop_last: true,
        };
        let l = Loader::resume(ds.clone(), cfg(3, 5, 1, 1), &state).unwrap();
        assert_eq!((l.epoch(), l.batch_in_epoch()), (3, 0));

        let err = |c: LoaderConfig, s: &LoaderState, d: Arc<Numbers>| {
            format!("{:#}", Loader::resume(d, c, s).err().unwrap())
        };
        assert!(err(cfg(3, 5, 1, 1), &state, Numbers::new(11)).contains("dataset of 10 images"));
        assert!(err(cfg(4, 5, 1, 1), &state, ds.clone()).contains("batch size 3"));
        let e = err(
            LoaderConfig {
                drop_last: false,
                ..cfg(3, 5, 1, 1)
            },
            &state,
            ds.clone(),
        );
        assert!(e.contains("drop_last"), "{e}");
        let e = err(cfg(3, 5, 1, 1), &LoaderState { batch: 4, ..state }, ds);
        assert!(e.contains("past the end"), "{e}");
    }

    #[test]
    fn prefetch_runs_ahead_but_stays_bounded() {
        let ds = Arc::new(Numbers {
            n: 1000,
            calls: AtomicUsize::new(0),
            fail_at: None,
            delay: Duration::from_millis(1),
        });
        let (b, prefetch) = (5usize, 2usize);
        let mut l = Loader::new(ds.clone(), cfg(b, 0, prefetch, 2)).unwrap();
        l.next_batch().unwrap();
        // The producer keeps decoding while we "train": at most `prefetch` queued + 1 in hand + 1 consumed.
        let bound = (prefetch + 2) * b;
        let t = Instant::now();
        while ds.calls.load(Ordering::SeqCst) < bound && t.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(
            ds.calls.load(Ordering::SeqCst),
            bound,
            "decoded ahead up to the bound"
        );
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(ds.calls.load(Ordering::SeqCst), bound, "and no further");
        drop(l); // joins the producer without hanging
    }

    #[test]
    fn dataset_errors_surface_and_do_not_move_the_position() {
        for prefetch in [0usize, 2] {
            let ds = Arc::new(Numbers {
                n: 12,
                calls: AtomicUsize::new(0),
                fail_at: Some(5),
                delay: Duration::ZERO,
            });
            let mut l = Loader::new(
                ds,
                LoaderConfig {
                    shuffle: false,
                    ..cfg(4, 0, prefetch, 2)
                },
            )
            .unwrap();
            l.next_batch().unwrap();
            let e = format!("{:#}", l.next_batch().unwrap_err());
            assert!(
                e.contains("image 5 is broken") && e.contains("batch 1 of epoch 0"),
                "{e}"
            );
            assert_eq!((l.epoch(), l.batch_in_epoch()), (0, 1));
            assert!(
                l.next_batch().is_err(),
                "retrying the same batch fails the same way"
            );
        }
    }

    #[test]
    fn config_errors() {
        let ds = Numbers::new(3);
        assert!(Loader::new(ds.clone(), cfg(0, 0, 1, 1)).is_err());
        let e = format!(
            "{:#}",
            Loader::new(ds.clone(), cfg(4, 0, 1, 1)).err().unwrap()
        );
        assert!(e.contains("larger than the dataset"), "{e}");
        assert!(Loader::new(
            ds,
            LoaderConfig {
                drop_last: false,
                ..cfg(4, 0, 1, 1)
            }
        )
        .is_ok());
    }

    #[test]
    fn works_with_the_balls_dataset() {
        let ds = Arc::new(super::super::BallsDataset::new(3, 50, 32, 3).unwrap());
        let mut l = Loader::new(ds, cfg(8, 0, 2, 2)).unwrap();
        let b = l.next_batch().unwrap();
        assert_eq!(b.images.shape(), &[8, 3, 32, 32]);
        assert_eq!(b.labels.unwrap().len(), 8);
    }
}
