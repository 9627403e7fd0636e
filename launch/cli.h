// cli.h: the subcommands of the sbmt binary; each returns the process exit status.
#ifndef SBMT_CLI_H
#define SBMT_CLI_H

int cli_data(int argc, char **argv);
int cli_train(int argc, char **argv);
int cli_eval(int argc, char **argv);
int cli_inspect(int argc, char **argv);
int cli_help(const char *cmd);

#endif
