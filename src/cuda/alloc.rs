//! A caching device allocator. Freed blocks go to a free list keyed by their (rounded) size instead of back to
//! the driver, so after the first training step every allocation is served from the cache: `cuMemAlloc` /
//! `cuMemFree` synchronise the device and would otherwise dominate small-batch steps.
//!
//! Sizes are rounded up to buckets (powers of two up to 1 MiB, then steps of 1/8 of the next power of two, so at
//! most 12.5 % is wasted) which makes a block reusable by any request of the same bucket.
//!
//! A captured CUDA graph replays its kernels on the addresses they had at capture, so the memory a captured
//! step used must stay reserved for it: while a [`MemPool`] is open, allocations come from (and freed blocks
//! return to) the pool's own free lists, never the shared ones, until the pool is retired with its graph. This
//! is PyTorch's private graph pool.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Result;

use super::runtime::GpuRuntime;

/// Allocation statistics (tests check that a warmed-up training step only hits the cache).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AllocStats {
    /// Requests served from the free lists.
    pub hits: u64,
    /// Requests that went to the driver.
    pub misses: u64,
    /// Bytes currently handed out to live tensors (bucket sizes).
    pub live_bytes: u64,
    /// Bytes sitting in the free lists.
    pub cached_bytes: u64,
}

/// Free blocks by bucket size.
type FreeLists = HashMap<usize, Vec<u64>>;

pub struct CachingAllocator {
    rt: Arc<dyn GpuRuntime>,
    free: Mutex<FreeLists>,
    /// The pool new allocations come from, if one is open.
    open_pool: Mutex<Option<Arc<MemPool>>>,
    hits: AtomicU64,
    misses: AtomicU64,
    live_bytes: AtomicU64,
    cached_bytes: AtomicU64,
}

/// The bucket a request of `bytes` is served from.
pub fn bucket_size(bytes: usize) -> usize {
    const SMALL: usize = 1 << 20;
    if bytes <= 256 {
        return 256;
    }
    let p = bytes.next_power_of_two();
    if bytes <= SMALL {
        return p;
    }
    let step = p / 8;
    bytes.div_ceil(step) * step
}

impl CachingAllocator {
    pub fn new(rt: Arc<dyn GpuRuntime>) -> Arc<CachingAllocator> {
        Arc::new(CachingAllocator {
            rt,
            free: Mutex::new(HashMap::new()),
            open_pool: Mutex::new(None),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            live_bytes: AtomicU64::new(0),
            cached_bytes: AtomicU64::new(0),
        })
    }

    /// A block of at least `bytes` bytes; returned to the cache when the handle drops. Zero bytes gives a null
    /// handle (address 0) that owns nothing.
    pub fn alloc(self: &Arc<Self>, bytes: usize) -> Result<DeviceAlloc> {
        if bytes == 0 {
            return Ok(DeviceAlloc {
                ptr: 0,
                bytes: 0,
                bucket: 0,
                pool: None,
                owner: self.clone(),
            });
        }
        let bucket = bucket_size(bytes);
        let pool = self.open_pool.lock().unwrap().clone();
        let lists = pool.as_ref().map_or(&self.free, |p| &p.free);
        let cached = lists.lock().unwrap().get_mut(&bucket).and_then(Vec::pop);
        let ptr = match cached {
            Some(p) => {
                self.hits.fetch_add(1, Ordering::Relaxed);
                self.cached_bytes
                    .fetch_sub(bucket as u64, Ordering::Relaxed);
                p
            }
            None => {
                self.misses.fetch_add(1, Ordering::Relaxed);
                match self.rt.alloc(bucket) {
                    Ok(p) => p,
                    // Returning the cache to the driver frees memory and synchronises the device, neither of
                    // which a stream capture may contain: a capture that runs out of memory fails instead.
                    Err(e) if self.rt.is_capturing() => {
                        return Err(e.context(format!(
                            "out of device memory while capturing a CUDA graph ({bucket} bytes requested, \
                             {} in use, {} cached): run without --cuda-graph or with a smaller batch",
                            self.live_bytes.load(Ordering::Relaxed),
                            self.cached_bytes.load(Ordering::Relaxed)
                        )))
                    }
                    // Out of memory with blocks parked in the cache: give them back and try once more.
                    Err(_) if self.cached_bytes.load(Ordering::Relaxed) > 0 => {
                        self.empty_cache();
                        self.rt.alloc(bucket)?
                    }
                    Err(e) => return Err(e),
                }
            }
        };
        self.live_bytes.fetch_add(bucket as u64, Ordering::Relaxed);
        Ok(DeviceAlloc {
            ptr,
            bytes,
            bucket,
            pool,
            owner: self.clone(),
        })
    }

