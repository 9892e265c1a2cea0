// cuda_emu.cpp — the runtime behind cuda_emu.h: runs a range of a grid's blocks on the calling OS thread.
//
// Each CUDA thread of a block is a fiber with its own stack. The scheduler resumes every runnable fiber in
// thread order; a fiber runs until it finishes or waits at a barrier (__syncthreads, or a warp collective).
// The last thread to arrive at a barrier releases the others and keeps running, so a barrier costs one context
// switch per waiting thread. When no fiber can run and some have not finished, the block is deadlocked: the
// launch fails with a description instead of hanging.
//
// The Rust side (src/cuda/emu.rs) splits a launch's blocks over a few OS threads and calls emu_run_blocks on
// each; everything here is per OS thread (thread_local), so those calls never share state.
//
// The sanitizer (EmuChecks, filled per launch by emu.rs). build.rs compiles the kernels with GCC's
// kernel-address instrumentation in callback mode, so every load and store of a kernel calls __asan_load*/
// __asan_store* below with its address and size; this runtime itself is not instrumented. Each access is
// classified (the fiber's own stack, a __shared__ variable, a device allocation, the argument slots) and checked:
//   memcheck   inside a live allocation, not past its end, not in freed memory, naturally aligned
//   initcheck  global words written (host copy, memset or kernel store) before they are read; __shared__ memory
//              is poisoned (0xff bytes, NaN as floats) at every block start and its reads before any write in the
//              block are reported
//   racecheck  shadow state per 4-byte __shared__ word: the last writer and the readers of the current barrier
//              interval; a conflicting access by another thread with no __syncthreads between (nor, within a
//              warp, a warp collective) is reported
//   synccheck  all threads wait at the same __syncthreads() (file and line); a warp collective's mask names
//              exactly the live lanes, includes the caller, is the same on every lane, and no lane reads a lane
//              outside it
// and a violation stops the block with a message naming the kernel's thread, the access and the variable. The
// schedule (forward, reverse or seeded random order of the runnable fibers after every barrier and warp
// collective) lets emu.rs run one launch under several orders and compare the results bit for bit.

#include <stdarg.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include <deque>
#include <string>
#include <vector>

thread_local uint3 threadIdx;
thread_local uint3 blockIdx;
thread_local dim3 blockDim;
thread_local dim3 gridDim;

// ---- context switching ----------------------------------------------------------------------------------------
// swapcontext() saves and restores the signal mask with a system call on every switch; kernels switch once per
// thread per barrier, so on x86-64 a few instructions that swap the callee-saved registers and the stack pointer
// are used instead. Other architectures fall back to ucontext.
#if defined(__x86_64__) && !defined(EMU_USE_UCONTEXT)
#define EMU_ASM_SWITCH 1
extern "C" void gan_emu_ctx_switch(void** save_sp, void* new_sp);
asm(R"(
    .pushsection .text
    .globl gan_emu_ctx_switch
    .type gan_emu_ctx_switch, @function
gan_emu_ctx_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size gan_emu_ctx_switch, .-gan_emu_ctx_switch
    .popsection
)");
#else
#include <ucontext.h>
#endif

// ---- sanitizer configuration (mirrored by #[repr(C)] structs in src/cuda/emu.rs) ------------------------------
struct EmuAlloc {
    unsigned long long base, size;
    unsigned char* init;  // one byte per 4-byte word, non-zero once written; null: not tracked
    long long arg;        // index of the first pointer argument into it, or -1
};
struct EmuChecks {
    unsigned flags;     // CHECK_* bits
    unsigned schedule;  // SCHED_*
    unsigned long long seed;
    const EmuAlloc* allocs;  // live allocations, sorted by base
    unsigned long long nallocs;
    const EmuAlloc* freed;  // recently freed ranges (not reallocated since), sorted by base
    unsigned long long nfreed;
    unsigned long long args[2], argv[2];  // the argument values and the array of pointers to them
    unsigned long long redzone;           // bytes after every allocation that belong to no other allocation
};
enum { CHECK_MEM = 1, CHECK_RACE = 2, CHECK_INIT = 4, CHECK_SYNC = 8 };
enum { SCHED_FORWARD = 0, SCHED_REVERSE = 1, SCHED_RANDOM = 2 };

