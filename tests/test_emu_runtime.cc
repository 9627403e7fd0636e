// test_emu_runtime.cc: the emulated CUDA runtime of tests/emu/ itself, which
// test_backend_ops_emu, test_cuda_emu_train and test_dist_nccl_emu run the CUDA backend and
// dist/dist_nccl.c on. Its streams must not run in host order, or the tests on it could not see
// a missing synchronisation: queued work waits until something waits for it; pageable copies are
// staged at the call and pinned ones read when they run; a stream that waits for another's event
// gets that stream's work first, and one that does not wait does not; refused launches (too
// much shared memory for the kernel's limit, a grid too large) leave the error for
// cudaGetLastError and do not run; a copy of the wrong kind is refused; a collective's buffer
// written before the collective completed is reported.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <vector>

#include "tests/emu/cublas_v2.h"
#include "tests/emu/cuda_runtime.h"

extern "C" {
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>
}

namespace {

const uint32_t POISON = 0xFFFFFFFFu;  // what fresh device and pinned memory hold

__global__ void fill_kernel(uint32_t *p, uint32_t v, int n) {
    for (int i = (int)threadIdx.x; i < n; i += (int)blockDim.x) p[i] = v;
}

__global__ void smem_kernel(uint32_t *p) {
    SBMT_DYN_SMEM(uint32_t, s);
    s[threadIdx.x] = threadIdx.x;
    __syncthreads();
    p[threadIdx.x] = s[(threadIdx.x + 1) % blockDim.x];
}

void fill(cudaStream_t st, uint32_t *d, uint32_t v, int n) {
    emu_launch_kernel("fill_kernel", dim3(1), dim3(32), 0, st, fill_kernel,
                      emu_args_of(fill_kernel)(d, v, n));
    assert_int_equal(cudaGetLastError(), cudaSuccess);
}

cudaStream_t new_stream() {
    cudaStream_t s = nullptr;
    assert_int_equal(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), cudaSuccess);
    return s;
}

// A device word read back with a copy into pageable memory (which returns once copied).
uint32_t word(cudaStream_t st, const uint32_t *d) {
    uint32_t v = 0;
    assert_int_equal(cudaMemcpyAsync(&v, d, 4, cudaMemcpyDeviceToHost, st), cudaSuccess);
    return v;
}

void test_queued_until_waited_for(void **state) {
    (void)state;
    cudaStream_t st = new_stream();
    uint32_t *d = nullptr, *h = nullptr;
    assert_int_equal(cudaMalloc(&d, 64 * 4), cudaSuccess);
    assert_int_equal(cudaMallocHost(&h, 64 * 4), cudaSuccess);
    fill(st, d, 7, 64);
    assert_int_equal(cudaMemcpyAsync(h, d, 64 * 4, cudaMemcpyDeviceToHost, st), cudaSuccess);
    assert_int_equal(h[0], POISON);  // neither the kernel nor the copy has run
    assert_int_equal(cudaStreamSynchronize(st), cudaSuccess);
    assert_int_equal(h[0], 7);
    assert_int_equal(h[63], 7);
    // A copy into pageable memory returns with the stream's earlier work done.
    fill(st, d, 9, 64);
    assert_int_equal(word(st, d + 5), 9);
    assert_int_equal(cudaFreeHost(h), cudaSuccess);
    assert_int_equal(cudaFree(d), cudaSuccess);
    assert_int_equal(cudaStreamDestroy(st), cudaSuccess);
}

void test_pageable_staged_pinned_read_late(void **state) {
    (void)state;
    cudaStream_t st = new_stream();
    uint32_t *d = nullptr, *h = nullptr;
    assert_int_equal(cudaMalloc(&d, 8), cudaSuccess);
    assert_int_equal(cudaMallocHost(&h, 8), cudaSuccess);
    uint32_t pageable[2] = {1, 2};
    assert_int_equal(cudaMemcpyAsync(d, pageable, 8, cudaMemcpyHostToDevice, st), cudaSuccess);
    pageable[0] = 99;  // after the call: the copy took the old bytes
    assert_int_equal(word(st, d), 1);
    h[0] = 5;
    assert_int_equal(cudaMemcpyAsync(d, h, 8, cudaMemcpyHostToDevice, st), cudaSuccess);
    h[0] = 6;  // before the stream ran: the copy reads the new bytes, as DMA from pinned memory
    assert_int_equal(word(st, d), 6);
    assert_int_equal(cudaFreeHost(h), cudaSuccess);
    assert_int_equal(cudaFree(d), cudaSuccess);
    assert_int_equal(cudaStreamDestroy(st), cudaSuccess);
}

