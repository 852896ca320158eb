//! Validating a PDF reads its structure in place: it does not copy the document's streams
//! (its images and fonts, most of a bill's bytes), so a large PDF is not held twice.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The system allocator, counting the bytes allocated now and their peak.
struct Counting;

static NOW: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let now = NOW.fetch_add(layout.size(), Ordering::SeqCst) + layout.size();
        PEAK.fetch_max(now, Ordering::SeqCst);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        NOW.fetch_sub(layout.size(), Ordering::SeqCst);
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

#[test]
fn validating_a_large_pdf_allocates_a_small_part_of_it() {
    const SIZE: usize = 8 * 1024 * 1024;
    let pdf = wechat::pdf::sample_of_size(SIZE);
    let before = NOW.load(Ordering::SeqCst);
    PEAK.store(before, Ordering::SeqCst);
    assert_eq!(wechat::pdf::validate(&pdf, SIZE), Ok(()));
    let most = PEAK.load(Ordering::SeqCst) - before;
    // lopdf's full load copied the 8 MiB image out of the bytes; reading the structure takes
    // a few KiB.
    assert!(most < 256 * 1024, "validating an 8 MiB PDF allocated up to {most} bytes at once");
}
