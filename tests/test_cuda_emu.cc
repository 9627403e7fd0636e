// test_cuda_emu.cc: the SIMT emulator of tests/cuda_emu.h itself, which test_backend_ops_emu
// runs the whole CUDA backend on: __syncthreads orders shared memory and waits only for threads
// that have not returned, shuffles read the partner lane (floats and doubles, per warp),
// atomicAdd accumulates, static __shared__ variables are one per block, every block and thread
// index runs exactly once, and a divergent barrier is reported instead of hanging.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/cuda_emu.h"  // (C++ headers before cmocka.h, whose fail() macro breaks them)

extern "C" {
#include <cmocka.h>
}

namespace {

void test_shuffle_and_barrier(void **state) {
    (void)state;
    std::vector<float> out(2 * 64);
    std::vector<double> outd(2 * 64);
    emu_launch(dim3(2), 64, sizeof(float) * 64, [&] {
        SBMT_DYN_SMEM(float, sh);
        const int t = (int)threadIdx.x;
        sh[t] = (float)(t + 100 * blockIdx.x);
        __syncthreads();
        float v = sh[63 - t] + __shfl_xor_sync(0xffffffffu, (float)t, 5);
        double d = __shfl_xor_sync(0xffffffffu, 0.5 + t, 17);
        out[blockIdx.x * 64 + t] = v;
        outd[blockIdx.x * 64 + t] = d;
    });
    for (int b = 0; b < 2; b++)
        for (int t = 0; t < 64; t++) {
            // Lane masks stay inside the warp: lane ^ 5 and lane ^ 17 of the same 32.
            assert_true(out[b * 64 + t] == (float)(63 - t + 100 * b) + (float)(t ^ 5));
            assert_true(outd[b * 64 + t] == 0.5 + (t ^ 17));
        }
}

void test_exited_threads_and_atomics(void **state) {
    (void)state;
    double total = 0.0;
    std::vector<int> seen(3 * 2 * 96, 0);
    emu_launch(dim3(3, 2), 96, 0, [&] {
        __shared__ int count;  // one per block: blocks never overlap
        const unsigned t = threadIdx.x;
        seen[(blockIdx.y * gridDim.x + blockIdx.x) * blockDim.x + t]++;
        if (t == 0) count = 0;
        __syncthreads();
        if (t >= 40) return;  // exited threads no longer hold up __syncthreads
        atomicAdd(&count, 1);
        __syncthreads();
        if (t == 0) atomicAdd(&total, (double)count);
    });
    for (int v : seen) assert_int_equal(v, 1);
    assert_true(total == 6 * 40.0);
}

void test_divergent_barrier_reported(void **state) {
    (void)state;
    fflush(stdout);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        freopen("/dev/null", "w", stderr);
        emu_launch(dim3(1), 32, 0, [&] {
            if (threadIdx.x < 16) __syncthreads();         // half the block at a barrier,
            else (void)__shfl_xor_sync(0xffffffffu, 1.0f, 1);  // half at a shuffle: never met
        });
        _exit(0);
    }
    int st;
    waitpid(pid, &st, 0);
    assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT);
}

}  // namespace

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shuffle_and_barrier),
        cmocka_unit_test(test_exited_threads_and_atomics),
        cmocka_unit_test(test_divergent_barrier_reported),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