    fn release(&self, ptr: u64, bucket: usize, pool: Option<&MemPool>) {
        self.live_bytes.fetch_sub(bucket as u64, Ordering::Relaxed);
        self.cached_bytes
            .fetch_add(bucket as u64, Ordering::Relaxed);
        // A block of a pool that is still reserved goes back to that pool. The check and the push happen
        // under the pool's lock, which `retire` also takes, so no block is stranded in a retired pool.
        if let Some(p) = pool {
            let mut free = p.free.lock().unwrap();
            if !p.retired.load(Ordering::Acquire) {
                free.entry(bucket).or_default().push(ptr);
                return;
            }
        }
        self.free
            .lock()
            .unwrap()
            .entry(bucket)
            .or_default()
            .push(ptr);
    }

    /// Opens a new private pool: every allocation until [`close_pool`](Self::close_pool) comes from it, and
    /// its blocks, once freed, are reused only by later allocations of the pool (while it is open) until the
    /// pool is retired. Errors if a pool is open already.
    pub fn open_pool(&self) -> Result<Arc<MemPool>> {
        let mut open = self.open_pool.lock().unwrap();
        anyhow::ensure!(open.is_none(), "a memory pool is open already");
        let pool = Arc::new(MemPool {
            free: Mutex::new(HashMap::new()),
            retired: AtomicBool::new(false),
        });
        *open = Some(pool.clone());
        Ok(pool)
    }

    /// Allocations come from the shared lists again; the pool's blocks stay reserved until it is retired.
    pub fn close_pool(&self) {
        *self.open_pool.lock().unwrap() = None;
    }

    /// Hands a pool's blocks back to the shared lists (its graph is gone): the free ones now, the live ones
    /// when they are freed.
    pub fn retire_pool(&self, pool: &MemPool) {
        let mut open = self.open_pool.lock().unwrap();
        if open
            .as_ref()
            .is_some_and(|p| std::ptr::eq(p.as_ref(), pool))
        {
            *open = None;
        }
        drop(open);
        let blocks: Vec<(usize, Vec<u64>)> = {
            let mut free = pool.free.lock().unwrap();
            pool.retired.store(true, Ordering::Release);
            free.drain().collect()
        };
        let mut shared = self.free.lock().unwrap();
        for (bucket, ptrs) in blocks {
            shared.entry(bucket).or_default().extend(ptrs);
        }
    }

    /// Returns every cached block of the shared lists to the driver (blocks reserved by a pool stay).
    pub fn empty_cache(&self) {
        let blocks: Vec<(usize, Vec<u64>)> = self.free.lock().unwrap().drain().collect();
        for (bucket, ptrs) in blocks {
            for p in ptrs {
                self.cached_bytes
                    .fetch_sub(bucket as u64, Ordering::Relaxed);
                self.rt.free(p);
            }
        }
    }

    pub fn stats(&self) -> AllocStats {
        AllocStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            live_bytes: self.live_bytes.load(Ordering::Relaxed),
            cached_bytes: self.cached_bytes.load(Ordering::Relaxed),
        }
    }
}

impl Drop for CachingAllocator {
    fn drop(&mut self) {
        self.empty_cache();
    }
}

/// One live block; dropping it parks the block in the allocator's free list. Because every tensor holding the
/// block also holds (through this handle) the allocator and thus the runtime, memory never outlives its device.
pub struct DeviceAlloc {
    ptr: u64,
    bytes: usize,
    bucket: usize,
    /// The private pool the block was allocated in, if any.
    pool: Option<Arc<MemPool>>,
    owner: Arc<CachingAllocator>,
}

/// The free lists of one private pool (see the module comment), and whether it has been retired.
pub struct MemPool {
    free: Mutex<FreeLists>,
    retired: AtomicBool,
}

impl MemPool {
    /// Blocks parked in the pool's free lists (reserved for its graph).
    pub fn free_blocks(&self) -> usize {
        self.free.lock().unwrap().values().map(Vec::len).sum()
    }
}

impl DeviceAlloc {
    /// Device address (0 for an empty allocation).
    pub fn ptr(&self) -> u64 {
        self.ptr
    }

    /// Requested size in bytes.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn allocator(&self) -> &Arc<CachingAllocator> {
        &self.owner
    }
}

