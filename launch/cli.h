// cli.h: the subcommands of the sbmt binary; each returns the process exit status.
#ifndef SBMT_CLI_H
#define SBMT_CLI_H

#include <stdint.h>

// `sbmt train` stopped by SIGTERM, SIGINT or SIGUSR1 after writing a checkpoint (EX_TEMPFAIL:
// run it again with --resume auto; launch/sbmt.sbatch requeues the job on it).
#define SBMT_EXIT_INTERRUPTED 75

int cli_data(int argc, char **argv);
int cli_train(int argc, char **argv);
int cli_eval(int argc, char **argv);
int cli_inspect(int argc, char **argv);
int cli_plot(int argc, char **argv);  // launch/plot.c
// Converters of the public LRA release files (argv after the subcommand name).
int cli_import_listops(int argc, char **argv);     // launch/import_text.c
int cli_import_text(int argc, char **argv);        // launch/import_text.c
int cli_import_retrieval(int argc, char **argv);   // launch/import_text.c
int cli_import_image(int argc, char **argv);       // launch/import_image.c
int cli_import_pathfinder(int argc, char **argv);  // launch/import_image.c
int cli_help(const char *cmd);

// *out = the integer in s when it lies in lo..hi; otherwise prints (unless me is NULL) "<me>: <flag> '<s>': expected
// an integer in lo..hi" to stderr and returns -1.   (launch/args.c)
int cli_parse_int(const char *me, const char *flag, const char *s, int64_t lo, int64_t hi,
                  int64_t *out);
// Walks argv from *i one option at a time: a name listed in `switches` (NULL-terminated, may be
// NULL) comes back alone (*val = NULL), any other with the next argument as *val. Returns 1 per
// option, 0 at the end, -1 after printing "<me>: unknown or incomplete option '<arg>'" when a
// non-switch is last.   (launch/args.c)
int cli_next_option(int argc, char **argv, int *i, const char *me, const char *const *switches,
                    const char **flag, const char **val);

#endif