void test_events_order_streams(void **state) {
    (void)state;
    cudaStream_t a = new_stream(), b = new_stream();
    cudaEvent_t e;
    assert_int_equal(cudaEventCreateWithFlags(&e, cudaEventDisableTiming), cudaSuccess);
    uint32_t *src = nullptr, *dst = nullptr;
    assert_int_equal(cudaMalloc(&src, 4), cudaSuccess);
    assert_int_equal(cudaMalloc(&dst, 8), cudaSuccess);
    fill(a, src, 3, 1);
    assert_int_equal(cudaStreamSynchronize(a), cudaSuccess);
    // b waits for a's event: a's later kernel runs first.
    fill(a, src, 4, 1);
    assert_int_equal(cudaEventRecord(e, a), cudaSuccess);
    fill(a, src, 5, 1);  // after the record: not waited for
    assert_int_equal(cudaStreamWaitEvent(b, e, 0), cudaSuccess);
    assert_int_equal(cudaMemcpyAsync(dst, src, 4, cudaMemcpyDeviceToDevice, b), cudaSuccess);
    assert_int_equal(cudaStreamSynchronize(b), cudaSuccess);
    assert_int_equal(word(b, dst), 4);
    assert_int_equal(cudaEventQuery(e), cudaSuccess);
    assert_int_equal(cudaStreamSynchronize(a), cudaSuccess);
    assert_int_equal(word(a, src), 5);
    // Without the wait, b's copy runs before a's queued kernel.
    fill(a, src, 8, 1);
    assert_int_equal(cudaMemcpyAsync(dst + 1, src, 4, cudaMemcpyDeviceToDevice, b), cudaSuccess);
    assert_int_equal(cudaStreamSynchronize(b), cudaSuccess);
    assert_int_equal(word(b, dst + 1), 5);
    // A pending event is not ready; polling it ends.
    fill(a, src, 10, 1);
    assert_int_equal(cudaEventRecord(e, a), cudaSuccess);
    int polls = 0;
    while (cudaEventQuery(e) == cudaErrorNotReady) polls++;
    assert_true(polls >= 1 && polls <= 2);
    assert_int_equal(word(b, src), 10);
    assert_int_equal(cudaEventDestroy(e), cudaSuccess);
    assert_int_equal(cudaFree(src), cudaSuccess);
    assert_int_equal(cudaFree(dst), cudaSuccess);
    assert_int_equal(cudaStreamDestroy(a), cudaSuccess);
    assert_int_equal(cudaStreamDestroy(b), cudaSuccess);
}

void test_refused_launches(void **state) {
    (void)state;
    cudaStream_t st = new_stream();
    uint32_t *d = nullptr;
    const unsigned n = 256;
    const size_t big = 64 * 1024;  // above 48 KB: needs cudaFuncSetAttribute
    assert_int_equal(cudaMalloc(&d, n * 4), cudaSuccess);
    fill(st, d, 1, (int)n);
    emu_launch_kernel("smem_kernel", dim3(1), dim3(n), big, st, smem_kernel,
                      emu_args_of(smem_kernel)(d));
    assert_int_equal(cudaGetLastError(), cudaErrorInvalidValue);
    assert_int_equal(cudaGetLastError(), cudaSuccess);  // read once, as CUDA's
    assert_int_equal(word(st, d + 3), 1);               // it did not run
    assert_int_equal(cudaFuncSetAttribute(smem_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                          (int)big),
                     cudaSuccess);
    emu_launch_kernel("smem_kernel", dim3(1), dim3(n), big, st, smem_kernel,
                      emu_args_of(smem_kernel)(d));
    assert_int_equal(cudaGetLastError(), cudaSuccess);
    assert_int_equal(word(st, d + 3), 4);
    emu_launch_kernel("smem_kernel", dim3(1), dim3(n), big + 4, st, smem_kernel,
                      emu_args_of(smem_kernel)(d));
    assert_int_equal(cudaGetLastError(), cudaErrorInvalidValue);  // beyond the raised limit
    assert_int_equal(cudaFuncSetAttribute(smem_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                          228 * 1024),
                     cudaErrorInvalidValue);  // beyond an H100/H200's 227 KB
    emu_launch_kernel("fill_kernel", dim3(1, 70000), dim3(32), 0, st, fill_kernel,
                      emu_args_of(fill_kernel)(d, 2u, 1));
    assert_int_equal(cudaGetLastError(), cudaErrorInvalidValue);  // grid.y above 65535
    // A copy whose kind contradicts its pointers, and a memset of host memory.
    uint32_t host[4];
    assert_int_equal(cudaMemcpyAsync(host, d, 4, cudaMemcpyHostToDevice, st),
                     cudaErrorInvalidValue);
    assert_int_equal(cudaMemsetAsync(host, 0, 4, st), cudaErrorInvalidValue);
    assert_int_equal(cudaFree(host), cudaErrorInvalidValue);
    assert_int_equal(cudaFree(d), cudaSuccess);
    assert_int_equal(cudaStreamDestroy(st), cudaSuccess);
}