impl Drop for DeviceAlloc {
    fn drop(&mut self) {
        if self.ptr != 0 {
            self.owner
                .release(self.ptr, self.bucket, self.pool.as_deref());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cuda::runtime::{DeviceGraph, KernelArg, LaunchCfg, TransferCounts};

    /// A device of `limit` bytes that records frees; only what the allocator calls is implemented.
    struct SmallDevice {
        limit: usize,
        /// Live blocks by address.
        used: Mutex<HashMap<u64, usize>>,
        frees: AtomicU64,
        capturing: AtomicBool,
    }

    impl GpuRuntime for SmallDevice {
        fn name(&self) -> String {
            "small".into()
        }
        fn alloc(&self, bytes: usize) -> Result<u64> {
            let mut u = self.used.lock().unwrap();
            anyhow::ensure!(
                u.values().sum::<usize>() + bytes <= self.limit,
                "out of memory"
            );
            let ptr = (u.len() as u64 + 1) << 32;
            u.insert(ptr, bytes);
            Ok(ptr)
        }
        fn free(&self, ptr: u64) {
            self.used.lock().unwrap().remove(&ptr);
            self.frees.fetch_add(1, Ordering::Relaxed);
        }
        fn htod(&self, _: u64, _: &[u8]) -> Result<()> {
            unimplemented!()
        }
        fn dtoh(&self, _: u64, _: &mut [u8]) -> Result<()> {
            unimplemented!()
        }
        fn dtod(&self, _: u64, _: u64, _: usize) -> Result<()> {
            unimplemented!()
        }
        fn memset_zero(&self, _: u64, _: usize) -> Result<()> {
            unimplemented!()
        }
        fn launch(&self, _: &str, _: LaunchCfg, _: &[KernelArg<'_>]) -> Result<()> {
            unimplemented!()
        }
        fn synchronize(&self) -> Result<()> {
            Ok(())
        }
        fn is_emulated(&self) -> bool {
            true
        }
        fn begin_capture(&self) -> Result<()> {
            self.capturing.store(true, Ordering::Relaxed);
            Ok(())
        }
        fn end_capture(&self) -> Result<Box<dyn DeviceGraph>> {
            unimplemented!()
        }
        fn is_capturing(&self) -> bool {
            self.capturing.load(Ordering::Relaxed)
        }
        fn launch_counts(&self) -> Vec<(&'static str, u64)> {
            vec![]
        }
        fn transfer_counts(&self) -> TransferCounts {
            TransferCounts::default()
        }
    }

    fn small_device() -> (Arc<SmallDevice>, Arc<CachingAllocator>) {
        let dev = Arc::new(SmallDevice {
            limit: 3 << 20,
            used: Mutex::new(HashMap::new()),
            frees: AtomicU64::new(0),
            capturing: AtomicBool::new(false),
        });
        let alloc = CachingAllocator::new(dev.clone());
        (dev, alloc)
    }

    #[test]
    fn out_of_memory_empties_the_cache_and_retries() {
        let (dev, alloc) = small_device();
        drop(alloc.alloc(2 << 20).unwrap());
        // 2 MiB cached + 2 MiB more does not fit: the cache goes back to the driver and the request succeeds.
        let _b = alloc.alloc(1536 << 10).unwrap();
        assert_eq!(dev.frees.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn out_of_memory_during_a_capture_is_an_error_that_frees_nothing() {
        let (dev, alloc) = small_device();
        drop(alloc.alloc(2 << 20).unwrap());
        dev.begin_capture().unwrap();
        let e = alloc.alloc(1536 << 10).err().expect("must fail");
        let msg = format!("{e:#}");
        assert!(msg.contains("capturing a CUDA graph"), "{msg}");
        assert_eq!(
            dev.frees.load(Ordering::Relaxed),
            0,
            "freed during a capture"
        );
        assert_eq!(alloc.stats().cached_bytes, 2 << 20);
    }

    #[test]
    fn buckets_round_up_with_bounded_waste() {
        assert_eq!(bucket_size(1), 256);
        assert_eq!(bucket_size(256), 256);
        assert_eq!(bucket_size(257), 512);
        assert_eq!(bucket_size(1 << 20), 1 << 20);
        assert_eq!(bucket_size((1 << 20) + 1), (1 << 20) + (1 << 18));
        for b in [1000usize, 4097, 123_457, 3_000_001, 77_777_777] {
            let s = bucket_size(b);
            assert!(
                s >= b
                    && (s as f64) <= b as f64 * 2.0
                    && (b <= 1 << 20 || s as f64 <= b as f64 * 1.125 + 1.0)
            );
        }
    }
}
