// fuzz_import_text.c: libFuzzer targets of the LRA text converters, one per build (FUZZ_KIND):
// ListOps TSV files, IMDb review trees and AAN retrieval TSV files. The input is cut at 0xFF
// bytes into the converter's files; whatever it accepts it must write, and it never crashes.
#include "tests/fuzz/fuzzlib.h"

#include "io/import_text.h"
#include "kernels/common.h"

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) {
    size_t off[8], len[8];
    int parts = fz_split(d, n, 8, off, len);
    const char *dir = fz_dir();
    char out[512], err[SBMT_ERR_LEN];
    fz_path(out, sizeof out, "out.h5");
    lra_import_opts o;
    memset(&o, 0, sizeof(o));
    o.seq_len = 32;
    lra_import_stats st;
#if FUZZ_KIND == 0
    const char *files[3] = {"basic_train.tsv", "basic_val.tsv", "basic_test.tsv"};
    for (int i = 0; i < parts && i < 3; i++) fz_write(files[i], d + off[i], len[i]);
    o.truncate = n && (d[0] & 1);
    lra_import_listops(dir, out, &o, &st, err);
#elif FUZZ_KIND == 1
    const char *files[8] = {"train/neg/a.txt", "train/pos/a.txt", "test/neg/a.txt",
                            "test/pos/a.txt",  "train/neg/b.txt", "train/pos/b.txt",
                            "test/neg/b.txt",  "test/pos/b.txt"};
    const char *dirs[6] = {"train", "test", "train/neg", "train/pos", "test/neg", "test/pos"};
    for (int i = 0; i < 6; i++) fz_mkdir(dirs[i]);
    for (int i = 0; i < parts; i++) fz_write(files[i], d + off[i], len[i]);
    o.dev_from_train = n ? d[0] % 3 : 0;
    lra_import_text(dir, out, &o, &st, err);
#else
    const char *files[3] = {"new_aan_pairs.train.tsv", "new_aan_pairs.eval.tsv",
                            "new_aan_pairs.test.tsv"};
    for (int i = 0; i < parts && i < 3; i++) fz_write(files[i], d + off[i], len[i]);
    lra_import_retrieval(dir, out, &o, &st, err);
#endif
    return 0;
}
