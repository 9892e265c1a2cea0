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

#include <stdarg.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

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

namespace {

enum State { READY, AT_BARRIER, AT_WARP, DONE };

const size_t kStackBytes = 256 * 1024;

struct Fiber {
    char* stack = nullptr;  // mapping base; the lowest page is a guard page
    State state = READY;
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

thread_local Block tl;

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

void fiber_main() {
    tl.fn(tl.args);
    // The thread has exited: it can no longer arrive at a barrier its peers may be waiting at.
    Block& b = tl;
    b.fibers[b.current].state = DONE;
    b.done++;
    Warp& w = b.warps[b.current / 32];
    w.done++;
    if (b.bar_arrived > 0 && b.bar_arrived == b.n - b.done)
        fail("__syncthreads: %d thread(s) exited while %d wait at the barrier (a barrier inside divergent code)",
             b.done, b.bar_arrived);
    if (w.arrived > 0 && w.arrived == w.lanes - w.done)
        fail("warp collective: lane %d of warp %d exited while %d lane(s) wait in a shuffle/ballot/syncwarp",
             b.current % 32, b.current / 32, w.arrived);
    yield();  // never resumed
    abort();
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
#ifdef EMU_ASM_SWITCH
    gan_emu_ctx_switch(&tl.sched_sp, tl.fibers[i].sp);
#else
    swapcontext(&tl.sched_ctx, &tl.fibers[i].ctx);
#endif
}

void run_block() {
    Block& b = tl;
    b.done = 0;
    b.bar_arrived = 0;
    for (int i = 0; i < b.n; ++i) {
        b.fibers[i].state = READY;
        prepare(b.fibers[i]);
    }
    int nwarps = (b.n + 31) / 32;
    b.warps.assign(nwarps, Warp());
    for (int w = 0; w < nwarps; ++w) b.warps[w].lanes = std::min(32, b.n - 32 * w);

    while (b.done < b.n && !b.failed) {
        bool ran = false;
        for (int i = 0; i < b.n && !b.failed; ++i) {
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

extern "C" void emu_syncthreads(void) {
    Block& b = tl;
    b.bar_arrived++;
    if (b.bar_arrived == b.n - b.done) {
        if (b.done > 0) {
            fail("__syncthreads: %d thread(s) exited while %d wait at the barrier (a barrier inside divergent code)",
                 b.done, b.bar_arrived);
            yield();
            abort();
        }
        for (int i = 0; i < b.n; ++i)
            if (b.fibers[i].state == AT_BARRIER) b.fibers[i].state = READY;
        b.bar_arrived = 0;
        return;
    }
    b.fibers[b.current].state = AT_BARRIER;
    yield();
}

extern "C" unsigned long long emu_warp_exchange(unsigned long long value, int src_lane, int op) {
    Block& b = tl;
    int lane = b.current % 32;
    Warp& w = b.warps[b.current / 32];
    if (w.arrived == 0) {
        w.op = op;
    } else if (w.op != op) {
        fail("warp %d: lanes are in different warp collectives (shuffle vs ballot/syncwarp)", b.current / 32);
        yield();
        abort();
    }
    w.vals[lane] = value;
    w.src[lane] = src_lane;
    w.arrived++;
    if (w.arrived == w.lanes - w.done) {
        if (w.done > 0) {
            fail("warp collective: %d lane(s) of warp %d exited while the others wait in a shuffle/ballot/syncwarp",
                 w.done, b.current / 32);
            yield();
            abort();
        }
        if (op == 1) {
            unsigned long long mask = 0;
            for (int l = 0; l < w.lanes; ++l)
                if (w.vals[l]) mask |= 1ull << l;
            for (int l = 0; l < w.lanes; ++l) w.res[l] = mask;
        } else {
            for (int l = 0; l < w.lanes; ++l) {
                int s = w.src[l];
                w.res[l] = (s >= 0 && s < w.lanes) ? w.vals[s] : w.vals[l];
            }
        }
        int base = (b.current / 32) * 32;
        for (int l = 0; l < w.lanes; ++l)
            if (b.fibers[base + l].state == AT_WARP) b.fibers[base + l].state = READY;
        w.arrived = 0;
        return w.res[lane];
    }
    b.fibers[b.current].state = AT_WARP;
    yield();
    return w.res[lane];
}

extern "C" void* emu_dynamic_smem(void) { return tl.smem; }

// Runs blocks [first, last) (linear block ids, x fastest) of a launch on this OS thread. Returns 0, or 1 with a
// message in `err`.
extern "C" int emu_run_blocks(EmuWrapper fn, void** args, const unsigned* grid, const unsigned* block,
                              unsigned smem_bytes, unsigned long long first, unsigned long long last, char* err,
                              unsigned long errlen) {
    Block& b = tl;
    b.fn = fn;
    b.args = args;
    b.failed = false;
    b.error.clear();
    gridDim = dim3(grid[0], grid[1], grid[2]);
    blockDim = dim3(block[0], block[1], block[2]);
    b.n = (int)(block[0] * block[1] * block[2]);
    if (!ensure_fibers(b.n)) {
        snprintf(err, errlen, "out of memory for %d fiber stacks", b.n);
        return 1;
    }
    if (smem_bytes > b.smem_cap) {
        free(b.smem);
        b.smem = static_cast<unsigned char*>(aligned_alloc(256, (smem_bytes + 255) & ~255u));
        if (!b.smem) {
            b.smem_cap = 0;
            snprintf(err, errlen, "out of memory for %u bytes of dynamic shared memory", smem_bytes);
            return 1;
        }
        b.smem_cap = smem_bytes;
    }
    for (unsigned long long id = first; id < last; ++id) {
        blockIdx.x = (unsigned)(id % grid[0]);
        blockIdx.y = (unsigned)((id / grid[0]) % grid[1]);
        blockIdx.z = (unsigned)(id / ((unsigned long long)grid[0] * grid[1]));
        // Shared memory starts as garbage on a GPU; NaN bytes make reads of unwritten floats show up.
        if (smem_bytes) memset(b.smem, 0xff, smem_bytes);
        run_block();
        if (b.failed) {
            snprintf(err, errlen, "block (%u,%u,%u): %s", blockIdx.x, blockIdx.y, blockIdx.z, b.error.c_str());
            return 1;
        }
    }
    return 0;
}
