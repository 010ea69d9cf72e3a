/* Fuzz target: the INI config files of `advtrain fit --config` (cli_read_config, cli/config_file.c,
 * with libinih and the option parser of cli/options.c).
 *
 * A table with an option of every type, ranged and unranged, one the command line already set,
 * one a config file may not set, reads the input. The reader prints what is wrong (to stderr;
 * scripts/fuzz.sh closes it) and returns false; it never exits. A file it accepts must leave
 * every option in range and every float finite, and must survive a round trip: written back
 * (cli_write_config) and read into a fresh table, it gives the same values. */
#include "cli.h"
#include "fuzz_common.h"

#include <math.h>
#include <string.h>

typedef struct values {
    int epochs, unranged;
    float lr, scale;
    const char *model, *out, *config;
    bool quiet, nesterov;
    uint64_t seed;
} values;

enum { NOPTIONS = 10 };

static const char *const not_in_config[] = {"config", NULL};
static const char *const not_recorded[] = {"quiet", NULL};

/* The table for v, as cmd_fit's (cli/fit.c) is built. */
static void make_command(cli_command *cmd, cli_option *o, values *v) {
    memset(v, 0, sizeof *v);
    v->epochs = 10;
    v->lr = 0.1f;
    v->scale = 1.0f;
    v->model = "mlp";
    v->seed = 1;
    const cli_option table[NOPTIONS] = {
        {"epochs", OPT_INT, &v->epochs, "N", "epochs", 1, 1000000},
        {"unranged", OPT_INT, &v->unranged, "N", "any int", 1, 0},
        {"lr", OPT_FLOAT, &v->lr, "LR", "learning rate", 0, 10},
        {"scale", OPT_FLOAT, &v->scale, "S", "any float", 1, 0},
        {"model", OPT_STRING, &v->model, "NAME", "model", 1, 0},
        {"out", OPT_STRING, &v->out, "FILE", "output", 1, 0},
        {"config", OPT_STRING, &v->config, "FILE", "config file", 1, 0},
        {"quiet", OPT_FLAG, &v->quiet, NULL, "quiet", 1, 0},
        {"nesterov", OPT_FLAG, &v->nesterov, NULL, "nesterov", 1, 0},
        {"seed", OPT_U64, &v->seed, "N", "seed", 1, 0},
    };
    memcpy(o, table, sizeof table);
    *cmd = (cli_command){.name = "fit", .usage = "advtrain fit", .summary = "fuzz", .options = o,
                         .noptions = NOPTIONS, .not_in_config = not_in_config,
                         .not_recorded = not_recorded};
}

/* What cli_read_config promises about an accepted file. */
static void check_values(const values *v) {
    if (v->epochs < 1 || v->epochs > 1000000) fuzz_fail("epochs out of range", NULL);
    if (!(v->lr >= 0 && v->lr <= 10)) fuzz_fail("lr out of range", NULL);
    if (!isfinite(v->scale)) fuzz_fail("a float option is not finite", NULL);
    if (!v->model || !*v->model || (v->out && !*v->out)) fuzz_fail("an empty string option", NULL);
    if (v->config) fuzz_fail("a config file set 'config'", NULL);
    /* The command line set epochs to 10 before the file was read: it must win. */
    if (v->epochs != 10) fuzz_fail("the config file overrode the command line", NULL);
}

static bool same_values(const values *a, const values *b) {
    return a->epochs == b->epochs && a->unranged == b->unranged && a->lr == b->lr &&
           a->scale == b->scale && strcmp(a->model, b->model) == 0 &&
           (!a->out) == (!b->out) && (!a->out || strcmp(a->out, b->out) == 0) &&
           a->nesterov == b->nesterov && a->seed == b->seed;
}

/* Writes the accepted configuration and reads it back into a fresh table. */
static void round_trip(const cli_command *cmd, const values *v) {
    char path[512];
    fuzz_path(path, sizeof path, "written.ini");
    if (!cli_write_config(cmd, path)) fuzz_fail("cli_write_config failed", path);
    cli_command cmd2;
    cli_option o2[NOPTIONS];
    values v2;
    cli_strings strings = {0};
    make_command(&cmd2, o2, &v2);
    o2[0].seen = true; /* epochs: as on the first read, from the command line */
    if (!cli_read_config(&cmd2, path, &strings)) fuzz_fail("the written config does not read back", path);
    if (!same_values(v, &v2)) fuzz_fail("the written config reads back different values", path);
    cli_strings_free(&strings);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[512];
    fuzz_path(path, sizeof path, "config.ini");
    fuzz_write(path, data, size);
    cli_command cmd;
    cli_option o[NOPTIONS];
    values v;
    cli_strings strings = {0};
    make_command(&cmd, o, &v);
    o[0].seen = true; /* --epochs 10 was on the command line */
    if (cli_read_config(&cmd, path, &strings)) {
        check_values(&v);
        round_trip(&cmd, &v);
    }
    cli_strings_free(&strings);
    return 0;
}
