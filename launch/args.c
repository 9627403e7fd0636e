// args.c: option parsing shared by the subcommands: walking "--flag [value]" lists and integer
// values with their ranges.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "launch/cli.h"

int cli_parse_int(const char *me, const char *flag, const char *s, int64_t lo, int64_t hi,
                  int64_t *out) {
    char *end;
    long long v = strtoll(s, &end, 10);
    if (*s == '\0' || *end || v < lo || v > hi) {
        if (me)  // NULL: a rank other than 0 of a job, which prints nothing
            fprintf(stderr, "%s: %s '%s': expected an integer in %lld..%lld\n", me, flag, s,
                (long long)lo, (long long)hi);
        return -1;
    }
    *out = v;
    return 0;
}

int cli_next_option(int argc, char **argv, int *i, const char *me, const char *const *switches,
                    const char **flag, const char **val) {
    if (*i >= argc) return 0;
    *flag = argv[(*i)++];
    *val = NULL;
    for (const char *const *s = switches; s && *s; s++)
        if (!strcmp(*flag, *s)) return 1;
    if (*i >= argc) {
        fprintf(stderr, "%s: unknown or incomplete option '%s'\n", me, *flag);
        return -1;
    }
    *val = argv[(*i)++];
    return 1;
}
