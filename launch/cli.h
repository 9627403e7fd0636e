// cli.h: the subcommands of the sbmt binary; each returns the process exit status.
#ifndef SBMT_CLI_H
#define SBMT_CLI_H

int cli_data(int argc, char **argv);
int cli_train(int argc, char **argv);
int cli_eval(int argc, char **argv);
int cli_inspect(int argc, char **argv);
// Converters of the public LRA release files (argv after the subcommand name).
int cli_import_listops(int argc, char **argv);     // launch/import_text.c
int cli_import_text(int argc, char **argv);        // launch/import_text.c
int cli_import_retrieval(int argc, char **argv);   // launch/import_text.c
int cli_import_image(int argc, char **argv);       // launch/import_image.c
int cli_import_pathfinder(int argc, char **argv);  // launch/import_image.c
int cli_help(const char *cmd);

#endif