namespace {

enum State { READY, AT_BARRIER, AT_WARP, DONE };

// racecheck / initcheck state of one 4-byte word of __shared__ memory. Epochs count barrier intervals on this OS
// thread (they only grow, so state left by earlier blocks is simply old); warp epochs count a warp's collectives.
const uint16_t MANY = 0xffff;
struct Shadow {
    uint32_t w_epoch, w_wep;  // interval and warp epoch of the last write
    uint32_t r_epoch, r_wep;  // interval of the reads recorded; the latest warp epoch among them
    uint16_t w_tid;           // last writer
    uint16_t r_tid;           // the reader, or MANY
    uint16_t r_warp;          // the readers' warp, or MANY if they span warps
};

// A __shared__ variable of the running block.
struct SharedRange {
    uintptr_t lo, hi;
    size_t shadow;     // index of its first word in Block::shadow
    const char* name;  // null: the dynamic shared memory
};

const size_t kStackBytes = 256 * 1024;

struct Fiber {
    char* stack = nullptr;  // mapping base; the lowest page is a guard page
    State state = READY;
    // cp.async copies issued and not completed, oldest first; sizes of the committed groups, oldest first (the
    // copies past their sum are not committed yet).
    std::deque<EmuCopy> copies;
    std::deque<size_t> groups;
#ifdef EMU_ASM_SWITCH
    void* sp = nullptr;
#else
    ucontext_t ctx;
#endif
};

struct Warp {
    int lanes = 0;    // threads in this warp (fewer than 32 in a partial last warp)
    int arrived = 0;  // lanes waiting at the current collective
    int done = 0;     // lanes that have exited
    int op = 0;       // the collective the first arriving lane called (all lanes must call the same one)
    unsigned mask = 0;     // its member mask
    unsigned exited = 0;   // bits of the lanes that have exited
    uint32_t epoch = 0;    // collectives completed (racecheck: they order the lanes' shared accesses)
    unsigned long long vals[32];
    int src[32];
    unsigned long long res[32];
};

struct Block {
    EmuWrapper fn = nullptr;
    void** args = nullptr;
    int n = 0;
    int done = 0;
    int bar_arrived = 0;
    int current = 0;
    bool failed = false;
    std::string error;
    std::vector<Fiber> fibers;
    std::vector<Warp> warps;
    unsigned char* smem = nullptr;
    size_t smem_cap = 0;
    unsigned smem_bytes = 0;
    const char* dyn_name = nullptr;
    // Sanitizer state.
    const EmuChecks* chk = nullptr;
    unsigned flags = 0;
    unsigned schedule = SCHED_FORWARD;
    unsigned long long rng = 0;
    std::vector<int> order;           // resume order of the current round
    uintptr_t stack_lo = 0;           // the running fiber's stack mapping
    uint32_t epoch = 0, block_epoch = 0;
    const char* bar_file = nullptr;   // the __syncthreads() call the first thread waiting at the barrier made
    int bar_line = 0;
    int bar_first = 0;                // that thread
    const EmuAlloc* last_alloc = nullptr;  // the allocation of the previous global access (most hit it again)
    std::vector<SharedRange> shared;  // this block's __shared__ variables, dynamic first
    std::vector<Shadow> shadow;
    size_t shadow_used = 0;
#ifdef EMU_ASM_SWITCH
    void* sched_sp = nullptr;
#else
    ucontext_t sched_ctx;
#endif

