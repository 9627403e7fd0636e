// args.c: parsing of integer option values, shared by the subcommands.
#include <stdio.h>
#include <stdlib.h>

#include "launch/cli.h"

int cli_parse_int(const char *me, const char *flag, const char *s, int64_t lo, int64_t hi,
                  int64_t *out) {
    char *end;
    long long v = strtoll(s, &end, 10);
    if (*s == '\0' || *end || v < lo || v > hi) {
        fprintf(stderr, "%s: %s '%s': expected an integer in %lld..%lld\n", me, flag, s,
                (long long)lo, (long long)hi);
        return -1;
    }
    *out = v;
    return 0;
}
