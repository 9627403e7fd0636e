// fuzz_config.c: libFuzzer target of the INI configuration parser (config_load_string, the
// `--set` form and validation). Property: whatever parses, its resolved text parses again to
// the same configuration text.
#include "tests/fuzz/fuzzlib.h"

#include "io/config.h"
#include "kernels/common.h"

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) {
    char *s = malloc(n + 1), err[SBMT_ERR_LEN];
    memcpy(s, d, n);
    s[n] = '\0';
    sbmt_config c;
    config_defaults(&c);
    if (config_load_string(&c, s, "fuzz", err) == 0) {
        config_validate(&c, err);
        char *t = config_to_string(&c);
        sbmt_config c2;
        config_defaults(&c2);
        if (config_load_string(&c2, t, "roundtrip", err) != 0) {
            fprintf(stderr, "resolved config does not parse again: %s\n%s\n", err, t);
            abort();
        }
        char *t2 = config_to_string(&c2);
        if (strcmp(t, t2) != 0) {
            fprintf(stderr, "resolved config changes on a second parse:\n%s\n---\n%s\n", t, t2);
            abort();
        }
        free(t);
        free(t2);
    }
    // The first line as a --set override.
    char *nl = strchr(s, '\n');
    if (nl) *nl = '\0';
    config_defaults(&c);
    config_set(&c, s, err);
    free(s);
    return 0;
}