    ~Block() {
        for (Fiber& f : fibers)
            if (f.stack) munmap(f.stack, kStackBytes);
        free(smem);
    }
};

__attribute__((tls_model("initial-exec"))) thread_local Block tl;

void fail(const char* fmt, ...) {
    if (tl.failed) return;
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    tl.failed = true;
    tl.error = buf;
}

// Suspends the running fiber and returns to the scheduler.
void yield() {
    Fiber& f = tl.fibers[tl.current];
#ifdef EMU_ASM_SWITCH
    gan_emu_ctx_switch(&f.sp, tl.sched_sp);
#else
    swapcontext(&f.ctx, &tl.sched_ctx);
#endif
}

// Stops the running fiber for good after fail(): the scheduler sees the failure and ends the block.
[[noreturn]] void stop() {
    yield();
    abort();
}

// "thread (x,y,z)" of linear thread index t in the block.
struct ThreadName {
    char s[48];
    explicit ThreadName(int t) {
        unsigned bx = blockDim.x, by = blockDim.y;
        snprintf(s, sizeof s, "thread (%u,%u,%u)", t % bx, (t / bx) % by, t / (bx * by));
    }
};

void warp_complete(Warp& w, int warp);

void fiber_main() {
    tl.fn(tl.args);
    // The thread has exited: it can no longer arrive at a barrier its peers may be waiting at.
    Block& b = tl;
    b.fibers[b.current].state = DONE;
    b.done++;
    Warp& w = b.warps[b.current / 32];
    w.done++;
    w.exited |= 1u << (b.current % 32);
    if (b.bar_arrived > 0 && b.bar_arrived == b.n - b.done)
        fail("__syncthreads: %d thread(s) exited while %d wait at the barrier (a barrier inside divergent code)",
             b.done, b.bar_arrived);
    if (w.arrived > 0 && w.arrived == w.lanes - w.done) warp_complete(w, b.current / 32);
    stop();  // never resumed
}

#ifdef EMU_ASM_SWITCH
// Lays out a fresh stack so that the first switch into it "returns" into fiber_main with the alignment the ABI
// expects at function entry (rsp + 8 a multiple of 16).
void prepare(Fiber& f) {
    uintptr_t top = (reinterpret_cast<uintptr_t>(f.stack) + kStackBytes) & ~uintptr_t(15);
    void** sp = reinterpret_cast<void**>(top);
    *--sp = nullptr;                                    // fake return address of fiber_main
    *--sp = reinterpret_cast<void*>(&fiber_main);       // popped by `ret`
    for (int i = 0; i < 6; ++i) *--sp = nullptr;        // rbp rbx r12 r13 r14 r15
    f.sp = sp;
}
#else
void prepare(Fiber& f) {
    getcontext(&f.ctx);
    f.ctx.uc_stack.ss_sp = f.stack + 4096;
    f.ctx.uc_stack.ss_size = kStackBytes - 4096;
    f.ctx.uc_link = nullptr;
    makecontext(&f.ctx, fiber_main, 0);
}
#endif

bool ensure_fibers(int n) {
    while ((int)tl.fibers.size() < n) {
        Fiber f;
        void* p = mmap(nullptr, kStackBytes, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (p == MAP_FAILED) return false;
        mprotect(p, 4096, PROT_NONE);  // stack overflow faults instead of corrupting a neighbour
        f.stack = static_cast<char*>(p);
        tl.fibers.push_back(f);
    }
    return true;
}

void resume(int i) {
    unsigned bx = blockDim.x, by = blockDim.y;
    threadIdx.x = i % bx;
    threadIdx.y = (i / bx) % by;
    threadIdx.z = i / (bx * by);
    tl.current = i;
    tl.stack_lo = reinterpret_cast<uintptr_t>(tl.fibers[i].stack);
#ifdef EMU_ASM_SWITCH
    gan_emu_ctx_switch(&tl.sched_sp, tl.fibers[i].sp);
#else
    swapcontext(&tl.sched_ctx, &tl.fibers[i].ctx);
#endif
}

// A fresh random permutation of the resume order (xorshift64*, seeded per launch and block).
void shuffle_order(Block& b) {
    for (int i = b.n - 1; i > 0; --i) {
        b.rng ^= b.rng >> 12;
        b.rng ^= b.rng << 25;
        b.rng ^= b.rng >> 27;
        const int j = (int)((b.rng * 2685821657736338717ull >> 33) % (unsigned long long)(i + 1));
        std::swap(b.order[i], b.order[j]);
    }
}

void run_block() {
    Block& b = tl;
    b.done = 0;
    b.bar_arrived = 0;
    for (int i = 0; i < b.n; ++i) {
        b.fibers[i].state = READY;
        b.fibers[i].copies.clear();
        b.fibers[i].groups.clear();
        prepare(b.fibers[i]);
    }
    int nwarps = (b.n + 31) / 32;
    b.warps.assign(nwarps, Warp());
    for (int w = 0; w < nwarps; ++w) b.warps[w].lanes = std::min(32, b.n - 32 * w);

    b.order.resize(b.n);
    for (int i = 0; i < b.n; ++i) b.order[i] = b.schedule == SCHED_REVERSE ? b.n - 1 - i : i;
    while (b.done < b.n && !b.failed) {
        bool ran = false;
        if (b.schedule == SCHED_RANDOM) shuffle_order(b);
        for (int k = 0; k < b.n && !b.failed; ++k) {
            const int i = b.order[k];
            if (b.fibers[i].state == READY) {
                resume(i);
                ran = true;
            }
        }
        if (!ran && !b.failed) {
            int at_bar = 0, at_warp = 0;
            for (int i = 0; i < b.n; ++i) {
                at_bar += b.fibers[i].state == AT_BARRIER;
                at_warp += b.fibers[i].state == AT_WARP;
            }
            fail("deadlock: %d thread(s) wait at __syncthreads, %d in a warp collective, %d exited "
                 "(threads of one warp or block are waiting at different barriers)",
                 at_bar, at_warp, b.done);
        }
    }
}

}  // namespace

namespace {

// ---- barriers and warp collectives ----------------------------------------------------------------------------

// Lanes of warp `warp` that exist (a partial last warp has fewer than 32).
unsigned lane_bits(const Warp& w) { return w.lanes == 32 ? 0xffffffffu : (1u << w.lanes) - 1; }

// Every live lane of `w` has arrived at its collective: checks the mask, computes the results and releases the
// waiting lanes (the caller, if it is one of them, keeps running).
void warp_complete(Warp& w, int warp) {
    Block& b = tl;
    const unsigned live = lane_bits(w) & ~w.exited;
    if (w.mask & w.exited) {
        fail("warp collective: lane(s) 0x%08x of warp %d exited while the others wait in a shuffle/ballot/syncwarp "
             "whose mask 0x%08x names them",
             w.mask & w.exited, warp, w.mask);
        return;
    }
    if ((b.flags & CHECK_SYNC) && (w.mask & live) != live) {
        fail("synccheck: warp %d: the collective's mask 0x%08x leaves out active lane(s) 0x%08x", warp, w.mask,
             live & ~w.mask);
        return;
    }
    const int base = warp * 32;
    if (w.op == 1) {
        unsigned long long bits = 0;
        for (int l = 0; l < w.lanes; ++l)
            if ((live >> l & 1) && w.vals[l]) bits |= 1ull << l;
        for (int l = 0; l < w.lanes; ++l) w.res[l] = bits & w.mask;
    } else {
        for (int l = 0; l < w.lanes; ++l) {
            if (!(live >> l & 1)) continue;
            const int s = w.src[l];
            const bool valid = s >= 0 && s < w.lanes;
            if (valid && s != l && !(w.mask >> s & 1)) {
                fail("synccheck: %s reads lane %d of its warp, which is outside the shuffle mask 0x%08x",
                     ThreadName(base + l).s, s, w.mask);
                return;
            }
            w.res[l] = valid ? w.vals[s] : w.vals[l];
        }
    }
    for (int l = 0; l < w.lanes; ++l)
        if (b.fibers[base + l].state == AT_WARP) b.fibers[base + l].state = READY;
    w.arrived = 0;
    w.epoch++;
}

}  // namespace

extern "C" void emu_cp_async_issue(const EmuCopy* c) { tl.fibers[tl.current].copies.push_back(*c); }

extern "C" void emu_cp_async_commit(void) {
    Fiber& f = tl.fibers[tl.current];
    size_t committed = 0;
    for (size_t g : f.groups) committed += g;
    f.groups.push_back(f.copies.size() - committed);
}

extern "C" int emu_cp_async_complete(int keep, EmuCopy* out, int cap) {
    Fiber& f = tl.fibers[tl.current];
    int n = 0;
    while (n < cap && f.groups.size() > (size_t)std::max(keep, 0)) {
        if (f.groups.front() == 0) {
            f.groups.pop_front();
            continue;
        }
        out[n++] = f.copies.front();
        f.copies.pop_front();
        --f.groups.front();
    }
    return n;
}

extern "C" void emu_syncthreads(const char* file, int line) {
    Block& b = tl;
    if (b.flags & CHECK_SYNC) {
        if (b.bar_arrived == 0) {
            b.bar_file = file;
            b.bar_line = line;
            b.bar_first = b.current;
        } else if (line != b.bar_line || strcmp(file, b.bar_file) != 0) {
            fail("synccheck: %s waits at the __syncthreads() of %s:%d, %s at the one of %s:%d (a barrier in "
                 "divergent code)",
                 ThreadName(b.current).s, file, line, ThreadName(b.bar_first).s, b.bar_file, b.bar_line);
            stop();
        }
    }
    b.bar_arrived++;
    if (b.bar_arrived == b.n - b.done) {
        if (b.done > 0) {
            fail("__syncthreads: %d thread(s) exited while %d wait at the barrier (a barrier inside divergent code)",
                 b.done, b.bar_arrived);
            stop();
        }
        for (int i = 0; i < b.n; ++i)
            if (b.fibers[i].state == AT_BARRIER) b.fibers[i].state = READY;
        b.bar_arrived = 0;
        b.epoch++;
        return;
    }
    b.fibers[b.current].state = AT_BARRIER;
    yield();
}

extern "C" unsigned long long emu_warp_exchange(unsigned long long value, int src_lane, int op, unsigned mask) {
    Block& b = tl;
    const int lane = b.current % 32, warp = b.current / 32;
    Warp& w = b.warps[warp];
    if ((b.flags & CHECK_SYNC) && !(mask >> lane & 1)) {
        fail("synccheck: %s calls a warp collective with mask 0x%08x, which leaves out its own lane %d",
             ThreadName(b.current).s, mask, lane);
        stop();
    }
    if (w.arrived == 0) {
        w.op = op;
        w.mask = mask;
    } else if (w.op != op) {
        fail("warp %d: lanes are in different warp collectives (shuffle vs ballot vs syncwarp)", warp);
        stop();
    } else if ((b.flags & CHECK_SYNC) && w.mask != mask) {
        fail("synccheck: lanes of warp %d call one collective with different masks (0x%08x and 0x%08x)", warp,
             w.mask, mask);
        stop();
    }
    w.vals[lane] = value;
    w.src[lane] = src_lane;
    w.arrived++;
    if (w.arrived == w.lanes - w.done) {
        warp_complete(w, warp);
        if (b.failed) stop();
        return w.res[lane];
    }
    b.fibers[b.current].state = AT_WARP;
    yield();
    return w.res[lane];
}

extern "C" unsigned emu_active_mask(void) {
    const Warp& w = tl.warps[tl.current / 32];
    return lane_bits(w) & ~w.exited;
}

extern "C" void* emu_dynamic_smem(const char* name) {
    tl.dyn_name = name;
    return tl.smem;
}

extern "C" void* emu_register_shared(void* p, unsigned long long bytes, const char* name) {
    Block& b = tl;
    const uintptr_t lo = reinterpret_cast<uintptr_t>(p);
    for (const SharedRange& r : b.shared)
        if (r.lo == lo) return p;
    // First use in this block: shared memory starts as garbage on a GPU.
    memset(p, 0xff, bytes);
    b.shared.push_back({lo, lo + bytes, b.shadow_used, name});
    b.shadow_used += (bytes + 3) / 4;
    if (b.shadow.size() < b.shadow_used) b.shadow.resize(b.shadow_used, Shadow());
    return p;
}

// ---- the access checks ---------------------------------------------------------------------------------------
namespace {

[[noreturn]] __attribute__((format(printf, 1, 2))) void violation(const char* fmt, ...) {
    char buf[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    fail("%s", buf);
    stop();
}

const char* kind(bool write) { return write ? "store" : "load"; }

// "argument #2" or "an allocation" for messages.
struct AllocName {
    char s[48];
    explicit AllocName(const EmuAlloc& a) {
        if (a.arg >= 0)
            snprintf(s, sizeof s, "the allocation of argument #%lld", a.arg);
        else
            snprintf(s, sizeof s, "an allocation");
    }
};

bool misaligned(uintptr_t a, size_t n) { return (n == 2 || n == 4 || n == 8 || n == 16) && (a & (n - 1)); }

void shared_access(const SharedRange& r, uintptr_t a, size_t n, bool write) {
    Block& b = tl;
    const char* name = r.name ? r.name : (b.dyn_name ? b.dyn_name : "dynamic shared memory");
    const uintptr_t off = a - r.lo;
    if (b.flags & CHECK_MEM) {
        if (a + n > r.hi)
            violation("memcheck: %s: %zu-byte %s at byte %zu of __shared__ `%s` runs past its end (%zu bytes)",
                      ThreadName(b.current).s, n, kind(write), (size_t)off, name, (size_t)(r.hi - r.lo));
        if (misaligned(a, n))
            violation("memcheck: %s: misaligned %zu-byte %s at byte %zu of __shared__ `%s`", ThreadName(b.current).s,
                      n, kind(write), (size_t)off, name);
    }
    if (!(b.flags & (CHECK_RACE | CHECK_INIT))) return;
    const int t = b.current;
    const uint16_t W = (uint16_t)(t / 32);
    const uint32_t E = b.epoch, we = b.warps[W].epoch;
    // Ordered with an access of thread `o` in warp epoch `oe` of this interval: the same thread, or a lane of the
    // same warp before a warp collective completed since.
    auto ordered = [&](uint16_t o, uint32_t oe) { return o == t || (o / 32 == W && oe < we); };
    const size_t w0 = off / 4, w1 = std::min((off + n - 1) / 4, (r.hi - r.lo - 1) / 4);
    for (size_t k = w0; k <= w1; ++k) {
        Shadow& e = b.shadow[r.shadow + k];
        if (write) {
            if ((b.flags & CHECK_RACE) && e.w_epoch == E && !ordered(e.w_tid, e.w_wep))
                violation("racecheck: %s writes `%s`[byte %zu] after %s wrote it with no barrier between "
                          "(write-write race)",
                          ThreadName(t).s, name, 4 * k, ThreadName(e.w_tid).s);
            if ((b.flags & CHECK_RACE) && e.r_epoch == E) {
                const bool ok = e.r_tid == MANY ? (e.r_warp == W && e.r_wep < we) : ordered(e.r_tid, e.r_wep);
                if (!ok) {
                    char who[64];
                    if (e.r_tid == MANY)
                        snprintf(who, sizeof who, "other threads");
                    else
                        snprintf(who, sizeof who, "%s", ThreadName(e.r_tid).s);
                    violation("racecheck: %s writes `%s`[byte %zu] that %s read with no barrier between "
                              "(read-write race)",
                              ThreadName(t).s, name, 4 * k, who);
                }
            }
            e.w_epoch = E;
            e.w_wep = we;
            e.w_tid = (uint16_t)t;
        } else {
            if ((b.flags & CHECK_INIT) && e.w_epoch < b.block_epoch)
                violation("initcheck: %s reads `%s`[byte %zu] before any thread of the block wrote it "
                          "(uninitialised __shared__ memory)",
                          ThreadName(t).s, name, 4 * k);
            if ((b.flags & CHECK_RACE) && e.w_epoch == E && !ordered(e.w_tid, e.w_wep))
                violation("racecheck: %s reads `%s`[byte %zu] that %s wrote with no barrier between "
                          "(read-after-write race)",
                          ThreadName(t).s, name, 4 * k, ThreadName(e.w_tid).s);
            if (e.r_epoch != E) {
                e.r_epoch = E;
                e.r_tid = (uint16_t)t;
                e.r_warp = W;
                e.r_wep = we;
            } else {
                if (e.r_tid != t) e.r_tid = MANY;
                if (e.r_warp != W) e.r_warp = MANY;
                e.r_wep = std::max(e.r_wep, we);
            }
        }
    }
}

void global_access(const EmuAlloc& al, uintptr_t a, size_t n, bool write) {
    Block& b = tl;
    const unsigned long long off = a - al.base;
    if (b.flags & CHECK_MEM) {
        if (off + n > al.size)
            violation("memcheck: %s: %zu-byte %s at byte %llu of %s runs past its end (%llu bytes)",
                      ThreadName(b.current).s, n, kind(write), off, AllocName(al).s, al.size);
        if (misaligned(a, n))
            violation("memcheck: %s: misaligned %zu-byte %s at byte %llu of %s", ThreadName(b.current).s, n,
                      kind(write), off, AllocName(al).s);
    }
    if (!(b.flags & CHECK_INIT) || !al.init) return;
    const unsigned long long w0 = off / 4, w1 = std::min(off + n - 1, al.size - 1) / 4;
    for (unsigned long long k = w0; k <= w1; ++k) {
        if (write) {
            if (!__atomic_load_n(&al.init[k], __ATOMIC_RELAXED)) __atomic_store_n(&al.init[k], 1, __ATOMIC_RELAXED);
        } else if (!__atomic_load_n(&al.init[k], __ATOMIC_RELAXED)) {
            violation("initcheck: %s reads byte %llu of %s, which was allocated but never written",
                      ThreadName(b.current).s, 4 * k, AllocName(al).s);
        }
    }
}

// The last range of `v` (sorted by base) starting at or before `a`, or null.
const EmuAlloc* find(const EmuAlloc* v, unsigned long long n, uintptr_t a) {
    const EmuAlloc* it = std::upper_bound(v, v + n, (unsigned long long)a,
                                          [](unsigned long long x, const EmuAlloc& e) { return x < e.base; });
    return it == v ? nullptr : it - 1;
}

inline void access(uintptr_t a, size_t n, bool write) {
    Block& b = tl;
    if (!b.flags) return;
    if (a - b.stack_lo < kStackBytes) return;  // the thread's locals
    if (const EmuAlloc* l = b.last_alloc; l && a - l->base < l->size) return global_access(*l, a, n, write);
    for (const SharedRange& r : b.shared)
        if (a >= r.lo && a < r.hi) return shared_access(r, a, n, write);
    const EmuChecks& c = *b.chk;
    const EmuAlloc* al = find(c.allocs, c.nallocs, a);
    if (al && a < al->base + al->size) {
        b.last_alloc = al;
        return global_access(*al, a, n, write);
    }
    if ((a >= c.args[0] && a < c.args[1]) || (a >= c.argv[0] && a < c.argv[1])) return;  // the wrapper
    if (!(b.flags & CHECK_MEM)) return;
    if (const EmuAlloc* f = find(c.freed, c.nfreed, a); f && a < f->base + f->size)
        violation("memcheck: %s: %zu-byte %s at byte %llu of a freed allocation (use after free)",
                  ThreadName(b.current).s, n, kind(write), (unsigned long long)(a - f->base));
    if (al && a < al->base + al->size + c.redzone)
        violation("memcheck: %s: %zu-byte %s %llu bytes past the end of %s (%llu bytes)", ThreadName(b.current).s,
                  n, kind(write), (unsigned long long)(a - al->base - al->size), AllocName(*al).s, al->size);
    const EmuAlloc* next = al ? al + 1 : c.allocs;
    if (next < c.allocs + c.nallocs && a + 256 > next->base)
        violation("memcheck: %s: %zu-byte %s %llu bytes before the start of %s", ThreadName(b.current).s, n,
                  kind(write), (unsigned long long)(next->base - a), AllocName(*next).s);
    if (b.smem_bytes && a >= (uintptr_t)b.smem + b.smem_bytes && a < (uintptr_t)b.smem + b.smem_bytes + 256)
        violation("memcheck: %s: %zu-byte %s past the end of the dynamic shared memory (%u bytes)",
                  ThreadName(b.current).s, n, kind(write), b.smem_bytes);
    // Anything else (constant tables in the binary, ...) is not device memory the checks know about.
}

}  // namespace

// The instrumentation's callbacks (GCC -fsanitize=kernel-address with calls instead of inline shadow checks).
#define EMU_ASAN_SIZE(N)                                                                                        \
    extern "C" void __asan_load##N##_noabort(uintptr_t a) { access(a, N, false); }                            \
    extern "C" void __asan_store##N##_noabort(uintptr_t a) { access(a, N, true); }
EMU_ASAN_SIZE(1)
EMU_ASAN_SIZE(2)
EMU_ASAN_SIZE(4)
EMU_ASAN_SIZE(8)
EMU_ASAN_SIZE(16)
#undef EMU_ASAN_SIZE
extern "C" void __asan_loadN_noabort(uintptr_t a, size_t n) { access(a, n, false); }
extern "C" void __asan_storeN_noabort(uintptr_t a, size_t n) { access(a, n, true); }
extern "C" void __asan_handle_no_return(void) {}

// -fsanitize=alignment's report (the libubsan ABI): a pointer to a type (float4, ...) is dereferenced or bound at
// an address not aligned for it. The scalar accesses of a vector load may be split by the compiler, so this is
// where a misaligned vector access shows.
extern "C" void __ubsan_handle_type_mismatch_v1(void* data, void* ptr) {
    struct Loc {
        const char* file;
        unsigned line, col;
    };
    struct Type {
        unsigned short kind, info;
        char name[1];
    };
    struct Data {
        Loc loc;
        const Type* type;
        unsigned char log_align, check_kind;
    };
    Block& b = tl;
    if (!(b.flags & CHECK_MEM)) return;
    const Data* d = static_cast<const Data*>(data);
    const uintptr_t a = reinterpret_cast<uintptr_t>(ptr);
    char where[96] = "";
    const EmuChecks& c = *b.chk;
    if (const EmuAlloc* al = find(c.allocs, c.nallocs, a); al && a < al->base + al->size)
        snprintf(where, sizeof where, " at byte %llu of %s", (unsigned long long)(a - al->base), AllocName(*al).s);
    violation("memcheck: %s: misaligned access to %s%s (needs %u-byte alignment) at %s:%u", ThreadName(b.current).s,
              d->type->name, where, 1u << d->log_align, d->loc.file, d->loc.line);
}

// Runs blocks [first, last) (linear block ids, x fastest) of a launch on this OS thread under the checks and
// schedule of `chk`. Returns 0, or 1 with a message in `err`.
extern "C" int emu_run_blocks(EmuWrapper fn, void** args, const unsigned* grid, const unsigned* block,
                              unsigned smem_bytes, unsigned long long first, unsigned long long last,
                              const EmuChecks* chk, char* err, unsigned long errlen) {
    Block& b = tl;
    b.fn = fn;
    b.args = args;
    b.failed = false;
    b.error.clear();
    b.chk = chk;
    b.last_alloc = nullptr;
    b.schedule = chk->schedule;
    gridDim = dim3(grid[0], grid[1], grid[2]);
    blockDim = dim3(block[0], block[1], block[2]);
    b.n = (int)(block[0] * block[1] * block[2]);
    if (!ensure_fibers(b.n)) {
        snprintf(err, errlen, "out of memory for %d fiber stacks", b.n);
        return 1;
    }
    // 256 bytes past the end stay unused, so that memcheck can tell an overrun from a hit in other memory.
    const size_t cap = ((size_t)smem_bytes + 256 + 255) & ~(size_t)255;
    if (cap > b.smem_cap) {
        free(b.smem);
        b.smem = static_cast<unsigned char*>(aligned_alloc(256, cap));
        if (!b.smem) {
            b.smem_cap = 0;
            snprintf(err, errlen, "out of memory for %u bytes of dynamic shared memory", smem_bytes);
            return 1;
        }
        b.smem_cap = cap;
    }
    b.smem_bytes = smem_bytes;
    b.dyn_name = nullptr;
    for (unsigned long long id = first; id < last; ++id) {
        blockIdx.x = (unsigned)(id % grid[0]);
        blockIdx.y = (unsigned)((id / grid[0]) % grid[1]);
        blockIdx.z = (unsigned)(id / ((unsigned long long)grid[0] * grid[1]));
        b.rng = (chk->seed ^ (id + 1) * 0x9e3779b97f4a7c15ull) | 1;
        if (b.epoch > 0xfffffff0u) {  // epochs wrap: forget all shadow state
            b.shadow.assign(b.shadow.size(), Shadow());
            b.epoch = 0;
        }
        b.block_epoch = ++b.epoch;
        b.shared.clear();
        b.shadow_used = 0;
        // Shared memory starts as garbage on a GPU; NaN bytes make reads of unwritten floats show up.
        if (smem_bytes) emu_register_shared(b.smem, smem_bytes, nullptr);
        b.flags = chk->flags;  // only while the block's fibers run: the callbacks do nothing outside kernels
        run_block();
        b.flags = 0;
        if (b.failed) {
            snprintf(err, errlen, "block (%u,%u,%u): %s", blockIdx.x, blockIdx.y, blockIdx.z, b.error.c_str());
            return 1;
        }
    }
    return 0;
}