// cuBLAS runs on its handle's stream, with alpha and beta taken at the call.
void test_cublas_on_its_stream(void **state) {
    (void)state;
    cudaStream_t st = new_stream();
    cublasHandle_t h;
    assert_int_equal(cublasCreate(&h), CUBLAS_STATUS_SUCCESS);
    assert_int_equal(cublasSetStream(h, st), CUBLAS_STATUS_SUCCESS);
    float *A = nullptr, *C = nullptr;
    const float a[4] = {1, 2, 3, 4}, zero4[4] = {0, 0, 0, 0};
    assert_int_equal(cudaMalloc(&A, 16), cudaSuccess);
    assert_int_equal(cudaMalloc(&C, 16), cudaSuccess);
    assert_int_equal(cudaMemcpyAsync(A, a, 16, cudaMemcpyHostToDevice, st), cudaSuccess);
    assert_int_equal(cudaMemcpyAsync(C, zero4, 16, cudaMemcpyHostToDevice, st), cudaSuccess);
    float alpha = 2.0f, beta = 0.0f;
    assert_int_equal(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 2, &alpha, A, 2, A, 2, &beta,
                                 C, 2),
                     CUBLAS_STATUS_SUCCESS);
    alpha = 100.0f;  // after the call: not the product's
    float c[4];
    assert_int_equal(cudaMemcpyAsync(c, C, 16, cudaMemcpyDeviceToHost, st), cudaSuccess);
    // column-major A = [1 3; 2 4]: A A = [7 15; 10 22], times 2
    assert_true(c[0] == 14.0f && c[1] == 20.0f && c[2] == 30.0f && c[3] == 44.0f);
    assert_int_equal(cublasDestroy(h), CUBLAS_STATUS_SUCCESS);
    assert_int_equal(cudaFree(A), cudaSuccess);
    assert_int_equal(cudaFree(C), cudaSuccess);
    assert_int_equal(cudaStreamDestroy(st), cudaSuccess);
}

// Runs body in a child process and expects it to abort (an emulator report).
bool aborts(void (*body)()) {
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        if (!freopen("/dev/null", "w", stderr)) _exit(3);
        body();
        _exit(0);
    }
    int st;
    waitpid(pid, &st, 0);
    return WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT;
}

// A collective's buffer watched from its call to its completion (what nccl_emu.c does for every
// call): work ordered before the completion that writes it is reported, work after is not.
void watched(bool race) {
    cudaStream_t comm = new_stream(), compute = new_stream();
    cudaEvent_t done;
    assert_int_equal(cudaEventCreateWithFlags(&done, cudaEventDisableTiming), cudaSuccess);
    uint32_t *d = nullptr;
    assert_int_equal(cudaMalloc(&d, 64), cudaSuccess);
    fill(comm, d, 1, 16);
    assert_int_equal(cudaStreamSynchronize(comm), cudaSuccess);
    emu_stream_watch(comm, d, 64, "the test's buffer");
    assert_int_equal(cudaEventRecord(done, comm), cudaSuccess);
    if (!race) assert_int_equal(cudaStreamWaitEvent(compute, done, 0), cudaSuccess);
    fill(compute, d, 2, 16);
    assert_int_equal(cudaStreamSynchronize(compute), cudaSuccess);
    assert_int_equal(cudaStreamSynchronize(comm), cudaSuccess);  // the check runs by now
    assert_int_equal(word(comm, d), 2);
    assert_int_equal(cudaFree(d), cudaSuccess);
    assert_int_equal(cudaEventDestroy(done), cudaSuccess);
    assert_int_equal(cudaStreamDestroy(compute), cudaSuccess);
    assert_int_equal(cudaStreamDestroy(comm), cudaSuccess);
}

void test_watch_reports_a_race(void **state) {
    (void)state;
    watched(false);
    assert_true(aborts([] { watched(true); }));
}

}  // namespace

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_queued_until_waited_for),
        cmocka_unit_test(test_pageable_staged_pinned_read_late),
        cmocka_unit_test(test_events_order_streams),
        cmocka_unit_test(test_refused_launches),
        cmocka_unit_test(test_cublas_on_its_stream),
        cmocka_unit_test(test_watch_reports_a_race),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
