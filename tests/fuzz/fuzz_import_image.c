// fuzz_import_image.c: libFuzzer targets of the LRA image converters, one per build
// (FUZZ_KIND): CIFAR-10 binary batches (records built from the input, file sizes right or
// wrong) and Pathfinder (metadata text and PNG bytes from the input, cut at 0xFF bytes).
#include "tests/fuzz/fuzzlib.h"

#include "io/import_image.h"
#include "kernels/common.h"

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) {
    const char *dir = fz_dir();
    char out[512], err[SBMT_ERR_LEN];
    fz_path(out, sizeof out, "out.h5");
    img_import_stats st;
#if FUZZ_KIND == 0
    // Each of the six batch files: a record count (0..3) from one byte, records of 3073 bytes
    // filled from the input, and sometimes a stray byte more (a truncated or padded file).
    const char *files[6] = {"data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin",
                            "data_batch_4.bin", "data_batch_5.bin", "test_batch.bin"};
    fz_reader r = {d, n, 0};
    for (int i = 0; i < 6; i++) {
        uint32_t c = fz_u8(&r);
        if (c >= 250) continue;  // missing file
        size_t recs = c % 4, extra = (c >> 2) % 7 == 0 ? 1 : 0, sz = recs * 3073 + extra;
        uint8_t *b = malloc(sz ? sz : 1);
        for (size_t j = 0; j < sz; j++) b[j] = n ? d[(r.pos + j) % n] : 0;
        r.pos += 7;
        fz_write(files[i], b, sz);
        free(b);
    }
    img_import_cifar10(dir, out, n ? d[0] % 3 : 0, 0, &st, err);
#else
    size_t off[3], len[3];
    int parts = fz_split(d, n, 3, off, len);
    fz_mkdir("metadata");
    fz_mkdir("imgs");
    fz_mkdir("imgs/0");
    if (parts > 0) fz_write("metadata/0.npy", d + off[0], len[0]);
    if (parts > 1) fz_write("imgs/0/sample_0.png", d + off[1], len[1]);
    if (parts > 2) fz_write("imgs/0/sample_1.png", d + off[2], len[2]);
    img_import_pathfinder(dir, ".", out, 0, &st, err);
#endif
    return 0;
}
