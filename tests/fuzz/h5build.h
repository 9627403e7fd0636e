// h5build.h: building HDF5 files of fuzzer-chosen structure for the dataset and checkpoint
// targets: attributes and datasets of chosen names, types, shapes and bytes, so the readers'
// validation (not HDF5's own file parser) is what gets exercised. Header-only.
#ifndef SBMT_H5BUILD_H
#define SBMT_H5BUILD_H

#ifndef _XOPEN_SOURCE
#define _XOPEN_SOURCE 700
#endif
#include <hdf5.h>

#include "tests/fuzz/fuzzlib.h"

static inline hid_t fz_type(uint32_t choice) {
    static const hid_t *types[] = {&H5T_NATIVE_INT8_g,  &H5T_NATIVE_INT16_g, &H5T_NATIVE_INT32_g,
                                   &H5T_NATIVE_INT64_g, &H5T_NATIVE_UINT8_g, &H5T_NATIVE_FLOAT_g,
                                   &H5T_NATIVE_DOUBLE_g};
    return *types[choice % 7];
}

static inline void fz_attr_str(hid_t obj, const char *name, const char *val) {
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, strlen(val) + 1);
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(obj, name, t, sp, H5P_DEFAULT, H5P_DEFAULT);
    if (a >= 0) {
        H5Awrite(a, t, val);
        H5Aclose(a);
    }
    H5Sclose(sp);
    H5Tclose(t);
}

static inline void fz_attr_int(hid_t obj, const char *name, hid_t type, int64_t v) {
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(obj, name, type, sp, H5P_DEFAULT, H5P_DEFAULT);
    if (a >= 0) {
        H5Awrite(a, H5T_NATIVE_INT64, &v);
        H5Aclose(a);
    }
    H5Sclose(sp);
}

// A dataset of rank 1..3 with dims from the reader (each 0..maxdim), values from the reader.
static inline void fz_dataset(hid_t loc, const char *name, fz_reader *r, int rank, hsize_t d0, hsize_t d1,
                       hid_t type) {
    hsize_t dims[3] = {d0, d1, 2};
    hid_t sp = H5Screate_simple(rank, dims, NULL);
    hid_t ds = H5Dcreate2(loc, name, type, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (ds >= 0) {
        size_t count = 1;
        for (int i = 0; i < rank; i++) count *= dims[i];
        double *v = malloc(sizeof(double) * (count ? count : 1));
        for (size_t i = 0; i < count; i++) {
            uint32_t b = fz_u8(r);
            // Mostly small non-negative values (valid ids and labels), sometimes anything.
            v[i] = b < 200 ? (double)(b % 24) : (b < 250 ? -(double)(b % 7) : (double)fz_f32(r));
        }
        H5Dwrite(ds, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, v);
        free(v);
        H5Dclose(ds);
    }
    H5Sclose(sp);
}

#endif
