//! Channels-last copies of convolution operands (conv_nhwc.rs's conversions), kept for as long as their source
//! is alive and unwritten, so that a weight read by several convolutions between two optimizer steps, or an
//! activation read by its forward and again by the backward weight, is converted once.
//!
//! A copy is found again by its source's allocation (the `Arc` every tensor's device memory has, unique to it:
//! the allocator wraps each block it hands out in a new one), the view it was converted under ([n, c, hw]) and
//! its format. The entry holds the source only weakly: it does not keep the source alive or count as a second
//! owner (which would make the next in-place write copy first), and while the entry exists no other allocation
//! can have the source's address, so a match is the same memory, not a recycled block.
//!
//! A copy is only valid while its source holds the values it was made from. Tensors are written after they were
//! made in two ways only, and both tell the cache: an in-place update (`CudaBackend::ptr_mut`: optimizer steps,
//! gradient accumulation, running statistics, EMA, clamping) and `copy_into`. A CUDA graph's replay writes its
//! state without the host seeing, so capture and replay forget everything (src/cuda/backend.rs).

use std::sync::{Arc, Weak};

use crate::tensor::DeviceMemory;

/// A source's memory, as the cache compares it: the address of its `Arc`'s value.
fn key(mem: &Arc<dyn DeviceMemory>) -> *const u8 {
    Arc::as_ptr(mem) as *const u8
}

/// One converted copy.
struct Entry {
    source: Weak<dyn DeviceMemory>,
    view: [usize; 3],
    format: &'static str,
    copy: Arc<dyn DeviceMemory>,
}

impl Entry {
    fn of(&self, mem: &Arc<dyn DeviceMemory>) -> bool {
        self.source.as_ptr() as *const u8 == key(mem)
    }
}

/// The copies made so far whose sources are alive and unwritten.
#[derive(Default)]
pub(super) struct OperandCache {
    entries: Vec<Entry>,
}

impl OperandCache {
    /// The copy of `source` viewed as `view` in `format`, if one was kept.
    pub fn find(
        &mut self,
        source: &Arc<dyn DeviceMemory>,
        view: [usize; 3],
        format: &str,
    ) -> Option<Arc<dyn DeviceMemory>> {
        self.drop_orphans();
        self.entries
            .iter()
            .find(|e| e.of(source) && e.view == view && e.format == format)
            .map(|e| e.copy.clone())
    }

    /// Keeps `copy`, the conversion of `source` viewed as `view` in `format`.
    pub fn keep(
        &mut self,
        source: &Arc<dyn DeviceMemory>,
        view: [usize; 3],
        format: &'static str,
        copy: Arc<dyn DeviceMemory>,
    ) {
        self.drop_orphans();
        self.entries
            .retain(|e| !(e.of(source) && e.view == view && e.format == format));
        self.entries.push(Entry {
            source: Arc::downgrade(source),
            view,
            format,
            copy,
        });
    }

    /// Forgets every copy of `source`: it is about to be written.
    pub fn forget(&mut self, source: &Arc<dyn DeviceMemory>) {
        self.entries.retain(|e| !e.of(source));
        self.drop_orphans();
    }

    /// Forgets every copy.
    pub fn clear(&mut self) {
        self.entries.clear();
    }

    /// Copies kept.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Releases the copies whose sources have been dropped.
    fn drop_orphans(&mut self) {
        self.entries.retain(|e| e.source.strong_count() > 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Block(u64);

    impl DeviceMemory for Block {
        fn ptr(&self) -> u64 {
            self.0
        }
    }

    fn block(p: u64) -> Arc<dyn DeviceMemory> {
        Arc::new(Block(p))
    }

    #[test]
    fn finds_a_copy_by_source_view_and_format_only() {
        let mut cache = OperandCache::default();
        let (a, b, copy) = (block(1), block(2), block(10));
        cache.keep(&a, [1, 32, 16], "bf16", copy.clone());
        let found = cache.find(&a, [1, 32, 16], "bf16").unwrap();
        assert!(Arc::ptr_eq(&found, &copy));
        assert!(
            cache.find(&a, [32, 1, 16], "bf16").is_none(),
            "another view"
        );
        assert!(
            cache.find(&a, [1, 32, 16], "tf32").is_none(),
            "another format"
        );
        assert!(
            cache.find(&b, [1, 32, 16], "bf16").is_none(),
            "another source"
        );
        // A second copy under the same key replaces the first.
        cache.keep(&a, [1, 32, 16], "bf16", block(11));
        assert_eq!(cache.len(), 1);
        assert_eq!(cache.find(&a, [1, 32, 16], "bf16").unwrap().ptr(), 11);
    }

    #[test]
    fn a_write_forgets_its_source_only() {
        let mut cache = OperandCache::default();
        let (a, b) = (block(1), block(2));
        cache.keep(&a, [1, 2, 3], "f32", block(10));
        cache.keep(&a, [2, 1, 3], "f32", block(11));
        cache.keep(&b, [1, 2, 3], "f32", block(12));
        cache.forget(&a);
        assert!(cache.find(&a, [1, 2, 3], "f32").is_none());
        assert!(cache.find(&a, [2, 1, 3], "f32").is_none());
        assert_eq!(cache.find(&b, [1, 2, 3], "f32").unwrap().ptr(), 12);
        cache.clear();
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn a_dropped_source_releases_its_copy_and_is_not_confused_with_a_new_one() {
        let mut cache = OperandCache::default();
        let a = block(1);
        let copy = block(10);
        cache.keep(&a, [1, 2, 3], "f32", copy.clone());
        assert_eq!(
            Arc::strong_count(&a),
            1,
            "the cache does not own the source"
        );
        drop(a);
        // The same device address again, in a new allocation: not the dropped source.
        let again = block(1);
        assert!(cache.find(&again, [1, 2, 3], "f32").is_none());
        assert_eq!(cache.len(), 0);
        assert_eq!(Arc::strong_count(&copy), 1, "the copy was released");
    }
}
