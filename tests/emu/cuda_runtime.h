// cuda_runtime.h (emulated, C++): the CUDA runtime for building kernels/cuda/ as the "cuda"
// backend of test_backend_ops_emu (see tests/emu/translate.py). The C calls, streams and memory
// rules are those of cuda_runtime_api.h (read it: streams do not run in host order); this adds
// what C++ code needs: typed overloads, cudaFuncSetAttribute, kernel launches queued on their
// stream, and the queue itself.
#ifndef SBMT_EMU_CUDA_RUNTIME_H
#define SBMT_EMU_CUDA_RUNTIME_H

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <tuple>
#include <type_traits>

#include "tests/cuda_emu.h"
#include "tests/emu/cuda_runtime_api.h"

typedef enum { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 } cudaFuncAttribute;

// An H100/H200's opt-in shared memory per block: a kernel asking for more fails as it would.
#define EMU_MAX_SMEM_OPTIN (227 * 1024)
// What a kernel may ask for without cudaFuncSetAttribute.
#define EMU_SMEM_DEFAULT (48 * 1024)

// Queues op on stream s (NULL: the legacy default stream); it runs when something waits for it
// (cuda_runtime_api.h). cuBLAS, CUB and kernel launches go through it.
void emu_stream_enqueue(cudaStream_t s, std::function<void()> op);

template <class T> inline cudaError_t cudaMalloc(T **p, size_t bytes) {
    return cudaMalloc((void **)p, bytes);
}
template <class T> inline cudaError_t cudaMallocHost(T **p, size_t bytes) {
    return cudaMallocHost((void **)p, bytes);
}

// Each kernel's dynamic shared memory limit, as cudaFuncSetAttribute raised it.
inline std::map<const void *, int> &emu_smem_optin() {
    static std::map<const void *, int> m;
    return m;
}

template <class F>
inline cudaError_t cudaFuncSetAttribute(F *kernel, cudaFuncAttribute a, int value) {
    if (a != cudaFuncAttributeMaxDynamicSharedMemorySize) return cudaErrorInvalidValue;
    if (value < 0 || value > EMU_MAX_SMEM_OPTIN) return cudaErrorInvalidValue;
    emu_smem_optin()[(const void *)kernel] = value;
    return cudaSuccess;
}

// A kernel's arguments as a launch takes them: emu_args_of(kernel)(args...) converts each to
// its parameter's type at the call (NULL, 0 and narrower types as in a call) and keeps copies.
template <class... P> struct emu_binder {
    using args_t = std::tuple<std::decay_t<P>...>;
    std::shared_ptr<args_t> operator()(P... a) const { return std::make_shared<args_t>(a...); }
};
template <class... P> inline emu_binder<P...> emu_args_of(void (*)(P...)) { return {}; }

// A launch `kernel<<<grid, block, smem, stream>>>(args...)` (tests/emu/translate.py writes
// these). Refused as a GPU refuses it (the error left for cudaGetLastError, the kernel not run,
// a line naming it on stderr) when its dynamic shared memory exceeds the kernel's limit or the
// grid a GPU's dimensions. Otherwise the kernel runs on the arguments taken at the launch when
// its stream gets there.
template <class... P>
inline void emu_launch_kernel(const char *name, dim3 grid, dim3 block, size_t smem,
                              cudaStream_t stream, void (*kernel)(P...),
                              std::shared_ptr<typename emu_binder<P...>::args_t> taken) {
    auto it = emu_smem_optin().find((const void *)kernel);
    const size_t limit = it == emu_smem_optin().end() ? EMU_SMEM_DEFAULT : (size_t)it->second;
    const char *why = nullptr;
    if (smem > limit)
        why = it == emu_smem_optin().end()
                  ? "more dynamic shared memory than 48 KB without cudaFuncSetAttribute"
                  : "more dynamic shared memory than cudaFuncSetAttribute allowed";
    else if (grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.x > 0x7FFFFFFFu ||
             grid.y > 65535 || grid.z > 65535)
        why = "a grid outside 1..2^31-1 x 1..65535 x 1..65535";
    if (why) {
        std::fprintf(stderr, "cuda_emu: launch of %s, grid (%u,%u,%u), %zu bytes of dynamic "
                     "shared memory (limit %zu): %s\n", name, grid.x, grid.y, grid.z, smem, limit,
                     why);
        emu_set_last_error(cudaErrorInvalidValue);
        return;
    }
    emu_stream_enqueue(stream, [=] {
        emu_launch(grid, block, smem, [&] { std::apply(kernel, *taken); });
    });
}

#endif
