/* advtrain: the command-line tool. One file per subcommand. */
#include "cli.h"

#include <string.h>

static void usage(FILE *out) {
    fprintf(out,
            "usage: advtrain COMMAND [options]\n\n"
            "Train small neural networks that generalize and resist adversarial attacks.\n\n"
            "commands:\n"
            "  fit    train a model and save it as safetensors\n"
            "  eval   measure a saved model's accuracy (or MSE) on a test set\n\n"
            "Run 'advtrain COMMAND --help' for the options of a command.\n");
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return EXIT_USAGE;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(cmd, "--version") == 0) {
        printf("advtrain %s\n", AT_VERSION);
        return 0;
    }
    if (strcmp(cmd, "fit") == 0) return cmd_fit(argc - 2, argv + 2);
    if (strcmp(cmd, "eval") == 0) return cmd_eval(argc - 2, argv + 2);
    fprintf(stderr, "advtrain: unknown command '%s' (commands: fit, eval; see advtrain --help)\n", cmd);
    return EXIT_USAGE;
}
