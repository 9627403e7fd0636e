// main.c: the sbmt command line: dispatches subcommands (data, train, eval, inspect, plot, help,
// --version).
#include <stdio.h>
#include <string.h>

#include "kernels/common.h"
#include "launch/cli.h"

static void usage(FILE *f) {
    fprintf(f,
            "sbmt %s: distributed trainer for SBM-Transformers\n\n"
            "usage: sbmt <command> [options]\n\n"
            "commands:\n"
            "  data listops   generate LRA ListOps into an sbmt HDF5 dataset\n"
            "  train          train a model (--config C [--data F] [--out DIR] [--resume auto|F]\n"
            "                 [--set s.k=v ...])\n"
            "  eval           evaluate a checkpoint (--ckpt F --data D --split S [--json])\n"
            "  inspect F      summarise an sbmt HDF5 file (checkpoint or dataset)\n"
            "  plot DIR       SVG report of a run's metrics.jsonl ([--out F.svg]; default\n"
            "                 DIR/report.svg)\n"
            "  help [cmd]     this text, or a command's options\n"
            "  --version      print the version\n",
            SBMT_VERSION);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 1;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "--version") || !strcmp(cmd, "version")) {
        printf("sbmt %s\n", SBMT_VERSION);
        return 0;
    }
    if (!strcmp(cmd, "help") || !strcmp(cmd, "--help") || !strcmp(cmd, "-h")) {
        if (argc > 2) return cli_help(argv[2]);
        usage(stdout);
        return 0;
    }
    if (!strcmp(cmd, "data")) return cli_data(argc - 2, argv + 2);
    if (!strcmp(cmd, "train")) return cli_train(argc - 2, argv + 2);
    if (!strcmp(cmd, "eval")) return cli_eval(argc - 2, argv + 2);
    if (!strcmp(cmd, "inspect")) return cli_inspect(argc - 2, argv + 2);
    if (!strcmp(cmd, "plot")) return cli_plot(argc - 2, argv + 2);
    fprintf(stderr, "sbmt: unknown command '%s'\n\n", cmd);
    usage(stderr);
    return 1;
}
