// cuda_runtime_api.cc: the emulated CUDA runtime of cuda_runtime_api.h (see there): devices,
// memory with a registry of what is device and what pinned, and streams that queue their work
// until something waits for it. Test code, single-threaded.
#include "tests/emu/cuda_runtime.h"

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <set>
#include <vector>

namespace {

struct stream_impl {
    std::deque<std::function<void()>> q;
    uint64_t enq = 0, done = 0;  // ops queued and ops run so far
    bool running = false;
};

enum mem_kind { MEM_PAGEABLE, MEM_DEVICE, MEM_PINNED };

struct runtime {
    std::shared_ptr<stream_impl> null_stream = std::make_shared<stream_impl>();
    std::set<std::shared_ptr<stream_impl>> streams;  // the created ones still alive
    std::map<uintptr_t, std::pair<size_t, mem_kind>> mem;  // base -> (bytes, kind)
    cudaError_t last = cudaSuccess;
    int eager = -1;  // SBMT_EMU_STREAMS, read at first use
};

runtime &rt() {
    static runtime r;
    return r;
}

bool eager() {
    runtime &r = rt();
    if (r.eager < 0) {
        const char *v = std::getenv("SBMT_EMU_STREAMS");
        if (!v || !*v || !std::strcmp(v, "lazy")) r.eager = 0;
        else if (!std::strcmp(v, "eager")) r.eager = 1;
        else {
            std::fprintf(stderr, "cuda_emu: SBMT_EMU_STREAMS = '%s': not one of lazy, eager\n", v);
            std::exit(2);
        }
    }
    return r.eager == 1;
}

}  // namespace

// What a cudaStream_t points to (the legacy default stream, NULL, has none).
struct emu_stream {
    std::shared_ptr<stream_impl> impl;
};
// An event is the point it was last recorded at: op `seq` of a stream.
struct emu_event {
    std::shared_ptr<stream_impl> s;
    uint64_t seq = 0;
};

namespace {

stream_impl &impl_of(cudaStream_t s) { return s ? *s->impl : *rt().null_stream; }
std::shared_ptr<stream_impl> shared_of(cudaStream_t s) {
    return s ? s->impl : rt().null_stream;
}

// Runs a stream's ops until `until` of them have run.
void flush(stream_impl &s, uint64_t until) {
    if (s.done >= until) return;
    if (s.running) {
        std::fprintf(stderr, "cuda_emu: a stream waits for itself through events (a cycle)\n");
        std::abort();
    }
    s.running = true;
    while (s.done < until) {
        std::function<void()> op = std::move(s.q.front());
        s.q.pop_front();
        op();
        s.done++;
    }
    s.running = false;
}

void flush_all() {
    runtime &r = rt();
    flush(*r.null_stream, r.null_stream->enq);
    for (const auto &s : r.streams) flush(*s, s->enq);
}

mem_kind kind_of(const void *p) {
    const auto &m = rt().mem;
    auto it = m.upper_bound((uintptr_t)p);
    if (it == m.begin()) return MEM_PAGEABLE;
    --it;
    return (uintptr_t)p < it->first + it->second.first ? it->second.second : MEM_PAGEABLE;
}

const char *kind_name(mem_kind k) {
    return k == MEM_DEVICE ? "device" : k == MEM_PINNED ? "pinned host" : "pageable host";
}

cudaError_t alloc(void **p, size_t bytes, mem_kind k) {
    *p = std::malloc(bytes ? bytes : 1);
    if (!*p) return cudaErrorMemoryAllocation;
    std::memset(*p, 0xFF, bytes ? bytes : 1);
    rt().mem[(uintptr_t)*p] = {bytes ? bytes : 1, k};
    return cudaSuccess;
}

cudaError_t release(void *p, mem_kind k) {
    if (!p) return cudaSuccess;
    auto it = rt().mem.find((uintptr_t)p);
    if (it == rt().mem.end() || it->second.second != k) {
        std::fprintf(stderr, "cuda_emu: %s(%p): not a %s allocation\n",
                     k == MEM_DEVICE ? "cudaFree" : "cudaFreeHost", p, kind_name(k));
        return cudaErrorInvalidValue;
    }
    flush_all();  // as cudaFree does: the memory may still be in use by queued work
    rt().mem.erase(it);
    std::free(p);
    return cudaSuccess;
}

// A copy's kind against where its pointers are (UVA): a wrong kind is refused, as CUDA does.
bool kind_ok(cudaMemcpyKind kind, mem_kind dk, mem_kind sk) {
    const bool dd = dk == MEM_DEVICE, sd = sk == MEM_DEVICE;
    switch (kind) {
    case cudaMemcpyHostToHost: return !dd && !sd;
    case cudaMemcpyHostToDevice: return dd && !sd;
    case cudaMemcpyDeviceToHost: return !dd && sd;
    case cudaMemcpyDeviceToDevice: return dd && sd;
    case cudaMemcpyDefault: return true;
    }
    return false;
}

// A 2-D copy (a plain one is one row), queued on s with CUDA's pageable/pinned rules.
cudaError_t copy2d(void *dst, size_t dpitch, const void *src, size_t spitch, size_t width,
                   size_t height, cudaMemcpyKind kind, cudaStream_t s, bool sync) {
    if (width > dpitch || width > spitch) return cudaErrorInvalidValue;
    if (!width || !height) return cudaSuccess;
    const mem_kind dk = kind_of(dst), sk = kind_of(src);
    if (!kind_ok(kind, dk, sk)) {
        std::fprintf(stderr, "cuda_emu: copy of kind %d from %s memory to %s memory\n", (int)kind,
                     kind_name(sk), kind_name(dk));
        return cudaErrorInvalidValue;
    }
    std::function<void()> op;
    if (sk == MEM_PAGEABLE) {  // staged at the call
        std::vector<char> staged(width * height);
        for (size_t r = 0; r < height; r++)
            std::memcpy(staged.data() + r * width, (const char *)src + r * spitch, width);
        op = [dst, dpitch, width, height, staged = std::move(staged)] {
            for (size_t r = 0; r < height; r++)
                std::memmove((char *)dst + r * dpitch, staged.data() + r * width, width);
        };
    } else {
        op = [dst, dpitch, src, spitch, width, height] {
            for (size_t r = 0; r < height; r++)
                std::memmove((char *)dst + r * dpitch, (const char *)src + r * spitch, width);
        };
    }
    emu_stream_enqueue(s, std::move(op));
    if (sync || dk == MEM_PAGEABLE) cudaStreamSynchronize(s);  // returns once copied
    return cudaSuccess;
}

}  // namespace

