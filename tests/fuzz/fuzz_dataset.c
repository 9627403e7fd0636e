// fuzz_dataset.c: libFuzzer target of the dataset reader (ds_open, ds_read_rows) on files of
// fuzzer-chosen structure: root attributes (format, version, task, vocab, classes, seq_len,
// dual) right or wrong, splits present or not, input_ids/labels of any rank, shape, integer or
// float type and values. Anything ds_open accepts must read every row without error or crash,
// or fail with a message.
#include "tests/fuzz/h5build.h"

#include "io/dataset.h"
#include "kernels/common.h"

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) {
    fz_reader r = {d, n, 0};
    fz_dir();
    char path[512], err[SBMT_ERR_LEN];
    fz_path(path, sizeof path, "d.h5");
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (f < 0) abort();
    uint32_t flags = fz_u32(&r);
    char s[32];
    if (flags & 1) fz_attr_str(f, "sbmt_format", "dataset");
    else if (flags & 2) { fz_str(&r, s, sizeof s); fz_attr_str(f, "sbmt_format", s); }
    if (flags & 4) fz_attr_int(f, "sbmt_version", fz_type(fz_u8(&r)), flags & 8 ? 1 : (int8_t)fz_u8(&r));
    if (flags & 16) { fz_str(&r, s, sizeof s); fz_attr_str(f, "task", flags & 32 ? "listops" : s); }
    const char *ints[] = {"vocab_size", "num_classes", "seq_len", "dual"};
    for (int i = 0; i < 4; i++)
        if (flags & (64u << i)) fz_attr_int(f, ints[i], fz_type(fz_u8(&r)), (int8_t)fz_u8(&r));
    if (flags & (1u << 10)) fz_attr_str(f, "seq_len", "12");  // wrong type
    const char *splits[] = {"train", "dev", "test"};
    for (int sp = 0; sp < 3; sp++) {
        if (!(flags & (1u << (11 + sp)))) continue;
        hid_t g = H5Gcreate2(f, splits[sp], H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        if (g < 0) continue;
        hsize_t rows = fz_u8(&r) % 9, len = fz_u8(&r) % 17;
        int rank = 1 + (int)(fz_u8(&r) % 3);
        fz_dataset(g, "input_ids", &r, rank, rows, len,
                   fz_type(fz_u8(&r)));
        if (flags & (1u << (14 + sp)))
            fz_dataset(g, "input_ids_1", &r, 2, rows, len, fz_type(fz_u8(&r)));
        fz_dataset(g, "labels", &r, flags & (1u << (17 + sp)) ? 2 : 1,
                   flags & (1u << 20) ? rows + 1 : rows, 1, fz_type(fz_u8(&r)));
        H5Gclose(g);
    }
    H5Fclose(f);
    ds_file ds;
    memset(&ds, 0, sizeof(ds));
    if (ds_open(&ds, path, err) == 0) {
        for (int sp = 0; sp < SPLIT_COUNT; sp++) {
            if (ds.rows[sp] <= 0) continue;
            int64_t rows[8];
            int cnt = ds.rows[sp] < 8 ? (int)ds.rows[sp] : 8;
            for (int i = 0; i < cnt; i++) rows[i] = (int64_t)(fz_u8(&r) % ds.rows[sp]);
            int32_t *ids = malloc(sizeof(int32_t) * (size_t)cnt * ds.seq_len);
            int32_t *ids1 = ds.dual ? malloc(sizeof(int32_t) * (size_t)cnt * ds.seq_len) : NULL;
            int32_t labels[8];
            if (ds_read_rows(&ds, sp, rows, cnt, ids, ids1, labels, err) == 0)
                for (int i = 0; i < cnt; i++)
                    if (labels[i] < 0 || labels[i] >= ds.num_classes) abort();  // validated
            free(ids);
            free(ids1);
        }
        ds_close(&ds);
    }
    return 0;
}
