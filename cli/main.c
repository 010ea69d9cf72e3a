/* advtrain: the command-line tool. One file per subcommand; this table lists them. */
#include "attack_cli.h"
#include "report.h"

#include <string.h>

typedef struct subcommand {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} subcommand;

static const subcommand commands[] = {
    {"fit", cmd_fit, "train a model and save it as safetensors"},
    {"eval", cmd_eval, "measure a saved model's accuracy (or MSE) on a test set, and its robustness"},
    {"attack", cmd_attack, "write adversarial examples (safetensors or IDX) and a PNG grid"},
    {"bench", cmd_bench, "measure training or attack throughput (samples per second)"},
    {"verify", cmd_verify, "verified (certified) accuracy at an eps, by bound propagation"},
    {"quantize", cmd_quantize, "int8 post-training quantization; float and int8 accuracy side by side"},
    {"export", cmd_export, "write a saved model as standalone C99 source (microcontrollers)"},
    {"report", cmd_report, "plots and an HTML page for a training run or a model"},
};

static void usage(FILE *out) {
    fprintf(out, "usage: advtrain COMMAND [options]\n\n"
                 "Train small neural networks that generalize and resist adversarial attacks.\n\n"
                 "commands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof *commands; i++)
        fprintf(out, "  %-8s %s\n", commands[i].name, commands[i].summary);
    fprintf(out, "\nRun 'advtrain COMMAND --help' for the options of a command.\n");
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return EXIT_USAGE;
    }
    const char *name = argv[1];
    if (strcmp(name, "--help") == 0 || strcmp(name, "-h") == 0 || strcmp(name, "help") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(name, "--version") == 0) {
        printf("advtrain %s\n", AT_VERSION);
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof *commands; i++)
        if (strcmp(name, commands[i].name) == 0) {
            if (!cli_comm_start(&argc, &argv)) return EXIT_RUN_FAILED;
            const int status = commands[i].run(argc - 2, argv + 2);
            cli_comm_end(status);
            return status;
        }
    fprintf(stderr, "advtrain: unknown command '%s' (see advtrain --help)\n", name);
    return EXIT_USAGE;
}