void emu_stream_enqueue(cudaStream_t s, std::function<void()> op) {
    stream_impl &st = impl_of(s);
    st.q.push_back(std::move(op));
    st.enq++;
    if (eager()) flush(st, st.enq);
}

extern "C" {

const char *cudaGetErrorString(cudaError_t e) {
    switch (e) {
    case cudaSuccess: return "no error (emulated)";
    case cudaErrorInvalidValue: return "invalid argument (emulated)";
    case cudaErrorMemoryAllocation: return "out of memory (emulated)";
    case cudaErrorNotReady: return "device not ready (emulated)";
    }
    return "error (emulated)";
}

cudaError_t cudaGetLastError(void) {
    cudaError_t e = rt().last;
    rt().last = cudaSuccess;
    return e;
}
void emu_set_last_error(cudaError_t e) { rt().last = e; }

cudaError_t cudaGetDeviceCount(int *n) {
    *n = 1;
    return cudaSuccess;
}
cudaError_t cudaGetDevice(int *d) {
    *d = 0;
    return cudaSuccess;
}
cudaError_t cudaSetDevice(int d) { return d == 0 ? cudaSuccess : cudaErrorInvalidValue; }
cudaError_t cudaGetDeviceProperties(struct cudaDeviceProp *p, int device) {
    std::memset(p, 0, sizeof(*p));
    std::snprintf(p->name, sizeof(p->name), "emulated GPU %d", device);
    const char *shared = std::getenv("SBMT_EMU_SHARED_GPU");
    long id = shared && !std::strcmp(shared, "1") ? 1 : (long)getpid();
    std::memcpy(p->uuid.bytes, &id, sizeof(id));
    return cudaSuccess;
}
cudaError_t cudaDeviceGetPCIBusId(char *bus, int len, int device) {
    std::snprintf(bus, (size_t)len, "emu:%d", device);
    return cudaSuccess;
}
cudaError_t cudaDeviceSynchronize(void) {
    flush_all();
    return cudaSuccess;
}

cudaError_t cudaMalloc(void **p, size_t bytes) { return alloc(p, bytes, MEM_DEVICE); }
cudaError_t cudaFree(void *p) { return release(p, MEM_DEVICE); }
cudaError_t cudaMallocHost(void **p, size_t bytes) { return alloc(p, bytes, MEM_PINNED); }
cudaError_t cudaFreeHost(void *p) { return release(p, MEM_PINNED); }

cudaError_t cudaMemcpy(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind) {
    return copy2d(dst, bytes, src, bytes, bytes, 1, kind, NULL, true);
}
cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind,
                            cudaStream_t s) {
    return copy2d(dst, bytes, src, bytes, bytes, 1, kind, s, false);
}
cudaError_t cudaMemcpy2DAsync(void *dst, size_t dpitch, const void *src, size_t spitch,
                              size_t width, size_t height, cudaMemcpyKind kind, cudaStream_t s) {
    return copy2d(dst, dpitch, src, spitch, width, height, kind, s, false);
}
cudaError_t cudaMemsetAsync(void *p, int v, size_t bytes, cudaStream_t s) {
    if (!bytes) return cudaSuccess;
    if (kind_of(p) != MEM_DEVICE) {
        std::fprintf(stderr, "cuda_emu: cudaMemset of %s memory\n", kind_name(kind_of(p)));
        return cudaErrorInvalidValue;
    }
    emu_stream_enqueue(s, [p, v, bytes] { std::memset(p, v, bytes); });
    return cudaSuccess;
}
cudaError_t cudaMemset(void *p, int v, size_t bytes) { return cudaMemsetAsync(p, v, bytes, NULL); }

cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned flags) {
    if (!(flags & cudaStreamNonBlocking)) {
        std::fprintf(stderr, "cuda_emu: a blocking stream (flags %u): its implicit "
                     "synchronisation with the legacy default stream is not emulated\n", flags);
        return cudaErrorInvalidValue;
    }
    *s = new emu_stream{std::make_shared<stream_impl>()};
    rt().streams.insert((*s)->impl);
    return cudaSuccess;
}
cudaError_t cudaStreamDestroy(cudaStream_t s) {
    if (!s) return cudaErrorInvalidValue;
    flush(*s->impl, s->impl->enq);  // (CUDA finishes a destroyed stream's work)
    rt().streams.erase(s->impl);
    delete s;
    return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t s) {
    stream_impl &st = impl_of(s);
    flush(st, st.enq);
    return cudaSuccess;
}
void emu_stream_watch(cudaStream_t s, const void *p, size_t bytes, const char *what) {
    if (!bytes) return;
    std::vector<char> was((const char *)p, (const char *)p + bytes);
    emu_stream_enqueue(s, [p, what, was = std::move(was)] {
        if (std::memcmp(p, was.data(), was.size())) {
            std::fprintf(stderr, "cuda_emu: %s (%p, %zu bytes) changed between the call and its "
                         "completion: other work touched it while the collective ran (a race "
                         "on a GPU)\n", what, p, was.size());
            std::abort();
        }
    });
}
void emu_stream_land(cudaStream_t s, void *dst, void *staged, size_t bytes) {
    emu_stream_enqueue(s, [dst, staged, bytes] {
        if (bytes) std::memmove(dst, staged, bytes);
        std::free(staged);
    });
}

cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned flags) {
    (void)flags;
    *e = new emu_event;
    return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s) {
    if (!e) return cudaErrorInvalidValue;
    e->s = shared_of(s);
    e->seq = e->s->enq;
    return cudaSuccess;
}
// The wait takes the event as last recorded now, as CUDA's does.
cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned flags) {
    (void)flags;
    if (!e) return cudaErrorInvalidValue;
    if (!e->s) return cudaSuccess;  // never recorded: nothing to wait for
    std::shared_ptr<stream_impl> on = e->s;
    const uint64_t seq = e->seq;
    emu_stream_enqueue(s, [on, seq] { flush(*on, seq); });
    return cudaSuccess;
}
// Not ready until the stream got there; each query that finds it pending runs one more op of
// that stream, so a polling loop ends as it would on a GPU.
cudaError_t cudaEventQuery(cudaEvent_t e) {
    if (!e) return cudaErrorInvalidValue;
    if (!e->s || e->s->done >= e->seq) return cudaSuccess;
    flush(*e->s, e->s->done + 1);
    return cudaErrorNotReady;
}
cudaError_t cudaEventSynchronize(cudaEvent_t e) {
    if (!e) return cudaErrorInvalidValue;
    if (e->s) flush(*e->s, e->seq);
    return cudaSuccess;
}
cudaError_t cudaEventDestroy(cudaEvent_t e) {
    delete e;
    return cudaSuccess;
}

}  // extern "C"
