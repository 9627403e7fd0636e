// cub/cub.cuh (emulated): the CUB device-wide algorithms the CUDA backend calls, on host memory
// (tests/emu/cuda_runtime.h), with CUB's contracts: the first call with d_temp_storage == NULL
// only reports the bytes of temporary storage needed (never zero, so a caller that skips the
// allocation is caught by the NULL check), a radix sort is stable and orders by bits
// [begin_bit, end_bit) of the key alone, Unique keeps the first of each run of equal items, and
// none of them may run in place. The temporary-storage query and the argument checks happen at
// the call; the work is queued on the call's stream and runs when that stream does.
#ifndef SBMT_EMU_CUB_CUH
#define SBMT_EMU_CUB_CUH

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <numeric>
#include <vector>

#include "cuda_runtime.h"

namespace cub {

namespace emu_detail {
template <class K> inline K key_bits(K k, int begin_bit, int end_bit) {
    const int w = (int)sizeof(K) * 8;
    K hi = end_bit >= w ? ~(K)0 : (((K)1 << end_bit) - 1);
    return (k & hi) >> begin_bit;
}
// CUB's device-wide algorithms do not work in place: aliasing input and output is an error here.
inline void no_alias(const void *in, const void *out, const char *what) {
    if (in == out) {
        std::fprintf(stderr, "cub (emulated): %s with the same input and output buffer\n", what);
        std::abort();
    }
}
inline cudaError_t temp_check(void *d_temp, size_t &bytes, size_t need, bool *query) {
    *query = d_temp == nullptr;
    if (*query) {
        bytes = need;
        return cudaSuccess;
    }
    return bytes >= need ? cudaSuccess : cudaErrorInvalidValue;
}
}  // namespace emu_detail

struct DeviceRadixSort {
    template <class K, class V, class N>
    static cudaError_t SortPairs(void *d_temp, size_t &bytes, const K *kin, K *kout, const V *vin,
                                 V *vout, N num, int begin_bit = 0, int end_bit = sizeof(K) * 8,
                                 cudaStream_t stream = 0) {
        bool query;
        cudaError_t e = emu_detail::temp_check(d_temp, bytes, 256 + (size_t)num * 16, &query);
        if (query || e != cudaSuccess) return e;
        emu_detail::no_alias(kin, kout, "DeviceRadixSort::SortPairs (keys)");
        emu_detail::no_alias(vin, vout, "DeviceRadixSort::SortPairs (values)");
        const size_t n = (size_t)num;
        emu_stream_enqueue(stream, [=] {
            std::vector<size_t> idx(n);
            std::iota(idx.begin(), idx.end(), (size_t)0);
            std::stable_sort(idx.begin(), idx.end(), [&](size_t a, size_t b) {
                return emu_detail::key_bits(kin[a], begin_bit, end_bit) <
                       emu_detail::key_bits(kin[b], begin_bit, end_bit);
            });
            std::vector<K> ks(n);
            std::vector<V> vs(n);
            for (size_t i = 0; i < n; i++) {
                ks[i] = kin[idx[i]];
                vs[i] = vin[idx[i]];
            }
            std::copy(ks.begin(), ks.end(), kout);
            std::copy(vs.begin(), vs.end(), vout);
        });
        return cudaSuccess;
    }
    template <class K, class N>
    static cudaError_t SortKeys(void *d_temp, size_t &bytes, const K *kin, K *kout, N num,
                                int begin_bit = 0, int end_bit = sizeof(K) * 8,
                                cudaStream_t stream = 0) {
        bool query;
        cudaError_t e = emu_detail::temp_check(d_temp, bytes, 256 + (size_t)num * 8, &query);
        if (query || e != cudaSuccess) return e;
        emu_detail::no_alias(kin, kout, "DeviceRadixSort::SortKeys");
        const size_t n = (size_t)num;
        emu_stream_enqueue(stream, [=] {
            std::vector<K> ks(kin, kin + n);
            std::stable_sort(ks.begin(), ks.end(), [&](K a, K b) {
                return emu_detail::key_bits(a, begin_bit, end_bit) <
                       emu_detail::key_bits(b, begin_bit, end_bit);
            });
            std::copy(ks.begin(), ks.end(), kout);
        });
        return cudaSuccess;
    }
};

struct DeviceSelect {
    template <class In, class Out, class NS, class N>
    static cudaError_t Unique(void *d_temp, size_t &bytes, In in, Out out, NS num_selected, N num,
                              cudaStream_t stream = 0) {
        bool query;
        cudaError_t e = emu_detail::temp_check(d_temp, bytes, 256, &query);
        if (query || e != cudaSuccess) return e;
        emu_detail::no_alias(&in[0], &out[0], "DeviceSelect::Unique");
        const size_t n = (size_t)num;
        emu_stream_enqueue(stream, [=] {
            size_t o = 0;
            for (size_t i = 0; i < n; i++)
                if (i == 0 || !(in[i] == in[i - 1])) out[o++] = in[i];
            *num_selected = (typename std::remove_reference<decltype(*num_selected)>::type)o;
        });
        return cudaSuccess;
    }
};

}  // namespace cub

#endif
